"""What the DRAEM paper reports (Zavrtanik, Kristan, Skočaj, ICCV 2021), per dataset.

MVTec AD: Table 1, image-level AUROC per category; Table 2, pixel-level AUROC and AP per category, in
percent. The paper reports no AUPRO; later work does, under other training runs, so none is quoted
here. The per-category values average to the paper's headline 98.0 / 97.3 / 68.4.
DAGM 2007: Table 4, image-level only, the mean over the ten classes (no per-class values).
VisA and MVTec AD 2 came after the paper; no DRAEM result trained per category (the paper's setting)
was found for them, so their tables say "no published number" rather than quote another setting's.
"""

from __future__ import annotations

TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
OBJECTS = ("bottle", "capsule", "pill", "transistor", "zipper", "cable", "hazelnut", "metal_nut", "screw",
           "toothbrush")
CATEGORIES = TEXTURES + OBJECTS

# category: (image AUROC [Table 1], pixel AUROC [Table 2], pixel AP [Table 2])
_TABLE = {
    "carpet": (97.0, 95.5, 53.5),
    "grid": (99.9, 99.7, 65.7),
    "leather": (100.0, 98.6, 75.3),
    "tile": (99.6, 99.2, 92.3),
    "wood": (99.1, 96.4, 77.7),
    "bottle": (99.2, 99.1, 86.5),
    "capsule": (98.5, 94.3, 49.4),
    "pill": (98.9, 97.6, 48.5),
    "transistor": (93.1, 90.9, 50.7),
    "zipper": (100.0, 98.8, 81.5),
    "cable": (91.8, 94.7, 52.4),
    "hazelnut": (100.0, 99.7, 92.9),
    "metal_nut": (98.7, 99.5, 96.3),
    "screw": (93.9, 97.6, 58.2),
    "toothbrush": (100.0, 98.1, 44.7),
}
METRICS = ("image_auroc", "pixel_auroc", "pixel_ap")
HEADLINE_MEAN = {"image_auroc": 98.0, "pixel_auroc": 97.3, "pixel_ap": 68.4}
CITATION = "Zavrtanik et al., ICCV 2021, Tables 1 and 2"


DAGM_CLASSES = tuple(f"Class{k}" for k in range(1, 11))
REFERENCES = {
    "mvtec": {"citation": CITATION, "categories": CATEGORIES, "mean": HEADLINE_MEAN},
    "dagm": {"citation": "Zavrtanik et al., ICCV 2021, Table 4 (DAGM 2007, image level only: the mean over the ten "
                         "classes, AUROC 99.0; also TPR 96.5, TNR 99.4, classification accuracy 98.5; no per-class "
                         "values, no localisation)",
             "categories": DAGM_CLASSES, "mean": {"image_auroc": 99.0}},
    "visa": {"citation": "no published number: the paper predates VisA, and no DRAEM result trained per category "
                         "was found for it (ADer's benchmark trains one model for all classes: another setting)",
             "categories": (), "mean": None},
    "mvtec_ad2": {"citation": "no published number: the paper predates MVTec AD 2, and no DRAEM result on it was found",
                  "categories": (), "mean": None},
}


def reference(dataset: str | None) -> dict:
    """The published numbers for a dataset: citation (or "no published number"), the categories its
    mean is over, that mean (% per metric, or None)."""
    return REFERENCES.get(dataset or "mvtec", {"citation": "no published number for this dataset",
                                               "categories": (), "mean": None})


def paper_results(category: str, dataset: str | None = "mvtec") -> dict[str, float] | None:
    """The paper's numbers (%) for an MVTec AD category, or None for any other category (the paper
    has per-category numbers for MVTec AD only)."""
    row = _TABLE.get(category) if (dataset or "mvtec") == "mvtec" else None
    return dict(zip(METRICS, row)) if row else None


def group_of(category: str) -> str | None:
    return "textures" if category in TEXTURES else "objects" if category in OBJECTS else None
