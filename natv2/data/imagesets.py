"""The split containers: uint8 images 3xSxS with labels, in memory or read lazily from files.

Every split records the pool it came from (``source``) and its positions there (``indices``), so
splits can be checked for overlap and a run can record exactly which images it saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from natv2.data.images import read_image


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
