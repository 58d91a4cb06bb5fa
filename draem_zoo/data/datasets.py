"""Which dataset a data root holds, and its reader.

``--dataset auto`` (the default) detects the layout from the files, without copying or converting them:

* ``visa``: VisA as distributed: ``split_csv/1cls.csv`` and ``<category>/Data/{Images,Masks}`` (:mod:`.visa`)
* ``dagm``: DAGM 2007: ``Class<k>/{Train,Test}`` with their ``Label/Labels.txt`` (:mod:`.dagm`)
* ``mvtec_ad2``: MVTec AD 2: ``<category>/{train/good, validation/good, test_public}`` (:mod:`.mvtec_ad2`)
* ``mvtec``: the MVTec AD layout, which users' own data also take: ``<category>/train/good`` (:mod:`.mvtec`)

Each entry says the dataset's name, licence and Hub dataset id (for the model cards) and its readers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import DATASET_CHOICES
from ..errors import DataError
from . import dagm, mvtec, mvtec_ad2, visa
from .category import CategoryFiles


@dataclass(frozen=True)
class Dataset:
    name: str  # the --dataset value
    title: str
    license: str | None  # SPDX-style id the Hub takes; None: not known, publish asks for --license
    hub_id: str  # the card's ``datasets:`` entry
    layout: str  # one line, for messages
    categories: Callable[[Path], list[str]]
    scan: Callable[..., CategoryFiles]
    license_note: str = ""
    test_from: str = "test/"  # where its test images come from, for messages


DATASETS: dict[str, Dataset] = {
    "mvtec": Dataset("mvtec", "MVTec AD", "cc-by-nc-sa-4.0", "mvtec-ad", mvtec.LAYOUT,
                     mvtec.list_categories, mvtec.scan_category,
                     "MVTec AD is licensed CC BY-NC-SA 4.0, and so are models trained on it: non-commercial use only, "
                     "share alike, with attribution to MVTec Software GmbH."),
    "mvtec_ad2": Dataset("mvtec_ad2", "MVTec AD 2", "cc-by-nc-sa-4.0", "mvtec-ad-2", mvtec_ad2.LAYOUT,
                         mvtec_ad2.list_categories, mvtec_ad2.scan_category,
                         "MVTec AD 2 is licensed CC BY-NC-SA 4.0, and so are models trained on it: non-commercial use "
                         "only, share alike, with attribution to MVTec Software GmbH.", "test_public/"),
    "visa": Dataset("visa", "VisA", "cc-by-4.0", "visa", visa.LAYOUT, visa.list_categories, visa.scan_category,
                    "VisA (Amazon, Zou et al., ECCV 2022) is licensed CC BY 4.0: models trained on it may be used "
                    "commercially, with attribution.", "the split file's test rows"),
    "dagm": Dataset("dagm", "DAGM 2007", None, "dagm-2007", dagm.LAYOUT, dagm.list_categories, dagm.scan_category,
                    test_from="Test/ (Test/Label/Labels.txt)"),
}


def detect(root: str | Path) -> str:
    """The dataset whose files ``root`` holds; a DataError listing the layouts when none matches."""
    root = mvtec.check_root(root)
    if visa.is_visa(root):
        return "visa"
    if dagm.list_categories(root):
        return "dagm"
    ad2 = mvtec_ad2.list_categories(root)
    if ad2:
        others = [c for c in mvtec.list_categories(root) if c not in ad2]
        if others:
            raise DataError(f"{root}: {', '.join(ad2)} look like MVTec AD 2 (validation/ or test_public/ beside "
                            f"train/good), {', '.join(others)} like MVTec AD (train/good and test/); name the layout "
                            "with --dataset mvtec_ad2 or --dataset mvtec (or keep the two in separate folders)")
        return "mvtec_ad2"
    if mvtec.list_categories(root):
        return "mvtec"
    layouts = "; ".join(f"{d.title}: {d.layout}" for d in DATASETS.values())
    raise DataError(f"{root}: no dataset found here; the layouts read are {layouts} (pass the folder that holds the "
                    "categories as --data)")


def resolve(root: str | Path, dataset: str = "auto") -> Dataset:
    """The dataset ``--dataset`` names, or the one detected under ``root`` for "auto"."""
    if dataset not in DATASET_CHOICES:
        raise DataError(f"--dataset {dataset}: choose one of {', '.join(DATASET_CHOICES)}")
    return DATASETS[detect(root) if dataset == "auto" else dataset]


def list_categories(root: str | Path, dataset: str = "auto") -> list[str]:
    return resolve(root, dataset).categories(mvtec.check_root(root))


def select_categories(root: str | Path, spec: str | None, purpose: str, dataset: str = "auto") -> list[str]:
    """The categories ``spec`` names ("a,b" or "all") under ``root``; an unknown name or none at
    all is an error naming what is there (``purpose``: what they are for, for the message)."""
    ds = resolve(root, dataset)
    have = ds.categories(mvtec.check_root(root))
    wanted = have if spec in ("all", "", None) else [c.strip() for c in spec.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in have]
    if unknown:
        raise DataError(f"--categories: {', '.join(unknown)} not found under {root} as {ds.title} "
                        f"(categories there: {', '.join(have) or 'none'})")
    if not wanted:
        raise DataError(f"{root}: no categories ({ds.layout}) to {purpose}")
    return wanted


def scan_category(root: str | Path, category: str, val_fraction: float = 0.1, split_seed: int = 0,
                  check_sizes: bool = True, progress: bool = False, dataset: str = "auto") -> CategoryFiles:
    """List and check the files of one category of the dataset under ``root`` (see the readers)."""
    return resolve(root, dataset).scan(root, category, val_fraction, split_seed, check_sizes, progress)


def describe(root: str | Path, dataset: str = "auto", collect: bool = False) -> dict[str, dict]:
    """Counts per category, split and defect type, with the dataset read (no image is decoded). A category
    that cannot be read raises its DataError, or (``collect``) has ``error`` (the one line that names its
    file and the fix) instead of counts, the others still counted."""
    ds = resolve(root, dataset)
    out = {}
    for c in ds.categories(mvtec.check_root(root)):
        try:
            out[c] = {"dataset": ds.name, **ds.scan(root, c, 0.1, 0, False, False).counts()}
        except DataError as exc:
            if not collect:
                raise
            out[c] = {"dataset": ds.name, "error": str(exc)}
    return out
