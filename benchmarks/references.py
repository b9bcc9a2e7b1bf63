"""Hand-designed reference models, trained alone for a wall-clock budget and measured through
natv2's own int8 export and validation.

Why: a subnet that ``natv2 search`` hands over is only worth something next to what a user
would train instead on the same data in the same time. The references are MLPerf Tiny's
ResNet-8 (image classification) and torchvision's MobileNetV3-small (docs: REFERENCE.md,
"Hand-designed references"). This module is the reusable part of ``benchmarks/vs_reference.py``:

* :func:`resnet8`, :func:`mobilenet_v3_small` and :func:`build_reference` (the model and the
  resolution it is trained and judged at: ResNet-8 at 32 px, MobileNetV3-small at 64 px; the
  dataset's images are resized from their storage size by natv2's batch transform);
* :func:`train_alone`: AdamW, one-cycle schedule sized from the measured speed of the first
  steps so that the cycle ends at the deadline, label smoothing 0.1, the dataset's training
  augmentation, then float test top-1 in PyTorch;
* :func:`measure`: the trained model through natv2's deployment path (the float ONNX graph at
  natv2's exporter settings with its parity and count checks, ``quantize_int8`` on the 300
  calibration images export uses, ``validate_onnx`` of both files against the profile, and the
  int8 TFLite file through ``natv2.export.tflite`` with TFLM's arena and top-1).

Try one reference (the figures are one run on this machine, not a result)::

    python benchmarks/references.py --model resnet8 --dataset mnist5k --seconds 20 \\
        --device microcontroller-profile
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

import natv2  # noqa: F401  (sets OMP_WAIT_POLICY before torch's OpenMP starts)
from natv2.data import DatasetSplits, load_dataset, make_loader
from natv2.device_profiles import Profile, load_profile
from natv2.errors import Natv2Error
from natv2.export.folder import PARITY_BATCHES, calibration_batches
from natv2.export.onnx import (
    EXPORTER,
    INPUT_NAME,
    CountCheck,
    check_counts,
    check_onnx,
    check_parity,
    ort_session,
    parity_cases,
    set_metadata,
    to_onnx,
)
from natv2.export.quantize import quantize_int8
from natv2.export.validate import ValidationReport, validate_onnx
from natv2.profiling.counters import fvcore_macs, module_params, onnx_costs

#: the resolution each reference is trained and judged at (REFERENCE.md: ResNet-8 is MLPerf
#: Tiny's 32x32 CIFAR model; MobileNetV3-small at 64 px, as the measured Fashion-MNIST row)
RESOLUTIONS = {"resnet8": 32, "mobilenet_v3_small": 64}
#: MLPerf Tiny's published ResNet-8 figures (REFERENCE.md): about 78 k params, 12.5 M MACs
RESNET8_PARAMS = 78_000
RESNET8_MACS = 12_500_000


# ----------------------------------------------------------------------------- models


def _he_normal_(weight: torch.Tensor) -> None:
    """Keras' ``he_normal``: a normal of std sqrt(2 / fan_in) truncated at two std, its std
    divided by 0.8796 (the std of a unit normal truncated there) so the variance stays 2/fan_in."""
    fan_in = weight[0].numel()
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(weight, 0.0, std, -2.0 * std, 2.0 * std)


class _Stack(nn.Module):
    """One ResNet-8 stack: conv-BN-ReLU-conv-BN plus a shortcut (identity, or a 1x1 strided
    conv without BN when the stack downsamples), add, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = (
            nn.Identity() if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, 0)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(self.shortcut(x) + y)


class ResNet8(nn.Module):
    """MLPerf Tiny's ResNet-8 (mlcommons/tiny ``keras_model.py``, ``resnet_v1_eembc``)."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(inplace=True)
        )
        self.stacks = nn.Sequential(_Stack(16, 16, 1), _Stack(16, 32, 2), _Stack(32, 64, 2))
        # the MLPerf model's AveragePooling2D(8) over its 8x8 map at 32 px: a global average
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                _he_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stacks(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def resnet8(num_classes: int, in_channels: int = 3) -> ResNet8:
    """MLPerf Tiny's ResNet-8, as REFERENCE.md describes it. Keras convolutions carry a bias
    (``use_bias`` defaults to True), so these do too; He-normal weights, zero biases. The
    BatchNorms keep PyTorch's defaults (eps 1e-5, momentum 0.1) rather than Keras' (1e-3, 0.99):
    with 0.99 the running statistics of a run of a few hundred steps would still be mostly their
    initial values. At 32x32x3 and 10 classes natv2's counters give 78,186 params (Keras' summary
    of the MLPerf model says 78,666: it adds the BatchNorms' 480 running statistics as
    non-trainable params) and 12,501,632 MACs (convolutions and the dense layer), MLPerf's
    "about 78 k parameters, 12.5 M MACs"."""
    return ResNet8(num_classes, in_channels)


def mobilenet_v3_small(width: float, num_classes: int) -> nn.Module:
    """torchvision's MobileNetV3-small at ``width`` (``width_mult``), random init: what a user
    would take off the shelf (no ImageNet weights: the classifier and the data differ). Its
    BatchNorms are torchvision's (eps 1e-3, momentum 0.01), so after a few dozen steps the
    running statistics are still near their initial values and eval-mode top-1 is near chance;
    budgets of minutes (hundreds of steps) are what it is meant for. At width 0.5, 64 px and
    10 classes: 409,394 params, 1,754,816 MACs by natv2's counters."""
    from torchvision.models import mobilenet_v3_small as build

    return build(weights=None, width_mult=width, num_classes=num_classes)


@dataclass(frozen=True)
class Reference:
    """A reference model and the square input side it is trained and judged at."""

    name: str  # "resnet8" or "mobilenet_v3_small-w0.5"
    module: nn.Module = field(repr=False)
    resolution: int


def build_reference(name: str, num_classes: int, width: float = 0.5) -> Reference:
    """``resnet8`` or ``mobilenet_v3_small`` (at ``width``), with its resolution."""
    if name == "resnet8":
        return Reference(name, resnet8(num_classes), RESOLUTIONS[name])
    if name == "mobilenet_v3_small":
        label = f"{name}-w{width:g}"
        return Reference(label, mobilenet_v3_small(width, num_classes), RESOLUTIONS[name])
    raise ValueError(f"unknown reference {name!r}; valid: {', '.join(RESOLUTIONS)}")


@dataclass(frozen=True)
class Counts:
    """natv2's counts of a module: its params and fvcore MACs at batch 1."""

    params: int
    macs: int


def count(module: nn.Module, resolution: int, in_channels: int = 3) -> Counts:
    """Params and MACs by natv2's own counters (``natv2.profiling.counters``)."""
    shape = (1, in_channels, resolution, resolution)
    return Counts(module_params(module), fvcore_macs(module, shape))


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    """How a reference is trained alone (``train_alone``'s arguments)."""

    seconds: float
    seed: int
    batch_size: int = 128
    lr: float = 4e-3  # the one-cycle peak
    weight_decay: float = 1e-4  # decoupled (AdamW), on conv and linear weights only
    label_smoothing: float = 0.1
    threads: int = 2
    probe_steps: int = 20  # steps timed before the schedule's length is fixed
    channels_last: bool = True  # memory format of weights and batches while training


@dataclass(frozen=True)
class TrainResult:
    """What a training run did and the float test top-1 (PyTorch) it reached."""

    config: TrainConfig
    resolution: int
    steps: int
    schedule_steps: int  # the one-cycle's length, estimated after the probe
    epochs: float  # steps x batch / train size
    seconds: float  # training only (evaluation not included)
    images_per_second: float
    final_loss: float  # mean training loss over the last 20 steps
    float_top1: float  # test split, no augmentation, PyTorch
    test_images: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay on conv and linear weights only: what the MLPerf model's L2 (a kernel
    regulariser) touches; biases and BatchNorm parameters are left alone."""
    decay: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else rest).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]


@torch.no_grad()
def pytorch_top1(
    model: nn.Module, data: DatasetSplits, resolution: int, batch: int = 256
) -> tuple[float, int]:
    """Top-1 of the eval-mode ``model`` on the test split, images prepared without
    augmentation. Returns (accuracy in [0, 1], images)."""
    model.eval()
    correct, n = 0, len(data.test)
    for start in range(0, n, batch):
        items = [data.test[i] for i in range(start, min(start + batch, n))]
        x = data.prepare_batch(torch.stack([x for x, _ in items]), resolution, train=False)
        y = torch.tensor([int(y) for _, y in items])
        correct += int((model(x).argmax(1) == y).sum())
    return correct / n, n


def train_alone(
    model: nn.Module,
    data: DatasetSplits,
    resolution: int,
    seconds: float,
    seed: int,
    batch_size: int = 128,
    lr: float = 4e-3,
    *,
    weight_decay: float = 1e-4,
    label_smoothing: float = 0.1,
    threads: int = 2,
    probe_steps: int = 20,
    channels_last: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``model`` alone on ``data`` for ``seconds`` of wall time, then measure its test
    top-1 in PyTorch.

    The schedule is a one-cycle (``OneCycleLR``: 30 % warm-up from ``lr`` / 25 to ``lr``, cosine
    down to ``lr`` / 25e4) whose length must be known in advance: the first ``probe_steps`` run
    at the cycle's starting rate and are timed, the rest of the budget divided by their speed
    gives the cycle's length, and the schedule is advanced past the probe. Training stops at the
    deadline or when the cycle ends, whichever comes first (a machine that slows down during
    the run cuts the cycle short: ``steps`` < ``schedule_steps`` says so).

    Weight decay: REFERENCE.md's MLPerf recipe puts an L2 of 1e-4 on the kernels (Keras
    ``kernel_regularizer``, coupled with Adam); here it is AdamW's decoupled decay of 1e-4 on
    the conv and linear weights, the nearest AdamW equivalent, not the same update. Mutates
    ``torch``'s thread count and denormal flushing (this is a training process's setup).
    ``channels_last``: NHWC weights and batches, as ``supernet_quality.py`` trains; on this
    2-core host under load, 10-step timings did not separate the two formats clearly.
    """
    config = TrainConfig(
        seconds,
        seed,
        batch_size,
        lr,
        weight_decay,
        label_smoothing,
        threads,
        probe_steps,
        channels_last,
    )
    if seconds <= 0 or batch_size < 1 or probe_steps < 3:
        raise ValueError("seconds > 0, batch_size >= 1 and probe_steps >= 3 are required")
    if len(data.train) < batch_size:  # drop_last would give no batch at all
        raise Natv2Error(f"the train split has fewer than {batch_size} images")
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr / 25.0)
    gen = torch.Generator().manual_seed(seed)
    sched: torch.optim.lr_scheduler.OneCycleLR | None = None
    total = 0
    steps, epoch = 0, 0
    losses: list[float] = []
    t0 = time.perf_counter()
    t_probe = t0
    deadline = t0 + seconds
    done = False
    while not done:
        loader = make_loader(
            data.train, batch_size, shuffle=True, seed=seed + epoch, drop_last=True
        )
        for xb, yb in loader:
            now = time.perf_counter()
            if now >= deadline or (sched is not None and steps >= total):
                done = True
                break
            x = data.prepare_batch(xb, resolution, True, gen).contiguous(memory_format=fmt)
            loss = F.cross_entropy(model(x), yb, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            losses.append(loss.item())
            if sched is not None:
                if steps < total:
                    sched.step()
            elif steps == 2:
                t_probe = time.perf_counter()  # the first two steps carry one-off costs
            elif steps == probe_steps:
                now = time.perf_counter()
                per_step = (now - t_probe) / (probe_steps - 2)
                total = steps + max(1, int((deadline - now) / per_step))
                sched = torch.optim.lr_scheduler.OneCycleLR(
                    opt, max_lr=lr, total_steps=total, div_factor=25.0
                )
                with warnings.catch_warnings():  # "step() before optimizer.step()": on purpose
                    warnings.simplefilter("ignore", UserWarning)
                    for _ in range(steps):  # the probe was the cycle's first steps
                        sched.step()
                if log is not None:
                    log(
                        f"probe: {per_step * 1000:.0f} ms/step over {probe_steps - 2} steps; "
                        f"one-cycle of {total} steps to the deadline"
                    )
        epoch += 1
    elapsed = time.perf_counter() - t0
    model = model.eval()
    top1, n = pytorch_top1(model, data, resolution)
    model.to(memory_format=torch.contiguous_format)
    return TrainResult(
        config=config,
        resolution=resolution,
        steps=steps,
        schedule_steps=total if sched is not None else steps,
        epochs=steps * batch_size / len(data.train),
        seconds=elapsed,
        images_per_second=steps * batch_size / elapsed,
        final_loss=float(np.mean(losses[-20:])) if losses else float("nan"),
        float_top1=top1,
        test_images=n,
    )


# ----------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class FileVerdict:
    """One deployment file as ``natv2 validate`` judges it against the profile."""

    file: str
    top1: float | None  # on the test split (onnxruntime, or TFLM for the .tflite file)
    images: int  # test images top-1 was measured on
    passed: bool
    failed: tuple[str, ...]  # the budgets it exceeds
    unchecked: tuple[str, ...]


@dataclass(frozen=True)
class TfliteFigures:
    """The int8 TFLite file: its size, TFLM's smallest arena and the judged SRAM/flash."""

    file_bytes: int
    arena_bytes: int  # TFLM: activations + persistent part
    activation_bytes: int  # TFLM's head (activation plan)
    judged_flash_bytes: int  # what the profile's runtime flashes (file or constants)
    judged_sram_bytes: int  # what the profile's SRAM budget judges for this runtime
    macs: int  # counted on the flatbuffer (strided 1x1 convs become 2x2: see export/tflite.py)


@dataclass(frozen=True)
class ReferenceReport:
    """What the device profile judges of a trained reference, through natv2's own path."""

    name: str
    dataset: str
    profile: str
    resolution: int
    counts: CountCheck  # MACs (ONNX graph = fvcore) and params (module, folded, graph)
    params: int  # the module's parameters
    macs: int  # the float graph's MACs (= fvcore's)
    flash_bytes: int  # of model.int8.onnx at int8 (natv2's flash rule)
    peak_sram_bytes: int  # int8 peak of live activations of model.int8.onnx
    estimated_latency_ms: float | None  # MACs / the profile's MAC/s
    float_top1: float  # model.onnx, onnxruntime, test split
    int8_top1: float  # model.int8.onnx, onnxruntime
    files: tuple[FileVerdict, ...]
    tflite: TfliteFigures | None
    tflite_note: str | None  # why there is no TFLite figure
    out_dir: str
    seconds: float  # time this measurement took

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["counts"] = self.counts.to_dict()
        return doc


def _float_onnx(
    model: nn.Module, data: DatasetSplits, resolution: int, name: str
) -> tuple[onnx.ModelProto, CountCheck, dict[str, Any]]:
    """The float graph as ``natv2 export`` makes it (``to_onnx``, the checker, parity on random
    and test images, MACs and params counted on module and graph), with metadata; returns the
    graph, the counts and the metadata every file carries."""
    model_onnx = to_onnx(model, resolution)
    check_onnx(model_onnx)
    session = ort_session(model_onnx, threads=2)
    gen = torch.Generator().manual_seed(0)
    big = max(PARITY_BATCHES)
    rand = torch.randn((big, 3, resolution, resolution), generator=gen)
    real = data.prepare_batch(
        torch.stack([data.test[i][0] for i in range(big)]), resolution, train=False
    )
    batches = [("random", rand[:b]) for b in PARITY_BATCHES]
    batches += [(f"{data.name} test images", real[:b]) for b in PARITY_BATCHES]
    check_parity(parity_cases(model, session, batches))
    counts = check_counts(model, model_onnx, (1, 3, resolution, resolution))
    props: dict[str, Any] = {
        "reference": name,
        "resolution": resolution,
        "num_classes": data.num_classes,
        "dataset": data.name,
        "macs": counts.macs_graph,
        "params": counts.params_module,
        "exporter": EXPORTER,
    }
    set_metadata(model_onnx, {**props, "dtype": "float32"})
    check_onnx(model_onnx)
    return model_onnx, counts, props


def _file_verdict(file: str, report: ValidationReport) -> FileVerdict:
    return FileVerdict(
        file=file,
        top1=None if report.accuracy is None else report.accuracy.top1,
        images=0 if report.accuracy is None else report.accuracy.images,
        passed=report.passed,
        failed=tuple(c.name for c in report.verdict.failed),
        unchecked=tuple(report.verdict.unchecked),
    )


def _tflite(
    model: nn.Module,
    resolution: int,
    calib: list[torch.Tensor],
    data: DatasetSplits,
    profile: Profile,
    out: Path,
    tflm_limit: int | None,
) -> tuple[TfliteFigures, FileVerdict]:
    """The int8 TFLite file (``convert_int8``, the ONNX int8 file's calibration images) judged
    by ``validate_tflite``: TFLM's arena, TFLM top-1, the profile's verdict."""
    from natv2.export.tflite import TFLITE_FILE, convert_int8
    from natv2.export.tflm import validate_tflite

    checks = data.prepare_batch(
        torch.stack([data.test[i][0] for i in range(max(PARITY_BATCHES))]), resolution, False
    )
    tfl = convert_int8(model, resolution, calib, check_inputs=checks)
    path = out / TFLITE_FILE
    path.write_bytes(tfl.model)
    v = validate_tflite(path, profile, dataset=data, dataset_name=data.name, limit=tflm_limit)
    figures = TfliteFigures(
        file_bytes=v.file_bytes,
        arena_bytes=v.arena.arena_bytes,
        activation_bytes=v.arena.head_bytes,
        judged_flash_bytes=v.file_bytes
        if profile.flash_cost_key == "tflite_bytes"
        else v.graph.deployed_bytes,
        judged_sram_bytes=v.sram_bytes,
        macs=v.graph.macs,
    )
    verdict = FileVerdict(
        file=TFLITE_FILE,
        top1=None if v.accuracy is None else float(v.accuracy["top1"]),
        images=0 if v.accuracy is None else int(v.accuracy["images"]),
        passed=v.passed,
        failed=tuple(c.name for c in v.verdict.failed),
        unchecked=tuple(v.verdict.unchecked),
    )
    return figures, verdict


def measure(
    model: nn.Module,
    data: DatasetSplits,
    resolution: int,
    profile_name: str,
    out_dir: str | Path,
    *,
    name: str = "reference",
    tflite: bool | None = None,
    tflm_limit: int | None = None,
    latency_runs: int = 20,
    threads: int = 2,
) -> ReferenceReport:
    """Judge a trained ``model`` as ``natv2 export`` + ``natv2 validate`` judge a subnet, so the
    comparison with natv2's subnets is fair.

    Writes ``out_dir/model.onnx`` (natv2's exporter settings, parity and count checks),
    ``model.int8.onnx`` (``quantize_int8``, int8 activations: the microcontroller file,
    calibrated on the same 300 train images ``natv2 export`` uses) and, for int8 profiles with
    the ``tflite`` extra (``tflite=None``) or when asked, ``model.int8.tflite``. Each ONNX file
    is judged by ``validate_onnx`` (top-1 on the whole test split); ``validate_onnx`` counts
    any file at the profile's dtype, so the float file's verdict is the one ``natv2 validate``
    prints for it, not a float32 deployment's. The .tflite file is judged by
    ``validate_tflite`` (TFLM's arena; TFLM top-1 on the first ``tflm_limit`` test images,
    all when None). A TFLite conversion that fails is recorded in ``tflite_note``, not
    raised. torchvision's MobileNetV3-small converts. ResNet-8 does not: ``convert_int8``
    refuses its file for "explicit PAD ops". In stacks 2 and 3 the stack input feeds both the
    padded 3x3 stride-2 conv and the 1x1 stride-2 shortcut; litert-torch's layout pass keeps the
    padded tensor in NCHW (TRANSPOSE, PAD, TRANSPOSE before the conv, 2 PAD and 6 TRANSPOSE ops
    in all) instead of folding the pad into a SAME conv, as it does for natv2's blocks, whose
    padded depthwise input has one consumer. So ResNet-8 has no TFLM figures here.
    """
    from natv2.export.tflite import tflite_available

    t0 = time.perf_counter()
    profile = load_profile(profile_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    float_model, counts, props = _float_onnx(model, data, resolution, name)
    float_path = out / "model.onnx"
    onnx.save(float_model, str(float_path))

    calib = calibration_batches(data, resolution)  # what `natv2 export` calibrates on
    int8_model = quantize_int8(float_model, [b.numpy() for b in calib], input_name=INPUT_NAME)
    set_metadata(int8_model, {**props, "dtype": "int8"})
    check_onnx(int8_model, "the int8 model")
    int8_path = out / "model.int8.onnx"
    onnx.save(int8_model, str(int8_path))
    # at int8 whatever the profile's dtype (validate_onnx counts at the profile's)
    int8_costs = onnx_costs(int8_model, dtype="int8", input_shape=(1, 3, resolution, resolution))

    kw: dict[str, Any] = {"threads": threads, "warmup": 5, "runs": latency_runs}
    v_float = validate_onnx(float_path, profile, dataset=data, dataset_name=data.name, **kw)
    v_int8 = validate_onnx(int8_path, profile, dataset=data, dataset_name=data.name, **kw)
    files = [_file_verdict(float_path.name, v_float), _file_verdict(int8_path.name, v_int8)]

    want_tflite = (profile.dtype == "int8" and tflite_available()) if tflite is None else tflite
    figures, note = None, None
    if not want_tflite:
        note = "not asked for" if tflite is False else "float profile or no tflite extra"
    else:
        try:
            figures, tfl_verdict = _tflite(model, resolution, calib, data, profile, out, tflm_limit)
            files.append(tfl_verdict)
        except Natv2Error as exc:
            note = f"TFLite conversion or TFLM failed: {exc}"
    assert v_float.accuracy is not None and v_int8.accuracy is not None
    return ReferenceReport(
        name=name,
        dataset=data.name,
        profile=profile.name,
        resolution=resolution,
        counts=counts,
        params=counts.params_module,
        macs=counts.macs_graph,
        flash_bytes=int8_costs.flash_bytes,
        peak_sram_bytes=int8_costs.peak_sram_bytes,
        estimated_latency_ms=v_int8.estimated_latency_ms,
        float_top1=v_float.accuracy.top1,
        int8_top1=v_int8.accuracy.top1,
        files=tuple(files),
        tflite=figures,
        tflite_note=note,
        out_dir=str(out),
        seconds=time.perf_counter() - t0,
    )


# ----------------------------------------------------------------------------- CLI


def format_report(train: TrainResult, report: ReferenceReport) -> str:
    """The plain-text table of one reference."""
    c = train.config
    lines = [
        f"reference  {report.name} at {report.resolution} px on {report.dataset}",
        f"counts     {report.params:,} params ({report.counts.params_graph:,} in the graph after "
        f"BatchNorm folding), {report.macs:,} MACs (ONNX graph = fvcore)",
        f"training   {train.steps} steps (one-cycle of {train.schedule_steps}), "
        f"{train.epochs:.1f} epochs, {train.seconds:.1f} s, {train.images_per_second:.0f} img/s; "
        f"AdamW {c.lr:g} wd {c.weight_decay:g}, batch {c.batch_size}, label smoothing "
        f"{c.label_smoothing:g}, {c.threads} threads, seed {c.seed}; final loss "
        f"{train.final_loss:.3f}",
        f"top-1      PyTorch float {100 * train.float_top1:.2f} % ({train.test_images} test "
        f"images); ONNX float {100 * report.float_top1:.2f} %, ONNX int8 "
        f"{100 * report.int8_top1:.2f} %",
        f"int8       flash {report.flash_bytes:,} B, peak SRAM {report.peak_sram_bytes:,} B "
        "(model.int8.onnx)",
    ]
    if report.estimated_latency_ms is not None:
        lines.append(f"latency    {report.estimated_latency_ms:.1f} ms (profile estimate)")
    t = report.tflite
    if t is not None:
        lines.append(
            f"tflite     {t.file_bytes:,} B, TFLM arena {t.arena_bytes:,} B (activations "
            f"{t.activation_bytes:,} B); judged flash {t.judged_flash_bytes:,} B, SRAM "
            f"{t.judged_sram_bytes:,} B; {t.macs:,} MACs in the flatbuffer"
        )
    else:
        lines.append(f"tflite     none: {report.tflite_note}")
    lines.append(f"{'file':<20}{'top-1':>9}  {'test images':<22}verdict on {report.profile}")
    for f in report.files:
        top1 = "" if f.top1 is None else f"{100 * f.top1:.2f} %"
        runtime = "TFLM" if f.file.endswith(".tflite") else "onnxruntime"
        verdict = "pass" if f.passed else f"FAIL ({', '.join(f.failed)})"
        if f.unchecked:
            verdict += f"; unchecked: {', '.join(f.unchecked)}"
        lines.append(f"{f.file:<20}{top1:>9}  {f'{f.images} ({runtime})':<22}{verdict}")

    lines.append(f"files in   {report.out_dir} (measured in {report.seconds:.0f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(RESOLUTIONS), required=True)
    ap.add_argument("--width", type=float, default=0.5, help="MobileNetV3-small's width_mult")
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seconds", type=float, default=60.0, help="training wall-clock budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="microcontroller-profile", help="device profile")
    ap.add_argument("--out", default=None, help="where the files go (default: a temporary dir)")
    ap.add_argument(
        "--tflm-limit", type=int, default=None, help="TFLM top-1 on this many test images"
    )
    ap.add_argument("--no-tflite", action="store_true", help="skip the TFLite file")
    ap.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    args = ap.parse_args(argv)

    data = load_dataset(args.dataset, data_dir=args.data_dir)
    ref = build_reference(args.model, data.num_classes, args.width)
    counts = count(ref.module, ref.resolution)
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else print
    log(
        f"{ref.name} at {ref.resolution} px, {data.num_classes} classes: {counts.params:,} "
        f"params, {counts.macs:,} MACs (natv2.profiling.counters: module_params, fvcore_macs)"
    )
    train = train_alone(ref.module, data, ref.resolution, args.seconds, args.seed, log=log)
    with tempfile.TemporaryDirectory(prefix="natv2-ref-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        report = measure(
            ref.module,
            data,
            ref.resolution,
            args.device,
            out,
            name=ref.name,
            tflite=False if args.no_tflite else None,
            tflm_limit=args.tflm_limit,
        )
    if args.json:
        print(json.dumps({"train": train.to_dict(), "measure": report.to_dict()}, indent=2))
    else:
        print(format_report(train, report))
        if not args.out:
            print("           (a temporary folder, now removed: --out keeps the files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
