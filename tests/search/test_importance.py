"""Hyperparameter importance at one budget, and the study's journal file (no Ray needed)."""

from __future__ import annotations

import csv
import json
import random

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from draem_zoo.search import importance, results, study

DISTS = {"loss.ssim_weight": FloatDistribution(0.3, 3.0, log=True), "train.lr": FloatDistribution(3e-4, 3e-3, log=True),
         "model.variant": CategoricalDistribution(["paper-tiny", "timm-x"]),
         "model.disc_width": CategoricalDistribution([8, 16])}  # conditional: timm-x only


def _trials(n: int, seed: int = 0, stop_every: int = 3) -> list[dict]:
    """Trial records whose score follows the ssim weight; every third stopped by ASHA at iteration 8 of 16."""
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        params = {"loss.ssim_weight": rng.uniform(0.3, 3.0), "train.lr": rng.uniform(3e-4, 3e-3),
                  "model.variant": rng.choice(["paper-tiny", "timm-x"]), "train.batch_size": 4}
        if params["model.variant"] == "timm-x":
            params["model.disc_width"] = rng.choice([8, 16])
        stop = 8 if i % stop_every == 0 else 16
        curve = [{"iteration": it, "best_val_score": 0.5 + 0.1 * params["loss.ssim_weight"] * it / 16
                  + 0.001 * rng.random()} for it in (4, 8, 12, 16) if it <= stop]
        recs.append({"trial_id": f"t{i:02d}", "params": params, "overrides": params, "status": "TERMINATED",
                     "variant": params["model.variant"], "iteration": stop, "budget": 16, "stopped_early": stop < 16,
                     "best_val_score": curve[-1]["best_val_score"], "curve": curve})
    return recs


def _search(tmp_path, cats=("weave", "granite"), n=6, journal=True):
    """A results folder with the categories' studies in journal files, as a search leaves them."""
    storage = tmp_path / "ray"
    results.write_json(tmp_path / "search.json", {"search_id": "s1", "storage": str(storage), "categories": list(cats)})
    for k, cat in enumerate(cats):
        recs = _trials(n, seed=k)
        if journal:
            st = optuna.create_study(study_name=f"s1-{cat}", direction="maximize",
                                     storage=study.journal_storage(str(storage), f"s1-{cat}"))
            for r in recs:
                p = {name: v for name, v in r["params"].items() if name in DISTS}
                st.add_trial(optuna.trial.create_trial(params=p, distributions={name: DISTS[name] for name in p},
                                                       value=r["best_val_score"]))
        results.write_category(tmp_path, {"category": cat, "trials": recs, "best_trial": recs[0], "final": [],
                                          "mode": "max", "metric": "best_val_score"})
    return tmp_path


def test_trials_are_compared_at_the_deepest_rung_every_one_reached():
    recs = _trials(6)
    recs.append({"trial_id": "dead", "status": "ERROR", "params": {}, "curve": [{"iteration": 4,
                                                                                 "best_val_score": 0.9}]})
    at = importance.rung_scores(recs)
    assert at["iteration"] == 8 and at["budget"] == 16 and at["excluded"] == 1 and at["stopped_early"] == 2
    assert set(at["scores"]) == {r["trial_id"] for r in recs[:6]}
    # the full-budget trials are scored as they stood at iteration 8, not at 16
    full = recs[1]
    assert at["scores"]["t01"] == next(c["best_val_score"] for c in full["curve"] if c["iteration"] == 8)


def test_importance_tables_from_the_journal_say_too_few(tmp_path):
    out = _search(tmp_path)
    files = importance.write_importance(out)
    rows = list(csv.DictReader(files["importance.csv"].read_text().splitlines()))
    assert {r["scope"] for r in rows} == {"weave", "granite", "pooled"}
    for scope in ("weave", "granite", "pooled"):  # every searched parameter, by both evaluators
        for ev in ("fanova", "ped_anova"):
            mine = {r["parameter"]: r for r in rows if r["scope"] == scope and r["evaluator"] == ev}
            assert set(mine) == set(DISTS), (scope, ev)
            assert float(mine["loss.ssim_weight"]["importance"]) > 0
    weave = {r["parameter"]: r for r in rows if r["scope"] == "weave" and r["evaluator"] == "fanova"}
    assert weave["loss.ssim_weight"]["iteration"] == "8" and weave["loss.ssim_weight"]["trials"] == "6"
    # model.disc_width is set by timm-x trials only: rated on those
    assert weave["model.disc_width"]["conditional"] == "True" and "conditional" in weave["model.disc_width"]["note"]
    assert int(weave["model.disc_width"]["trials"]) < 6
    common = [float(weave[p]["importance"]) for p in ("loss.ssim_weight", "train.lr", "model.variant")]
    assert sum(common) == pytest.approx(1.0)
    md = files["importance.md"].read_text()
    assert "6 trials compared at iteration 8 of 16" in md and "the category's Optuna study" in md
    assert "Too few trials (6) for these numbers to mean much" in md and "## pooled" in md
    assert files["importance.png"].stat().st_size > 5000


def test_importance_without_a_study_file_or_with_failing_evaluators(tmp_path):
    out = _search(tmp_path, cats=("weave",), n=4, journal=False)
    # no journal, no space.py: no distributions, the tables say so instead of failing
    importance.write_importance(out)
    assert "none (no study and no space.py)" in (out / "importance.md").read_text()
    (out / "space.py").write_text("def space(trial):\n    trial.suggest_float('loss.ssim_weight', 0.3, 3.0, log=True)\n"
                                  "    trial.suggest_float('train.lr', 3e-4, 3e-3, log=True)\n    return {}\n")
    rows, scopes = importance.importance_rows(out)
    assert scopes[0]["source"].startswith("replayed through space.py")
    assert {r["parameter"] for r in rows} == {"loss.ssim_weight", "train.lr"}
    # all scores equal: fANOVA has no variance to split and fails; it is said, not raised
    flat = {f"t{i}": 0.5 for i in range(4)}
    params = {f"t{i}": {"loss.ssim_weight": 0.5 + i / 10} for i in range(4)}
    got = importance.evaluate(flat, params, {"loss.ssim_weight": DISTS["loss.ssim_weight"]})
    fan = next(r for r in got if r["evaluator"] == "fanova")
    assert fan["importance"] is None and "fANOVA failed" in fan["note"]


def test_journal_study_where_and_dashboard(tmp_path):
    out = _search(tmp_path, cats=("weave",), n=3)
    path = tmp_path / "ray" / "s1-weave" / "optuna.journal"
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    loaded = optuna.load_study(study_name="s1-weave", storage=journal)
    assert len(loaded.trials) == 3 and all(t.params and t.value is not None for t in loaded.trials)
    assert study.dashboard_lines(out)[0] == f"weave: optuna-dashboard {path}"
    assert study.where("s3://bucket/x", "s1-weave")["kind"] == "tune-checkpoint"
    results.write_json(out / "search.json", {"search_id": "s1", "storage": "s3://bucket/x", "categories": ["weave"]})
    assert "object-store storage: no journal file" in study.dashboard_lines(out)[0]
    legacy = tmp_path / "old"
    (legacy / "s1-weave").mkdir(parents=True)
    optuna.create_study(study_name="s1-weave", storage=f"sqlite:///{legacy / 's1-weave' / 'optuna.sqlite3'}")
    assert study.where(str(legacy), "s1-weave")["kind"] == "sqlite"
    assert study.load_category_study(str(legacy), "s1-weave").study_name == "s1-weave"
    assert json.loads((out / "weave" / "summary.json").read_text())["metric"] == "best_val_score"
