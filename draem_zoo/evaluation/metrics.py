"""Anomaly-detection metrics on scores and maps.

* image AUROC / AP / F1-max from per-image scores (scikit-learn curves);
* pixel AUROC / AP / F1-max pooled over every pixel of the category, as the paper;
* AUPRO: the per-region overlap (PRO) curve against the false-positive rate over the
  normal pixels, integrated up to FPR 0.3 and divided by 0.3 (Bergmann et al.). Regions
  are the 8-connected components of each ground-truth mask (scipy); PRO at a threshold
  is the mean over regions of the fraction of the region's pixels at or above it.

Undefined values (a single class present) are returned as None, never as a number.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, precision_recall_curve, roc_curve

EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.any()) and not bool(y.all())


def roc_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    if not _both_classes(y):
        return None
    fpr, tpr, _ = roc_curve(y, s)
    return float(auc(fpr, tpr))


def pr_summary(y: np.ndarray, s: np.ndarray) -> dict[str, float | None]:
    """Average precision (sklearn's step rule), F1-max and its threshold, from one curve."""
    if not _both_classes(y):
        return {"ap": None, "f1_max": None, "f1_threshold": None}
    precision, recall, thresholds = precision_recall_curve(y, s)
    ap = float(-np.sum(np.diff(recall) * precision[:-1]))
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return {"ap": ap, "f1_max": float(f1[best]), "f1_threshold": float(thresholds[best]) if len(thresholds) else None}


def image_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    pr = pr_summary(y, s)
    return {"auroc": roc_auc(y, s), "ap": pr["ap"], "f1_max": pr["f1_max"], "f1_threshold": pr["f1_threshold"]}


def pixel_metrics(masks: np.ndarray, maps: np.ndarray) -> dict[str, float | None]:
    y = np.asarray(masks).reshape(-1).astype(bool)
    s = np.asarray(maps).reshape(-1).astype(np.float32)
    pr = pr_summary(y, s)
    return {"auroc": roc_auc(y, s), "ap": pr["ap"], "f1_max": pr["f1_max"], "f1_threshold": pr["f1_threshold"]}


def pro_curve(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) at every distinct score, from the highest threshold down; starts at (0, 0)."""
    masks = np.asarray(masks).astype(bool).reshape(-1, *np.asarray(masks).shape[-2:])
    maps = np.asarray(maps, dtype=np.float32).reshape(masks.shape)
    regions = np.zeros(masks.shape, dtype=np.int64)
    offset = 0
    for i in range(len(masks)):
        lab, n = ndimage.label(masks[i], structure=EIGHT_CONNECTED)
        regions[i] = np.where(lab > 0, lab + offset, 0)
        offset += n
    n_regions = offset
    flat_regions = regions.reshape(-1)
    flat_scores = maps.reshape(-1)
    normal = flat_regions == 0
    n_normal = int(normal.sum())
    if n_regions == 0 or n_normal == 0:
        raise ValueError("the PRO curve needs both anomalous regions and normal pixels")
    sizes = np.bincount(flat_regions, minlength=n_regions + 1).astype(np.float64)
    weight = np.where(normal, 0.0, 1.0 / (sizes[flat_regions] * n_regions))
    order = np.argsort(-flat_scores, kind="stable")
    fpr = np.cumsum(normal[order]) / n_normal
    pro = np.cumsum(weight[order])
    sorted_scores = flat_scores[order]
    last_of_tie = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(sorted_scores) - 1]
    return np.r_[0.0, fpr[last_of_tie]], np.r_[0.0, np.minimum(pro[last_of_tie], 1.0)]


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float | None:
    """Area under the PRO curve up to ``fpr_limit``, divided by ``fpr_limit`` (so in [0, 1])."""
    try:
        fpr, pro = pro_curve(masks, maps)
    except ValueError:
        return None
    cut = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x = np.r_[fpr[:cut], fpr_limit]
    y = np.r_[pro[:cut], np.interp(fpr_limit, fpr, pro)]
    return float(np.trapezoid(y, x) / fpr_limit)
