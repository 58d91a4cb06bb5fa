"""A small synthetic MVTec-layout dataset: procedural surfaces with procedural defects.

Used by the tests and the quickstart so that everything runs without downloads. Each
category is a kind of surface whose normal images vary (phase, tint, noise); test
defects are drawn with PIL (scratches, stains, holes) and written with their masks:

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEFECTS = ("scratch", "stain", "hole")
SURFACES = ("weave", "granite", "brushed")


def _surface(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "weave":
        p = 8.0
        ph = rng.random(2) * 2 * math.pi
        v = 0.5 + 0.22 * np.sin(2 * math.pi * p * xx + ph[0]) * np.sin(2 * math.pi * p * yy + ph[1])
        tint = np.array([0.9, 0.75, 0.55])
    elif kind == "granite":
        v = np.zeros((size, size), np.float32)
        for octave, amp in ((4, 0.5), (8, 0.25), (16, 0.15), (32, 0.1)):
            coarse = rng.random((octave + 1, octave + 1)).astype(np.float32)
            img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
            v += amp * (np.asarray(img, np.float32) / 255 - 0.5)
        v = 0.55 + 0.6 * v
        tint = np.array([0.8, 0.8, 0.85])
    elif kind == "brushed":
        streaks = rng.random(size).astype(np.float32)
        v = 0.6 + 0.08 * (np.convolve(streaks, np.ones(5) / 5, mode="same")[None, :] - 0.5) + 0.05 * yy
        v = np.broadcast_to(v, (size, size)).copy()
        tint = np.array([0.85, 0.87, 0.9])
    else:
        raise ValueError(f"unknown surface {kind!r}; choose from {SURFACES}")
    tint = tint * (0.95 + 0.1 * rng.random(3))
    img = v[..., None] * tint[None, None, :] + rng.normal(0, 0.015, (size, size, 3))
    return np.clip(img, 0, 1)


def _defect(kind: str, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if kind == "scratch":
        x0, y0 = rng.integers(size // 8, size - size // 8, 2)
        ang = rng.random() * math.pi
        length = size * (0.3 + 0.3 * rng.random())
        x1, y1 = x0 + length * math.cos(ang), y0 + length * math.sin(ang)
        draw.line([(int(x0), int(y0)), (int(x1), int(y1))], fill=255, width=max(2, size // 40))
        color = np.array([0.15, 0.12, 0.1]) if rng.random() < 0.5 else np.array([0.98, 0.98, 0.95])
        alpha = 0.85
    elif kind == "stain":
        cx, cy = rng.integers(size // 5, size - size // 5, 2)
        rx, ry = rng.integers(size // 14, size // 6, 2)
        draw.ellipse([int(cx - rx), int(cy - ry), int(cx + rx), int(cy + ry)], fill=255)
        color = rng.random(3) * np.array([0.6, 0.4, 0.3]) + np.array([0.3, 0.1, 0.05])
        alpha = 0.6
    elif kind == "hole":
        cx, cy = rng.integers(size // 6, size - size // 6, 2)
        r = int(rng.integers(max(2, size // 24), max(3, size // 10)))
        draw.ellipse([int(cx - r), int(cy - r), int(cx + r), int(cy + r)], fill=255)
        color = np.array([0.05, 0.05, 0.05])
        alpha = 0.95
    else:
        raise ValueError(f"unknown defect {kind!r}; choose from {DEFECTS}")
    m = np.asarray(mask, np.float32)[..., None] / 255.0
    out = img * (1 - alpha * m) + alpha * m * color[None, None, :]
    return np.clip(out, 0, 1), (m[..., 0] > 0.5).astype(np.uint8) * 255


def _save(path: Path, arr: np.ndarray, gray: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    u8 = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    im = Image.fromarray(u8)
    (im.convert("L") if gray else im).save(path)


def make_demo_dataset(root: str | Path, categories: tuple[str, ...] = ("weave", "granite"), size: int = 128,
                      n_train: int = 40, n_test_good: int = 10, n_test_defect: int = 6,
                      defects: tuple[str, ...] = DEFECTS, seed: int = 0,
                      grayscale: tuple[str, ...] = ()) -> Path:
    """Write the dataset under ``root`` and return ``root``; categories are surface kinds."""
    root = Path(root)
    for ci, cat in enumerate(categories):
        rng = np.random.default_rng([seed, ci])
        gray = cat in grayscale
        base = root / cat
        for i in range(n_train):
            _save(base / "train" / "good" / f"{i:03d}.png", _surface(cat, size, rng), gray)
        for i in range(n_test_good):
            _save(base / "test" / "good" / f"{i:03d}.png", _surface(cat, size, rng), gray)
        for d in defects:
            for i in range(n_test_defect):
                img, mask = _defect(d, _surface(cat, size, rng), rng)
                _save(base / "test" / d / f"{i:03d}.png", img, gray)
                (base / "ground_truth" / d).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(base / "ground_truth" / d / f"{i:03d}_mask.png")
    return root
