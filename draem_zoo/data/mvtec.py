"""Reading MVTec-AD-layout datasets.

    <root>/<category>/train/good/*.png          normal training images
    <root>/<category>/test/good/*.png           normal test images
    <root>/<category>/test/<defect>/*.png       anomalous test images, one folder per defect type
    <root>/<category>/ground_truth/<defect>/<name>_mask.png   their masks (PNG, BMP or TIFF; see find_mask)

VisA, BTAD, MPDD and most users' own data are converted to this layout. Every image
becomes RGB (grayscale repeated, alpha dropped, 16-bit scaled), is resized to the
configured size (bilinear, antialiased; masks nearest-neighbour) and cached as uint8.
A seeded validation split holds out a fraction of ``train/good``; ``test/`` is never
touched by it. Everything is checked before any training starts: a missing folder,
an empty category, a test image without its mask, a mask of another size than its
image (both as displayed, EXIF orientation applied), a dangling or looping symbolic link,
an image above the pixel limit and a corrupt file each raise a :class:`DataError` that
names the path.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from ..errors import ConfigError, DataError
from .cache import cached_stack
from .images import (
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    RESIZE_RECIPES,
    ImageHeader,
    check_link,
    check_mask_format,
    image_header,
    list_images,
    read_many,
    read_mask,
    read_rgb,
)

GOOD = "good"
MIN_VALIDATION_NORMALS = 1  # held out of train/good; the split needs one more image to train on


@dataclass
class DataConfig:
    """Where the data is and how it is split.

    val_fraction: share of train/good held out for validation (never from test/).
    split_seed: seed of that split.
    resize: "pil" (bilinear, antialiased when shrinking; masks nearest-neighbour) or "opencv" (the
    original DRAEM code's cv2.resize, and its masks resized bilinearly and truncated).
    """

    root: str | None = None
    category: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    resize: Literal["pil", "opencv"] = "pil"

    def validate(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={self.val_fraction}: must be in [0, 1)")


@dataclass
class CategoryFiles:
    """The files of one category, checked, before any decoding."""

    root: Path
    category: str
    train: list[Path]
    val: list[Path]
    test: list[Path]
    test_labels: list[int]
    test_defects: list[str]
    test_masks: list[Path | None]

    def counts(self) -> dict:
        per_defect: dict[str, int] = {}
        for d in self.test_defects:
            per_defect[d] = per_defect.get(d, 0) + 1
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test), "test_per_defect": per_defect}

    def fingerprint(self) -> dict:
        """Category, file count and a hash of the sorted relative file list."""
        base = self.root / self.category
        rel = sorted(str(p.relative_to(base)) for p in [*self.train, *self.val, *self.test])
        digest = hashlib.sha256("\n".join(rel).encode()).hexdigest()
        return {"category": self.category, "files": len(rel), "file_list_sha256": digest,
                "counts": self.counts()}


@dataclass
class CategoryData:
    """Decoded, resized uint8 tensors of one category."""

    files: CategoryFiles
    image_size: int
    train: torch.Tensor  # (N, 3, S, S) uint8
    val: torch.Tensor  # (M, 3, S, S) uint8
    test: torch.Tensor  # (T, 3, S, S) uint8
    test_masks: torch.Tensor  # (T, 1, S, S) bool
    test_labels: torch.Tensor  # (T,) int64
    test_defects: list[str] = field(default_factory=list)


def _images_in(folder: Path) -> list[Path]:
    return list_images(folder)


def _subfolders(folder: Path) -> list[str]:
    """Names of the sub-folders (defect types) of ``folder``; an entry that is a dangling or looping
    link (a defect folder that went missing) is a DataError naming it."""
    if not folder.is_dir():
        check_link(folder)
        return []
    names = []
    for p in folder.iterdir():
        if not p.name.startswith(".") and (not p.suffix or p.suffix.lower() in IMAGE_SUFFIXES):
            check_link(p)
        if p.is_dir():
            names.append(p.name)
    return sorted(names)


def find_mask(folder: Path, img: Path) -> Path:
    """The mask of anomalous test image ``img`` in ``folder`` (``ground_truth/<defect>``): ``NAME_mask.png``
    (MVTec AD's name), else ``NAME_mask`` or ``NAME`` with a lossless suffix (.png, .bmp, .tif, .tiff;
    as some datasets name them). A mask found only in a lossy format (JPEG, WebP) is a DataError naming
    it; none at all, one naming the expected file."""
    expected = folder / f"{img.stem}_mask.png"
    if expected.is_file():
        return expected
    found = [p for p in (sorted(folder.glob(f"{img.stem}_mask.*")) + sorted(folder.glob(f"{img.stem}.*")))
             if p.is_file()] if folder.is_dir() else []
    for p in found:
        if p.suffix.lower() in MASK_SUFFIXES:
            return p
    for p in found:
        if p.suffix.lower() in IMAGE_SUFFIXES:
            check_mask_format(p)  # raises: a lossy mask
    raise DataError(f"{img}: no mask for this anomalous test image; expected {expected} (or NAME_mask / NAME with "
                    f"{', '.join(MASK_SUFFIXES)}; pixels at half their range or more = anomalous; an all-black mask if "
                    "the defect is not localised)")


def check_mask_size(img: Path, mask: Path) -> None:
    """The mask must have its image's displayed size (both with their EXIF orientation applied, as
    they are decoded); a mask in the stored orientation of an EXIF-rotated image is named as such."""
    ih, mh = image_header(img), image_header(mask)
    if ih.displayed == mh.displayed:
        return
    (dh, dw), (mdh, mdw) = ih.displayed, mh.displayed
    if ih.swapped and (mdh, mdw) == (ih.height, ih.width):
        raise DataError(
            f"{mask}: mask is {mdw}x{mdh}, the stored size of its image {img}, but that image has EXIF orientation "
            f"{ih.orientation} ({ih.turn()}): it is read, as any viewer shows it, at {dw}x{dh}, and this mask would not "
            f"line up with it; save the mask in the image's displayed orientation ({dw}x{dh}), or strip the image's "
            "EXIF orientation tag (keeping its stored pixels) so that both are read as stored")
    raise DataError(f"{mask}: mask is {mdw}x{mdh}{_exif_note(mh)} but its image {img} is {dw}x{dh}{_exif_note(ih)}; "
                    "masks must have their image's size")


def _exif_note(h: ImageHeader) -> str:
    return f" (stored {h.width}x{h.height}, EXIF orientation {h.orientation}: {h.turn()})" if h.swapped else ""


def list_categories(root: str | Path) -> list[str]:
    """Sub-folders of ``root`` that have a ``train/good`` folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: the data root does not exist or is not a folder")
    return sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())


def select_categories(root: str | Path, spec: str | None, purpose: str) -> list[str]:
    """The categories ``spec`` names ("a,b" or "all") under ``root``; an unknown name or none at
    all is an error naming what is there (``purpose``: what they are for, for the message)."""
    have = list_categories(root)
    wanted = have if spec in ("all", "", None) else [c.strip() for c in spec.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in have]
    if unknown:
        raise DataError(f"--categories: {', '.join(unknown)} not found under {root} "
                        f"(categories there: {', '.join(have) or 'none'})")
    if not wanted:
        raise DataError(f"{root}: no categories (folders with train/good/) to {purpose}")
    return wanted


def describe(root: str | Path) -> dict[str, dict]:
    """Counts per category, split and defect type (no image is decoded)."""
    return {c: scan_category(root, c, check_sizes=False).counts() for c in list_categories(root)}


def scan_category(root: str | Path, category: str, val_fraction: float = 0.1, split_seed: int = 0,
                  check_sizes: bool = True, progress: bool = False) -> CategoryFiles:
    """List and check the files of one category; raises DataError naming what is wrong (``progress``: a
    bar over the test images, whose masks' headers are read)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: the data root does not exist or is not a folder")
    base = root / category
    if not base.is_dir():
        have = list_categories(root)
        raise DataError(f"{base}: no category {category!r} under {root}; categories there: "
                        f"{', '.join(have) if have else 'none (expected <root>/<category>/train/good/)'}")
    good = base / "train" / GOOD
    check_link(good)
    if not good.is_dir():
        raise DataError(f"{good}: missing; a category needs train/good/ with normal images "
                        "(MVTec AD layout: <root>/<category>/train/good/*.png)")
    train_all = _images_in(good)
    if not train_all:
        raise DataError(f"{good}: no images (looked for .png, .jpg, .bmp, .tif, .webp); the category is empty")
    n_val = int(round(len(train_all) * val_fraction))
    if val_fraction > 0 and len(train_all) >= 2:
        n_val = max(1, min(n_val, len(train_all) - 1))
    else:
        n_val = 0
    g = torch.Generator().manual_seed(split_seed)
    order = torch.randperm(len(train_all), generator=g).tolist()
    val_idx = set(order[:n_val])
    train = [p for i, p in enumerate(train_all) if i not in val_idx]
    val = [p for i, p in enumerate(train_all) if i in val_idx]

    test, labels, defects, masks = [], [], [], []
    test_dir = base / "test"
    bar = tqdm(desc=f"{category}: checking test images and masks", unit="img", leave=False) if progress else None
    try:
        for d in _subfolders(test_dir):
            _scan_defect(base, d, check_sizes, test, labels, defects, masks, bar)
    finally:
        if bar is not None:  # (a bar without a total has no truth value)
            bar.close()
    return CategoryFiles(root, category, train, val, test, labels, defects, masks)


def _scan_defect(base: Path, d: str, check_sizes: bool, test: list, labels: list, defects: list, masks: list,
                 bar) -> None:
    """The test images of defect type ``d`` (or good) with their masks, appended to the lists."""
    test_dir = base / "test"
    if d != GOOD:
        _images_in(base / "ground_truth" / d)  # a broken link among the masks is named, not "no mask"
    for img in _images_in(test_dir / d):
        test.append(img)
        defects.append(d)
        labels.append(0 if d == GOOD else 1)
        if bar is not None:
            bar.update(1)
        if d == GOOD:
            masks.append(None)
            continue
        mask = find_mask(base / "ground_truth" / d, img)
        if check_sizes:
            check_mask_size(img, mask)
        masks.append(mask)


def load_category(cfg: DataConfig, image_size: int, progress: bool = False,
                  threads: int | None = None, splits: tuple[str, ...] = ("train", "val", "test")) -> CategoryData:
    """Check every file of the category, then decode and resize the requested splits.

    Each split is decoded once per node and cached (:mod:`.cache`); later runs load it."""
    if not cfg.root or not cfg.category:
        raise DataError("data.root and data.category must be set (--data ROOT --category NAME)")
    files = scan_category(cfg.root, cfg.category, cfg.val_fraction, cfg.split_seed, progress=progress)
    if "train" in splits and cfg.val_fraction > 0 and not files.val:
        good = Path(cfg.root).expanduser() / cfg.category / "train" / GOOD
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

    def rgb(p: Path) -> torch.Tensor:
        return read_rgb(p, image_size, how)

    def mask(p: Path | None) -> torch.Tensor:
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
