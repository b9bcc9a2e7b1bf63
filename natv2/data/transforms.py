"""The batch transform: uint8 batches to normalised float input, with the dataset's augmentation.

Datasets hand out uint8 images; resizing to the subnet's resolution (elastic, 48..64 px, varying
per batch), augmentation and normalisation run on whole batches on whatever device the batch is
on, so per-image transforms in DataLoader workers never become the bottleneck.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Augment = Literal["none", "translate", "crop_flip", "rrc_flip"]
Stats = tuple[float, float, float]


def _generator(gen: torch.Generator | int | None) -> torch.Generator | None:
    if isinstance(gen, int):
        return torch.Generator().manual_seed(gen)
    return gen


@dataclass(frozen=True)
class BatchTransform:
    """uint8 batch → normalised float batch at a resolution, with the dataset's augmentation.

    Works on whole batches on their own device (CPU or CUDA), because the resolution is elastic
    (it changes from batch to batch) and per-image transforms in workers would be the bottleneck.
    Random parameters are drawn on the generator's device (CPU for an int seed), so a seed gives
    the same augmentation whatever device the batch is on.

    ``augment``: ``translate`` (random shift up to ``pad`` px, zero fill, no flip: digits),
    ``crop_flip`` (``pad``-px zero padding + random crop at storage size, horizontal flip: CIFAR),
    ``rrc_flip`` (random-resized crop, area ``scale`` and aspect ``ratio`` jitter, then flip:
    Tiny ImageNet and image folders), ``none``.
    """

    mean: Stats
    std: Stats
    augment: Augment = "none"
    pad: int = 0
    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(
        self,
        x: torch.Tensor,
        resolution: int,
        train: bool,
        generator: torch.Generator | int | None = None,
    ) -> torch.Tensor:
        """``x`` uint8 Bx3xSxS → float32 Bx3xRxR. ``generator``: a torch.Generator or an int
        seed (None: torch's default generator); only used when ``train``."""
        if x.dtype != torch.uint8:
            raise TypeError(f"prepare_batch expects a uint8 batch, got {x.dtype}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"prepare_batch expects Bx3xSxS, got {tuple(x.shape)}")
        xf = x.float().div_(255.0)
        if train and self.augment != "none":
            gen = _generator(generator)
            if self.augment in ("translate", "crop_flip"):
                xf = _random_shift(xf, self.pad, gen)
            elif self.augment == "rrc_flip":
                xf = _random_resized_crop(xf, resolution, self.scale, self.ratio, gen)
            if self.augment in ("crop_flip", "rrc_flip"):
                xf = _random_flip(xf, gen)
        if xf.shape[-2:] != (resolution, resolution):
            size = (resolution, resolution)
            xf = F.interpolate(xf, size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, dtype=xf.dtype, device=xf.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=xf.dtype, device=xf.device).view(1, 3, 1, 1)
        return (xf - mean) / std


def _gen_device(gen: torch.Generator | None) -> torch.device:
    return gen.device if gen is not None else torch.device("cpu")


def _random_shift(x: torch.Tensor, pad: int, gen: torch.Generator | None) -> torch.Tensor:
    """Per-image random crop of the zero-padded batch back to its size (= shift by ≤ pad px)."""
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    dev = _gen_device(gen)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=dev).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=dev).to(x.device)
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows, cols]


def _random_flip(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    flip = torch.rand(len(x), generator=gen, device=_gen_device(gen)).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _random_resized_crop(
    x: torch.Tensor,
    resolution: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    gen: torch.Generator | None,
) -> torch.Tensor:
    """Per-image random box (area fraction in ``scale``, aspect in ``ratio``) resized to R.

    ``roi_align`` with adaptive sampling averages several samples per output pixel, so shrinking
    a box is antialiased like the eval path's resize.
    """
    from torchvision.ops import roi_align

    b, _, h, w = x.shape
    dev = _gen_device(gen)
    u = torch.rand(4, b, generator=gen, device=dev, dtype=torch.float64).cpu()
    area = scale[0] + (scale[1] - scale[0]) * u[0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1]
    aspect = torch.exp(log_r)
    bw = torch.sqrt(area * aspect).clamp(max=1.0) * w
    bh = torch.sqrt(area / aspect).clamp(max=1.0) * h
    x0 = (w - bw) * u[2]
    y0 = (h - bh) * u[3]
    boxes = torch.stack([torch.arange(b, dtype=torch.float64), x0, y0, x0 + bw, y0 + bh], dim=1)
    boxes = boxes.to(device=x.device, dtype=x.dtype)
    return roi_align(x, boxes, (resolution, resolution), 1.0, -1, True)


def transform_for(augment: Augment, mean: Stats, std: Stats, size: int) -> BatchTransform:
    """The transform of ``augment`` for images stored at ``size`` px (shift and pad scale)."""
    if augment == "translate":
        # ±2 px at 28 px; ±1 px at 8 px.
        return BatchTransform(mean, std, "translate", pad=max(1, round(size * 0.08)))
    if augment == "crop_flip":
        return BatchTransform(mean, std, "crop_flip", pad=max(1, round(4 * size / 32)))
    return BatchTransform(mean, std, augment)
