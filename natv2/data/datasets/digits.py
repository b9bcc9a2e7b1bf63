"""``digits``: scikit-learn's 8x8 digits, values 0..16 rescaled to 0..255.

S = 8; splits 1,258 / 180 / 359 (70 / 10 / 20 % of 1,797, carved); statistics from the train split.
"""

from __future__ import annotations

import numpy as np

from natv2.data.images import to_rgb_nchw
from natv2.data.splits import DatasetSplits, from_tensor_pool


def read(size: int | None, seed: int) -> DatasetSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.data.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    names = tuple(str(i) for i in range(10))
    return from_tensor_pool(
        "digits", to_rgb_nchw(x), bunch.target.astype(np.int64), 10, size or 8, seed, names
    )
