"""``npz:PATH``: arrays ``x`` (uint8 NxHxW or NxHxWxC, C in {1, 3}) and ``y`` (int labels 0..K-1).

Optionally ``x_val, y_val, x_test, y_test``; a missing split is carved 70 / 10 / 20 %. S =
``storage_size`` (default 64); statistics from the train split. The file is untrusted input: every
array header is checked against bounds before any array is read.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from natv2.data.images import fit_images, to_rgb_nchw
from natv2.data.imagesets import ImageSet, TensorImageSet
from natv2.data.registry import ReadRequest
from natv2.data.splits import DatasetSplits, make_splits, require_classes
from natv2.errors import Natv2Error
from natv2.untrusted import MAX_CLASSES, MAX_COUNT, path_kind, short_int, shown

#: bounds a hostile npz cannot pass: checked from the array headers, before any array is read
MAX_IMAGE_SIDE = 4096
MAX_NPZ_BYTES = 64 * 2**30


def _npz_header(path: Path, f, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one member, read from its .npy header without loading the data."""
    member = f"{key}.npy"
    try:
        with f.zip.open(member) as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _fortran, dtype = read_header(fh)
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


def read(request: ReadRequest) -> DatasetSplits:
    path, size, seed = request.path, request.storage_size, request.split_seed
    assert path is not None  # load_dataset asks for PATH
    if path_kind(path) != "file":
        raise Natv2Error(
            f"npz: {path} does not exist or is not a file; expected a .npz file with arrays 'x' "
            "(uint8 NxHxW or NxHxWxC) and 'y' (int labels), optionally x_val, y_val, x_test, "
            "y_test"
        )
    arrays = _open_npz(path)
    s = size
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
    return make_splits(
        name,
        pool,
        sets["val"],
        sets["test"],
        classes=[str(i) for i in range(num_classes)],
        storage_size=s,
        split_seed=seed,
        augment="rrc_flip",
    )
