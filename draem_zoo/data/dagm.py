"""Reading DAGM 2007 as distributed (ten synthetic texture classes with weakly labelled defects):

    <root>/Class<k>/Train/*.PNG                   training images, defective ones among them
    <root>/Class<k>/Train/Label/Labels.txt        one line per image: index, label (0/1), image, 0, label image
    <root>/Class<k>/Train/Label/*_label.PNG       the defects' (elliptical, weak) label images
    <root>/Class<k>/Test/... the same

As in the DRAEM paper, training uses the defect-free training images only (label 0); a seeded share of
them is held out for validation. Test metrics on ``Test`` (labels and label images from its Labels.txt).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import DataError
from .category import GOOD, CategoryFiles, hold_out
from .images import check_link
from .masks import check_mask_size
from .mvtec import category_folder, check_root

LAYOUT = "Class<k>/{Train,Test}/*.PNG with Class<k>/{Train,Test}/Label/Labels.txt"
DEFECT = "defect"
_CLASS = re.compile(r"Class(\d+)$")


def list_categories(root: str | Path) -> list[str]:
    """``Class<k>`` folders with a ``Train`` folder, in class order."""
    root = check_root(root)
    found = [p.name for p in root.iterdir() if _CLASS.match(p.name) and (p / "Train").is_dir()]
    return sorted(found, key=lambda n: int(_CLASS.match(n).group(1)))


def read_labels(split: Path) -> list[tuple[Path, int, Path | None]]:
    """(image, label, label image or None) per line of ``split/Label/Labels.txt``."""
    path = split / "Label" / "Labels.txt"
    check_link(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; DAGM lists each image's label there ({LAYOUT}); restore it from the "
                        "DAGM 2007 archive")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        data_row = len(parts) >= 3 and parts[1] in ("0", "1")
        if not parts or (n == 1 and not data_row):  # the first line is a header (a lone 1 as distributed)
            continue
        if not data_row:
            raise DataError(f"{path}:{n}: {line.strip()!r}; a line reads: index, label (0 or 1), image file, 0, "
                            "label image file (0 for none)")
        image = split / parts[2]
        if not Path(parts[2]).suffix and not image.exists():  # a name without its suffix: the archive's .PNG
            image = image.with_name(f"{parts[2]}.PNG")
        check_link(image)
        if not image.is_file():
            raise DataError(f"{path}:{n}: its image {parts[2]} is not there ({image}); restore it from the archive, "
                            "or delete the line")
        label_file = parts[4] if len(parts) > 4 and parts[4] != "0" else None
        mask = split / "Label" / label_file if label_file else None
        if parts[1] == "1" and mask is None:
            raise DataError(f"{path}:{n}: defective image {parts[2]} without a label image; a defective line names "
                            "its label image (NNNN_label.PNG in Label/)")
        if mask is not None:
            check_link(mask)
            if not mask.is_file():
                raise DataError(f"{path}:{n}: its label image {label_file} is not there ({mask}); restore it from "
                                "the archive")
        out.append((image, int(parts[1]), mask))
    return out


def scan_category(root: str | Path, category: str, val_fraction: float = 0.1, split_seed: int = 0,
                  check_sizes: bool = True, progress: bool = False) -> CategoryFiles:
    root = check_root(root)
    base = category_folder(root, category, list_categories(root), f"DAGM 2007: {LAYOUT}")
    normals = [img for img, label, _ in read_labels(base / "Train") if label == 0]
    if not normals:
        raise DataError(f"{base / 'Train' / 'Label' / 'Labels.txt'}: no defect-free training image (label 0); "
                        f"{category} cannot be trained")
    train, val = hold_out(normals, val_fraction, split_seed)
    files = CategoryFiles(root, category, train, val, [], [], [], [], dataset="dagm",
                          validation=f"{val_fraction:g} of the defect-free Train images held out (seed {split_seed})")
    if (base / "Test").is_dir():
        for img, label, mask in read_labels(base / "Test"):
            if mask is not None and check_sizes:
                check_mask_size(img, mask)
            files.test.append(img)
            files.test_labels.append(label)
            files.test_defects.append(DEFECT if label else GOOD)
            files.test_masks.append(mask if label else None)
    return files
