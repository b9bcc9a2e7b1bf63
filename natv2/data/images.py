"""Image files and arrays to uint8 tensors 3xSxS, the one form every split holds.

**Three channels, always.** Grayscale images are replicated to RGB: the supernet takes 3-channel
input, so every exported model accepts ordinary RGB images whatever it was trained on. S is the
*storage size*: a shorter side resized to S (antialiased), then a centre crop.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from natv2.errors import Natv2Error
from natv2.untrusted import shown

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)

#: largest image file read (a 400-megapixel PNG would take gigabytes to decode)
MAX_IMAGE_PIXELS = 64_000_000  # below PIL's own bomb limit (89M), so PIL never warns first


def read_image(path: str | Path, size: int) -> torch.Tensor:
    """One image file as uint8 3xsizexsize: RGB, shorter side resized to ``size``, centre crop."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError(f"{img.width}x{img.height} pixels")
                rgb = img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise Natv2Error(
            f"image {path} is too large to read ({shown(e, 100)}); natv2 reads images of at "
            f"most {MAX_IMAGE_PIXELS:,} pixels: shrink or remove it"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise Natv2Error(
            f"cannot read image {path}: {shown(e, 100)}; expected a readable image file "
            f"({', '.join(IMAGE_EXTENSIONS)}): remove or replace it"
        ) from None
    if rgb.size != (size, size):
        rgb = TF.center_crop(TF.resize(rgb, [size], antialias=True), [size, size])
    return TF.pil_to_tensor(rgb)


def fit_images(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """uint8 Nx3xHxW → Nx3xsizexsize: shorter side resized (antialiased), then centre crop."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        part = TF.resize(images[start : start + chunk], [size], antialias=True)
        out[start : start + chunk] = TF.center_crop(part, [size, size])
    return out


def to_rgb_nchw(x: np.ndarray) -> torch.Tensor:
    """uint8 NxHxW, NxHxWx1 or NxHxWx3 → uint8 tensor Nx3xHxW (grayscale replicated)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim == 3:
        t = t.unsqueeze(-1)
    t = t.permute(0, 3, 1, 2)
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    return t.contiguous()


def is_image(p: Path) -> bool:
    """A visible file with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
