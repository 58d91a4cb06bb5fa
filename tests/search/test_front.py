"""The accuracy-speed front and the speed it rests on (no Ray needed)."""

from __future__ import annotations

import csv
import json

import pytest

from draem_zoo.search import front, results
from draem_zoo.search.speed import measure_inference


def _rec(tid, variant, score, speed, params=1000, status="TERMINATED", **model):
    overrides = {"model.variant": variant, "loss.ssim_weight": 1.0, **{f"model.{k}": v for k, v in model.items()}}
    return {"trial_id": tid, "variant": variant, "overrides": overrides, "params": overrides, "status": status,
            "best_val_score": score, "infer_images_per_s": speed, "params_count": params, "iteration": 16,
            "budget": 16, "stopped_early": False, "curve": [{"iteration": 16, "best_val_score": score}]}


# A (accurate, slow), B, D (fast) are on the front; C is beaten by B on both axes; E failed
RECORDS = [_rec("a1", "arch-a", 0.90, 10.0, 5000), _rec("a2", "arch-a", 0.50, 14.0, 5000),
           _rec("a3", "arch-a", 0.40, 30.0, 5000), _rec("b1", "arch-b", 0.80, 50.0, 3000),
           _rec("c1", "arch-c", 0.70, 40.0, 2000), _rec("d1", "arch-d", 0.60, 100.0, 1000),
           _rec("e1", "arch-e", 0.99, 500.0, 10, status="ERROR")]


def test_front_ranks_candidates_per_architecture():
    cands = {c["architecture"]: c for c in front.rank(front.candidates(RECORDS))}
    assert set(cands) == {"arch-a", "arch-b", "arch-c", "arch-d"}  # a failed trial is no candidate
    # an architecture's candidate: its best trial, at the median of its trials' measured speeds
    assert cands["arch-a"]["trial_id"] == "a1" and cands["arch-a"]["val_score"] == 0.90
    assert cands["arch-a"]["images_per_s"] == 14.0 and cands["arch-a"]["speed_trials"] == 3
    assert {a: c["rank"] for a, c in cands.items()} == {"arch-a": 1, "arch-b": 1, "arch-c": 2, "arch-d": 1}
    # against the parameter count C (2000 params) is not beaten: B is bigger
    assert {a: c["params_rank"] for a, c in cands.items()} == {"arch-a": 1, "arch-b": 1, "arch-c": 1, "arch-d": 1}


def test_front_members_spread_along_the_speed_then_the_next_rank():
    names = lambda n: [m["trial_id"] for m in front.front_members(RECORDS, n)]  # noqa: E731
    assert names(1) == ["a1"]  # one place: the most accurate of the front
    assert names(2) == ["a1", "d1"]  # both ends of the front: the most accurate and the fastest
    assert names(3) == ["a1", "b1", "d1"]
    assert names(4) == ["a1", "b1", "d1", "c1"]  # the front, then the front of the rest
    assert names(9) == ["a1", "b1", "d1", "c1"] and names(0) == []
    # minimising: the lowest score is the best
    assert [m["trial_id"] for m in front.front_members(RECORDS, 1, mode="min")] == ["a3"]


def test_front_member_names_are_unique_folders():
    recs = [_rec("t1", "timm-resnet18", 0.9, 10.0, disc_width=64), _rec("t2", "timm-resnet18", 0.8, 30.0,
                                                                       disc_width=16)]
    members = front.front_members(recs, 2)
    assert front.architecture(recs[0]) == "timm-resnet18 disc_width=64"
    assert sorted(m["name"] for m in members) == ["timm-resnet18-t1", "timm-resnet18-t2"]
    assert [m["name"] for m in front.front_members(RECORDS, 2)] == ["arch-a", "arch-d"]


def _results(tmp_path):
    for cat, shift in (("weave", 0.0), ("granite", -0.1)):
        recs = [dict(r, best_val_score=r["best_val_score"] + shift, curve=[]) for r in RECORDS]
        members = front.front_members(recs, 2)
        finals = []
        for m in members:
            m.update(model_dir=f"front/{m['name']}", metrics={"val_score": 0.7, "test_image_auroc": 0.8})
            finals.append({"seed": 0, "status": "done", "trial_id": m["trial_id"], "variant": m["variant"],
                           "metrics": {"val_score": 0.7, "test_image_auroc": 0.8, "test_pixel_auroc": 0.9,
                                       "test_pixel_ap": 0.3, "test_aupro": 0.6}})
        best = max(recs[:-1], key=lambda r: r["best_val_score"])
        results.write_category(tmp_path, {"category": cat, "trials": recs, "best_trial": best, "final": finals,
                                          "front": members, "mode": "max", "metric": "best_val_score",
                                          "exported_trial": best["trial_id"]})
    return tmp_path


def test_front_tables_plot_and_leaderboard(tmp_path):
    out = _results(tmp_path)
    files = front.write_front(out)
    rows = list(csv.DictReader(files["front.csv"].read_text().splitlines()))
    by = {(r["category"], r["architecture"]): r for r in rows}
    assert len(rows) == 4 + 4 + 4  # two categories and the pooled rows ("all"): four architectures each
    assert by[("weave", "arch-c")]["rank"] == "2" and by[("weave", "arch-a")]["member"] == "arch-a"
    assert float(by[("weave", "arch-a")]["test_image_auroc"]) == pytest.approx(0.8)
    assert by[("weave", "arch-b")]["member"] == ""  # on the front, but not retrained with --front 2
    # over categories: the mean of the per-category scores, the median of the speeds
    assert float(by[("all", "arch-a")]["val_score"]) == pytest.approx(0.85) and by[("all", "arch-a")]["rank"] == "1"
    md = files["front.md"].read_text()
    assert "model.predict, float32, batch 8" in md and "| weave | arch-a | 1 | 1 | 0.9 | 14 |" in md
    assert files["front.png"].stat().st_size > 5000
    board = results.leaderboard(out)
    assert [(r["category"], r["role"]) for r in board] == [("granite", "best"), ("granite", "front"),
                                                           ("granite", "front"), ("weave", "best"),
                                                           ("weave", "front"), ("weave", "front")]
    fr = [r for r in board if r["role"] == "front" and r["category"] == "weave"]
    assert [r["name"] for r in fr] == ["arch-a", "arch-d"] and fr[1]["infer_images_per_s"] == 100.0
    assert fr[0]["test_image_auroc"] == pytest.approx(0.8) and fr[0]["model_dir"] is None  # no weights here
    results.write_tables(out)
    lb = (out / "leaderboard.md").read_text()
    assert "## Accuracy-speed front (--front)" in lb and "| weave | arch-d | arch-d | 1 | 100 |" in lb
    summary = json.loads((out / "weave" / "summary.json").read_text())
    assert [m["name"] for m in summary["front"]] == ["arch-a", "arch-d"]


def test_speed_is_measured_on_the_architecture():
    from draem_zoo.model.draem import build_model
    from draem_zoo.model.variants import ModelConfig

    cfg = ModelConfig.for_variant("paper-tiny", rec_width=4, disc_width=4, image_size=32)
    got = measure_inference(cfg, "cpu", batch=2, min_seconds=0.05, max_passes=3)
    assert got["infer_images_per_s"] > 0 and got["infer_batch"] == 2 and got["infer_image_size"] == 32
    assert got["infer_device"] == "cpu" and got["params"] == build_model(cfg).num_parameters()
