"""Train/val/test splits: stratified, deterministic carves, and the loaded dataset they make up.

Every carve is *stratified* (each class contributes its share, rounded by largest remainder so the
totals are exact), disjoint and deterministic: the split seed is the constant :data:`SPLIT_SEED`,
independent of the training seed, so changing the training seed never moves the test set. A
missing split is carved from the pool at a fixed fraction of the pool (val 10 %, test 20 % unless
a reader says otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from natv2.data.imagesets import ImageSet
from natv2.data.stats import sample_stats
from natv2.data.transforms import Augment, BatchTransform, Stats, transform_for
from natv2.errors import Natv2Error
from natv2.untrusted import shown

# Seed of every split carve: a constant, so the training seed never moves the test set.
SPLIT_SEED = 0
# Default carve fractions of a pool without explicit splits (70 / 10 / 20).
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2


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


def stratified_parts(
    labels: np.ndarray | Sequence[int], totals: Sequence[int], seed: int
) -> list[np.ndarray]:
    """Seeded, stratified carve of the indices of ``labels`` into consecutive parts of
    ``totals`` images and a last part with the rest, each sorted.

    Each part takes from every class its proportional share of what the earlier parts left
    (``_allocate``); each class is permuted once by one generator, in class order, so the same
    labels, totals and seed give the same parts (the splits of every dataset depend on it).
    """
    y = np.asarray(labels)
    classes, inverse = np.unique(y, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    left = np.array([len(m) for m in members], dtype=np.int64)
    takes = []
    for total in totals:
        take = _allocate(left, total)
        takes.append(take)
        left = left - take
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(totals) + 1)]
    for c, m in enumerate(members):
        perm = rng.permutation(m)
        start = 0
        for part, take in zip(parts, takes, strict=False):
            part.append(perm[start : start + take[c]])
            start += int(take[c])
        parts[-1].append(perm[start:])
    empty = np.zeros(0, dtype=np.int64)
    return [np.sort(np.concatenate(p)).astype(np.int64) if p else empty for p in parts]


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
    test, val, train = stratified_parts(y, (n_test, n_val), seed)
    return train, val, test


def carve(
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
        train, carved_val, carved_test = carve(train, val_fraction, test_fraction, seed)
        val = val if val is not None else carved_val
        test = test if test is not None else carved_test
    assert val is not None and test is not None
    return train, val, test


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

    def test_sample(self, n: int | None) -> DatasetSplits:
        """This dataset with its test split cut to a fixed, stratified sample of ``n`` images
        (the whole split when ``n`` is None or not smaller), in test order: checks that run
        every image through a slow interpreter (TFLM) see the same images each time, each class
        in its share, whatever order the split was stored in."""
        if n is None or n >= len(self.test):
            return self
        if n < 1:
            raise Natv2Error(f"a test sample needs at least 1 image, got {n}")
        pick, _rest = stratified_parts(self.test.labels.numpy(), (n,), self.split_seed)
        return replace(self, test=self.test.subset(pick))

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


def make_splits(
    name: str,
    train: ImageSet,
    val: ImageSet | None = None,
    test: ImageSet | None = None,
    *,
    classes: Sequence[str],
    storage_size: int,
    split_seed: int,
    augment: Augment,
    stats: tuple[Stats, Stats] | None = None,
) -> DatasetSplits:
    """The one way a reader builds its :class:`DatasetSplits`.

    A missing ``val`` or ``test`` is carved from ``train`` at its default fraction (a reader with
    another fraction carves before calling). ``stats`` are published (mean, std); without them
    they are computed from the train split. ``augment`` picks the transform, sized to
    ``storage_size``; ``classes`` gives the class count.
    """
    train, val, test = _complete_splits(train, val, test, split_seed)
    mean, std = stats if stats is not None else sample_stats(train, split_seed)
    return DatasetSplits(
        name=name,
        num_classes=len(classes),
        storage_size=storage_size,
        mean=mean,
        std=std,
        train=train,
        val=val,
        test=test,
        transform=transform_for(augment, mean, std, storage_size),
        classes=tuple(classes),
        split_seed=split_seed,
    )


def require_classes(name: str, num_classes: int) -> None:
    """A classifier needs two classes: said here, naming the dataset, before any training."""
    if num_classes < 2:
        raise Natv2Error(
            f"dataset {shown(name, 200)} has {num_classes} class; a classifier needs at least 2 "
            "(add images of another class)"
        )
