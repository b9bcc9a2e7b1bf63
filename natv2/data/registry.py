"""The dataset readers by name: what ``--dataset`` accepts, its help text, where each reader lives.

Torch-free on purpose: the CLI builds its ``--dataset`` help from :data:`READERS` at start-up,
and a reader's module (torch, torchvision, PIL) is imported only when a dataset is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from natv2.data.splits import DatasetSplits

DEFAULT_DATASET = "mnist5k"


@dataclass(frozen=True)
class ReadRequest:
    """One parsed ``--dataset`` string and the loading options, as a reader receives them."""

    name: str  # the reader's name, e.g. "cifar100" (one reader module may serve several)
    path: Path | None  # PATH of a reader that takes one (user-expanded), else None
    data_dir: Path  # where datasets on disk live (cifar10, cifar100, tinyimagenet, mnist, ...)
    download: bool  # let torchvision fetch CIFAR, MNIST or Fashion-MNIST
    storage_size: int  # the side images are stored at (the reader's default unless asked)
    split_seed: int


class ReadFn(Protocol):
    """What each reader module defines as ``read``."""

    def __call__(self, request: ReadRequest) -> DatasetSplits: ...


@dataclass(frozen=True)
class Reader:
    """One registry entry: a ``--dataset`` name (``name:PATH`` if ``takes_path``), a one-line
    description for help, and the module whose ``read(request)`` loads it."""

    name: str
    description: str
    module: str
    storage_size: int  # the side images are stored at unless --storage-size says otherwise
    takes_path: bool = False

    @property
    def spec(self) -> str:
        """How ``--dataset`` names it: ``mnist5k``, ``npz:PATH``."""
        return f"{self.name}:PATH" if self.takes_path else self.name

    def read(self, request: ReadRequest) -> DatasetSplits:
        """Import the reader's module (only now) and load the dataset."""
        read: ReadFn = import_module(self.module).read
        return read(request)


_HOME = "natv2.data.datasets"

READERS: tuple[Reader, ...] = (
    Reader("mnist5k", "5,000 MNIST digits, embedded", f"{_HOME}.mnist5k", 28),
    Reader("digits", "scikit-learn's 8x8 digits", f"{_HOME}.digits", 8),
    Reader("mnist", "the 70,000 MNIST digits, IDX files under --data-dir", f"{_HOME}.idx", 28),
    Reader("fashion-mnist", "Zalando's Fashion-MNIST, IDX files or Debian's", f"{_HOME}.idx", 28),
    Reader("cifar10", "torchvision's files under --data-dir", f"{_HOME}.cifar", 32),
    Reader("cifar100", "torchvision's files under --data-dir", f"{_HOME}.cifar", 32),
    Reader("tinyimagenet", "tiny-imagenet-200/ under --data-dir", f"{_HOME}.tinyimagenet", 64),
    Reader(
        "imagefolder",
        "a folder of images per class",
        f"{_HOME}.imagefolder",
        64,
        takes_path=True,
    ),
    Reader(
        "npz",
        "arrays x, y and optional x_val, y_val, x_test, y_test",
        f"{_HOME}.npz",
        64,
        takes_path=True,
    ),
)

#: the readers by name (read-only)
REGISTRY: Mapping[str, Reader] = MappingProxyType({r.name: r for r in READERS})


def storage_size_of(spec: str) -> int:
    """The side a ``--dataset`` string's images are stored at by default (without loading
    them: ``natv2 space`` derives a supernet's layout from it); an unknown name is the
    default dataset's."""
    reader = REGISTRY.get(spec.strip().partition(":")[0].lower())
    return (reader or REGISTRY[DEFAULT_DATASET]).storage_size


#: what ``--dataset`` accepts, as error messages list it
SPECS: tuple[str, ...] = tuple(r.spec for r in READERS)

assert len(REGISTRY) == len(READERS) and DEFAULT_DATASET in REGISTRY
