"""Does validation rank like test? Analysis of a run's selection, which selection never reads.

A zoo-protocol run of ``draem-zoo reproduce`` also scores the test split at every validation
checkpoint (``analysis`` in its history); here every (checkpoint, s_f) pair the selection compared
is a point with a validation score and a test image AUROC, and the report gives their Spearman
rank correlation and the test image AUROC the validation choice lost against the best pair in
hindsight.
"""

from __future__ import annotations

from typing import Any

from scipy.stats import spearmanr


def pairs(history: list[dict[str, Any]]) -> list[tuple[int, int, float, float]]:
    """(iteration, s_f, validation score, test image AUROC) of every compared pair."""
    out = []
    for h in history:
        val = h.get("val_score_by_filter_size") or {}
        test = (h.get("analysis") or {}).get("test_image_auroc_by_filter_size") or {}
        for s, v in val.items():
            if v is not None and test.get(str(s)) is not None:
                out.append((int(h["iteration"]), int(s), float(v), float(test[str(s)])))
    return out


def selection_analysis(history: list[dict[str, Any]], chosen_iteration: int | None, chosen_size: int,
                       exported_test_auroc: float | None) -> dict[str, Any] | None:
    """Spearman(validation score, test image AUROC) over the pairs, and the AUROC lost by the choice."""
    pts = pairs(history)
    if len(pts) < 3:
        return None
    vals, tests = [p[2] for p in pts], [p[3] for p in pts]
    # a constant side (a saturated or untrained model) has no rank correlation: None, not a warning
    rho = spearmanr(vals, tests).statistic if len(set(vals)) > 1 and len(set(tests)) > 1 else float("nan")
    best = max(pts, key=lambda p: p[3])
    chosen = next((p for p in pts if p[0] == chosen_iteration and p[1] == chosen_size), None)
    got = exported_test_auroc if exported_test_auroc is not None else (chosen[3] if chosen else None)
    return {"pairs": len(pts), "spearman": None if rho != rho else float(rho),
            "best_in_hindsight": {"iteration": best[0], "filter_size": best[1], "test_image_auroc": best[3]},
            "chosen": {"iteration": chosen_iteration, "filter_size": chosen_size, "test_image_auroc": got},
            "lost_test_image_auroc": None if got is None else float(best[3] - got)}
