"""int8-aware fine-tuning: teach a plain module the rounding its int8 files will do.

Why: the microcontroller files hold per-channel int8 weights and per-tensor int8 activations
(``natv2.export.quantize``). A network trained in float has never seen that rounding, and the
smallest subnets, whose few channels each carry a lot, lose top-1 to it: on this project's
supernets the exit-1 subnets of the mnist5k and shapes fronts lost 1-2 points in int8 (exact
arithmetic), beyond the 1 point a profile allows by default (``Profile.max_top1_drop``).

How (quantization-aware training, Jacob et al., "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", CVPR 2018; Krishnamoorthi, "Quantizing deep
convolutional networks for efficient inference: a whitepaper", 2018): the forward pass rounds
every convolution and linear weight per output channel (symmetric, -127..127, the grid both
quantizers use) and every activation the int8 graph quantizes (per tensor, asymmetric, 256
levels, ranges from the calibration images then followed by a moving average), with
straight-through gradients. BatchNorm is frozen in eval mode: the exporter folds it into the
convolution, and a per-channel scale commutes with per-channel weight rounding, so rounding the
unfolded weight is rounding the folded one. The loss distils the module's own float logits (KL
at temperature 1): what the int8 file is judged on is agreement with float. At the end every
weight is snapped onto its int8 grid, so onnxruntime's and ai-edge-quantizer's per-channel
max-abs scales reproduce it exactly and weight rounding costs nothing more.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from natv2.data import DatasetSplits, make_loader
from natv2.supernet.plain import (
    FirstBlock,
    InvertedResidual,
    ParallelLevel,
    SqueezeExcite,
    TransformBranch,
)

__all__ = [
    "Int8Check",
    "Int8Finetune",
    "check_images",
    "check_int8",
    "int8_finetune",
    "prepare_for_int8",
    "snap_weights",
    "zero_dead_inputs",
]

#: weights: symmetric int8 on -127..127 (onnxruntime's and TFLite's per-channel weight grid)
_W_MAX = 127
#: modules whose output the int8 graph quantizes (a tensor rounded twice at the same range
#: is rounded once): every convolution's output (BatchNorm's, which the exporter folds into the
#: convolution; docs/training-experiments.md measures what it adds), activations, pools, the
#: additions of residuals and branches, the squeeze-excite product, the classifier
_ACTIVATION_POINTS = (
    nn.BatchNorm2d,
    nn.ReLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Linear,
    InvertedResidual,
    ParallelLevel,
    SqueezeExcite,
    FirstBlock,
    TransformBranch,
)


@dataclass(frozen=True)
class Int8Finetune:
    """How long and how hard the fine-tuning runs."""

    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-4
    ema: float = 0.99  # moving average of the activation ranges
    seed: int = 0


def _weight_grid(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel scale of symmetric int8 weights (max |w| / 127)."""
    dims = tuple(range(1, w.ndim))
    return (w.detach().abs().amax(dim=dims) / _W_MAX).clamp(min=1e-12)


def _fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    scale = _weight_grid(w)
    zero = torch.zeros(len(scale), dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -_W_MAX, _W_MAX)


@torch.no_grad()
def snap_weights(module: nn.Module) -> None:
    """Every convolution and linear weight onto its per-channel int8 grid (in place)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.weight.copy_(_fake_quant_weight(m.weight))


class _Range:
    """A per-tensor activation range: calibrated min/max, then a moving average."""

    def __init__(self, momentum: float) -> None:
        self.lo: float | None = None
        self.hi: float | None = None
        self.momentum = momentum
        self.observe_only = True

    def update(self, t: torch.Tensor) -> None:
        lo, hi = min(float(t.min()), 0.0), max(float(t.max()), 0.0)
        if self.lo is None or self.hi is None:
            self.lo, self.hi = lo, hi
        elif self.observe_only:  # calibration: MinMax over every image, as the exporter
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        else:
            m = self.momentum
            self.lo, self.hi = m * self.lo + (1 - m) * lo, m * self.hi + (1 - m) * hi

    def fake_quant(self, t: torch.Tensor) -> torch.Tensor:
        assert self.lo is not None and self.hi is not None
        scale = max(self.hi - self.lo, 1e-2) / 255.0  # the exporter's MIN_ACTIVATION_RANGE
        zero = round(-128 - self.lo / scale)
        return torch.fake_quantize_per_tensor_affine(t, scale, max(-128, min(127, zero)), -128, 127)


def _hook(rng: _Range) -> Callable:
    def hook(_module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor | None:
        rng.update(output.detach())
        return None if rng.observe_only else rng.fake_quant(output)

    return hook


def _batches(data: DatasetSplits, resolution: int, cfg: Int8Finetune) -> Iterator[tuple]:
    gen = torch.Generator().manual_seed(cfg.seed)
    epoch = 0
    while True:
        loader = make_loader(
            data.train, cfg.batch_size, shuffle=True, seed=cfg.seed + epoch, drop_last=True
        )
        for xb, yb in loader:
            yield data.prepare_batch(xb, resolution, True, gen), yb
        epoch += 1


class _RoundedWeight(nn.Module):
    """A parametrization: the weight as its int8 file will hold it (straight-through)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _fake_quant_weight(w)


def int8_finetune(
    module: nn.Module,
    data: DatasetSplits,
    resolution: int,
    calibration: list[torch.Tensor],
    cfg: Int8Finetune = Int8Finetune(),
    log: Callable[[str], None] = lambda _m: None,
) -> nn.Module:
    """A copy of ``module`` fine-tuned for int8 (module docstring): ``calibration`` (prepared
    batches at ``resolution``, the exporter's calibration images) sets the initial activation
    ranges, then ``cfg.steps`` steps of distillation from ``module``'s own float logits on
    ``data``'s training images; the returned module's weights lie on their int8 grid."""
    teacher = copy.deepcopy(module).eval()
    student = copy.deepcopy(module).eval()  # BatchNorm frozen: the folding the exporter does
    ranges: list[_Range] = []
    hooks = []
    for m in student.modules():
        if isinstance(m, _ACTIVATION_POINTS):
            r = _Range(cfg.ema)
            ranges.append(r)
            hooks.append(m.register_forward_hook(_hook(r)))
    rounded = [m for m in student.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for m in rounded:
        parametrize.register_parametrization(m, "weight", _RoundedWeight())
    try:
        with torch.no_grad():
            for x in calibration:
                student(x)
        for r in ranges:
            r.observe_only = False
        opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
        batches = _batches(data, resolution, cfg)
        for step in range(cfg.steps):
            x, _ = next(batches)
            with torch.no_grad():
                target = F.log_softmax(teacher(x), dim=1)
            out = F.log_softmax(student(x), dim=1)
            loss = F.kl_div(out, target, log_target=True, reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (step + 1) % 100 == 0 or step + 1 == cfg.steps:
                log(
                    f"int8 fine-tuning: step {step + 1}/{cfg.steps}, distillation {loss.item():.4f}"
                )
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():  # bake the rounded weights in: each now lies on its int8 grid
        for m in rounded:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return student.eval()


@dataclass(frozen=True)
class Int8Check:
    """float and int8 (exact arithmetic) top-1 of one module on the same labelled images, and
    how often the int8 file predicts what the reference float model predicts."""

    float_top1: float
    int8_top1: float
    images: int
    agreement: float  # int8 against the reference float model's classes

    @property
    def drop(self) -> float:
        return self.float_top1 - self.int8_top1

    def to_dict(self) -> dict[str, float | int]:
        return {
            "float_top1": self.float_top1,
            "int8_top1": self.int8_top1,
            "agreement_with_float": self.agreement,
            "images": self.images,
        }


#: labelled images the int8 check before export runs on: enough that 1 point is 20 images
CHECK_IMAGES = 2000
#: int8 may disagree with float on this many times the profile's top-1 tolerance before it is
#: repaired: flips cancel in top-1 (a file that changes 8 % of the classes lost 0.8 points of
#: top-1 on digits' training images and 3.3 on its test split), so the check counts them too
DISAGREEMENT_FACTOR = 2.0


def check_images(data: DatasetSplits, n: int = CHECK_IMAGES) -> list[tuple[torch.Tensor, int]]:
    """The validation split, topped up with training images to ``n``: a small validation split
    (digits has 180 images, one is 0.6 points) hides drops of several points. Training images
    serve as well here: what is measured is what quantization changes, not generalisation."""
    items = [data.val[i] for i in range(min(n, len(data.val)))]
    items += [data.train[i] for i in range(min(n - len(items), len(data.train)))]
    return [(x, int(y)) for x, y in items]


def _check_batch(data: DatasetSplits, resolution: int) -> tuple[torch.Tensor, np.ndarray]:
    """:func:`check_images` prepared at ``resolution``, and their labels."""
    items = check_images(data)
    xs = torch.stack([x for x, _ in items])
    return data.prepare_batch(xs, resolution, train=False), np.array([y for _, y in items])


@torch.no_grad()
def _classes(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    return module.eval()(x).argmax(1).numpy()


def _check(
    module: nn.Module,
    x: torch.Tensor,
    labels: np.ndarray,
    resolution: int,
    calibration,
    reference: np.ndarray | None,
) -> Int8Check:
    """:func:`check_int8` on a prepared batch; ``reference``: the float classes int8 is
    compared with (None: ``module``'s own)."""
    from natv2.export.quantize import int8_predictions

    pred = _classes(module, x)
    ref = pred if reference is None else reference
    cal = [c.numpy() for c in calibration]
    q = int8_predictions(module, resolution, cal, [x.numpy()])
    return Int8Check(
        float(np.mean(pred == labels)),
        float(np.mean(q == labels)),
        len(labels),
        float(np.mean(q == ref)),
    )


def check_int8(
    module: nn.Module,
    data: DatasetSplits,
    resolution: int,
    calibration,
    reference: nn.Module | None = None,
) -> Int8Check:
    """float and int8 top-1 of ``module`` on :func:`check_images` (the int8 file as the
    exporter writes it, calibrated on ``calibration``, run exactly), and the int8 file's
    agreement with ``reference``'s float classes (default: ``module``'s own)."""
    x, labels = _check_batch(data, resolution)
    ref = None if reference is None else _classes(reference, x)
    return _check(module, x, labels, resolution, calibration, ref)


def _needs_repair(check: Int8Check, reference_top1: float, tolerance: float) -> bool:
    """Does an int8 file lose too much: top-1 against the reference float's, or agreement?"""
    return (
        reference_top1 - check.int8_top1 > tolerance
        or 1.0 - check.agreement > DISAGREEMENT_FACTOR * tolerance
    )


@torch.no_grad()
def zero_dead_inputs(module: nn.Module, calibration: list[torch.Tensor]) -> int:
    """Zero the weights that read an input channel which is exactly zero on every calibration
    image (a ReLU channel that never fires); return how many input channels that was.

    Such weights change no output on the data, but a large one sets its output channel's
    per-channel int8 scale and rounds that channel's live weights to zero. Convolutions with
    groups = 1 and linear layers only (a depthwise channel's weights are its own scale)."""
    layers = [
        m
        for m in module.modules()
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)
    ]
    alive: dict[nn.Module, torch.Tensor] = {}

    def record(m: nn.Module, inputs) -> None:
        x = inputs[0]
        dims = (0, 2, 3) if x.ndim == 4 else (0,)
        seen = (x != 0).any(dim=dims)
        alive[m] = seen if m not in alive else alive[m] | seen

    hooks = [m.register_forward_pre_hook(record) for m in layers]
    try:
        module.eval()
        for x in calibration:
            module(x)
    finally:
        for h in hooks:
            h.remove()
    dead = 0
    for m, seen in alive.items():
        weight = m.weight
        assert isinstance(weight, torch.Tensor)
        if seen.all() or not seen.any():
            continue
        keeps = weight[:, seen].abs().reshape(len(weight), -1).amax(dim=1) > 0
        if not keeps.any():
            continue
        # an output channel left with no weight at all keeps its dead ones: an all-zero channel
        # gets a vanishing int8 scale, and its int32 bias (scaled by input x weight scale)
        # saturates in the TFLite file (measured: an SE gate whose hidden units all died, TFLM
        # top-1 43.7 % against 83.8 % float); its output is its bias on the data either way
        rows = keeps.nonzero().flatten()
        cols = (~seen).nonzero().flatten()
        weight[rows[:, None], cols[None, :]] = 0.0
        dead += len(cols)
    return dead


def prepare_for_int8(
    module: nn.Module,
    data: DatasetSplits,
    resolution: int,
    calibration: list[torch.Tensor],
    tolerance: float,
    cfg: Int8Finetune = Int8Finetune(),
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[nn.Module, dict | None]:
    """The module to quantize for the int8 files, and what was done (None: nothing). When the
    int8 file of ``module`` falls more than ``tolerance`` below ``module``'s float top-1 on
    :func:`check_images`, or disagrees with it on more than ``DISAGREEMENT_FACTOR`` times that:
    first the weights of input channels that never fire are zeroed (:func:`zero_dead_inputs`,
    exact on the data); if that is not enough, a copy is fine-tuned for int8
    (:func:`int8_finetune`) and kept when its int8 file agrees with ``module`` more often.

    Everything is measured against ``module``'s float model, never a copy's: the float file
    stays ``module`` (a fine-tuned copy's own float top-1 may fall, and judging int8 against it
    would hide that). The record holds every check, on the same images."""
    x, labels = _check_batch(data, resolution)  # one batch and one reference for every check
    searched = _classes(module, x)
    before = _check(module, x, labels, resolution, calibration, searched)
    reference = before.float_top1
    if not _needs_repair(before, reference, tolerance):
        return module, None
    record: dict = {"reference_float_top1": reference, "before": before.to_dict()}
    best, best_check = module, before
    cleaned = copy.deepcopy(module)
    dead = zero_dead_inputs(cleaned, calibration)
    if dead:
        check = _check(cleaned, x, labels, resolution, calibration, searched)
        log(
            f"int8 loses {100 * before.drop:.2f} points of top-1 on {before.images} images "
            f"(agrees with float on {100 * before.agreement:.1f} %); zeroed the weights of {dead} "
            f"input channels that never fire: int8 {100 * check.int8_top1:.2f} %, agreement "
            f"{100 * check.agreement:.1f} %"
        )
        record["dead_inputs_zeroed"] = {"channels": dead, "after": check.to_dict()}
        if not _needs_repair(check, reference, tolerance):
            return cleaned, record
        if check.agreement >= best_check.agreement:
            best, best_check = cleaned, check
    log(
        f"int8 loses {100 * (reference - best_check.int8_top1):.2f} points of top-1 "
        f"({100 * reference:.2f} -> {100 * best_check.int8_top1:.2f} %) and agrees with float on "
        f"{100 * best_check.agreement:.1f} % of {before.images} images: fine-tuning a copy for "
        f"int8 ({cfg.steps} steps)"
    )
    tuned = int8_finetune(best, data, resolution, calibration, cfg, log)
    after = _check(tuned, x, labels, resolution, calibration, searched)
    log(
        f"after int8 fine-tuning: int8 {100 * after.int8_top1:.2f} % against the float model's "
        f"{100 * reference:.2f} %, agreement {100 * after.agreement:.1f} % on the same images"
    )
    kept = after.agreement > best_check.agreement
    record["finetune"] = {
        "method": "quantization-aware fine-tuning, distilled from the float model (natv2.qat)",
        "steps": cfg.steps,
        "lr": cfg.lr,
        "after": after.to_dict(),
        "kept": kept,
    }
    return (tuned if kept else best), record
