"""``imagefolder:PATH``: one folder of images per class (classes in sorted folder-name order).

``PATH/train/``, ``PATH/val/``, ``PATH/test/`` are used when ``train/`` exists (a missing val/ or
test/ is carved from train/), otherwise the whole tree is carved 70 / 10 / 20 %. S =
``storage_size`` (default 64); images are read lazily from disk; statistics from a fixed sample of
up to 1,000 train images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from natv2.data.images import IMAGE_EXTENSIONS, is_image
from natv2.data.imagesets import FileImageSet, ImageSet
from natv2.data.registry import ReadRequest
from natv2.data.splits import DatasetSplits, make_splits, require_classes
from natv2.errors import Natv2Error


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_classes(
    folder: Path, classes: Sequence[str], required: bool
) -> tuple[list[str], list[int]]:
    """Image files under ``folder/<class>/`` (recursively), labelled by the class's position."""
    extra = sorted(set(_class_dirs(folder)) - set(classes))
    if extra:
        raise Natv2Error(
            f"imagefolder: {folder} has class folders {', '.join(extra)} that train/ lacks; "
            "expected the same class folders as train/: add them to train/ or remove them"
        )
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).rglob("*") if is_image(p))
        if required and not found:
            raise Natv2Error(
                f"imagefolder: class folder {folder / name} holds no images; expected files "
                f"ending in {', '.join(IMAGE_EXTENSIONS)}: add images or remove the folder"
            )
        paths += [str(p) for p in found]
        labels += [label] * len(found)
    return paths, labels


def read(request: ReadRequest) -> DatasetSplits:
    path, size, seed = request.path, request.storage_size, request.split_seed
    assert path is not None  # load_dataset asks for PATH
    if not path.is_dir():
        raise Natv2Error(
            f"imagefolder: {path} is not a directory; expected PATH/<class>/*.jpg "
            "(or PATH/train/<class>/…, with optional val/ and test/): check the path"
        )
    s = size
    base = path / "train" if (path / "train").is_dir() else path
    classes = _class_dirs(base)
    if not classes:
        raise Natv2Error(
            f"imagefolder: {base} has no class folders; expected one subfolder of images "
            "per class, e.g. PATH/cat/1.jpg, PATH/dog/2.jpg"
        )
    name = f"imagefolder:{path}"
    require_classes(name, len(classes))
    sets: dict[str, ImageSet | None] = {}
    for split in ("train", "val", "test"):
        folder = base if split == "train" else path / split
        if split != "train" and (base == path or not folder.is_dir()):
            sets[split] = None
            continue
        paths, labels = _scan_classes(folder, classes, required=split == "train")
        if not paths:
            raise Natv2Error(f"imagefolder: {folder} holds no images; add images or remove it")
        sets[split] = FileImageSet(paths, torch.tensor(labels), s, f"{name}/{split}")
    pool = sets.pop("train")
    assert pool is not None
    return make_splits(
        name,
        pool,
        sets["val"],
        sets["test"],
        classes=classes,
        storage_size=s,
        split_seed=seed,
        augment="rrc_flip",
    )
