"""Reading MVTec AD 2 as distributed (Heckler-Kram et al., 2025; eight scenarios):

    <root>/<category>/train/good/*.png                 normal training images
    <root>/<category>/validation/good/*.png            normal validation images (the held-out normals)
    <root>/<category>/test_public/good/*.png           normal test images
    <root>/<category>/test_public/bad/*.png            anomalous test images
    <root>/<category>/test_public/ground_truth/bad/<name>_mask.png   their masks
    <root>/<category>/test_private/*.png, test_private_mixed/*.png    test images without labels

Training uses all of ``train/good``; ``validation/good`` (not a share of ``train/good``) is the held-out
set the synthetic validation is made on, and the fingerprint records it. Test metrics are computed on
``test_public``; the private splits are scored by the benchmark's server (``predict --format mvtec_ad2``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .category import GOOD, CategoryFiles
from .images import check_link, list_images
from .mvtec import category_folder, check_root, scan_test, train_normals

LAYOUT = "<category>/train/good, <category>/validation/good, <category>/test_public/{good,bad,ground_truth/bad}"
PRIVATE_SPLITS = ("test_private", "test_private_mixed")


def list_categories(root: str | Path) -> list[str]:
    """Sub-folders of ``root`` with ``train/good`` and MVTec AD 2's ``validation`` or ``test_public``."""
    root = check_root(root)
    return sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir()
                  and ((p / "validation").is_dir() or (p / "test_public").is_dir()))


def scan_category(root: str | Path, category: str, val_fraction: float = 0.1, split_seed: int = 0,
                  check_sizes: bool = True, progress: bool = False) -> CategoryFiles:
    """List and check one scenario; ``val_fraction`` > 0 (the default) takes ``validation/good`` as the
    validation normals, 0 trains without validation (``split_seed`` is not used: the split is the dataset's)."""
    root = check_root(root)
    base = category_folder(root, category, list_categories(root), f"MVTec AD 2: {LAYOUT}")
    train = train_normals(base / "train" / GOOD, f"MVTec AD 2 layout: {LAYOUT}")
    val: list[Path] = []
    source = "none (data.val_fraction=0)"
    if val_fraction > 0:
        vdir = base / "validation" / GOOD
        check_link(vdir)
        if not vdir.is_dir():
            raise DataError(f"{vdir}: missing; MVTec AD 2 holds the held-out normal images of {category} there, and "
                            "the validation (s_f, thresholds, the best checkpoint) is made on them: restore "
                            f"{category}/validation/good/ from the MVTec AD 2 archive, or train without validation "
                            "(--set data.val_fraction=0)")
        val = list_images(vdir)
        if not val:
            raise DataError(f"{vdir}: no images; restore {category}/validation/good/ from the MVTec AD 2 archive, or "
                            "train without validation (--set data.val_fraction=0)")
        source = "validation/good"
    files = CategoryFiles(root, category, train, val, [], [], [], [], dataset="mvtec_ad2", validation=source)
    scan_test(files, base, "test_public", "test_public/ground_truth", check_sizes, progress, skip=("ground_truth",))
    return files


def private_images(root: str | Path, category: str) -> dict[str, list[Path]]:
    """The unlabelled test images of one scenario, per private split present (``test_private``,
    ``test_private_mixed``)."""
    base = Path(root).expanduser() / category
    return {s: list_images(base / s) for s in PRIVATE_SPLITS if (base / s).is_dir()}
