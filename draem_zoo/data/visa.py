"""Reading VisA as distributed (Zou et al., ECCV 2022; 12 categories), through its own split file:

    <root>/split_csv/1cls.csv                       object,split,label,image,mask (paths relative to <root>)
    <root>/<category>/Data/Images/Normal/*.JPG      normal images
    <root>/<category>/Data/Images/Anomaly/*.JPG     anomalous images
    <root>/<category>/Data/Masks/Anomaly/*.png      their masks (0 = normal, non-zero = anomalous)

The one-class split (``1cls.csv``) is the one the field reports: training on its ``train`` rows (all
normal), testing on its ``test`` rows. A seeded share of the training rows is held out for validation.
An anomalous row with an empty ``mask`` is labelled per image only (a CSV of one's own data with a
``label`` and no ``mask`` column is read the same way): image metrics only. A row naming a missing
file, an unknown split or label, a CSV without the needed columns, and a category where some anomalous
rows have a mask and others none are errors naming the CSV line and the fix.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

from ..errors import DataError
from .category import GOOD, CategoryFiles, hold_out
from .images import check_link
from .masks import check_mask_size
from .mvtec import check_root

SPLIT_CSV = Path("split_csv") / "1cls.csv"
LAYOUT = "split_csv/1cls.csv (object,split,label,image,mask) with <category>/Data/{Images,Masks}"
COLUMNS = ("object", "split", "label", "image")
ANOMALY = "anomaly"
LABELS = {"normal": 0, "anomaly": 1}


def is_visa(root: Path) -> bool:
    return (root / SPLIT_CSV).is_file()


@lru_cache(maxsize=8)
def _rows(csv_path: Path, stamp: tuple) -> tuple[tuple[int, dict], ...]:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # a BOM, CRLF line ends: as spreadsheets write
        reader = csv.DictReader(f)
        reader.fieldnames = [(n or "").strip().lower() for n in reader.fieldnames or []]
        missing = [c for c in COLUMNS if c not in reader.fieldnames]
        if missing:
            raise DataError(f"{csv_path}: no column {', '.join(missing)} (its header: "
                            f"{','.join(reader.fieldnames) or 'empty'}); VisA's split file has the columns "
                            "object,split,label,image,mask")
        out = []
        for row in reader:
            clean = {k: (v or "").strip() for k, v in row.items() if k}
            for col in ("image", "mask"):  # written on Windows: a\\b
                clean[col] = clean.get(col, "").replace("\\", "/")
            if not any(clean.values()):
                continue
            if not clean["object"]:
                raise DataError(f"{csv_path}:{reader.line_num}: a row without an object (category); fill it in or "
                                "delete the row")
            out.append((reader.line_num, clean))
        return tuple(out)


def rows(root: Path) -> tuple[tuple[int, dict], ...]:
    """(line number, row) of the split file, read once per change of it."""
    path = root / SPLIT_CSV
    st = path.stat()
    return _rows(path, (st.st_mtime_ns, st.st_size, st.st_ino))


def list_categories(root: str | Path) -> list[str]:
    """The objects of the split file whose folders are there (a subset of VisA's archive may be extracted)."""
    root = check_root(root)
    return sorted(c for c in {r["object"] for _, r in rows(root)} if (root / c).is_dir()) if is_visa(root) else []


def _file(root: Path, line: int, row: dict, column: str) -> Path:
    path = root / row[column]
    check_link(path)
    if not path.is_file():
        raise DataError(f"{root / SPLIT_CSV}:{line}: its {column} {row[column]} is not there ({path}); restore the file "
                        "from the VisA archive, or delete the row")
    return path


def scan_category(root: str | Path, category: str, val_fraction: float = 0.1, split_seed: int = 0,
                  check_sizes: bool = True, progress: bool = False) -> CategoryFiles:
    """The rows of ``category`` in the split file, every file named there checked."""
    root = check_root(root)
    csv_path = root / SPLIT_CSV
    if not is_visa(root):
        raise DataError(f"{csv_path}: missing; VisA is read through its split file ({LAYOUT})")
    mine = [(i, r) for i, r in rows(root) if r["object"] == category]
    if not mine:
        raise DataError(f"{csv_path}: no rows for category {category!r}; categories there: "
                        f"{', '.join(list_categories(root)) or 'none'}")
    if not (root / category).is_dir():
        raise DataError(f"{root / category}: missing, though {csv_path.name} lists {category}; extract it from the "
                        "VisA archive, or leave it out with --categories")
    normals: list[Path] = []
    files = CategoryFiles(root, category, [], [], [], [], [], [], dataset="visa")
    masked: tuple[int, bool] | None = None  # (line, has mask) of the first anomalous test row
    for line, r in mine:
        label, split = r["label"].lower(), r["split"].lower()
        if label not in LABELS or split not in ("train", "test"):
            raise DataError(f"{csv_path}:{line}: split {r['split']!r}, label {r['label']!r}; a row's split is train or "
                            "test and its label normal or anomaly")
        image = _file(root, line, r, "image")
        if split == "train":
            if label != "normal":
                raise DataError(f"{csv_path}:{line}: an anomalous training image ({r['image']}); training is on normal "
                                "images only: move the row to the test split")
            normals.append(image)
            continue
        files.test.append(image)
        files.test_labels.append(LABELS[label])
        files.test_defects.append(GOOD if label == "normal" else ANOMALY)
        mask = _file(root, line, r, "mask") if label == ANOMALY and r.get("mask") else None
        if label == ANOMALY:
            if masked is None:
                masked = (line, mask is not None)
            elif masked[1] != (mask is not None):
                first = line if masked[1] else masked[0]
                raise DataError(f"{csv_path}:{first}: anomalous {category} image without a mask, while other rows "
                                "of the category have one; give every anomalous row its mask, or none (image labels "
                                "only)")
            if mask is not None and check_sizes:
                check_mask_size(image, mask)
        files.test_masks.append(mask)
    if not normals:
        raise DataError(f"{csv_path}: no training rows (split train, label normal) for {category}; the category "
                        "cannot be trained")
    files.train, files.val = hold_out(normals, val_fraction, split_seed)
    files.validation = f"{val_fraction:g} of the split file's training rows held out (seed {split_seed})"
    if masked is not None and not masked[1]:
        files.unmasked.append(ANOMALY)
    return files
