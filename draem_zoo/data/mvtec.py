"""Reading MVTec-AD-layout datasets (and users' own data in that layout).

    <root>/<category>/train/good/*.png          normal training images
    <root>/<category>/test/good/*.png           normal test images
    <root>/<category>/test/<defect>/*.png       anomalous test images, one folder per defect type
    <root>/<category>/ground_truth/<defect>/<name>_mask.png   their masks (PNG, BMP or TIFF; see find_mask)

A defect type without a ``ground_truth/<defect>/`` folder is labelled per image only: its images
count for the image metrics, and pixel metrics are reported as not available. A ``ground_truth/<defect>/``
folder with some masks missing is an error naming the first (a half-labelled folder is a mistake).
Every image becomes RGB (grayscale repeated, alpha dropped, 16-bit scaled); the seeded validation
split holds out a fraction of ``train/good``; ``test/`` is never touched by it. Everything is checked
before any training starts: a missing folder, an empty category, a test image without its mask, a mask
of another size than its image (both as displayed, EXIF orientation applied), a dangling or looping
symbolic link, an image above the pixel limit and a corrupt file each raise a :class:`DataError` that
names the path.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from ..errors import DataError
from .category import GOOD, CategoryFiles, hold_out
from .images import IMAGE_SUFFIXES, check_link, list_images
from .masks import check_mask_size, find_mask

LAYOUT = "<category>/train/good, <category>/test/<defect>, <category>/ground_truth/<defect>/<name>_mask.png"


def subfolders(folder: Path) -> list[str]:
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


def check_root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: the data root does not exist or is not a folder")
    return root


def list_categories(root: str | Path) -> list[str]:
    """Sub-folders of ``root`` that have a ``train/good`` folder."""
    root = check_root(root)
    return sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())


def category_folder(root: Path, category: str, have: list[str], expected: str) -> Path:
    """``root/category``, or a DataError naming the categories there (``expected``: the layout, for the message)."""
    base = root / category
    if not base.is_dir():
        raise DataError(f"{base}: no category {category!r} under {root}; categories there: "
                        f"{', '.join(have) if have else f'none (expected {expected})'}")
    return base


def train_normals(good: Path, layout: str) -> list[Path]:
    """The images of a training-normals folder, which must exist and hold some."""
    check_link(good)
    if not good.is_dir():
        raise DataError(f"{good}: missing; a category needs it, with normal images ({layout})")
    images = list_images(good)
    if not images:
        raise DataError(f"{good}: no images (looked for .png, .jpg, .bmp, .tif, .webp); the category is empty")
    return images


def scan_category(root: str | Path, category: str, val_fraction: float = 0.1, split_seed: int = 0,
                  check_sizes: bool = True, progress: bool = False) -> CategoryFiles:
    """List and check the files of one category; raises DataError naming what is wrong (``progress``: a
    bar over the test images, whose masks' headers are read)."""
    root = check_root(root)
    base = category_folder(root, category, list_categories(root), "<root>/<category>/train/good/")
    train, val = hold_out(train_normals(base / "train" / GOOD, "MVTec AD layout: <root>/<category>/train/good/*.png"),
                          val_fraction, split_seed)
    files = CategoryFiles(root, category, train, val, [], [], [], [], dataset="mvtec",
                          validation=f"{val_fraction:g} of train/good held out (seed {split_seed})")
    scan_test(files, base, "test", "ground_truth", check_sizes, progress)
    return files


def scan_test(files: CategoryFiles, base: Path, test: str, truth: str, check_sizes: bool, progress: bool,
              skip: tuple[str, ...] = ()) -> None:
    """The test images of every defect type under ``base/test`` (``good``: normal; folders in ``skip``
    left out) with their masks under ``base/truth/<defect>``, appended to ``files``."""
    defects = [d for d in subfolders(base / test) if d not in skip]
    orphans = [d for d in subfolders(base / truth) if d not in defects]
    unmatched = [d for d in defects if d != GOOD and not (base / truth / d).exists()]
    if orphans and unmatched:  # a misnamed mask folder would silently drop the pixel metrics
        raise DataError(f"{base / truth}: mask folders {', '.join(orphans)} match no test/ defect folder, while "
                        f"{', '.join(unmatched)} have no mask folder; rename the mask folders after their defect "
                        f"folders (ground_truth/<defect>/), or remove them to label {', '.join(unmatched)} per image "
                        "only")
    bar = tqdm(desc=f"{files.category}: checking test images and masks", unit="img", leave=False) if progress else None
    try:
        for d in defects:
            _scan_defect(files, base / test / d, base / truth / d, d, check_sizes, bar)
    finally:
        if bar is not None:  # (a bar without a total has no truth value)
            bar.close()


def _scan_defect(files: CategoryFiles, folder: Path, truth: Path, d: str, check_sizes: bool, bar) -> None:
    """The test images of defect type ``d`` (or good) with their masks, appended to ``files``; a defect
    type without a mask folder at all is labelled per image only."""
    labelled = d != GOOD and (truth.is_dir() or truth.is_symlink())
    if labelled:
        list_images(truth)  # a broken link among the masks is named, not "no mask"
    images = list_images(folder)
    if d != GOOD and not labelled and images:
        files.unmasked.append(d)
    for img in images:
        files.test.append(img)
        files.test_defects.append(d)
        files.test_labels.append(0 if d == GOOD else 1)
        if bar is not None:
            bar.update(1)
        if not labelled:
            files.test_masks.append(None)
            continue
        mask = find_mask(truth, img)
        if check_sizes:
            check_mask_size(img, mask)
        files.test_masks.append(mask)
