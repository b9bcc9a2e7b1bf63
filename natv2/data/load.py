"""``load_dataset``: the one entry point from a ``--dataset`` string to loaded splits."""

from __future__ import annotations

from pathlib import Path

from natv2.data.datasets import cifar, digits, imagefolder, mnist5k, npz, tinyimagenet
from natv2.data.splits import SPLIT_SEED, DatasetSplits
from natv2.errors import Natv2Error

DEFAULT_DATASET = "mnist5k"
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


def _check_storage_size(storage_size: int | None) -> None:
    if storage_size is not None and not 8 <= storage_size <= 512:
        raise Natv2Error(
            f"storage size {storage_size} is out of range: expected 8..512 pixels "
            "(the side images are kept at before batch resizing)"
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
        loader = imagefolder.read if kind == "imagefolder" else npz.read
        return loader(path, storage_size, split_seed)
    if arg:
        raise Natv2Error(f"dataset '{spec}' takes no ':' argument; valid: {', '.join(SPECS)}")
    if kind == "mnist5k":
        return mnist5k.read(storage_size, split_seed)
    if kind == "digits":
        return digits.read(storage_size, split_seed)
    if kind in ("cifar10", "cifar100"):
        return cifar.read(kind, root, download, storage_size, split_seed)
    if kind == "tinyimagenet":
        return tinyimagenet.read(root, storage_size, split_seed)
    raise Natv2Error(f"unknown dataset '{spec}'; valid: {', '.join(SPECS)}")
