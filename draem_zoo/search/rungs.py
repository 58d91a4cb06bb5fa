"""Does a trial's early score predict its final one? The rank agreement between a search's rungs.

ASHA stops trials at early validation points (its rungs) on the assumption that the ranking there is
the ranking at the end. This module measures it from the trials' curves (no Ray needed):

* for every pair of validation points (a, b), the Spearman rank correlation of the trials' scores at a
  and at b, among the trials that reached both, with their count: per category, and pooled over the
  categories (each category's scores turned into within-category ranks first, so that an easy category
  does not pass for a good trial);
* for every earlier point, the share of the final top 3 (the best three trials at the budget) that
  ASHA, keeping the top 1 / reduction factor of the trials there, would have stopped.

The score is the search's metric at each point (by default ``best_val_score``, the best checkpoint so
far, which is what ASHA compares). A pair of points reached by fewer than three trials has no
correlation. Written as ``rungs.csv`` and ``rungs.md`` in the results folder.

Read ``rungs.md`` as: the earlier a rung whose correlation with the final rung is still high (0.8 and
above over a dozen trials) and which stopped none of the final top 3, the cheaper the search can be
made by putting ASHA's first rung there (``--reduction-factor``, ``--grace-validations``); a low one
says that trials stopped there might have been good.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from scipy.stats import rankdata, spearmanr

from .records import _load, trial_records, write_csv

TOP = 3


def scores_by_point(records: list[dict[str, Any]], metric: str = "best_val_score") -> dict[str, dict[int, float]]:
    """trial id -> {iteration: the metric there} over the trials' curves (failed trials left out)."""
    out: dict[str, dict[int, float]] = {}
    for r in records:
        if r.get("status", "TERMINATED") != "TERMINATED":
            continue
        pts = {int(c["iteration"]): float(c[metric]) for c in r.get("curve") or []
               if c.get(metric) is not None and c.get("iteration") is not None}
        if pts:
            out[r["trial_id"]] = pts
    return out


def _rho(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def pair_agreement(scores: dict[str, dict[int, float]]) -> list[dict[str, Any]]:
    """For every pair of points a < b: trials that reached both, and the Spearman of their scores."""
    points = sorted({p for s in scores.values() for p in s})
    rows = []
    for i, a in enumerate(points):
        for b in points[i + 1:]:
            both = [t for t, s in scores.items() if a in s and b in s]
            rows.append({"rung": a, "later_rung": b, "trials": len(both),
                         "spearman": _rho([scores[t][a] for t in both], [scores[t][b] for t in both])})
    return rows


def top_stopped(scores: dict[str, dict[int, float]], reduction_factor: float, mode: str = "max",
                top: int = TOP) -> list[dict[str, Any]]:
    """For every point before the last: of the final top ``top`` (by the score at the last point), the
    share ASHA would have stopped there, keeping the best ceil(n / reduction_factor) of the n trials there."""
    points = sorted({p for s in scores.values() for p in s})
    if len(points) < 2:
        return []
    last = points[-1]
    sign = 1.0 if mode == "max" else -1.0
    finished = sorted((t for t, s in scores.items() if last in s), key=lambda t: -sign * scores[t][last])
    best = finished[:top]
    rows = []
    for p in points[:-1]:
        there = sorted((t for t, s in scores.items() if p in s), key=lambda t: -sign * scores[t][p])
        kept = set(there[:max(1, math.ceil(len(there) / reduction_factor))])
        judged = [t for t in best if t in scores and p in scores[t]]
        rows.append({"rung": p, "trials": len(there), "kept": len(kept), "top": len(judged),
                     "top_stopped": sum(t not in kept for t in judged),
                     "top_stopped_share": (sum(t not in kept for t in judged) / len(judged)) if judged else None})
    return rows


def _within_category_ranks(scores: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
    """Each point's scores as ranks in [0, 1] among the trials there (ties: average rank)."""
    points = sorted({p for s in scores.values() for p in s})
    out: dict[str, dict[int, float]] = {t: {} for t in scores}
    for p in points:
        ids = [t for t, s in scores.items() if p in s]
        if len(ids) == 1:
            out[ids[0]][p] = 0.5
            continue
        ranks = rankdata([scores[t][p] for t in ids])
        for t, r in zip(ids, ranks):
            out[t][p] = float((r - 1) / (len(ids) - 1))
    return out


def rung_rows(records: list[dict[str, Any]], metric: str = "best_val_score", reduction_factor: float = 2.0,
              mode: str = "max") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pair rows, top-stopped rows), per category and pooled ("all", as fractions of the budget)."""
    pairs, stops = [], []
    by_cat: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_cat.setdefault(r.get("category") or "?", []).append(r)
    pooled: dict[str, dict[float, float]] = {}
    for cat, recs in sorted(by_cat.items()):
        scores = scores_by_point(recs, metric)
        budget = max((r.get("budget") or 0 for r in recs), default=0) or max(
            (p for s in scores.values() for p in s), default=1)
        for row in pair_agreement(scores):
            pairs.append({"category": cat, **row, "fraction": row["rung"] / budget,
                          "later_fraction": row["later_rung"] / budget})
        for row in top_stopped(scores, reduction_factor, mode):
            stops.append({"category": cat, **row, "fraction": row["rung"] / budget})
        # pooled: each category's points as fractions of its budget, its scores as within-category ranks
        for t, s in _within_category_ranks(scores).items():
            pooled[f"{cat}/{t}"] = {round(p / budget, 4): v for p, v in s.items()}
    if len(by_cat) > 1:
        for row in pair_agreement(pooled):  # type: ignore[arg-type]
            pairs.append({"category": "all", **row, "fraction": row["rung"], "later_fraction": row["later_rung"]})
    return pairs, stops


def write_rungs(out: Path) -> dict[str, Path]:
    """rungs.csv and rungs.md from the results folder's trial records (nothing when there are none)."""
    out = Path(out)
    recs = trial_records(out)
    if not recs:
        return {}
    meta = _load(out / "search.json") if (out / "search.json").is_file() else {}
    rf = float((meta.get("options") or {}).get("reduction_factor") or 2)
    summaries = [_load(p) for p in sorted(out.glob("*/summary.json"))]
    metric = next((s["metric"] for s in summaries if s.get("metric")), "best_val_score")
    mode = next((s["mode"] for s in summaries if s.get("mode")), "max")
    pairs, stops = rung_rows(recs, metric, rf, mode)
    write_csv(out / "rungs.csv", [{**r, "spearman": None if r["spearman"] is None else round(r["spearman"], 4)}
                                  for r in pairs])
    lines = ["# Does early rank predict final rank?", "",
             f"Spearman rank correlation of the trials' `{metric}` at each validation point (rung) with their score "
             "at a later one, among the trials that reached both (n). `all` pools the categories (points as "
             "fractions of the budget, scores as ranks within each category).", "",
             "| category | rung (iterations) | of budget | later rung | of budget | n | Spearman |",
             "|---|---|---|---|---|---|---|"]
    for r in pairs:
        rho = "n/a" if r["spearman"] is None else f"{r['spearman']:.2f}"
        lines.append(f"| {r['category']} | {r['rung']:g} | {r['fraction']:.3f} | {r['later_rung']:g} | "
                     f"{r['later_fraction']:.3f} | {r['trials']} | {rho} |")
    lines += ["", f"Of each category's final top {TOP} (the best at the last point), how many ASHA would have "
              f"stopped at each earlier rung, keeping the best 1/{rf:g} of the trials there:", "",
              "| category | rung (iterations) | of budget | trials there | kept | top 3 stopped |", "|---|---|---|---|---|---|"]
    for r in stops:
        lines.append(f"| {r['category']} | {r['rung']} | {r['fraction']:.3f} | {r['trials']} | {r['kept']} | "
                     f"{r['top_stopped']} of {r['top']} |")
    lines += ["", "An early rung that still correlates highly with the last (0.8 and above over a dozen trials) and "
              "stopped none of the final top 3 can carry ASHA's first cut; a low correlation says trials stopped "
              "there might have been good. Trials ASHA stopped reach only the early rungs, so the later pairs "
              "compare the trials ASHA kept."]
    (out / "rungs.md").write_text("\n".join(lines) + "\n")
    return {"rungs.csv": out / "rungs.csv", "rungs.md": out / "rungs.md"}
