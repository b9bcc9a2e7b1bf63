"""``cifar10``, ``cifar100``: torchvision's on-disk format under ``--data-dir``.

``--download`` fetches it; torchvision verifies the files' md5 checksums. S = 32; splits
45,000 / 5,000 / 10,000: val carved from the official train set (10 %; smaller fixtures scale the
same way), test = the official test set. Normalisation uses the published statistics.
"""

from __future__ import annotations

import contextlib
import sys

import torch

from natv2.data.images import fit_images
from natv2.data.imagesets import TensorImageSet
from natv2.data.registry import ReadRequest
from natv2.data.splits import DatasetSplits, carve, make_splits
from natv2.errors import Natv2Error

CIFAR_VAL_FRACTION = 0.1  # 5,000 of the official 50,000
# Published per-channel statistics (RGB, on the 0..1 scale).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def read(request: ReadRequest) -> DatasetSplits:
    """CIFAR-10 or CIFAR-100 (``request.name``) through torchvision, which also verifies the
    files' md5 checksums."""
    name, data_dir, download = request.name, request.data_dir, request.download
    size, seed = request.storage_size, request.split_seed
    import torchvision.datasets as tvd

    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    if data_dir.name == cls.base_folder:  # --data-dir pointing at the unpacked folder itself
        data_dir = data_dir.parent
    folder = data_dir / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and not download:
        raise Natv2Error(
            f"{name} not found: looked in {folder} for {', '.join(missing)}; expected "
            f"torchvision's layout {data_dir}/{cls.base_folder}/{{{','.join(files)}}}. "
            f"Pass --download to fetch it into {data_dir}, or point --data-dir at the folder "
            f"that holds {cls.base_folder}/"
        )
    try:
        # torchvision prints download/extract progress on stdout, which --json reserves.
        with contextlib.redirect_stdout(sys.stderr):
            official_train = cls(str(data_dir), train=True, download=download)
            official_test = cls(str(data_dir), train=False, download=False)
    except RuntimeError as e:
        raise Natv2Error(
            f"{name} in {folder} failed its checksum check ({e}); expected the unmodified files "
            f"of {cls.url}: delete {folder} and rerun with --download"
        ) from e
    except OSError as e:  # network errors (URLError is an OSError)
        raise Natv2Error(
            f"downloading {name} from {cls.url} failed ({e}); download it by hand and unpack it "
            f"into {data_dir} (giving {folder}), then run without --download"
        ) from e

    s = size
    pools = []
    for split, ds in (("train", official_train), ("test", official_test)):
        images = fit_images(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), s)
        labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        pools.append(TensorImageSet(images, labels, f"{name}/{split}"))
    train, val, _ = carve(pools[0], CIFAR_VAL_FRACTION, 0.0, seed)
    assert val is not None
    stats = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return make_splits(
        name,
        train,
        val,
        pools[1],
        classes=official_train.classes,
        storage_size=s,
        split_seed=seed,
        augment="crop_flip",
        stats=stats,
    )
