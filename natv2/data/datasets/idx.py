"""``mnist``, ``fashion-mnist``: the official IDX files, found on disk or fetched by torchvision.

The four files (:data:`IDX_FILES`, each raw or ``.gz``) are looked for in ``--data-dir``, then
``--data-dir/<name>/``, torchvision's ``--data-dir/MNIST/raw/`` (``FashionMNIST/raw/``) and the
system folders (:data:`FASHION_MNIST_SYSTEM_DIRS`: Debian's ``dataset-fashion-mnist``); the first
folder holding all four wins. ``--download`` fetches them with torchvision (md5-checked). One
parser (:func:`parse_idx`) reads every file, as untrusted input. S = 28; splits 54,000 / 6,000 /
10,000: val carved from the official train set (10 %; smaller fixtures scale the same way), test =
the official test set. Normalisation uses the published statistics.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from natv2.data.images import fit_images, to_rgb_nchw
from natv2.data.imagesets import TensorImageSet
from natv2.data.registry import ReadRequest
from natv2.data.splits import DatasetSplits, carve, make_splits
from natv2.data.transforms import Augment
from natv2.errors import Natv2Error
from natv2.untrusted import path_error, path_kind, shown

#: the four files of both datasets, in the order they are read
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
#: IDX magic numbers: 0x00 0x00, type 0x08 (unsigned byte), number of dimensions
IDX_IMAGES = 0x00000803
IDX_LABELS = 0x00000801
IDX_VAL_FRACTION = 0.1  # 6,000 of the official 60,000
#: bounds a hostile header cannot pass, checked before anything is allocated
MAX_IDX_SIDE = 4096
MAX_IDX_BYTES = 2**31
#: deflate expands at most ~1032x: a .gz file declaring more than this many times its own size
#: is truncated or lying, and is refused before its declared size is allocated
GZIP_MAX_RATIO = 1032

#: system folders searched last (a distribution's package), one tuple per dataset: add a path
#: here when a package ships the files elsewhere. There is no Debian package for MNIST.
MNIST_SYSTEM_DIRS: tuple[Path, ...] = ()
FASHION_MNIST_SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class IdxDataset:
    """What differs between the two datasets."""

    name: str
    torchvision: str  # the torchvision.datasets class, also its folder (data_dir/<it>/raw)
    classes: tuple[str, ...]
    mean: float  # published statistics of the grayscale pixels (0..1), the same on all channels
    std: float
    augment: Augment
    apt_package: str | None  # the Debian package that installs the files, if any

    @property
    def system_dirs(self) -> tuple[Path, ...]:
        """Read at call time, so a path added to the module's tuple counts."""
        return MNIST_SYSTEM_DIRS if self.name == "mnist" else FASHION_MNIST_SYSTEM_DIRS


DATASETS = {
    "mnist": IdxDataset(
        "mnist", "MNIST", tuple(str(i) for i in range(10)), 0.1307, 0.3081, "translate", None
    ),
    # clothes are left-right symmetric: CIFAR's crop and flip
    "fashion-mnist": IdxDataset(
        "fashion-mnist",
        "FashionMNIST",
        FASHION_MNIST_CLASSES,
        0.2860,
        0.3530,
        "crop_flip",
        "dataset-fashion-mnist",
    ),
}


# --------------------------------------------------------------------------- the parser


class IdxFormatError(ValueError):
    """What is wrong with an IDX file's bytes; the caller adds the file's name and the fix."""


def _kind(magic: int) -> str:
    return {IDX_IMAGES: "images", IDX_LABELS: "labels"}.get(magic, f"0x{magic:08x}")


def _declared(dims: tuple[int, ...]) -> str:
    """What a header declares, in words: ``60,000 images of 28x28``, ``10,000 labels``."""
    if len(dims) == 3:
        return f"{dims[0]:,} images of {dims[1]}x{dims[2]}"
    return f"{dims[0]:,} labels"


def _wrong_magic(head: bytes | bytearray | memoryview, magic: int) -> str:
    found = int.from_bytes(head[:4], "big")
    expected = f"expected 0x{magic:08x} (IDX {_kind(magic)}: unsigned bytes, {magic & 0xFF} dims)"
    if bytes(head[:2]) == b"\x1f\x8b":
        return f"it is gzip-compressed but its name does not end in .gz; {expected}"
    if found in (IDX_IMAGES, IDX_LABELS):
        return f"it is an IDX {_kind(found)} file (magic 0x{found:08x}); {expected}"
    return f"its magic number is 0x{found:08x}, not an IDX file of unsigned bytes; {expected}"


def idx_header(head: bytes | bytearray | memoryview, magic: int) -> tuple[int, ...]:
    """The dimensions an IDX header declares, checked against ``magic`` and the bounds above.

    Reads only the header, so a file declaring terabytes is refused before any allocation."""
    ndim = magic & 0xFF
    size = 4 + 4 * ndim
    if len(head) < 4:
        raise IdxFormatError(f"it holds {len(head)} bytes, fewer than the 4-byte magic number")
    if int.from_bytes(head[:4], "big") != magic:
        raise IdxFormatError(_wrong_magic(head, magic))
    if len(head) < size:
        raise IdxFormatError(f"its header is cut short ({len(head)} of {size} bytes)")
    dims = struct.unpack(f">{ndim}I", head[4:size])
    if dims[0] == 0:
        raise IdxFormatError(f"it holds no {_kind(magic)} (count 0)")
    if not all(1 <= d <= MAX_IDX_SIDE for d in dims[1:]):
        raise IdxFormatError(
            f"it declares images of {'x'.join(map(str, dims[1:]))} pixels; expected "
            f"1..{MAX_IDX_SIDE} a side"
        )
    if math.prod(dims) > MAX_IDX_BYTES:
        raise IdxFormatError(
            f"it declares {_declared(dims)} = {math.prod(dims):,} bytes; natv2 reads IDX files "
            f"of at most {MAX_IDX_BYTES // 2**30} GiB"
        )
    return dims


def parse_idx(data: bytes | bytearray | memoryview, magic: int) -> np.ndarray:
    """An IDX file's bytes as a uint8 array of the shape its header declares (no copy).

    ``magic`` is :data:`IDX_IMAGES` or :data:`IDX_LABELS`; any mismatch (magic, a truncated
    file, trailing bytes, a size beyond the bounds) raises :class:`IdxFormatError`."""
    dims = idx_header(data[: 4 + 4 * (magic & 0xFF)], magic)
    offset = 4 + 4 * len(dims)
    expected = offset + math.prod(dims)
    if len(data) < expected:
        raise IdxFormatError(
            f"it is truncated: its header declares {_declared(dims)} ({expected:,} bytes in all) "
            f"but it holds {len(data):,} bytes"
        )
    if len(data) > expected:
        raise IdxFormatError(
            f"it has trailing bytes: it is longer than the {expected:,} bytes its header "
            f"declares ({_declared(dims)})"
        )
    return np.frombuffer(data, np.uint8, count=math.prod(dims), offset=offset).reshape(dims)


# --------------------------------------------------------------------------- the files


def _read_into(f: io.BufferedIOBase, view: memoryview) -> int:
    """Fill ``view`` from ``f`` until it is full or the file ends; the bytes read."""
    done = 0
    while done < len(view):
        n = f.readinto(view[done:])
        if not n:
            break
        done += n
    return done


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """One IDX file, raw or gzip (by its ``.gz`` suffix), read to at most one byte more than
    its header declares, so neither a lying header nor a gzip bomb exhausts memory."""
    size = 4 + 4 * (magic & 0xFF)
    compressed = path.suffix == ".gz"
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(path.open("rb"))
        stored = os.fstat(raw.fileno()).st_size
        f: io.BufferedIOBase = (
            stack.enter_context(gzip.GzipFile(fileobj=raw)) if compressed else raw
        )
        head = bytearray(size)
        dims = idx_header(memoryview(head)[: _read_into(f, memoryview(head))], magic)
        expected = size + math.prod(dims)
        if expected > (stored * GZIP_MAX_RATIO if compressed else stored):
            held = (
                f"the gzip file has {stored:,} bytes, which deflate cannot expand to that"
                if compressed
                else f"the file has {stored:,} bytes"
            )
            raise IdxFormatError(
                f"it is truncated: its header declares {_declared(dims)} ({expected:,} bytes in "
                f"all) but {held}"
            )
        buf = bytearray(expected + 1)
        buf[:size] = head
        n = size + _read_into(f, memoryview(buf)[size:])
    return parse_idx(memoryview(buf)[:n], magic)


def _fix(spec: IdxDataset, folder: Path, what: str = "it") -> str:
    """How to replace a bad file in ``folder``: reinstall the package, or download again."""
    if folder in spec.system_dirs:
        if spec.apt_package:
            return f"reinstall {spec.apt_package} (apt-get install --reinstall {spec.apt_package})"
        return f"replace {what} with the official one(s)"
    return f"delete {what} and rerun with --download"


def _raw_hint(path: Path) -> str:
    """A .gz file that is an uncompressed IDX file needs only a new name."""
    with contextlib.suppress(OSError), path.open("rb") as f:
        if int.from_bytes(f.read(4), "big") in (IDX_IMAGES, IDX_LABELS):
            return f", or rename it to {path.stem}: it is an uncompressed IDX file"
    return ""


def _load(spec: IdxDataset, path: Path, magic: int) -> np.ndarray:
    """:func:`_read_idx`, every failure one :class:`Natv2Error` naming the file and the fix."""
    fix = _fix(spec, path.parent)
    where = f"{spec.name}: {shown(str(path))}"
    try:
        return _read_idx(path, magic)
    except IdxFormatError as e:
        raise Natv2Error(f"{where} is not a valid IDX {_kind(magic)} file: {e}; {fix}") from None
    except (gzip.BadGzipFile, zlib.error, EOFError) as e:
        raise Natv2Error(
            f"{where} is not a valid gzip file ({shown(str(e), 100)}); {fix}{_raw_hint(path)}"
        ) from None
    except OSError as e:
        raise path_error(path, e, "read", fix) from None


def _present(folder: Path) -> dict[str, Path]:
    """The IDX files in ``folder``: each of :data:`IDX_FILES` to its raw file, else its .gz
    (torchvision keeps both; the raw one needs no decompression)."""
    found = {}
    for name in IDX_FILES:
        for path in (folder / name, folder / f"{name}.gz"):
            if path_kind(path) == "file":
                found[name] = path
                break
    return found


def _candidates(spec: IdxDataset, data_dir: Path) -> list[Path]:
    folders = (data_dir, data_dir / spec.name, data_dir / spec.torchvision / "raw")
    return list(dict.fromkeys((*folders, *spec.system_dirs)))


def _find(spec: IdxDataset, data_dir: Path, download: bool) -> Path:
    """The first candidate folder holding all four files; else download, or say where we looked."""
    folders = _candidates(spec, data_dir)
    partial = []
    for folder in folders:
        found = _present(folder)
        if len(found) == len(IDX_FILES):
            return folder
        if found:
            partial.append(f"{shown(str(folder))} holds only {', '.join(sorted(found))}")
    if download:
        return _download(spec, data_dir)
    fixes = [
        "pass --data-dir FOLDER for the folder that holds them",
        f"--download to fetch them into {shown(str(data_dir / spec.torchvision / 'raw'))}",
    ]
    if spec.apt_package:
        where = f" (it installs them in {spec.system_dirs[0]})" if spec.system_dirs else ""
        fixes.append(f"apt-get install {spec.apt_package}{where}")
    raise Natv2Error(
        f"{spec.name} not found: looked in {', '.join(shown(str(f)) for f in folders)} for "
        f"{', '.join(IDX_FILES)} (each raw or .gz)"
        + (f" ({'; '.join(partial)})" if partial else "")
        + f"; {', '.join(fixes[:-1])} or {fixes[-1]}"
    )


def _download(spec: IdxDataset, data_dir: Path) -> Path:
    """Fetch the files with torchvision (md5-checked) into ``data_dir/<Class>/raw``."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, spec.torchvision)
    folder = data_dir / spec.torchvision / "raw"
    try:
        # torchvision prints download/extract progress on stdout, which --json reserves. It also
        # parses the (small) test set; natv2 discards that and reads every file with parse_idx.
        with contextlib.redirect_stdout(sys.stderr):
            cls(str(data_dir), train=False, download=True)
    except OSError as e:
        if e.filename is None:  # network errors torchvision does not catch itself
            raise _download_failed(spec, folder, cls, e) from e
        raise path_error(e.filename, e, "write", "give --data-dir a writable folder") from None
    except RuntimeError as e:  # every mirror failed, or a checksum did not match
        raise _download_failed(spec, folder, cls, e) from e
    if len(_present(folder)) != len(IDX_FILES):
        raise Natv2Error(
            f"{spec.name}: torchvision's download left {shown(str(folder))} without all of "
            f"{', '.join(IDX_FILES)}; delete {shown(str(folder))} and rerun with --download"
        )
    return folder


def _download_failed(spec: IdxDataset, folder: Path, cls: type, e: Exception) -> Natv2Error:
    mirrors = ", ".join(getattr(cls, "mirrors", []))
    return Natv2Error(
        f"downloading {spec.name} from {mirrors} failed ({shown(' '.join(str(e).split()), 200)})"
        f"; download the four .gz files by hand into {shown(str(folder))} (or any folder, then "
        "--data-dir FOLDER) and run without --download"
    )


# --------------------------------------------------------------------------- the reader


def _split(spec: IdxDataset, files: dict[str, Path], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of ``train`` or ``t10k``, checked against each other."""
    images_path = files[f"{prefix}-images-idx3-ubyte"]
    labels_path = files[f"{prefix}-labels-idx1-ubyte"]
    images = _load(spec, images_path, IDX_IMAGES)
    labels = _load(spec, labels_path, IDX_LABELS)
    fix = _fix(spec, labels_path.parent, "both files")
    if len(images) != len(labels):
        raise Natv2Error(
            f"{spec.name}: {shown(str(images_path))} holds {len(images):,} images but "
            f"{shown(str(labels_path))} holds {len(labels):,} labels; expected one label per "
            f"image: {fix}"
        )
    bad = np.flatnonzero(labels >= len(spec.classes))
    if len(bad):
        raise Natv2Error(
            f"{spec.name}: {shown(str(labels_path))} holds label {int(labels[bad[0]])} (at "
            f"position {int(bad[0]):,}); {spec.name} labels are 0..{len(spec.classes) - 1}: "
            f"{_fix(spec, labels_path.parent)}"
        )
    return images, labels


def read(request: ReadRequest) -> DatasetSplits:
    """MNIST or Fashion-MNIST (``request.name``) from the first folder holding the IDX files."""
    spec = DATASETS[request.name]
    size, seed = request.storage_size, request.split_seed
    files = _present(_find(spec, request.data_dir, request.download))
    s = size
    pools = []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = _split(spec, files, prefix)
        images = fit_images(to_rgb_nchw(x), s)
        labels = torch.from_numpy(y.astype(np.int64))
        pools.append(TensorImageSet(images, labels, f"{spec.name}/{split}"))
    train, val, _ = carve(pools[0], IDX_VAL_FRACTION, 0.0, seed)
    assert val is not None
    return make_splits(
        spec.name,
        train,
        val,
        pools[1],
        classes=spec.classes,
        storage_size=s,
        split_seed=seed,
        augment=spec.augment,
        stats=((spec.mean,) * 3, (spec.std,) * 3),
    )
