"""The demo dataset (:mod:`.demo`) written in the layouts of VisA, MVTec AD 2 and DAGM 2007 as they are
distributed (their folder names, file names, suffixes, CSV columns and label files), in miniature:
what the tests read, and a way to try ``--dataset`` without downloading the real ones.

    write_layout("visa", root)       root/split_csv/1cls.csv, root/candle/Data/{Images,Masks}/...
    write_layout("mvtec_ad2", root)  root/can/{train/good, validation/good, test_public/..., test_private*}
    write_layout("dagm", root)       root/Class1/{Train,Test}/NNNN.PNG with Label/Labels.txt, NNNN_label.PNG
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .demo import make_demo_dataset

NAMES = {"visa": "candle", "mvtec_ad2": "can", "dagm": "Class1", "mvtec": "weave"}


def _demo(tmp: Path, surface: str, size: int, n_train: int, n_good: int, n_defect: int) -> Path:
    return make_demo_dataset(tmp, categories=(surface,), size=size, n_train=n_train, n_test_good=n_good,
                             n_test_defect=n_defect, defects=("scratch", "hole")) / surface


def _copy(src: Path, dst: Path, fmt: str | None = None, gray: bool = False) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if fmt is None:
        shutil.copyfile(src, dst)
        return
    im = Image.open(src)
    (im.convert("L") if gray else im.convert("RGB")).save(dst, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def write_layout(kind: str, root: str | Path, size: int = 32, n_train: int = 10, n_good: int = 3, n_defect: int = 2,
                 surface: str = "weave", masks: bool = True, category: str | None = None) -> Path:
    """Write one category of the demo data under ``root`` in ``kind``'s layout; return ``root``.
    ``masks=False``: the anomalous test images are labelled per image only (VisA: an empty mask column;
    MVTec AD layout: no ground_truth/)."""
    root = Path(root)
    cat = category or NAMES[kind]
    with tempfile.TemporaryDirectory() as tmp:
        src = _demo(Path(tmp), surface, size, n_train, n_good, n_defect)
        train = sorted((src / "train" / "good").iterdir())
        good = sorted((src / "test" / "good").iterdir())
        bad = [(p, src / "ground_truth" / d / f"{p.stem}_mask.png") for d in ("scratch", "hole")
               for p in sorted((src / "test" / d).iterdir())]
        {"visa": _visa, "mvtec_ad2": _mvtec_ad2, "dagm": _dagm, "mvtec": _mvtec}[kind](
            root, cat, train, good, bad, masks, src)
    return root


def _mvtec(root: Path, cat: str, train, good, bad, masks: bool, src: Path) -> None:
    shutil.copytree(src, root / cat)
    if not masks:
        shutil.rmtree(root / cat / "ground_truth")


def _visa(root: Path, cat: str, train, good, bad, masks: bool, src: Path) -> None:
    rows = []
    for i, p in enumerate([*train, *good]):
        rel = f"{cat}/Data/Images/Normal/{i:04d}.JPG"
        _copy(p, root / rel, "JPEG")
        rows.append([cat, "train" if i < len(train) else "test", "normal", rel, ""])
    for i, (p, m) in enumerate(bad):
        rel, mrel = f"{cat}/Data/Images/Anomaly/{i:03d}.JPG", f"{cat}/Data/Masks/Anomaly/{i:03d}.png"
        _copy(p, root / rel, "JPEG")
        if masks:  # VisA's masks: 0 normal, non-zero (small values) anomalous
            (root / mrel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((np.asarray(Image.open(m)) > 127).astype(np.uint8)).save(root / mrel)
        rows.append([cat, "test", "anomaly", rel, mrel if masks else ""])
    path = root / "split_csv" / "1cls.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = list(csv.reader(path.open())) [1:] if path.is_file() else []
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["object", "split", "label", "image", "mask"])
        w.writerows(old + rows)


def _mvtec_ad2(root: Path, cat: str, train, good, bad, masks: bool, src: Path) -> None:
    base = root / cat
    n_val = max(1, len(train) // 5)
    for i, p in enumerate(train[n_val:]):
        _copy(p, base / "train" / "good" / f"{i:03d}_regular.png")
    for i, p in enumerate(train[:n_val]):
        _copy(p, base / "validation" / "good" / f"{i:03d}_regular.png")
    for i, p in enumerate(good):
        _copy(p, base / "test_public" / "good" / f"{i:03d}_regular.png")
    for i, (p, m) in enumerate(bad):
        _copy(p, base / "test_public" / "bad" / f"{i:03d}_regular.png")
        if masks:
            _copy(m, base / "test_public" / "ground_truth" / "bad" / f"{i:03d}_regular_mask.png")
    private = [*good, *(p for p, _ in bad)]
    for i, p in enumerate(private):
        _copy(p, base / "test_private" / f"{i:03d}_regular.png")
    for i, p in enumerate(private[::2]):
        _copy(p, base / "test_private_mixed" / f"{i:03d}_mixed.png")


def _dagm(root: Path, cat: str, train, good, bad, masks: bool, src: Path) -> None:
    half = len(bad) // 2
    for split, normals, defects in (("Train", train, bad[:half]), ("Test", good, bad[half:])):
        folder = root / cat / split
        lines = ["1"]
        for i, p in enumerate(normals):
            _copy(p, folder / f"{i:04d}.PNG", "PNG", gray=True)
            lines.append(f"{len(lines)}\t0\t{i:04d}.PNG\t0\t0")
        for j, (p, m) in enumerate(defects, len(normals)):
            _copy(p, folder / f"{j:04d}.PNG", "PNG", gray=True)
            _copy(m, folder / "Label" / f"{j:04d}_label.PNG", "PNG", gray=True)
            lines.append(f"{len(lines)}\t1\t{j:04d}.PNG\t0\t{j:04d}_label.PNG")
        (folder / "Label").mkdir(parents=True, exist_ok=True)
        (folder / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")
