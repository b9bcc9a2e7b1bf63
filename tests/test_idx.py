"""``mnist`` and ``fashion-mnist``: IDX fixtures written here, raw and gzip, good and hostile."""

from __future__ import annotations

import gzip
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from test_data import _assert_disjoint, _assert_items

from natv2.data import DatasetSplits, load_dataset
from natv2.data.datasets import idx
from natv2.data.datasets.idx import IDX_FILES, IDX_IMAGES, IDX_LABELS, IdxFormatError, parse_idx
from natv2.data.imagesets import TensorImageSet
from natv2.errors import Natv2Error

TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = IDX_FILES
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def _idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000080N, N big-endian dims, the data."""
    header = struct.pack(f">I{array.ndim}I", 0x800 | array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fixture(seed: int = 0, n_train: int = 60, n_test: int = 20) -> dict[str, np.ndarray]:
    """Random 28x28 images, labels 0..9 in turn (6 train images per class)."""
    rng = np.random.default_rng(seed)
    return {
        TRAIN_IMAGES: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        TRAIN_LABELS: (np.arange(n_train) % 10).astype(np.uint8),
        TEST_IMAGES: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        TEST_LABELS: (np.arange(n_test) % 10).astype(np.uint8),
    }


def _write(folder: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = _idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


@pytest.fixture(autouse=True)
def no_system_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only their own files, not the Debian package this machine may have."""
    monkeypatch.setattr(idx, "FASHION_MNIST_SYSTEM_DIRS", ())
    monkeypatch.setattr(idx, "MNIST_SYSTEM_DIRS", ())


# --------------------------------------------------------------------------- good files


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_splits_and_pixels(tmp_path: Path, gz: bool) -> None:
    arrays = _fixture()
    _write(tmp_path, arrays, gz)
    d = load_dataset("mnist", data_dir=tmp_path)
    # 60 official train images: val is 10 % (6,000 of 60,000 at full size); test = t10k.
    assert (len(d.train), len(d.val), len(d.test)) == (54, 6, 20)
    assert d.num_classes == 10 and d.classes == tuple(str(i) for i in range(10))
    assert d.storage_size == 28 and d.mean == (0.1307,) * 3 and d.std == (0.3081,) * 3
    assert d.transform.augment == "translate"
    assert (d.train.source, d.val.source, d.test.source) == ("mnist/train",) * 2 + ("mnist/test",)
    assert len(set(d.val.labels.tolist())) == 6  # stratified: 6 classes, one image each
    _assert_items(d)
    _assert_disjoint(d)
    # Pixels and labels come through exactly, grayscale on all three channels.
    for split, images, labels in (
        (d.train, arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS]),
        (d.val, arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS]),
        (d.test, arrays[TEST_IMAGES], arrays[TEST_LABELS]),
    ):
        assert isinstance(split, TensorImageSet)
        expected = torch.from_numpy(images[split.indices])
        assert all(torch.equal(split.images[:, c], expected) for c in range(3))
        assert split.labels.tolist() == labels[split.indices].tolist()
    assert sorted(d.train.indices.tolist() + d.val.indices.tolist()) == list(range(60))


def test_fashion_mnist_names_stats_and_storage_size(tmp_path: Path) -> None:
    _write(tmp_path / "fashion-mnist", _fixture(), gz=True)
    d = load_dataset("fashion-mnist", data_dir=tmp_path, storage_size=16)
    assert (len(d.train), len(d.val), len(d.test)) == (54, 6, 20)
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot" and d.num_classes == 10
    assert d.mean == (0.2860,) * 3 and d.std == (0.3530,) * 3
    assert d.transform.augment == "crop_flip" and d.storage_size == 16
    _assert_items(d)
    batch = torch.stack([d.train[i][0] for i in range(4)])
    assert d.prepare_batch(batch, 32, train=True, generator=0).shape == (4, 3, 32, 32)


@pytest.mark.parametrize("where", [".", "mnist", "MNIST/raw"])
def test_each_folder_of_the_search_order(tmp_path: Path, where: str) -> None:
    arrays = _fixture()
    _write(tmp_path / where, arrays, gz=where == "MNIST/raw")
    d = load_dataset("mnist", data_dir=tmp_path)
    assert isinstance(d.test, TensorImageSet)
    assert torch.equal(d.test.images[:, 0], torch.from_numpy(arrays[TEST_IMAGES]))


def _first_test_image(d: DatasetSplits) -> np.ndarray:
    return d.test[0][0][0].numpy()


def test_the_first_folder_holding_all_four_files_wins(tmp_path: Path) -> None:
    own, named, torch_layout = (_fixture(seed) for seed in (1, 2, 3))
    _write(tmp_path / "MNIST" / "raw", torch_layout)
    _write(tmp_path / "mnist", named, gz=True)
    assert np.array_equal(_first_test_image(load_dataset("mnist", tmp_path)), named[TEST_IMAGES][0])
    # data_dir itself comes first, but only once it holds all four files.
    _write(tmp_path, {k: v for k, v in own.items() if k != TEST_LABELS})
    assert np.array_equal(_first_test_image(load_dataset("mnist", tmp_path)), named[TEST_IMAGES][0])
    _write(tmp_path, own)
    assert np.array_equal(_first_test_image(load_dataset("mnist", tmp_path)), own[TEST_IMAGES][0])
    # Raw and .gz side by side (torchvision keeps both): the raw one is read.
    (tmp_path / f"{TEST_IMAGES}.gz").write_bytes(b"not read")
    assert np.array_equal(_first_test_image(load_dataset("mnist", tmp_path)), own[TEST_IMAGES][0])


def test_a_system_folder_comes_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = _write(tmp_path / "system", _fixture(4), gz=True)
    monkeypatch.setattr(idx, "FASHION_MNIST_SYSTEM_DIRS", (system,))
    d = load_dataset("fashion-mnist", data_dir=tmp_path / "data")
    assert np.array_equal(_first_test_image(d), _fixture(4)[TEST_IMAGES][0])
    own = _write(tmp_path / "own", _fixture(5))
    d = load_dataset("fashion-mnist", data_dir=own)
    assert np.array_equal(_first_test_image(d), _fixture(5)[TEST_IMAGES][0])
    (system / f"{TRAIN_LABELS}.gz").write_bytes(gzip.compress(_idx_bytes(np.full(60, 10))))
    with pytest.raises(Natv2Error, match=r"holds label 10.*reinstall dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "data")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_not_found_names_every_folder_the_files_and_the_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    system = tmp_path / "usr-share"
    monkeypatch.setattr(idx, "FASHION_MNIST_SYSTEM_DIRS", (system,))
    _write(tmp_path / name, {TRAIN_IMAGES: _fixture()[TRAIN_IMAGES]})  # one of four: skipped
    with pytest.raises(Natv2Error) as e:
        load_dataset(name, data_dir=tmp_path)
    msg = str(e.value)
    torch_name = "MNIST" if name == "mnist" else "FashionMNIST"
    folders = [tmp_path, tmp_path / name, tmp_path / torch_name / "raw"]
    folders += [system] if name == "fashion-mnist" else []
    assert all(f"{f}," in msg or f"{f} " in msg for f in folders), msg
    assert all(f in msg for f in IDX_FILES) and "--data-dir FOLDER" in msg and "--download" in msg
    assert f"holds only {TRAIN_IMAGES}" in msg and "\n" not in msg
    apt = "apt-get install dataset-fashion-mnist"
    assert (apt in msg) == (name == "fashion-mnist")


# --------------------------------------------------------------------------- --download


def _fake_download(arrays: dict[str, np.ndarray]) -> Callable[[tvd.MNIST], None]:
    def download(self: tvd.MNIST) -> None:
        print("Downloading ...")  # torchvision's progress: must not reach stdout
        raw = Path(self.raw_folder)
        _write(raw, arrays, gz=True)
        _write(raw, arrays)  # torchvision extracts next to the .gz files

    return download


def test_download_goes_through_torchvision_into_its_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    arrays = _fixture(5)
    monkeypatch.setattr(tvd.FashionMNIST, "download", _fake_download(arrays))
    with pytest.raises(Natv2Error, match="--download"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    d = load_dataset("fashion-mnist", data_dir=tmp_path, download=True)
    assert (tmp_path / "FashionMNIST" / "raw" / TEST_IMAGES).is_file()
    assert np.array_equal(_first_test_image(d), arrays[TEST_IMAGES][0])
    out = capsys.readouterr()
    assert out.out == "" and "Downloading" in out.err


def test_a_failed_download_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(self: tvd.MNIST) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried x, got:\nURLError")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(Natv2Error) as e:
        load_dataset("mnist", data_dir=tmp_path, download=True)
    msg = str(e.value)
    assert msg.startswith("downloading mnist from https://") and "\n" not in msg
    assert str(tmp_path / "MNIST" / "raw") in msg and "without --download" in msg


# --------------------------------------------------------------------------- the parser


def test_parse_idx_round_trips_any_side() -> None:
    images = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    assert np.array_equal(parse_idx(_idx_bytes(images), IDX_IMAGES), images)
    labels = np.array([9, 0, 3], np.uint8)
    assert np.array_equal(parse_idx(_idx_bytes(labels), IDX_LABELS), labels)


@pytest.mark.parametrize(
    ("data", "magic", "pattern"),
    [
        (b"\x00\x00", IDX_LABELS, "fewer than the 4-byte magic"),
        (_idx_bytes(np.zeros(3)), IDX_IMAGES, "IDX labels file"),
        (_idx_bytes(np.zeros((1, 2, 2)))[:10], IDX_IMAGES, "header is cut short"),
        (_idx_bytes(np.zeros((2, 2, 2)))[:-1], IDX_IMAGES, "truncated"),
        (_idx_bytes(np.zeros((2, 2, 2))) + b"\x00", IDX_IMAGES, "trailing bytes"),
        (struct.pack(">4I", IDX_IMAGES, 0, 28, 28), IDX_IMAGES, "no images"),
        (struct.pack(">4I", IDX_IMAGES, 1, 0, 28), IDX_IMAGES, "1..4096 a side"),
        (struct.pack(">4I", IDX_IMAGES, 2**32 - 1, 4096, 4096), IDX_IMAGES, "at most 2 GiB"),
        (gzip.compress(b"x"), IDX_IMAGES, "gzip-compressed"),
        (b"\x89PNG\r\n\x1a\n", IDX_IMAGES, "magic number is 0x89504e47"),
    ],
)
def test_parse_idx_refuses(data: bytes, magic: int, pattern: str) -> None:
    with pytest.raises(IdxFormatError, match=pattern):
        parse_idx(data, magic)


def test_a_lying_header_allocates_nothing(tmp_path: Path) -> None:
    # 2 GiB declared, in a few bytes of gzip or a raw file: refused from the header alone.
    header = struct.pack(">4I", IDX_IMAGES, 2**31 // 784, 28, 28)
    (tmp_path / f"{TRAIN_IMAGES}.gz").write_bytes(gzip.compress(header + bytes(10_000)))
    (tmp_path / TEST_IMAGES).write_bytes(header + bytes(10_000))
    for path in (tmp_path / f"{TRAIN_IMAGES}.gz", tmp_path / TEST_IMAGES):
        tracemalloc.start()
        try:
            with pytest.raises(Natv2Error, match="truncated"):
                idx._load(idx.DATASETS["mnist"], path, IDX_IMAGES)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2**20, peak


# --------------------------------------------------------------------------- through the CLI


def _gz_corrupt(data: bytes) -> bytes:
    packed = bytearray(gzip.compress(data))
    packed[len(packed) // 2] ^= 0xFF
    return bytes(packed)


# name, bytes of the bad file (raw unless its name ends in .gz), what the line says
BAD_FILES: list[tuple[str, Callable[[dict[str, np.ndarray]], bytes], str]] = [
    (TRAIN_IMAGES, lambda a: _idx_bytes(a[TRAIN_LABELS]), "magic 0x00000801"),
    (TRAIN_IMAGES, lambda a: np.random.default_rng(0).bytes(5000), "magic number"),
    (TRAIN_IMAGES, lambda a: _idx_bytes(a[TRAIN_IMAGES])[:-100], "truncated"),
    (TEST_LABELS, lambda a: _idx_bytes(a[TEST_LABELS]) + b"\x00", "trailing bytes"),
    (TEST_LABELS, lambda a: _idx_bytes(a[TEST_LABELS][:-1]), "19 labels"),
    (TRAIN_LABELS, lambda a: _idx_bytes(a[TRAIN_LABELS] + 1), "holds label 10"),
    (TRAIN_IMAGES, lambda a: struct.pack(">4I", IDX_IMAGES, 100_000, 28, 28), "truncated"),
    (TEST_IMAGES, lambda a: struct.pack(">4I", IDX_IMAGES, 2**32 - 1, 28, 28), "at most 2 GiB"),
    (f"{TEST_IMAGES}.gz", lambda a: _gz_corrupt(_idx_bytes(a[TEST_IMAGES])), "gzip"),
    (f"{TEST_IMAGES}.gz", lambda a: gzip.compress(_idx_bytes(a[TEST_IMAGES]))[:-30], "gzip"),
    (f"{TEST_IMAGES}.gz", lambda a: _idx_bytes(a[TEST_IMAGES]), "not a valid gzip file"),
    (  # a gzip bomb behind an honest-looking header: read to one byte past what it declares
        f"{TEST_IMAGES}.gz",
        lambda a: gzip.compress(_idx_bytes(a[TEST_IMAGES]) + bytes(50_000_000)),
        "trailing bytes",
    ),
]


@pytest.mark.parametrize(("name", "make", "needle"), BAD_FILES)
def test_a_bad_file_is_one_line_and_exit_2(
    cli, tmp_path: Path, name: str, make: Callable[[dict[str, np.ndarray]], bytes], needle: str
) -> None:
    arrays = _fixture()
    data = _write(tmp_path / "data", arrays)
    (data / name.removesuffix(".gz")).unlink()
    (data / name).write_bytes(make(arrays))
    res = cli(
        "search",
        "--dataset",
        "mnist",
        "--data-dir",
        data,
        "--supernet",
        tmp_path / "missing.pt",  # a good dataset ends here, before any training
        "--out",
        tmp_path / "run",
        "--accelerator",
        "cpu",
    )
    lines = res.err.strip().splitlines()
    assert res.code == 2 and "Traceback" not in res.err, res.err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err
    assert name in lines[0] and needle in lines[0] and "--download" in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


def test_a_good_dataset_passes_the_cli_to_the_supernet(cli, tmp_path: Path) -> None:
    data = _write(tmp_path / "data", _fixture(), gz=True)
    missing = tmp_path / "missing.pt"
    res = cli("search", "--dataset", "mnist", "--data-dir", data, "--supernet", missing)
    assert res.code == 2 and "missing.pt does not exist" in res.err, res.err


# --------------------------------------------------------------------------- the real files


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idx, "FASHION_MNIST_SYSTEM_DIRS", (DEBIAN,))
    start = time.perf_counter()
    d = load_dataset("fashion-mnist", data_dir=tmp_path)
    seconds = time.perf_counter() - start
    assert (len(d.train), len(d.val), len(d.test)) == (54_000, 6_000, 10_000), seconds
    assert np.bincount(d.test.labels.numpy()).tolist() == [1_000] * 10
    assert np.bincount(d.val.labels.numpy()).tolist() == [600] * 10
    _assert_items(d)
    _assert_disjoint(d)
