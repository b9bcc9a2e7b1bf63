"""``natv2 search``: the NATv2 search under a device profile (the main job)."""

from __future__ import annotations

from pathlib import Path

import typer

from natv2.commands.common import (
    JsonFlag,
    LayoutOption,
    dataset_help,
    emit_json,
    make_logger,
)
from natv2.data.registry import DEFAULT_DATASET
from natv2.space import ENCODINGS
from natv2.supernet.config import DEFAULT_LAYOUT
from natv2.untrusted import MAX_ARCHIVE_SIZE, MAX_COUNT, MAX_SEED, file_errors


def search(
    device: str = typer.Option(
        "microcontroller-profile",
        "--device",
        "-d",
        help="Device profile: a shipped name or a TOML path.",
    ),
    dataset: str = typer.Option(DEFAULT_DATASET, help=dataset_help()),
    data_dir: Path | None = typer.Option(None, help="Where datasets live (default ./data)."),
    download: bool = typer.Option(
        False, help="Download CIFAR, MNIST or Fashion-MNIST when missing."
    ),
    supernet: str = typer.Option(
        "tiny-w1.0",
        help="A preset (tiny, tiny-w1.0, ofa-mbv3, ofa-mbv3-w1.2, ...; pretrained on first use and "
        "cached) or a supernet checkpoint (.pt) from train-supernet / import-ofa.",
    ),
    encoding: str = typer.Option("exits+parallel", "--encoding", "-e", help=", ".join(ENCODINGS)),
    preset: str = typer.Option(
        "demo", help="demo (minutes on a CPU) or paper (the paper's settings)."
    ),
    iterations: int | None = typer.Option(
        None, min=0, max=MAX_COUNT, help="Search iterations (preset default)."
    ),
    archive_size: int | None = typer.Option(
        None, min=4, max=MAX_ARCHIVE_SIZE, help="Archive size As (preset default)."
    ),
    predictor: str = typer.Option("lgbm", help="Accuracy predictor (see `natv2 predictors`)."),
    mode: str = typer.Option("natv2", help="natv2, or nat for NAT's archive policies."),
    dense_skips: bool = typer.Option(False, help="Pretrain presets with dense skip connections."),
    pretrain_schedule: str = typer.Option(
        "scratch",
        help="Training schedule when a preset must be pretrained: scratch (all subnets at once, "
        "from random weights; minutes on a CPU), scratch-full, or EPS: cpu-demo, paper.",
    ),
    out: Path | None = typer.Option(
        None, help="Run directory to write (default: runs/search, or runs/search-N if taken)."
    ),
    resume: bool = typer.Option(
        False,
        help="Continue the search in --out from its last iteration, with the same options "
        "(only --accelerator, --data-dir, --download, --json and --high-tradeoff-k may change).",
    ),
    layout: LayoutOption = DEFAULT_LAYOUT,
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Random seed."),
    high_tradeoff_k: int | None = typer.Option(
        None,
        min=1,
        max=MAX_COUNT,
        help="Return NAT's fixed number of high trade-off subnets (the K highest trade-offs, "
        "plus the front's extremes) instead of pymoo's HighTradeoffPoints outliers.",
    ),
    accelerator: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    as_json: JsonFlag = False,
) -> None:
    """Search the subnets that fit a device: pretrain or reuse a supernet, run NATv2, write RUN_DIR.

    The run directory holds the front and high trade-off set (JSON, CSV), a plot, the adapted
    supernet, per-iteration checkpoints and a log. Under `torchrun` evaluations are sharded and
    adaptation uses DistributedDataParallel.
    """
    # heavy imports (torch, pymoo) only when the command runs: `natv2 --help` stays fast
    from natv2 import rundir
    from natv2.accelerator import resolve_accelerator, shutdown
    from natv2.data import load_dataset
    from natv2.device_profiles import load_profile
    from natv2.pipeline import SearchRequest, check_run_dir, run_search
    from natv2.supernet.config import check_layout

    if out is None:
        out = free_run_dir(Path("runs"), "search")
    profile = load_profile(device)
    req = SearchRequest(
        device=device,
        dataset=dataset,
        supernet=supernet,
        encoding=encoding,
        preset=preset,
        iterations=iterations,
        archive_size=archive_size,
        predictor=predictor,
        mode=mode,
        seed=seed,
        dense_skips=dense_skips,
        pretrain_schedule=pretrain_schedule,
        high_tradeoff_k=high_tradeoff_k,
        layout=check_layout(layout),
    )
    acc = resolve_accelerator(accelerator)
    if acc.is_main:  # before any data is loaded or anything trained; touches nothing
        check_run_dir(out, req, profile, resume)
    log_file = out / rundir.LOG
    echo = make_logger(as_json, quiet=not acc.is_main)

    def log(message: str) -> None:
        echo(message)
        if acc.is_main and log_file.parent.is_dir():
            with file_errors(log_file, "write"), log_file.open("a") as fh:
                fh.write(message + "\n")

    data = load_dataset(dataset, data_dir=data_dir, download=download)
    result = run_search(req, profile, data, acc, out, resume=resume, log=log)
    if acc.is_main:
        if as_json:
            emit_json(
                {
                    k: result[k]
                    for k in ("run_dir", "seconds", "evaluations", "front", "high_tradeoff")
                }
            )
        else:
            high = {r["id"] for r in result["high_tradeoff"]}
            echo(front_table(result["front"], high, measured=profile.latency_basis == "this host"))
            echo(
                f"run directory: {out}  ({result['seconds']:.0f} s, "
                f"{result['evaluations']} evaluations)"
            )
    shutdown(acc)


def free_run_dir(root: Path, name: str) -> Path:
    """``root/name``, else ``root/name-2``, ``-3``, ...: a rerun never overwrites a finished run."""
    candidate, n = root / name, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{name}-{n}"
    return candidate


def front_table(front: list[dict], high: set[str], measured: bool = False) -> str:
    """The front as text; ``measured`` adds the latency timed on this host (measure profiles);
    int8 profiles add the int8 file's validation top-1 (the search ranks on it)."""
    int8 = any("int8_accuracy" in r for r in front)
    head = (
        f"{'subnet':<28} {'val top-1':>9} "
        + (f"{'int8':>7} " if int8 else "")
        + f"{'params':>9} {'MACs':>11} {'peak SRAM':>10} "
        f"{'flash':>10}  " + (f"{'host ms':>8}  " if measured else "")
    )
    lines = ["front (* = high trade-off):", head, "-" * len(head)]
    for r in front:
        ms = f"{r['latency_ms']:>8.3f}  " if measured and r.get("latency_ms") is not None else ""
        q = f"{100 * r['int8_accuracy']:>6.2f}% " if int8 else ""
        lines.append(
            f"{r['id']:<28} {100 * r['accuracy']:>8.2f}% {q}{r['params']:>9,} {r['macs']:>11,} "
            f"{r['peak_sram_bytes']:>10,} {r['flash_bytes']:>10,} "
            + ms
            + ("*" if r["id"] in high else "")
        )
    return "\n".join(lines)
