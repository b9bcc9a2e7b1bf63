"""``natv2 space``: sample, decode and cost encoding vectors."""

from __future__ import annotations

import numpy as np
import typer

from natv2.commands.common import JsonFlag, LayoutOption, emit_json, vector_text
from natv2.data.registry import DEFAULT_DATASET
from natv2.errors import Natv2Error
from natv2.space import ENCODINGS, SAMPLERS, SearchSpace, parse_vector
from natv2.supernet.config import DEFAULT_LAYOUT
from natv2.untrusted import MAX_SAMPLES, MAX_SEED

app = typer.Typer(help="The OFAv2 search space: sample, decode and cost encoding vectors.")

EncodingOpt = typer.Option(
    "exits+parallel", "--encoding", "-e", help=f"One of: {', '.join(ENCODINGS)}."
)
DatasetOpt = typer.Option(
    DEFAULT_DATASET,
    "--dataset",
    help="The dataset a data layout is fitted to (its image size; nothing is loaded).",
)


def layout(layout_name: str, dataset: str) -> dict:
    """The strides and resolutions ``natv2 search`` would train a preset with."""
    from natv2.data.registry import storage_size_of
    from natv2.supernet.config import layout_of

    return layout_of(layout_name, storage_size_of(dataset))


def space_of(encoding: str, layout_fields: dict, widths=None) -> SearchSpace:
    """The space whose R gene means the layout's resolutions."""
    extra = {} if widths is None else {"widths": widths}
    return SearchSpace(encoding, grid=layout_fields["resolutions"], **extra)


def subnet_json(space: SearchSpace, vector) -> dict:
    arch = space.decode(vector)
    return {
        "id": arch.id,
        "encoding": space.encoding,
        "vector": [int(x) for x in space.encode(arch)],
        "arch": arch.to_dict(),
    }


@app.command()
def sample(
    encoding: str = EncodingOpt,
    n: int = typer.Option(5, "-n", min=1, max=MAX_SAMPLES, help="How many subnets."),
    sampler: str = typer.Option("natv2", help=f"One of: {', '.join(SAMPLERS)}."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Random seed."),
    dataset: str = DatasetOpt,
    layout_name: LayoutOption = DEFAULT_LAYOUT,
    as_json: JsonFlag = False,
) -> None:
    """Draw subnets with NATv2's depth-uniform sampler or NAT's uniform one."""
    space = space_of(encoding, layout(layout_name, dataset))
    vectors = space.sample(n, np.random.default_rng(seed), sampler)
    records = [subnet_json(space, v) for v in vectors]
    if as_json:
        emit_json(records)
        return
    for rec in records:
        typer.echo(f"{rec['id']}  {vector_text(rec['vector'])}")


@app.command()
def decode(
    vector: str = typer.Argument(..., help="Comma-separated integers, e.g. 4,1,4,9,9,0,0,..."),
    encoding: str = EncodingOpt,
    dataset: str = DatasetOpt,
    layout_name: LayoutOption = DEFAULT_LAYOUT,
    as_json: JsonFlag = False,
) -> None:
    """Show the Arch of a vector and its canonical form."""
    space = space_of(encoding, layout(layout_name, dataset))
    given = parse_vector(vector)
    rec = subnet_json(space, given)
    rec["canonical"] = rec["vector"] == [int(x) for x in given]
    if as_json:
        emit_json(rec)
        return
    typer.echo(space.decode(given).describe())
    typer.echo(f"canonical vector: {vector_text(rec['vector'])}")
    if not rec["canonical"]:
        typer.echo("(the given vector is not canonical; the line above is what the supernet runs)")


def _num(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.3f}"
    return f"{int(value):,}"


_COST_LABELS = {
    "params": ("params", ""),
    "macs": ("MACs", ""),
    "peak_sram_bytes": ("peak SRAM", " B"),
    "tflm_arena_bytes": ("TFLM arena", " B"),
    "flash_bytes": ("flash", " B"),
    "tflite_bytes": ("TFLite file", " B"),
    "latency_ms": ("latency (estimate)", " ms"),
}


@app.command()
def cost(
    vector: str = typer.Argument(..., help="Comma-separated integers, e.g. 4,1,4,9,9,0,0,..."),
    encoding: str = EncodingOpt,
    supernet: str = typer.Option(
        "tiny",
        "--supernet",
        help="Supernet preset: tiny-w1.0, ofa-mbv3-w1.2, ... or tiny / ofa-mbv3 (width from the "
        "vector).",
    ),
    classes: int = typer.Option(10, "--classes", help="Classes of the classifier head."),
    dense_skips: bool = typer.Option(False, "--dense-skips", help="Dense skips inside stages."),
    dtype: str | None = typer.Option(
        None,
        "--dtype",
        help="int8 | float16 | float32 (bytes of activations and weights); default float32, "
        "or the profile's dtype with --device.",
    ),
    device: str | None = typer.Option(
        None, "--device", help="A device profile (shipped name or TOML path): check its budgets."
    ),
    dataset: str = DatasetOpt,
    layout_name: LayoutOption = DEFAULT_LAYOUT,
    as_json: JsonFlag = False,
) -> None:
    """What a subnet costs (params, MACs, peak SRAM, flash) and, with --device, whether it fits.

    A report: exit 0 whatever the verdict; 2 for bad input.
    """
    from natv2.device_profiles import Costs, load_profile
    from natv2.profiling.cost import DTYPE_BYTES, subnet_cost
    from natv2.supernet.config import config_for_encoding, parse_supernet_name

    preset, widths = parse_supernet_name(supernet)
    profile = load_profile(device) if device is not None else None
    if dtype is not None and dtype not in DTYPE_BYTES:
        raise Natv2Error(f"unknown --dtype {dtype!r}; choose one of: {', '.join(DTYPE_BYTES)}")
    if profile is not None and dtype is not None and dtype != profile.dtype:
        raise Natv2Error(
            f"--dtype {dtype} conflicts with device profile '{profile.name}', which runs "
            f"{profile.dtype}; leave --dtype out to cost at the profile's dtype"
        )
    dtype = profile.dtype if profile is not None else (dtype or "float32")
    fields = layout(layout_name, dataset)
    space = space_of(encoding, fields, widths)
    given = parse_vector(vector)
    arch = space.decode(given)
    config = config_for_encoding(
        encoding,
        preset=preset,
        width=arch.width,
        num_classes=classes,
        dense_skips=dense_skips,
        **fields,
    )
    figures: dict = subnet_cost(arch, config, dtype).as_dict()
    rec = subnet_json(space, given)
    doc: dict = {
        "id": rec["id"],
        "encoding": encoding,
        "vector": rec["vector"],
        "canonical": rec["vector"] == [int(x) for x in given],
        "supernet": config.name,
        "num_classes": classes,
        "dense_skips": dense_skips,
        **figures,
        "latency_ms": None,
        "profile": None,
    }
    if profile is not None:
        # the profile's rule: a latency it measures is not known before export
        doc["latency_ms"] = profile.judged_latency_ms(
            profile.estimate_latency_ms(figures["macs"]), None
        )
        verdict = profile.judge(Costs.of(doc))
        resolution_ok = profile.allows_resolution(arch.resolution)
        doc["profile"] = {
            "name": profile.name,
            "source": profile.source,
            "dtype": profile.dtype,
            "resolution_allowed": resolution_ok,
            "checks": [c.to_dict() for c in verdict.checks],
            # budgets the analytical model cannot check (a latency the profile measures)
            "unchecked": list(verdict.unchecked),
            "fits": resolution_ok and verdict.fits,
        }
    if as_json:
        emit_json(doc)
        return
    dense = "on" if dense_skips else "off"
    typer.echo(f"{arch.id}  ({encoding}, {config.name}, {classes} classes, dense skips {dense})")
    if not doc["canonical"]:
        typer.echo(f"canonical vector: {vector_text(doc['vector'])}")
    for key, (label, unit) in _COST_LABELS.items():
        if doc.get(key) is not None:
            at = (
                f" ({dtype})"
                if key in ("peak_sram_bytes", "tflm_arena_bytes", "flash_bytes", "tflite_bytes")
                else ""
            )
            typer.echo(f"  {label:<19} {_num(doc[key]):>16}{unit}{at}")
    if profile is None:
        return
    prof = doc["profile"]
    typer.echo(f"device profile {profile.name} ({profile.source}):")
    if not profile.budgets:
        typer.echo("  no budgets")
    for c in verdict.checks:
        mark = "ok  " if c.passed else "OVER"
        typer.echo(
            f"  {mark} {c.budget_key:<20} {_num(c.value):>16} of {_num(c.budget):>16}"
            f"   headroom {_num(c.headroom)} ({c.headroom_fraction:+.1%})"
        )
    if not prof["resolution_allowed"]:
        typer.echo(
            f"  OVER resolution {arch.resolution} is not among the profile's "
            f"{', '.join(map(str, profile.resolutions or ()))}"
        )
    for key in prof["unchecked"]:
        typer.echo(
            f"  ?    {key:<20} {_num(profile.budgets[key]):>16}   not checked: the profile "
            "measures latency (natv2 export, then natv2 validate)"
        )
    failed = [c.budget_key for c in verdict.failed]
    if not prof["resolution_allowed"]:
        failed.append("resolution")
    if not prof["fits"]:
        typer.echo(f"verdict: does not fit ({', '.join(failed)})")
    elif prof["unchecked"]:
        typer.echo(f"verdict: fits the budgets checked ({', '.join(prof['unchecked'])} not)")
    else:
        typer.echo("verdict: fits")
