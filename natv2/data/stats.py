"""Normalisation statistics computed from a train split (datasets without published ones)."""

from __future__ import annotations

import numpy as np
import torch

from natv2.data.imagesets import ImageSet, TensorImageSet
from natv2.data.transforms import Stats

# Images sampled to estimate mean/std of a lazily loaded dataset.
STATS_SAMPLE = 1000


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[Stats, Stats]:
    """Per-channel mean and std of uint8 Nx3xHxW images on the 0..1 scale."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].to(torch.float64) / 255.0
        total += part.sum(dim=(0, 2, 3))
        total_sq += (part * part).sum(dim=(0, 2, 3))
    count = len(images) * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp(min=0).sqrt().clamp(min=1.0 / 255)
    m, d = mean.tolist(), std.tolist()
    return (m[0], m[1], m[2]), (d[0], d[1], d[2])


def sample_stats(images: ImageSet, seed: int) -> tuple[Stats, Stats]:
    if isinstance(images, TensorImageSet):
        return channel_stats(images.images)
    n = min(len(images), STATS_SAMPLE)
    pick = np.sort(np.random.default_rng(seed).choice(len(images), n, replace=False))
    return channel_stats(torch.stack([images[int(i)][0] for i in pick]))
