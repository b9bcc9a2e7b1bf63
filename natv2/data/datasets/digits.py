"""``digits``: scikit-learn's 8x8 digits, values 0..16 rescaled to 0..255.

S = 8; splits 1,258 / 180 / 359 (70 / 10 / 20 % of 1,797, carved); statistics from the train split.
"""

from __future__ import annotations

import numpy as np
import torch

from natv2.data.images import fit_images, to_rgb_nchw
from natv2.data.imagesets import TensorImageSet
from natv2.data.registry import ReadRequest
from natv2.data.splits import DatasetSplits, make_splits


def read(request: ReadRequest) -> DatasetSplits:
    size, seed = request.storage_size, request.split_seed
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.data.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    s = size
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    pool = TensorImageSet(fit_images(to_rgb_nchw(x), s), labels, "digits")
    classes = [str(i) for i in range(10)]
    return make_splits(
        "digits", pool, classes=classes, storage_size=s, split_seed=seed, augment="translate"
    )
