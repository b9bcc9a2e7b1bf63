"""Datasets, their splits, and the batch transform every command shares.

One ``--dataset`` string selects a dataset (:func:`load_dataset`): ``mnist5k`` (the default),
``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``tinyimagenet``,
``imagefolder:PATH`` or ``npz:PATH``; each reader's module in :mod:`natv2.data.datasets` says
what it reads and how it splits. Images are kept as uint8 tensors Nx3xSxS
(:mod:`~natv2.data.images`, :mod:`~natv2.data.imagesets`); splits are stratified and seeded by a
constant (:mod:`~natv2.data.splits`); batches become network input through
:class:`BatchTransform` (:mod:`~natv2.data.transforms`) and come from :func:`make_loader`
(:mod:`~natv2.data.loader`).

The names below load on first use (PEP 562), so that the CLI can read the reader registry
(:mod:`natv2.data.registry`, its ``--dataset`` help) at start-up without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from natv2.lazy import lazy_names

if TYPE_CHECKING:
    from natv2.data.datasets.cifar import (
        CIFAR10_MEAN,
        CIFAR10_STD,
        CIFAR100_MEAN,
        CIFAR100_STD,
        CIFAR_VAL_FRACTION,
    )
    from natv2.data.datasets.npz import MAX_IMAGE_SIDE, MAX_NPZ_BYTES
    from natv2.data.datasets.tinyimagenet import (
        TINY_IMAGENET_MEAN,
        TINY_IMAGENET_STD,
        TINY_IMAGENET_URL,
        TINY_VAL_FRACTION,
    )
    from natv2.data.images import (
        IMAGE_EXTENSIONS,
        MAX_IMAGE_PIXELS,
        fit_images,
        read_image,
        to_rgb_nchw,
    )
    from natv2.data.imagesets import FileImageSet, ImageSet, TensorImageSet
    from natv2.data.load import DEFAULT_DATA_DIR, load_dataset
    from natv2.data.loader import make_loader
    from natv2.data.registry import DEFAULT_DATASET, SPECS
    from natv2.data.splits import (
        SPLIT_SEED,
        TEST_FRACTION,
        VAL_FRACTION,
        DatasetSplits,
        require_classes,
        split_indices,
    )
    from natv2.data.stats import STATS_SAMPLE, channel_stats
    from natv2.data.transforms import Augment, BatchTransform, Stats

#: public name -> the submodule (under natv2.data) that defines it
_HOMES = {
    "CIFAR10_MEAN": "datasets.cifar",
    "CIFAR10_STD": "datasets.cifar",
    "CIFAR100_MEAN": "datasets.cifar",
    "CIFAR100_STD": "datasets.cifar",
    "CIFAR_VAL_FRACTION": "datasets.cifar",
    "MAX_IMAGE_SIDE": "datasets.npz",
    "MAX_NPZ_BYTES": "datasets.npz",
    "TINY_IMAGENET_MEAN": "datasets.tinyimagenet",
    "TINY_IMAGENET_STD": "datasets.tinyimagenet",
    "TINY_IMAGENET_URL": "datasets.tinyimagenet",
    "TINY_VAL_FRACTION": "datasets.tinyimagenet",
    "IMAGE_EXTENSIONS": "images",
    "MAX_IMAGE_PIXELS": "images",
    "fit_images": "images",
    "read_image": "images",
    "to_rgb_nchw": "images",
    "FileImageSet": "imagesets",
    "ImageSet": "imagesets",
    "TensorImageSet": "imagesets",
    "DEFAULT_DATA_DIR": "load",
    "load_dataset": "load",
    "make_loader": "loader",
    "DEFAULT_DATASET": "registry",
    "SPECS": "registry",
    "SPLIT_SEED": "splits",
    "TEST_FRACTION": "splits",
    "VAL_FRACTION": "splits",
    "DatasetSplits": "splits",
    "require_classes": "splits",
    "split_indices": "splits",
    "STATS_SAMPLE": "stats",
    "channel_stats": "stats",
    "Augment": "transforms",
    "BatchTransform": "transforms",
    "Stats": "transforms",
}

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR_VAL_FRACTION",
    "DEFAULT_DATASET",
    "DEFAULT_DATA_DIR",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "MAX_NPZ_BYTES",
    "SPECS",
    "SPLIT_SEED",
    "STATS_SAMPLE",
    "TEST_FRACTION",
    "TINY_IMAGENET_MEAN",
    "TINY_IMAGENET_STD",
    "TINY_IMAGENET_URL",
    "TINY_VAL_FRACTION",
    "VAL_FRACTION",
    "Augment",
    "BatchTransform",
    "DatasetSplits",
    "FileImageSet",
    "ImageSet",
    "Stats",
    "TensorImageSet",
    "channel_stats",
    "fit_images",
    "load_dataset",
    "make_loader",
    "read_image",
    "require_classes",
    "split_indices",
    "to_rgb_nchw",
]


__getattr__, __dir__ = lazy_names(__name__, _HOMES)
