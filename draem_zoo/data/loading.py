"""Decoding one category: every file checked first, then each split decoded once per node and cached.

Every image becomes RGB (grayscale repeated, alpha dropped, 16-bit scaled) and is resized to the
configured size (bilinear, antialiased; masks nearest-neighbour), cached as uint8 (:mod:`.cache`)."""

from __future__ import annotations

import os

import torch
from tqdm import tqdm

from ..errors import DataError
from .cache import cached_stack
from .category import MIN_VALIDATION_NORMALS, CategoryData, DataConfig
from .datasets import scan_category
from .images import RESIZE_RECIPES, read_many, read_mask, read_rgb


def load_category(cfg: DataConfig, image_size: int, progress: bool = False,
                  threads: int | None = None, splits: tuple[str, ...] = ("train", "val", "test")) -> CategoryData:
    """Check every file of the category, then decode and resize the requested splits."""
    if not cfg.root or not cfg.category:
        raise DataError("data.root and data.category must be set (--data ROOT --category NAME)")
    files = scan_category(cfg.root, cfg.category, cfg.val_fraction, cfg.split_seed, progress=progress,
                          dataset=cfg.dataset)
    if "train" in splits and cfg.val_fraction > 0 and not files.val:
        good = files.train[0].parent
        raise DataError(
            f"{good}: {len(files.train)} normal image; training holds out data.val_fraction={cfg.val_fraction:g} of "
            f"them (at least {MIN_VALIDATION_NORMALS}) as validation normals, which choose s_f and set the thresholds, "
            f"and needs one left to train on: at least {MIN_VALIDATION_NORMALS + 1} images (10 or more for a "
            "validation that ranks anything). Add normal images, or pass --set data.val_fraction=0 to train without "
            "validation (the model then has no thresholds: predict reports scores only)")
    threads = threads or min(8, os.cpu_count() or 1)
    keep_test = "test" in splits
    bar = tqdm(total=0, desc=f"{cfg.category}: decoding", unit="img", leave=False) if progress else None

    def tick(n: int) -> None:
        if bar is not None:
            bar.update(n)

    def decoded(paths: list, reader, recipe: str, empty: torch.Tensor) -> torch.Tensor:
        if not paths:
            return empty

        def decode() -> torch.Tensor:
            if bar is not None:
                bar.total += len(paths)
                bar.refresh()
            return torch.stack(read_many(paths, reader, threads, tick))

        return cached_stack(paths, recipe, decode, threads)[0]

    how = cfg.resize

    def rgb(p) -> torch.Tensor:
        return read_rgb(p, image_size, how)

    def mask(p) -> torch.Tensor:
        return torch.zeros(1, image_size, image_size, dtype=torch.bool) if p is None else read_mask(p, image_size, how)

    rgb_how, mask_how = RESIZE_RECIPES[how]
    rgb_recipe, no_rgb = f"rgb:{image_size}:{rgb_how}", torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
    try:
        train = decoded(files.train if "train" in splits else [], rgb, rgb_recipe, no_rgb)
        val = decoded(files.val if "val" in splits else [], rgb, rgb_recipe, no_rgb)
        test = decoded(files.test if keep_test else [], rgb, rgb_recipe, no_rgb)
        masks = decoded(files.test_masks if keep_test else [], mask, f"mask:{image_size}:{mask_how}",
                        torch.zeros(0, 1, image_size, image_size, dtype=torch.bool))
    finally:
        if bar:
            bar.close()
    labels = torch.tensor(files.test_labels if keep_test else [], dtype=torch.long)
    return CategoryData(files, image_size, train, val, test, masks, labels,
                        list(files.test_defects) if keep_test else [])
