"""``natv2 validate``: check any ONNX image classifier against a device profile.

Exit code 0 when every budget passes (and a quantized file kept its float model's top-1), 1 when
one fails, 2 for bad input (via ``Natv2Error``).
The work is in ``natv2.export.validate``; torch/onnxruntime are imported only when it runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from natv2.commands.common import (
    DataDir,
    FullTest,
    JsonFlag,
    TestLimit,
    Threads,
    emit_json,
    top1_images,
)
from natv2.errors import Natv2Error
from natv2.untrusted import MAX_RESOLUTION, MAX_RUNS


def validate(
    model: Path = typer.Argument(
        ..., help="The ONNX model (an image classifier, N x C x H x W) or an int8 .tflite file."
    ),
    device: str = typer.Option(
        ..., "--device", help="Device profile: a shipped name (natv2 profiles list) or a TOML path."
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="Measure top-1 on this dataset's test split (e.g. cifar10)."
    ),
    data_dir: DataDir = None,
    resolution: int | None = typer.Option(
        None,
        "--resolution",
        min=1,
        max=MAX_RESOLUTION,
        help="Input H = W, for models with a dynamic input size.",
    ),
    threads: Threads = None,
    warmup: int = typer.Option(
        20, "--warmup", min=0, max=MAX_RUNS, help="Untimed runs before timing."
    ),
    runs: int = typer.Option(100, "--runs", min=1, max=MAX_RUNS, help="Timed runs."),
    limit: TestLimit = None,
    full_test: FullTest = False,
    reference: Path | None = typer.Option(
        None,
        "--reference",
        help="The float ONNX model an int8 MODEL is judged against (top-1 on the same test "
        "images; default: model.onnx beside an export folder's int8 files).",
    ),
    as_json: JsonFlag = False,
) -> None:
    """Params, MACs, flash, peak memory, latency (and top-1) of MODEL against a device profile.

    MODEL is an ONNX file, or a .tflite file (then run by TensorFlow Lite Micro: the arena is
    its peak SRAM; needs pip install "natv2\\[tflite]"). With --dataset, a quantized MODEL
    fails when its top-1 falls more than the profile allows below its float model's."""
    from natv2.device_profiles import load_profile
    from natv2.export.validate import float_reference

    images = top1_images(limit, full_test)
    if reference is None:
        reference = float_reference(model)
    elif not reference.is_file():
        raise Natv2Error(f"--reference {reference}: no such file; give the float ONNX model")
    if model.suffix.lower() == ".tflite":
        profile = load_profile(device)
        _validate_tflite(model, profile, dataset, data_dir, runs, images, reference, as_json)
        return
    from natv2.export.validate import validate_onnx
    from natv2.profiling.counters import image_input, load_onnx

    profile = load_profile(device)  # bad input fails before anything slow runs
    image_input(load_onnx(model), str(model))
    splits = None
    if dataset is not None:
        from natv2.data import load_dataset

        splits = load_dataset(dataset, data_dir=data_dir, download=False).test_sample(images)
    report = validate_onnx(
        model,
        profile,
        dataset=splits,
        dataset_name=dataset,
        resolution=resolution,
        threads=threads,
        warmup=warmup,
        runs=runs,
        limit=limit,
        reference=reference,
    )
    _emit(report, as_json)


def _validate_tflite(model, profile, dataset, data_dir, runs, images, reference, as_json) -> None:
    from natv2.export.tflite import require_tflite
    from natv2.export.tflm import validate_tflite

    require_tflite("validating a .tflite file")
    splits = None
    if dataset is not None:
        from natv2.data import load_dataset

        splits = load_dataset(dataset, data_dir=data_dir, download=False).test_sample(images)
    report = validate_tflite(
        model,
        profile,
        dataset=splits,
        dataset_name=dataset,
        runs=min(runs, 20),
        reference=reference,
    )
    _emit(report, as_json)


def _emit(report, as_json: bool) -> None:
    """Print an ONNX or TFLite validation report; exit 1 when the model does not fit."""
    if as_json:
        emit_json(report.to_json())
    else:
        typer.echo(report.to_text())
    if report.exit_code:
        raise typer.Exit(report.exit_code)
