"""rungs.csv/.md: the rank agreement between a search's validation points, from trial records alone."""

from __future__ import annotations

import csv
import json

import pytest
from scipy.stats import spearmanr

from draem_zoo.search.records import write_json
from draem_zoo.search.rungs import pair_agreement, rung_rows, scores_by_point, top_stopped, write_rungs


def _trial(tid: str, scores: dict[int, float], budget: int = 90, status: str = "TERMINATED") -> dict:
    return {"trial_id": tid, "status": status, "budget": budget, "iteration": max(scores),
            "stopped_early": max(scores) < budget,
            "curve": [{"iteration": it, "best_val_score": v, "val_score": v} for it, v in sorted(scores.items())]}


# six trials validated at 10, 30 and 90 iterations; two stopped at 30, one at 10
TRIALS = [_trial("a", {10: 0.50, 30: 0.60, 90: 0.80}), _trial("b", {10: 0.55, 30: 0.62, 90: 0.70}),
          _trial("c", {10: 0.40, 30: 0.58, 90: 0.75}), _trial("d", {10: 0.45, 30: 0.50, 90: 0.60}),
          _trial("e", {10: 0.30, 30: 0.35}), _trial("f", {10: 0.20}), _trial("x", {10: 0.9}, status="ERROR")]


def test_every_pair_of_points_has_its_correlation_among_the_trials_that_reached_both():
    scores = scores_by_point(TRIALS)
    assert set(scores) == set("abcdef")  # the failed trial is left out
    rows = {(r["rung"], r["later_rung"]): r for r in pair_agreement(scores)}
    assert set(rows) == {(10, 30), (10, 90), (30, 90)}
    assert rows[(10, 30)]["trials"] == 5 and rows[(10, 90)]["trials"] == 4 and rows[(30, 90)]["trials"] == 4
    ids = "abcd"
    want = spearmanr([scores[t][10] for t in ids], [scores[t][90] for t in ids]).statistic
    # ranks at 10: c d a b, at 90: d b c a (no agreement); at 30: d c a b (some)
    assert rows[(10, 90)]["spearman"] == pytest.approx(want) and rows[(10, 90)]["spearman"] == pytest.approx(0.0)
    assert rows[(30, 90)]["spearman"] == pytest.approx(0.4)
    assert rows[(10, 30)]["spearman"] == pytest.approx(0.9)


def test_the_share_of_the_final_top_three_an_early_cut_would_have_stopped():
    scores = scores_by_point(TRIALS)
    # final top 3: a (0.80), c (0.75), b (0.70). At 10 (six trials, keep 2 at reduction factor 3): b, a kept,
    # c stopped; at 30 (five trials, keep 2): b, a kept, c stopped
    rows = {r["rung"]: r for r in top_stopped(scores, 3)}
    assert rows[10]["trials"] == 6 and rows[10]["kept"] == 2 and rows[10]["top_stopped"] == 1
    assert rows[30]["trials"] == 5 and rows[30]["kept"] == 2 and rows[30]["top_stopped"] == 1
    assert rows[30]["top_stopped_share"] == pytest.approx(1 / 3)
    # keeping half (reduction factor 2): three at 10 (b, a, d), so c is still stopped; three at 30 (b, a, c)
    rows = {r["rung"]: r for r in top_stopped(scores, 2)}
    assert rows[10]["top_stopped"] == 1 and rows[30]["top_stopped"] == 0
    # minimising: the best are the lowest
    low = {r["rung"]: r for r in top_stopped(scores, 3, mode="min")}
    assert low[10]["top"] == 3


def test_pooled_over_categories_on_within_category_ranks(tmp_path):
    other = [dict(t, trial_id=t["trial_id"] + "2", budget=900,
                  curve=[dict(c, iteration=c["iteration"] * 10, best_val_score=c["best_val_score"] - 0.3)
                         for c in t["curve"]]) for t in TRIALS]
    recs = [dict(t, category="bottle") for t in TRIALS] + [dict(t, category="wood") for t in other]
    pairs, stops = rung_rows(recs, reduction_factor=3)
    cats = {r["category"] for r in pairs}
    assert cats == {"bottle", "wood", "all"}
    pooled = {(r["rung"], r["later_rung"]): r for r in pairs if r["category"] == "all"}
    # both categories validated at 1/9, 1/3 and 1 of their budgets, with the same ranking: pooled as one
    assert set(pooled) == {(0.1111, 0.3333), (0.1111, 1.0), (0.3333, 1.0)}
    assert pooled[(0.3333, 1.0)]["trials"] == 8 and pooled[(0.3333, 1.0)]["spearman"] == pytest.approx(0.4)
    assert {r["category"] for r in stops} == {"bottle", "wood"}

    # the files, from a results folder
    out = tmp_path / "res"
    write_json(out / "search.json", {"options": {"reduction_factor": 3}})
    for r in recs:
        write_json(out / r["category"] / "trials" / f"{r['trial_id']}.json", r)
    write_json(out / "bottle" / "summary.json", {"metric": "best_val_score", "mode": "max"})
    files = write_rungs(out)
    rows = list(csv.DictReader(files["rungs.csv"].read_text().splitlines()))
    assert len(rows) == 9 and {r["category"] for r in rows} == {"bottle", "wood", "all"}
    md = files["rungs.md"].read_text()
    assert "| bottle | 30 | 0.333 | 90 | 1.000 | 4 | 0.40 |" in md
    assert "| bottle | 10 | 0.111 | 6 | 2 | 1 of 3 |" in md
    assert write_rungs(tmp_path / "empty") == {}
    json.dumps(rows)
