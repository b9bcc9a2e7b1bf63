"""``tinyimagenet``: the official ``tiny-imagenet-200/`` folder, at ``--data-dir`` or inside it.

No automatic download (:data:`TINY_IMAGENET_URL`). S = 64; splits 85,000 / 15,000 / 10,000: val
carved from official train (15 %), test = official val (labels from ``val_annotations.txt``).
Classes are indexed in sorted wnid order; images are read lazily from disk. Normalisation uses
the published statistics.
"""

from __future__ import annotations

from pathlib import Path

import torch

from natv2.data.images import is_image
from natv2.data.imagesets import FileImageSet
from natv2.data.registry import ReadRequest
from natv2.data.splits import DatasetSplits, carve, make_splits
from natv2.errors import Natv2Error

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_VAL_FRACTION = 0.15  # 15,000 of the official 100,000
# Published per-channel statistics (RGB, on the 0..1 scale).
TINY_IMAGENET_MEAN = (0.4802, 0.4481, 0.3975)
TINY_IMAGENET_STD = (0.2770, 0.2691, 0.2821)


def _tiny_root(data_dir: Path) -> Path:
    for candidate in (data_dir, data_dir / "tiny-imagenet-200"):
        if (candidate / "wnids.txt").is_file():
            return candidate
    raise Natv2Error(
        f"tinyimagenet not found: looked for {data_dir}/wnids.txt and "
        f"{data_dir}/tiny-imagenet-200/wnids.txt; expected the official layout "
        "tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
        "val/val_annotations.txt}. It cannot be downloaded automatically: get "
        f"{TINY_IMAGENET_URL}, unzip it into {data_dir} and pass --data-dir {data_dir}"
    )


def read(request: ReadRequest) -> DatasetSplits:
    size, seed = request.storage_size, request.split_seed
    root = _tiny_root(request.data_dir)
    wnids = sorted({w.strip() for w in (root / "wnids.txt").read_text().splitlines() if w.strip()})
    index = {w: i for i, w in enumerate(wnids)}
    s = size

    paths: list[str] = []
    labels: list[int] = []
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        found = sorted(p for p in folder.glob("*") if is_image(p)) if folder.is_dir() else []
        if not found:
            raise Natv2Error(
                f"tinyimagenet: no training images in {folder}; expected "
                f"train/<wnid>/images/*.JPEG for every wnid in {root / 'wnids.txt'}: "
                f"re-unzip {TINY_IMAGENET_URL} into {root.parent}"
            )
        paths += [str(p) for p in found]
        labels += [index[wnid]] * len(found)

    annotations = root / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise Natv2Error(
            f"tinyimagenet: {annotations} is missing; expected the official val/ folder "
            f"(val/images/*.JPEG + val_annotations.txt): re-unzip {TINY_IMAGENET_URL}"
        )
    test_paths: list[str] = []
    test_labels: list[int] = []
    for n, line in enumerate(annotations.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or fields[1] not in index:
            raise Natv2Error(
                f"tinyimagenet: {annotations} line {n} is malformed ({line!r}); expected "
                "'<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>' with a wnid from wnids.txt"
            )
        image = root / "val" / "images" / fields[0]
        if not image.is_file():
            raise Natv2Error(
                f"tinyimagenet: {image} (listed in {annotations}) is missing; "
                f"re-unzip {TINY_IMAGENET_URL}"
            )
        test_paths.append(str(image))
        test_labels.append(index[fields[1]])

    pool = FileImageSet(paths, torch.tensor(labels), s, "tinyimagenet/train")
    test = FileImageSet(test_paths, torch.tensor(test_labels), s, "tinyimagenet/val")
    train, val, _ = carve(pool, TINY_VAL_FRACTION, 0.0, seed)
    assert val is not None
    return make_splits(
        "tinyimagenet",
        train,
        val,
        test,
        classes=wnids,
        storage_size=s,
        split_seed=seed,
        augment="rrc_flip",
        stats=(TINY_IMAGENET_MEAN, TINY_IMAGENET_STD),
    )
