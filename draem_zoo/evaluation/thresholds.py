"""Decision thresholds chosen on validation data, so a downloaded model can say
"anomalous / normal" and draw a mask without any labelled data.

* image threshold: the lowest score that flags at most ``target_fpr`` (1%) of the
  validation normals — it bounds false alarms on normal parts;
* image F1 threshold: the F1-max threshold on the synthetic validation set (recorded);
* pixel threshold: the F1-max threshold over the synthetic validation pixels — what the
  mask in ``predict`` uses; the pixel threshold at ``target_fpr`` over normal pixels is
  recorded beside it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model.scoring import image_scores
from . import pixelstats as px
from .metrics import image_metrics
from .validation import ValidationSet


def fpr_threshold(normal_scores: np.ndarray, fpr: float) -> float:
    """Smallest threshold t with #(normal >= t) <= fpr * n (t just above the k-th highest).

    Scores are float32, so t is the next float32 above that score: comparing in float32
    (as ``predict`` does) or in float64 gives the same decisions.
    """
    s = np.sort(np.asarray(normal_scores, dtype=np.float32))[::-1]
    if len(s) == 0:
        return float("nan")
    k = int(np.floor(fpr * len(s)))
    return float(np.nextafter(s[min(k, len(s) - 1)], np.float32(np.inf)))


def compute_thresholds(maps: torch.Tensor, vset: ValidationSet, filter_size: int, target_fpr: float = 0.01) -> dict:
    """Thresholds from the validation maps (on any device: the pixel statistics are histograms made
    there, :mod:`.pixelstats`; a pixel threshold is the lower edge of its histogram bin)."""
    y = vset.labels.numpy().astype(bool)
    with torch.no_grad():
        scores = image_scores(maps, filter_size).float().cpu().numpy()
        hist = px.histograms(maps, vset.masks).sum(0).cpu().numpy()  # (2, BINS)
    fam = np.array(vset.family)
    out = {
        "filter_size": filter_size,
        "target_fpr": target_fpr,
        "image_threshold": fpr_threshold(scores[fam == "normal"], target_fpr),
        "image_threshold_rule": f"flags at most {target_fpr:.0%} of the validation normals",
        "image_threshold_f1": image_metrics(y, scores)["f1_threshold"],
        "pixel_threshold": px.f1_max(hist)[1],
        "pixel_threshold_rule": "F1-max over the synthetic validation pixels",
        "pixel_threshold_fpr": px.fpr_threshold(hist[0], target_fpr),
        "n_validation_normals": int((fam == "normal").sum()),
    }
    n = out["n_validation_normals"]
    # With n normals, a new normal image exceeds the k-th highest of them with probability
    # about (k + 1) / (n + 1) (exchangeability): fewer than 1/target_fpr normals cannot
    # deliver the target, and the record says what to expect instead.
    k = int(np.floor(target_fpr * n))
    out["image_threshold_expected_fpr"] = round((k + 1) / (n + 1), 4) if n else None
    if n and (k + 1) / (n + 1) > 2 * target_fpr:
        out["image_threshold_note"] = (
            f"only {n} validation normals: the threshold is their maximum, expect about "
            f"{(k + 1) / (n + 1):.0%} false alarms on new normal images; hold out more normals "
            f"(data.val_fraction) for a {target_fpr:.0%} target")
    return out
