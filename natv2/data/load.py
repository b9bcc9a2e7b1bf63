"""``load_dataset``: the one entry point from a ``--dataset`` string to loaded splits.

It parses the string, checks what every reader shares (the storage size, a PATH where one is
due) and hands a :class:`~natv2.data.registry.ReadRequest` to the reader the registry names.
"""

from __future__ import annotations

from pathlib import Path

from natv2.data.registry import REGISTRY, SPECS, ReadRequest
from natv2.data.splits import SPLIT_SEED, DatasetSplits
from natv2.errors import Natv2Error

# Where datasets on disk are looked for when no --data-dir is given.
DEFAULT_DATA_DIR = Path("data")


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
    """Load the dataset a ``--dataset`` string names (:data:`~natv2.data.registry.READERS`).

    ``data_dir`` (default ``./data``) is where cifar10/cifar100/tinyimagenet/mnist/fashion-mnist
    live; ``download`` lets torchvision fetch CIFAR, MNIST and Fashion-MNIST; ``storage_size``
    overrides the side images are stored at.
    """
    _check_storage_size(storage_size)
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    root = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    reader = REGISTRY.get(kind)
    takes_path = reader is not None and reader.takes_path
    if takes_path and not arg:
        raise Natv2Error(f"dataset '{spec}' needs a path: write {kind}:PATH")
    if arg and not takes_path:
        raise Natv2Error(f"dataset '{spec}' takes no ':' argument; valid: {', '.join(SPECS)}")
    if reader is None:
        raise Natv2Error(f"unknown dataset '{spec}'; valid: {', '.join(SPECS)}")
    request = ReadRequest(
        name=reader.name,
        path=Path(arg).expanduser() if takes_path else None,
        data_dir=root,
        download=download,
        storage_size=storage_size or reader.storage_size,
        split_seed=split_seed,
    )
    return reader.read(request)
