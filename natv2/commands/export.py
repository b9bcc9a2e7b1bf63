"""``natv2 export``: a subnet as a deployment folder (ONNX float and int8, an int8 ONNX with uint8
activations for host latency, int8 TFLite checked by TensorFlow Lite Micro, weights, report).

Two sources:

* ``natv2 export RUN_DIR --subnet ID``: the subnet record of a search run (front, high
  trade-off set or archive), materialised from the run's adapted supernet with BatchNorm
  recalibrated exactly as the search evaluated it: the same fixed training images, as many as
  the run's ``config.json`` records (``settings.calibration_images``, batches of
  ``settings.eval_batch``; 500 and 250 when it records none). ``--postprocessed`` exports
  ``RUN_DIR/postprocessed/ID/`` (written by ``natv2 postprocess``) into
  ``RUN_DIR/exports/ID-postprocessed`` instead (so it never overwrites the plain export).
* ``natv2 export --supernet CKPT --arch VECTOR [--encoding E] --out DIR``: any subnet of a
  supernet checkpoint (e.g. an imported OFA supernet); BatchNorm statistics are the supernet's
  unless ``--calibrate-bn DATASET`` recalibrates them.

The work is in ``natv2.export`` (conversion, checks, int8, report); this module only finds the
module, its Arch, the dataset and the device profile.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import typer

from natv2.commands.common import (
    DataDir,
    FullTest,
    JsonFlag,
    TestLimit,
    Threads,
    dataset_help,
    emit_json,
    make_logger,
    top1_images,
)
from natv2.errors import Natv2Error
from natv2.untrusted import MAX_RUNS

CALIBRATION_IMAGES = 500  # unless the run's config.json records its own
EVAL_BATCH = 250


def load_model_folder(directory: str | Path):
    """Rebuild the module of a model folder (``model.pt`` + ``arch.json``): a plain subnet or an
    AEP ensemble, whichever ``natv2 postprocess`` wrote."""
    from natv2.postprocess import load_postprocessed

    return load_postprocessed(directory)


def _arch_of_folder(module, directory: Path):
    """The Arch of a model folder's module: its ``arch`` attribute, else arch.json's."""
    from natv2.space import Arch

    arch = getattr(module, "arch", None)
    if isinstance(arch, Arch):
        return arch
    desc = json.loads((directory / "arch.json").read_text())
    if not isinstance(desc, dict) or not isinstance(desc.get("arch"), dict):
        raise Natv2Error(f"{directory / 'arch.json'}: no 'arch' description of the subnet")
    return Arch.from_dict(desc["arch"])


def _recalibrate(
    module, data, resolution: int, images: int = CALIBRATION_IMAGES, batch: int = EVAL_BATCH
) -> None:
    """BatchNorm statistics over ``images`` fixed training images in batches of ``batch``
    (the per-batch statistics are averaged, so both must match the search's to reproduce it)."""
    import torch

    from natv2.accelerator import Accelerator
    from natv2.evaluate import EvalData, recalibrate_bn

    acc = Accelerator(device=torch.device("cpu"))
    cache = EvalData(data, data.val, data.calibration_subset(images), acc, batch)
    recalibrate_bn(module, cache.batches("calib", resolution))


def _decode(space, vector) -> tuple[Any, list[int]]:
    arch = space.decode(vector)
    return arch, [int(v) for v in space.encode(arch)]


def _pick_supernet(nets: dict, arch, path: Path):
    from natv2.supernet.network import check_runnable

    if arch.width not in nets:
        raise Natv2Error(
            f"{path} has supernets of width {', '.join(f'{w:g}' for w in sorted(nets))} but the "
            f"subnet needs width {arch.width:g}"
        )
    net = nets[arch.width].eval()
    check_runnable(net, arch)
    return net


def _aep_counts(module) -> dict[str, int] | None:
    """The analytical params and MACs of an AEP model (``natv2.aep.aep_cost``), else None."""
    try:
        from natv2.aep import AEPNet, aep_cost
    except ImportError:
        return None
    if not isinstance(module, AEPNet):
        return None
    cost = aep_cost(module, module.config)
    return {"params": int(cost["params"]), "macs": int(cost["macs"])}


def _subnet_saver(module):
    from natv2.supernet.materialize import save_subnet

    return lambda folder: save_subnet(module, folder)


def _folder_copier(src: Path):
    def copy(folder: Path) -> None:
        for name in ("model.pt", "arch.json"):
            shutil.copy2(src / name, folder / name)

    return copy


def export(
    run_dir: Path | None = typer.Argument(
        None, help="A `natv2 search` run directory (omit with --supernet)."
    ),
    subnet: str | None = typer.Option(None, "--subnet", help="Subnet id from the run's front."),
    postprocessed: bool = typer.Option(
        False, "--postprocessed", help="Export RUN_DIR/postprocessed/ID (natv2 postprocess)."
    ),
    supernet: Path | None = typer.Option(
        None, "--supernet", help="Supernet checkpoint (natv2 train-supernet / import-ofa)."
    ),
    arch_vector: str | None = typer.Option(
        None, "--arch", help="Encoding vector of the subnet, e.g. 4,0,2,9,9,0,0,... (--supernet)."
    ),
    encoding: str | None = typer.Option(
        None, "--encoding", "-e", help="Encoding of --arch (default: the supernet's)."
    ),
    calibrate_bn: str | None = typer.Option(
        None, "--calibrate-bn", help="Recalibrate BatchNorm on this dataset (--supernet)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="Device profile (default: the run's); int8 profiles add int8."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Export folder (default RUN_DIR/exports/ID)."
    ),
    int8: bool | None = typer.Option(
        None,
        "--int8/--no-int8",
        help="Write model.int8.onnx (int8 activations, for microcontrollers) and "
        "model.int8-host.onnx (uint8 activations, faster in onnxruntime on x86); default: when "
        "the profile is int8.",
    ),
    tflite: bool | None = typer.Option(
        None,
        "--tflite/--no-tflite",
        help="Write model.int8.tflite and run it in TensorFlow Lite Micro (default: for int8 "
        'profiles, when pip install "natv2\\[tflite]" is done).',
    ),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        help="Dataset for top-1, real-image parity, int8 calibration. " + dataset_help(),
    ),
    data_dir: DataDir = None,
    runs: int = typer.Option(
        50, "--runs", min=0, max=MAX_RUNS, help="Timed latency runs (0: skip)."
    ),
    threads: Threads = None,
    limit: TestLimit = None,
    full_test: FullTest = False,
    int8_finetune: bool = typer.Option(
        True,
        "--int8-finetune/--no-int8-finetune",
        help="When the int8 file loses more top-1 than the profile allows (on validation images "
        "topped up with training images), fine-tune a copy for int8 (quantization-aware, "
        "distilled from the float subnet) and quantize the copy; the float files stay the subnet.",
    ),
    as_json: JsonFlag = False,
) -> None:
    """Export a subnet: ONNX (float, and int8 + int8 TFLite for int8 profiles), weights, arch
    and a report."""
    if (run_dir is None) == (supernet is None):
        raise Natv2Error(
            "give either RUN_DIR --subnet ID (a search run) or --supernet CKPT --arch VECTOR "
            "--out DIR (a supernet checkpoint)"
        )
    if run_dir is not None:
        if subnet is None:
            raise Natv2Error("RUN_DIR needs --subnet ID (an id from the run's front.json)")
        for flag, value in (("--arch", arch_vector), ("--calibrate-bn", calibrate_bn)):
            if value is not None:
                raise Natv2Error(f"{flag} goes with --supernet, not with a run directory")
        if encoding is not None:
            raise Natv2Error("--encoding goes with --supernet; a run's records carry theirs")
    else:
        if arch_vector is None or out is None:
            raise Natv2Error("--supernet needs --arch VECTOR and --out DIR")
        if subnet is not None or postprocessed:
            raise Natv2Error("--subnet and --postprocessed go with a run directory")
    images = top1_images(limit, full_test)
    log = make_logger(as_json)
    if run_dir is not None:
        assert subnet is not None
        job = _from_run(run_dir, subnet, postprocessed, device, dataset, data_dir, out, log)
    else:
        assert supernet is not None and arch_vector is not None and out is not None
        job = _from_supernet(
            supernet, arch_vector, encoding, calibrate_bn, device, dataset, data_dir, out, log
        )

    from natv2.export.folder import export_folder
    from natv2.export.report import summary

    if job["dataset"] is not None:
        job["dataset"] = job["dataset"].test_sample(images)

    if int8_finetune and int8 is not False:
        _finetune_for_int8(job, log)
    report = export_folder(
        int8=int8,
        tflite=tflite,
        latency_runs=runs,
        threads=threads,
        test_limit=None,
        log=log,
        **job,
    )
    if as_json:
        emit_json(report.to_json())
    else:
        typer.echo(summary(report))
    if report.verdict is not None and not report.verdict.passed:
        raise typer.Exit(1)  # the folder is written (its report says why) but does not fit


def _finetune_for_int8(job: dict, log) -> None:
    """int8 profiles: a plain subnet whose int8 file loses more top-1 than the
    profile allows gets a copy fine-tuned for int8 (``natv2.qat.prepare_for_int8``); the int8
    files are quantized from the copy, the float files stay the subnet, and the report's source
    says so."""
    from natv2.supernet.plain import Subnet

    module, profile, data = job["module"], job["profile"], job["dataset"]
    if profile is None or profile.dtype != "int8" or data is None or not isinstance(module, Subnet):
        return
    from natv2.export.folder import calibration_batches
    from natv2.qat import prepare_for_int8

    r = job["arch"].resolution
    tuned, record = prepare_for_int8(
        module, data, r, calibration_batches(data, r), profile.max_top1_drop, log=log
    )
    if record is not None:
        job["source"] = {**job["source"], "int8_finetune": record}
    if tuned is not module:
        job["int8_module"] = tuned  # model.onnx and model.pt stay the search's subnet


def _profile(name: str | None):
    if not name:
        return None
    from natv2.device_profiles import load_profile

    return load_profile(name)


def _from_run(run_dir, subnet_id, postprocessed, device, dataset, data_dir, out, log) -> dict:
    from natv2.data import load_dataset
    from natv2.rundir import EXPORTS, POSTPROCESSED, run_dataset, run_subnet
    from natv2.supernet.checkpoint import load_supernets
    from natv2.supernet.materialize import materialize
    from natv2.supernet.plain import Subnet

    found = run_subnet(run_dir, subnet_id)
    run_dir, config, record, encoding = found.run_dir, found.config, found.record, found.encoding
    arch, vector = _decode(found.space, found.vector)
    if arch.id != subnet_id:
        raise Natv2Error(
            f"{run_dir}: the record {subnet_id} has a vector that decodes to {arch.id}; "
            "the run directory is inconsistent (rerun the search with --resume)"
        )
    profile = _profile(device or config.get("device"))
    which = run_dataset(config, dataset=dataset, data_dir=data_dir)
    data = load_dataset(which.name, data_dir=which.data_dir) if which.name else None
    accuracy = record.get("accuracy")
    source: dict[str, Any] = {"run_dir": str(run_dir), "subnet": subnet_id}
    if postprocessed:
        folder = run_dir / POSTPROCESSED / subnet_id
        log(f"loading the post-processed model {folder}")
        module = load_model_folder(folder)
        folder_arch = _arch_of_folder(module, folder)
        if folder_arch.id != arch.id:
            raise Natv2Error(
                f"{folder} holds {folder_arch.id}, not {arch.id}; post-process the subnet again"
            )
        is_subnet = isinstance(module, Subnet)
        save = _subnet_saver(module) if is_subnet else _folder_copier(folder)
        source.update({"mode": "postprocessed", "model_folder": str(folder)})
        cost_config = module.config if is_subnet else None
        cost_counts = _aep_counts(module)
        default_out = run_dir / EXPORTS / f"{subnet_id}-postprocessed"
    else:
        if data is None:
            raise Natv2Error(
                f"{run_dir}: the run configuration names no dataset; give --dataset to "
                "recalibrate BatchNorm as the search did"
            )
        nets, _ = load_supernets(found.supernet_path)
        net = _pick_supernet(nets, arch, found.supernet_path)
        module = materialize(net, arch)
        raw = config.get("settings")
        settings = raw if isinstance(raw, dict) else {}
        images = int(settings.get("calibration_images") or CALIBRATION_IMAGES)
        batch = int(settings.get("eval_batch") or EVAL_BATCH)
        log(f"recalibrating BatchNorm of {arch.id} on {images} {data.name} images, as the search")
        _recalibrate(module, data, arch.resolution, images, batch)
        save = _subnet_saver(module)
        cost_config = module.config
        cost_counts = None
        source.update(
            {
                "mode": "run",
                "supernet": str(found.supernet_path),
                "batchnorm": f"recalibrated on {images} {data.name} train images "
                f"(batches of {batch}), as the search evaluated it",
            }
        )
        default_out = run_dir / EXPORTS / subnet_id
    return {
        "module": module,
        "out": Path(out) if out is not None else default_out,
        "arch": arch,
        "save_module": save,
        "encoding": encoding,
        "vector": vector,
        "cost_config": cost_config,
        "cost_counts": cost_counts,
        "profile": profile,
        "dataset": data,
        "search_accuracy": accuracy,
        "source": source,
    }


def _from_supernet(
    ckpt, vector_text, encoding, calibrate_bn, device, dataset, data_dir, out, log
) -> dict:
    from natv2.data import load_dataset
    from natv2.space import SearchSpace, parse_vector
    from natv2.supernet.checkpoint import load_supernets
    from natv2.supernet.config import encoding_of
    from natv2.supernet.materialize import materialize

    ckpt = Path(ckpt)
    vector_in = parse_vector(vector_text)
    profile = _profile(device)
    nets, _ = load_supernets(ckpt)
    config = next(iter(nets.values())).config
    encoding = encoding or encoding_of(config)
    arch, vector = _decode(SearchSpace(encoding, grid=config.resolutions), vector_in)
    net = _pick_supernet(nets, arch, ckpt)
    bn_data = load_dataset(calibrate_bn, data_dir=data_dir) if calibrate_bn else None
    data = bn_data
    if dataset and dataset != calibrate_bn:
        data = load_dataset(dataset, data_dir=data_dir)
    module = materialize(net, arch).eval()
    if bn_data is not None:
        log(f"recalibrating BatchNorm of {arch.id} on {CALIBRATION_IMAGES} {bn_data.name} images")
        _recalibrate(module, bn_data, arch.resolution)
        bn = f"recalibrated on {CALIBRATION_IMAGES} {bn_data.name} train images"
    else:
        bn = "the supernet's statistics"
    return {
        "module": module,
        "out": Path(out),
        "arch": arch,
        "save_module": _subnet_saver(module),
        "encoding": encoding,
        "vector": vector,
        "cost_config": module.config,
        "profile": profile,
        "dataset": data,
        "search_accuracy": None,
        "source": {"mode": "supernet", "supernet": str(ckpt), "batchnorm": bn},
    }
