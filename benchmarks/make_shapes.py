"""Write ``shapes.npz``: a 10-class, 28x28 grayscale dataset of drawn shapes, made here.

A dataset none of natv2's defaults was tuned on, for checking that what natv2 hands over
(accuracy, int8 files) holds on data of the user's own: outline and filled shapes (circle,
square, triangle, cross, ring, diamond, horizontal bar, vertical bar, X, star), each drawn at a
random position, size, rotation and stroke width, with blur-free anti-aliasing from 4x
supersampling, a random background level and Gaussian pixel noise. Deterministic for a seed.

    python benchmarks/make_shapes.py shapes.npz            # 6,000 train + 1,000 test
    natv2 search --device microcontroller-profile --dataset npz:shapes.npz
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

CLASSES = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "diamond",
    "hbar",
    "vbar",
    "x",
    "star",
)
SIZE = 28
SUPER = 4  # supersampling factor


def _polygon_mask(px: np.ndarray, py: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd rule: inside the polygon ``verts`` (k x 2)."""
    inside = np.zeros(px.shape, dtype=bool)
    k = len(verts)
    for i in range(k):
        x1, y1 = verts[i]
        x2, y2 = verts[(i + 1) % k]
        crosses = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = (x2 - x1) * (py - y1) / (y2 - y1 + 1e-12) + x1
        inside ^= crosses & (px < xint)
    return inside


def _segment_dist(px, py, a, b) -> np.ndarray:
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return np.hypot(px - (ax + t * dx), py - (ay + t * dy))


def _draw(cls: int, rng: np.random.Generator) -> np.ndarray:
    n = SIZE * SUPER
    coords = (np.arange(n) + 0.5) / SUPER
    px, py = np.meshgrid(coords, coords)
    r = rng.uniform(6.0, 11.0)
    cx, cy = rng.uniform(r * 0.8 + 1, SIZE - r * 0.8 - 1, size=2)
    theta = rng.uniform(0, 2 * math.pi)
    stroke = rng.uniform(1.2, 2.8)
    filled = rng.random() < 0.5
    # coordinates in the shape's rotated frame
    u = (px - cx) * math.cos(theta) + (py - cy) * math.sin(theta)
    v = -(px - cx) * math.sin(theta) + (py - cy) * math.cos(theta)
    name = CLASSES[cls]

    def poly(k: int, radius: float, phase: float = 0.0, inner: float | None = None):
        pts = []
        steps = 2 * k if inner is not None else k
        for i in range(steps):
            rad = radius if inner is None or i % 2 == 0 else inner
            a = phase + 2 * math.pi * i / steps
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        verts = np.array(pts)
        if filled:
            return _polygon_mask(u, v, verts)
        d = np.min(
            [_segment_dist(u, v, verts[i], verts[(i + 1) % len(verts)]) for i in range(len(verts))],
            axis=0,
        )
        return d < stroke / 2

    if name == "circle":
        d = np.hypot(u, v)
        mask = d < r if filled else np.abs(d - r) < stroke / 2
    elif name == "ring":
        d = np.hypot(u, v)
        mask = np.abs(d - r) < stroke  # always a thick ring, with a concentric dot
        mask |= d < stroke
    elif name == "square":
        mask = poly(4, r, math.pi / 4)
    elif name == "diamond":
        verts = np.array([(0, r), (0.6 * r, 0), (0, -r), (-0.6 * r, 0)])
        if filled:
            mask = _polygon_mask(u, v, verts)
        else:
            d = np.min([_segment_dist(u, v, verts[i], verts[(i + 1) % 4]) for i in range(4)], 0)
            mask = d < stroke / 2
    elif name == "triangle":
        mask = poly(3, r, math.pi / 2)
    elif name == "star":
        mask = poly(5, r, math.pi / 2, inner=0.45 * r)
    elif name == "cross":
        mask = (np.abs(u) < stroke) & (np.abs(v) < r) | (np.abs(v) < stroke) & (np.abs(u) < r)
    elif name == "x":
        a = np.abs(u - v) / math.sqrt(2) < stroke
        b = np.abs(u + v) / math.sqrt(2) < stroke
        mask = (a | b) & (np.hypot(u, v) < r)
    elif name == "hbar":  # orientation is the class: no free rotation
        mask = (np.abs(py - cy) < stroke * 1.3) & (np.abs(px - cx) < r)
    elif name == "vbar":
        mask = (np.abs(px - cx) < stroke * 1.3) & (np.abs(py - cy) < r)
    else:  # pragma: no cover
        raise ValueError(name)
    img = mask.reshape(SIZE, SUPER, SIZE, SUPER).mean(axis=(1, 3))
    background = rng.uniform(0.0, 0.25)
    ink = rng.uniform(0.6, 1.0)
    img = background + (ink - background) * img + rng.normal(0, rng.uniform(0.02, 0.12), img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def make(n_train: int, n_test: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for key, n in (("", n_train), ("_test", n_test)):
        y = np.arange(n) % len(CLASSES)
        rng.shuffle(y)
        x = np.stack([_draw(int(c), rng) for c in y])
        out[f"x{key}"], out[f"y{key}"] = x, y.astype(np.int64)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    arrays = make(args.train, args.test, args.seed)
    np.savez_compressed(
        args.out, x=arrays["x"], y=arrays["y"], x_test=arrays["x_test"], y_test=arrays["y_test"]
    )
    print(f"{args.out}: {args.train} train, {args.test} test, classes {', '.join(CLASSES)}")


if __name__ == "__main__":
    main()
