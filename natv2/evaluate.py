"""Subnet evaluation: BatchNorm recalibration on a fixed slice of training data, then top-1.

Subnets are evaluated as materialised plain modules: on this code base that is faster than
running the sliced supernet (no per-forward weight slicing or kernel transforms; measured by
``benchmarks/evaluation.py``), and recalibrating a plain module's BatchNorm leaves the
supernet's statistics untouched. Prepared batches are cached per resolution, because the same
validation and calibration images are used for every subnet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from natv2.accelerator import Accelerator
from natv2.data import DatasetSplits, ImageSet
from natv2.space import Arch
from natv2.supernet.materialize import materialize
from natv2.supernet.network import OFAv2Supernet


def _stack(images: ImageSet, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    xs, ys = [], []
    for i in range(len(images)):
        image, label = images[i]
        xs.append(image)
        ys.append(label)
    x = torch.stack(xs)
    y = torch.as_tensor(ys, dtype=torch.long)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


@dataclass
class EvalData:
    """Validation (or test) and calibration images, prepared once per resolution."""

    data: DatasetSplits
    split: ImageSet
    calibration: ImageSet
    acc: Accelerator
    batch_size: int = 250
    # int8 calibration images (``evaluate_int8``): the export's, so that the search's int8
    # top-1 is the exported file's
    quantization: ImageSet | None = None
    _raw: dict[str, list] = field(default_factory=dict, repr=False)
    _prepared: dict[tuple[str, int], list] = field(default_factory=dict, repr=False)

    def batches(self, which: str, resolution: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Prepared (images, labels) batches of ``which``: ``eval`` (the split), ``calib``
        (BatchNorm recalibration) or ``quant`` (int8 calibration)."""
        key = (which, resolution)
        if key not in self._prepared:
            if which not in self._raw:
                images = {"eval": self.split, "calib": self.calibration}.get(which)
                if which == "quant":
                    images = self.quantization
                if images is None:
                    raise ValueError(f"no {which} images in this EvalData")
                self._raw[which] = _stack(images, self.batch_size)
            self._prepared[key] = [
                (
                    self.acc.to_device(self.data.prepare_batch(x, resolution, train=False)),
                    y.to(self.acc.device),
                )
                for x, y in self._raw[which]
            ]
        return self._prepared[key]


@torch.no_grad()
def recalibrate_bn(module: nn.Module, batches) -> None:
    """OFA's reset_running_statistics: exact mean/var over the calibration batches."""
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    module.train()
    for x, _ in batches:
        module(x)
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    module.eval()


@torch.no_grad()
def top1_and_loss(module: nn.Module, batches, acc: Accelerator) -> tuple[float, float]:
    module.eval()
    correct = 0
    loss = torch.zeros((), device=acc.device)
    n = 0
    for x, y in batches:
        with acc.autocast():
            out = module(x)
        loss += F.cross_entropy(out.float(), y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
        n += len(y)
    return float(correct) / n, float(loss) / n


def evaluate_subnet(
    supernet: OFAv2Supernet, arch: Arch, cache: EvalData, recalibrate: bool = True
) -> dict[str, float]:
    """Top-1 (fraction) and loss of ``arch`` on the cached split, BatchNorm recalibrated."""
    net = materialize(supernet, arch)
    if cache.acc.is_cuda:
        net = net.to(memory_format=torch.channels_last)
    if recalibrate:
        recalibrate_bn(net, cache.batches("calib", arch.resolution))
    top1, loss = top1_and_loss(net, cache.batches("eval", arch.resolution), cache.acc)
    return {"top1": top1, "loss": loss}


@torch.no_grad()
def evaluate_int8(supernet: OFAv2Supernet, arch: Arch, cache: EvalData) -> float:
    """Top-1 of the subnet's microcontroller int8 file (``natv2 export``'s ``model.int8.onnx``:
    BatchNorm recalibrated as ``evaluate_subnet`` does, int8 calibrated on
    ``cache.quantization``) on the cached split, run by onnxruntime."""
    from natv2.export.quantize import int8_top1

    net = materialize(supernet, arch)
    recalibrate_bn(net, cache.batches("calib", arch.resolution))
    r = arch.resolution
    calibration = [x.cpu().numpy() for x, _ in cache.batches("quant", r)]
    batches = [(x.cpu().numpy(), y.cpu().numpy()) for x, y in cache.batches("eval", r)]
    return int8_top1(net.cpu().eval(), r, calibration, batches)
