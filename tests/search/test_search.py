"""Distributed search on a local Ray cluster (CPU, tiny models, generated data).

Slow tests: each starts Ray workers and Train runs. Ray is started once for the module
(with its dashboard, which Train needs to release the resources of trials ASHA stops).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# a loaded 2-core CI box can take over a minute to start a worker process (Ray runs them at nice 15)
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")

ray = pytest.importorskip("ray")

from draem_zoo import load  # noqa: E402
from draem_zoo.data.demo import make_demo_dataset  # noqa: E402
from draem_zoo.errors import DraemZooError  # noqa: E402
from draem_zoo.search.cleanup import _descendants, _started  # noqa: E402
from draem_zoo.search.driver import SearchOptions, run_search  # noqa: E402

SETS = ["model.image_size=32", "eval.batch_size=64"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("data"), categories=("weave", "granite"), size=32, n_train=10,
                             n_test_good=3, n_test_defect=2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    os.environ["DRAEM_ZOO_WORKDIR"] = str(tmp_path_factory.mktemp("workdirs"))
    ctx = ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)
    yield ctx
    ray.shutdown()


def opts(data, out, **kw):
    base = dict(data=str(data), out=str(out), space="search_spaces/quick.py", trials=4, budget=16, final_budget=16,
                sets=list(SETS), cpus_per_worker=0.5, progress=False, poll_seconds=1.0)
    base.update(kw)
    return SearchOptions(**base)


def test_search_two_categories_with_asha(cluster, data, tmp_path):
    out = tmp_path / "results"
    start = time.monotonic()
    result = run_search(opts(data, out, categories="weave,granite", max_concurrent=2, backbones_final=True, front=2))
    elapsed = time.monotonic() - start
    for name in ("search.json", "status.json", "leaderboard.csv", "leaderboard.md", "backbones.csv",
                 "backbones.png", "space.py", "front.csv", "front.md", "front.png", "importance.csv",
                 "importance.md", "importance.png"):
        assert (out / name).is_file(), name
    for cat in ("weave", "granite"):
        trials = [json.loads(p.read_text()) for p in (out / cat / "trials").glob("*.json")]
        assert len(trials) == 4
        for t in trials:
            assert t["status"] == "TERMINATED" and t["iteration"] <= 16
            assert t["category"] == cat  # trained on its own category's data
            assert t["stopped_early"] == (t["iteration"] < 16)
            assert t["best_val_score"] is not None and t["curve"], t
            iters = [c["iteration"] for c in t["curve"]]
            # 5 validations per trial (every ceil(16 / 5) = 4 iterations): reports at validation points only
            assert iters == sorted(iters) and iters[0] == 4 and all(i % 4 == 0 for i in iters)
            assert "test" not in t and not any(k.startswith("test_") for c in t["curve"] for k in c)  # finals only
            # every trial measured its model's speed before training, those ASHA stopped too
            assert t["infer_images_per_s"] > 0 and t["infer_batch"] == 8 and t["infer_image_size"] == 32
            assert t["infer_device"] == "cpu" and t["params_count"] > 0
        summary = json.loads((out / cat / "summary.json").read_text())
        best = summary["best_trial"]
        # both backbones got a trial (POINTS_TO_EVALUATE) and each one's best by validation was retrained
        variants = {t["variant"] for t in trials}
        assert variants == {"paper-tiny", "timm-mobilenetv3_small_100"}
        finals = summary["final"]
        assert sorted(f["variant"] for f in finals) == sorted(variants)
        for f in finals:
            mine = [t for t in trials if t["variant"] == f["variant"]]
            assert f["trial_id"] == max(mine, key=lambda t: t["best_val_score"])["trial_id"]
        # the export is the final run with the best validation score (never test)
        done = [f for f in finals if f["status"] == "done"]
        assert summary["exported_trial"] == max(done, key=lambda f: f["metrics"]["val_score"])["trial_id"]
        assert best["trial_id"] == summary["exported_trial"]
        assert summary["study"]["complete"] == 4  # every finished trial is in the Optuna study
        model = load(str(out / cat / "best"))
        cfg = json.loads((out / cat / "best" / "config.json").read_text())
        assert cfg["selection"]["split"] == "validation" and cfg["metrics"]["test"]["split"] == "test"
        assert cfg["training"]["iterations"] == 16 and cfg["data"]["category"] == cat
        for k, v in best["overrides"].items():  # the exported model is the best trial's configuration
            section, key = k.split(".", 1)
            assert cfg["run"][section][key] == (list(v) if isinstance(v, tuple) else v), k
        assert model.predict(__import__("torch").rand(1, 3, 32, 32)).score.shape == (1,)
        _check_front(out, cat, summary, trials, 2)
        _check_study(out, cat, trials)
    board = (out / "leaderboard.csv").read_text().splitlines()
    assert len(board) == 1 + 2 + 2 * 2 and board[0].startswith("category,")  # per category: best, 2 front members
    rows = csv.DictReader((out / "importance.csv").read_text().splitlines())
    imp = {(r["scope"], r["evaluator"], r["parameter"]) for r in rows}
    searched = {"model.variant", "loss.ssim_weight", "loss.focal_gamma", "train.lr"}  # quick.py's parameters
    assert imp == {(s, e, p) for s in ("weave", "granite", "pooled") for e in ("fanova", "ped_anova") for p in searched}
    assert "Too few trials (4) for these numbers to mean much" in (out / "importance.md").read_text()
    bb = (out / "backbones.csv").read_text()
    assert "paper-tiny" in bb and "timm-mobilenetv3_small_100" in bb and ",final," in bb
    assert (out / "backbones.md").read_text().startswith("# Backbone comparison: final models")
    status = subprocess.run([sys.executable, "-m", "draem_zoo.cli", "status", str(out)], capture_output=True,
                            text=True)
    assert status.returncode == 0 and "weave" in status.stdout and "done" in status.stdout
    journal = out / "ray" / f"{json.loads((out / 'search.json').read_text())['search_id']}-weave" / "optuna.journal"
    assert f"weave: optuna-dashboard {journal}" in status.stdout
    assert result["categories"]["weave"]["dashboard"] == f"optuna-dashboard {journal}"
    print(f"search of 2 categories x 4 trials + finals: {elapsed:.0f} s; stopped early: "
          f"{sum(json.loads(p.read_text())['stopped_early'] for p in out.glob('*/trials/*.json'))}")
    assert result["categories"]["weave"]["model_dir"]


def _check_front(out: Path, cat: str, summary: dict, trials: list[dict], n: int) -> None:
    """``n`` front members exported to <cat>/front/<name>/, each loadable, retrained at the final budget and
    tested, and each the best trial of its architecture on the front of the category's trials."""
    import torch

    members = summary["front"]
    assert len(members) == n and len({m["name"] for m in members}) == n
    assert sorted((out / cat / "front").iterdir()) == sorted(out / cat / m["model_dir"] for m in members)
    finals = {f["trial_id"] for f in summary["final"] if f["status"] == "done"}
    for m in members:
        assert m["trial_id"] in finals and m["rank"] >= 1 and m["images_per_s"] > 0
        mine = [t for t in trials if t["variant"] == m["variant"]]
        assert m["trial_id"] == max(mine, key=lambda t: t["best_val_score"])["trial_id"]
        cfg = json.loads((out / cat / m["model_dir"] / "config.json").read_text())
        assert cfg["metrics"]["test"]["split"] == "test" and cfg["metrics"]["test"]["image_auroc"] is not None
        assert cfg["training"]["iterations"] == 16 and cfg["model"]["variant"] == m["variant"]
        assert m["metrics"]["test_image_auroc"] == pytest.approx(cfg["metrics"]["test"]["image_auroc"])
        pred = load(str(out / cat / m["model_dir"])).predict(torch.rand(2, 3, 32, 32))
        assert pred.score.shape == (2,)
    rows = [r for r in csv.DictReader((out / "front.csv").read_text().splitlines()) if r["category"] == cat]
    assert {r["member"] for r in rows if r["member"]} == {m["name"] for m in members}


def _check_study(out: Path, cat: str, trials: list[dict]) -> None:
    """The category's study is a journal file that optuna.load_study reads with every trial."""
    import optuna

    search_id = json.loads((out / "search.json").read_text())["search_id"]
    path = out / "ray" / f"{search_id}-{cat}" / "optuna.journal"
    st = optuna.load_study(study_name=f"{search_id}-{cat}", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(path))))
    assert len(st.trials) == len(trials) and all(t.state.name == "COMPLETE" for t in st.trials)
    got = sorted((t.params["model.variant"], round(t.params["train.lr"], 12), t.value) for t in st.trials)
    want = sorted((t["params"]["model.variant"], round(t["params"]["train.lr"], 12), t["curve"][-1]["best_val_score"])
                  for t in trials)
    assert [g[:2] for g in got] == [w[:2] for w in want]  # every trial, with its parameters
    assert [g[2] for g in got] == pytest.approx([w[2] for w in want])  # and its value: the last reported score


def test_search_front_retrains_front_members_beside_the_best(cluster, data, tmp_path):
    """--front 2 without --backbones-final: the best and the other front member are retrained; the best's
    export comes from the best trial's final only."""
    out = tmp_path / "front"
    run_search(opts(data, out, categories="granite", trials=2, max_concurrent=2, front=2))
    trials = [json.loads(p.read_text()) for p in (out / "granite" / "trials").glob("*.json")]
    summary = json.loads((out / "granite" / "summary.json").read_text())
    assert sorted(f["trial_id"] for f in summary["final"]) == sorted(t["trial_id"] for t in trials)
    _check_front(out, "granite", summary, trials, 2)
    assert summary["exported_trial"] == summary["best_trial"]["trial_id"]
    best = json.loads((out / "granite" / "best" / "config.json").read_text())
    assert best["model"]["variant"] == summary["best_trial"]["variant"]
    md = (out / "leaderboard.md").read_text()
    assert "## Accuracy-speed front (--front)" in md and all(m["name"] in md for m in summary["front"])


def test_resume_with_more_trials_runs_them_over_the_same_study(cluster, data, tmp_path, capsys):
    """Issue 26: a search resumed with a larger --trials ran no new trial, and a new --budget relabelled its
    tables. Now the budget is refused before anything is rewritten, and the extra trial runs in a second Tune
    experiment that asks the same Optuna study; the tables hold every trial, at the budget it ran at."""
    from draem_zoo.search.study import load_category_study

    out = tmp_path / "more"
    run_search(opts(data, out, categories="weave", trials=2, budget=8, final_budget=4, max_concurrent=2))
    first = {p.stem for p in (out / "weave" / "trials").glob("*.json")}
    plan = (out / "plan.json").read_text()
    with pytest.raises(DraemZooError, match="^--budget 16: this search started with --budget 8; resume with the same"):
        run_search(opts(data, out, categories="weave", trials=3, budget=16, final_budget=4, resume=True))
    assert (out / "plan.json").read_text() == plan
    capsys.readouterr()
    run_search(opts(data, out, categories="weave", trials=3, budget=8, final_budget=4, max_concurrent=2, resume=True))
    assert "--trials 3: this search had 2 trials per category; the 1 more run after them" in capsys.readouterr().err
    trials = [json.loads(p.read_text()) for p in (out / "weave" / "trials").glob("*.json")]
    assert len(trials) == 3 and first < {t["trial_id"] for t in trials}
    assert all(t["status"] == "TERMINATED" and t["budget"] == 8 and t["iteration"] <= 8 for t in trials)
    meta = json.loads((out / "search.json").read_text())
    assert meta["trials"] == 3 and meta["trial_segments"] == [2, 1]
    assert (out / "ray" / f"{meta['search_id']}-weave-more1").is_dir()
    assert json.loads((out / "status.json").read_text())["trials_per_category"] == 3
    study = load_category_study(str(out / "ray"), f"{meta['search_id']}-weave")  # one study: TPE saw all three
    assert sorted(t.user_attrs["tune_trial_id"] for t in study.trials) == sorted(t["trial_id"] for t in trials)
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert len((out / "leaderboard.csv").read_text().splitlines()) == 2


def test_trials_validate_at_geometric_rungs_where_asha_cuts(cluster, data, tmp_path):
    """--rungs 4 on a budget of 27: trials validate at 1, 3, 9 and 27 iterations, ASHA (reduction factor 3)
    judges them there, and rungs.csv/.md say how the early ranks agree with the later ones. With
    --trial-image-size 32 the trials train at 32 px and the final at the run's 48 px."""
    out = tmp_path / "rungs"
    run_search(opts(data, out, categories="weave", trials=4, budget=27, final_budget=4, rungs=4, max_concurrent=2,
                    sets=["model.image_size=48", "eval.batch_size=64"], trial_image_size=32))
    plan = json.loads((out / "plan.json").read_text())
    assert plan["rungs"] == 4 and plan["reduction_factor"] == 3
    assert plan["image_size"] == {"trial": 32, "final": 48, "trial_pixel_share": round((32 / 48) ** 2, 4)}
    assert plan["categories"]["weave"]["trial"]["val_points"] == [1, 3, 9, 27]
    trials = [json.loads(p.read_text()) for p in (out / "weave" / "trials").glob("*.json")]
    assert len(trials) == 4 and all(t["status"] == "TERMINATED" for t in trials)
    for t in trials:  # a report at every rung the trial reached, nowhere else; stopped trials stopped at a rung
        iters = [c["iteration"] for c in t["curve"]]
        assert iters == [1, 3, 9, 27][: len(iters)] and t["iteration"] == iters[-1], t["curve"]
    assert any(t["iteration"] == 27 for t in trials)  # the first trial at each rung is always promoted
    assert {t["infer_image_size"] for t in trials} == {32}  # trials at TRIAL_IMAGE_SIZE ...
    final_cfg = json.loads((out / "weave" / "best" / "config.json").read_text())
    assert final_cfg["run"]["model"]["image_size"] == 48  # ... the final at its own
    assert load(str(out / "weave" / "best")).predict(__import__("torch").rand(1, 3, 48, 48)).score.shape == (1,)
    rows = list(csv.DictReader((out / "rungs.csv").read_text().splitlines()))
    pairs = {(int(r["rung"]), int(r["later_rung"])) for r in rows if r["category"] == "weave"}
    assert pairs == {(1, 3), (1, 9), (1, 27), (3, 9), (3, 27), (9, 27)}
    first = next(r for r in rows if (r["rung"], r["later_rung"]) == ("1", "3"))
    assert int(first["trials"]) == sum(1 for t in trials if t["iteration"] >= 3)
    assert "Does early rank predict final rank?" in (out / "rungs.md").read_text()
    meta = json.loads((out / "search.json").read_text())
    assert meta["options"]["rungs"] == 4
    # what it cost beside what the plan said (CPU workers are the accelerators here)
    cost = meta["cost"]
    assert cost["trials"] == 4 and cost["finals"] == 1 and cost["hours"] > 0 and cost["ratio"] > 0
    # batch 4 (quick.py), one worker; a trial's samples count at their share of the final's pixels
    share = plan["image_size"]["trial_pixel_share"]
    assert cost["samples"] == int(sum(t["iteration"] for t in trials) * 4 * share + 4 * 4)
    assert "Cost: " in (out / "leaderboard.md").read_text()
    print("rungs search cost", json.dumps(cost))


def test_warm_start_enqueues_earlier_winners_and_reuses_same_run_results(cluster, data, tmp_path):
    """--warm-start A: weave (not in A) first evaluates granite's winner; granite reuses A's finished trials
    (same configuration, same budget) as results, in its study and its records, and trains only the rest."""
    from draem_zoo.search.study import load_category_study
    from draem_zoo.search.warm import WARM_ATTR

    a, b = tmp_path / "a", tmp_path / "b"
    run_search(opts(data, a, categories="granite", trials=3, budget=8, final_budget=4, max_concurrent=2))
    earlier = [json.loads(p.read_text()) for p in (a / "granite" / "trials").glob("*.json")]
    done = [t for t in earlier if t["status"] == "TERMINATED" and t["best_val_score"] is not None]
    assert len(done) == 3
    winner = max(done, key=lambda t: t["best_val_score"])
    run_search(opts(data, b, categories="weave,granite", trials=4, budget=8, final_budget=4, max_concurrent=2,
                    warm_start=str(a)))
    meta = json.loads((b / "search.json").read_text())
    assert meta["options"]["warm_start"] == str(a.resolve())
    weave = load_category_study(str(b / "ray"), f"{meta['search_id']}-weave")
    # the journal: trial 0 is granite's winner (its suggested parameters; the record adds the space's constants)
    first = weave.trials[0].params
    assert len(first) >= 4 and first == {k: v for k, v in winner["params"].items() if k in first}
    assert not any(WARM_ATTR in t.user_attrs for t in weave.trials) and len(weave.trials) == 4
    # granite: A's three results reused (not trained again), one new trial trained
    recs = [json.loads(p.read_text()) for p in (b / "granite" / "trials").glob("*.json")]
    reused = [t for t in recs if t.get("reused_from")]
    assert sorted(t["trial_id"] for t in reused) == sorted(t["trial_id"] for t in done) and len(recs) == 4
    assert all(t["reused_from"].endswith("/" + t["trial_id"]) for t in reused)
    granite = load_category_study(str(b / "ray"), f"{meta['search_id']}-granite")
    copies = [t for t in granite.trials if WARM_ATTR in t.user_attrs]
    assert [t.number for t in copies] == [0, 1, 2] and len(granite.trials) == 4
    assert sorted(t.value for t in copies) == sorted(t["best_val_score"] for t in done)
    summary = json.loads((b / "granite" / "summary.json").read_text())
    assert summary["best_trial"]["best_val_score"] >= winner["best_val_score"]  # never below what A found
    cost = meta["cost"]
    assert cost["reused_trials"] == 3 and cost["trials"] == 4 + 1  # the reused cost nothing here
    assert "reused from the --warm-start search" in (b / "leaderboard.md").read_text()


TINY_MODEL = ["model.variant=paper-tiny", "model.rec_width=4", "model.disc_width=4", "train.batch_size=4",
              "synthesis.procedural_textures=8", "eval.filter_sizes=1,5"]


def test_ablation_space_retrains_every_row_and_writes_ablation_md(cluster, data, tmp_path):
    """search_spaces/ablation.py on a generated category (3 of its grid's rows, tiny budgets): every row ran
    is retrained at the final budget and tested (FINAL_PER), and ablation.md has one line per row with the
    paper's Table 3 numbers beside it."""
    from draem_zoo.search.ablation import TABLE3

    out = tmp_path / "ablation"
    run_search(opts(data, out, categories="weave", space="search_spaces/ablation.py", trials=3, budget=4,
                    final_budget=4, max_concurrent=2, sets=[*SETS, *TINY_MODEL]))
    trials = [json.loads(p.read_text()) for p in (out / "weave" / "trials").glob("*.json")]
    rows = sorted(t["params"]["_row"] for t in trials)
    assert len(set(rows)) == 3 and set(rows) <= set(TABLE3)
    summary = json.loads((out / "weave" / "summary.json").read_text())
    assert summary["final_per"] == "_row"
    done = [f for f in summary["final"] if f["status"] == "done"]
    assert sorted(f["trial_id"] for f in done) == sorted(t["trial_id"] for t in trials)  # every row, not the best
    assert all(f["metrics"]["test_image_auroc"] is not None for f in done)
    md = (out / "ablation.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| row")]
    assert sorted(line.split(" | ")[0][2:] for line in table) == rows
    for line in table:
        name = line.split(" | ")[0][2:]
        det, loc_auroc, loc_ap = TABLE3[name]
        assert line.rstrip().endswith(f"| {det:.1f} | {loc_auroc:.1f} / {loc_ap:.1f} |"), line
    assert "Rows of the paper's table that did not run:" in md
    # compare rebuilds it from the records alone
    (out / "ablation.md").unlink()
    from draem_zoo.search.results import write_tables

    assert "ablation.md" in {p.name for p in write_tables(out).values()}
    assert (out / "ablation.md").read_text() == md


def test_search_bad_input_fails_before_any_trial(cluster, data, tmp_path):
    with pytest.raises(DraemZooError, match="bottle not found"):
        run_search(opts(data, tmp_path / "r1", categories="weave,bottle"))
    (tmp_path / "nospace.py").write_text("X = 1\n")
    with pytest.raises(DraemZooError, match="defines no function space"):
        run_search(opts(data, tmp_path / "r2", space=str(tmp_path / "nospace.py")))
    (tmp_path / "badvar.py").write_text("def space(trial):\n    trial.suggest_categorical('model.variant', "
                                        "['paper-tiny', 'timm-nosuchnet'])\n    return {'model.rec_width': 4}\n")
    with pytest.raises(DraemZooError, match="nosuchnet"):
        run_search(opts(data, tmp_path / "r3", space=str(tmp_path / "badvar.py")))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DraemZooError, match="not writable"):
        run_search(opts(data, tmp_path / "r4", storage=str(tmp_path / "afile" / "storage")))
    with pytest.raises(DraemZooError, match="GPUs"):
        run_search(opts(data, tmp_path / "r5", gpus_per_trial=1))
    assert not list(tmp_path.glob("r*/*/trials"))  # no trial ever started
    run_dir = tmp_path / "r5"
    with pytest.raises(DraemZooError, match="already holds a search"):
        run_search(opts(data, run_dir))


def test_search_worker_crash_is_retried_from_checkpoint(cluster, data, tmp_path):
    out = tmp_path / "crash"
    run_search(opts(data, out, categories="weave", trials=2, crash_at_iteration=9, max_concurrent=2, retries=2))
    trials = [json.loads(p.read_text()) for p in (out / "weave" / "trials").glob("*.json")]
    assert len(trials) == 2
    survivors = [t for t in trials if not t["stopped_early"]]
    assert survivors and all(t["status"] == "TERMINATED" and t["iteration"] == 16 for t in survivors)
    assert all(t["resumed"] for t in survivors)  # restarted from the checkpoint of iteration 8
    summary = json.loads((out / "weave" / "summary.json").read_text())
    assert summary["final"][0]["status"] == "done" and summary["final"][0]["metrics"]["resumed"] is True
    assert (out / "weave" / "best" / "model.safetensors").is_file()


PAPER_BUDGET_SPACE = """
BUDGET = 8
FINAL_BUDGET = 0          # the paper's 700 epochs of the category
def space(trial):
    trial.suggest_float("loss.focal_gamma", 1.0, 3.0)
    return {"model.variant": "paper-tiny", "model.rec_width": 4, "model.disc_width": 4, "train.batch_size": 4,
            "eval.filter_sizes": [1, 5]}
"""


def test_final_at_the_paper_budget_validates_five_times_and_leaves_nothing(cluster, tmp_path):
    """final_budget=0 is the paper's budget of the category (700 x 4 images / batch 4 = 700 iterations),
    validated and checkpointed 5 times, not every 18 iterations; afterwards no trial keeps a heavy
    checkpoint in storage and the nodes' work root is empty."""
    small = make_demo_dataset(tmp_path / "data", categories=("weave",), size=32, n_train=5, n_test_good=2,
                              n_test_defect=1)
    (tmp_path / "paper.py").write_text(PAPER_BUDGET_SPACE)
    out = tmp_path / "results"
    run_search(opts(small, out, space=str(tmp_path / "paper.py"), categories="weave", trials=2, budget=None,
                    final_budget=None, sets=[*SETS, "data.val_fraction=0.2"], max_concurrent=2))
    summary = json.loads((out / "weave" / "summary.json").read_text())
    (final,) = summary["final"]
    assert final["status"] == "done" and final["iterations"] == 700 and final["budget"] == "700 epochs"
    cfg = json.loads((out / "weave" / "best" / "config.json").read_text())
    tr = cfg["training"]
    assert tr["iterations"] == 700 and tr["samples"] == 2800 and tr["epochs"] == 700 and tr["validations"] == 5
    history = json.loads((out / "weave" / "best" / "history.json").read_text())
    assert [h["iteration"] for h in history if h.get("val_score") is not None] == [140, 280, 420, 560, 700]
    plan = json.loads((out / "plan.json").read_text())["categories"]["weave"]
    assert plan["final"]["iterations"] == 700 and plan["final"]["validations"] == 5
    # what it spent is within 20% of the plan: the plan's samples (ASHA's expected trial stops, the final's
    # budget) priced at the throughput the search measured, against the accelerator-hours it measured
    cost = json.loads((out / "search.json").read_text())["cost"]
    assert cost["trials"] == 2 and cost["finals"] == 1 and cost["hours"] > 0
    assert 0.8 <= cost["ratio"] <= 1.2, cost
    exp = out / "ray" / f"{json.loads((out / 'search.json').read_text())['search_id']}-weave"
    for trial_dir in exp.glob("trial_*"):  # a finished trial keeps its tiny marker, nothing heavier
        for ckpt in trial_dir.glob("checkpoint_*"):
            assert (ckpt / "final.json").is_file() and not (ckpt / "checkpoints").exists(), ckpt
    root = Path(os.environ["DRAEM_ZOO_WORKDIR"])
    assert not list(root.iterdir()), list(root.iterdir())  # nothing of any search left on the node


def test_multinode_ddp_spreads_ranks_and_weights_agree(tmp_path):
    """DDP over two nodes (gloo): one rank per node, identical weights, and at the paper's budget the
    same number of samples as one worker in half the iterations per rank."""
    from ray.cluster_utils import Cluster

    from draem_zoo.pipeline.runconfig import make_run_config
    from draem_zoo.pipeline.workflow import train_category
    from draem_zoo.search.trial import make_trainer

    small = make_demo_dataset(tmp_path / "data", categories=("weave",), size=32, n_train=5, n_test_good=2,
                              n_test_defect=1)  # 4 training images + 1 for validation
    run = make_run_config([f"data.root={small}", "data.category=weave", "model.variant=paper-tiny",
                           "model.rec_width=4", "model.disc_width=4", "model.image_size=32",
                           "data.val_fraction=0.2", "train.iterations=0", "train.batch_size=4",
                           "eval.filter_sizes=1,5", "train.validations=2", "train.report_every=0"])
    alone = train_category(run, tmp_path / "one-worker", progress=False)  # the paper's budget: 700 * 4 samples
    assert alone["training"]["iterations"] == 700 and alone["training"]["samples"] == 2800

    if ray.is_initialized():
        ray.shutdown()
    os.environ["DRAEM_ZOO_WORKDIR"] = str(tmp_path / "work")
    with socket.socket() as sock:  # not Ray's default 8265, which a Ray instance already running here may hold
        sock.bind(("127.0.0.1", 0))
        dashboard_port = sock.getsockname()[1]
    cl = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True,
                                                       "dashboard_port": dashboard_port})
    cl.add_node(num_cpus=1)
    try:
        ray.init(address=cl.address, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        settings = {"storage": str(tmp_path / "storage"), "workers_per_trial": 2, "cpus_per_worker": 1.0,
                    "placement": "STRICT_SPREAD", "retries": 0}
        result = make_trainer(run, "ddp-two-nodes", settings, callbacks=[], export=True, workers=2).fit()
        assert result.error is None
        # each rank's node and final weights, merged into the run's last checkpoint
        ranks = [json.loads((Path(result.checkpoint.path) / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert ranks[0]["node_id"] != ranks[1]["node_id"]  # one rank per node
        assert ranks[0]["last_weights_sha256"] == ranks[1]["last_weights_sha256"]  # DDP kept them identical
        cfg = json.loads((Path(result.checkpoint.path) / "config.json").read_text())
        assert cfg["training"]["world_size"] == 2 and cfg["training"]["effective_batch_size"] == 8
        # DDP buys time, not samples: half the iterations per rank, the same 2800 samples
        assert cfg["training"]["iterations"] == 350 and cfg["training"]["samples"] == 2800
        assert cfg["training"]["budget"] == "700 epochs" and cfg["training"]["epochs"] == 700
    finally:
        ray.shutdown()
        cl.shutdown()


def _durable_checkpoint(out: Path, search_id: str, trial_id: str) -> int:
    """Iteration of the latest checkpoint the trial has persisted in storage (0: none). A one-worker
    trial trains in the Tune trial, so its checkpoints are in Tune's trial folder."""
    best = 0
    for meta in (out / "ray" / f"{search_id}-weave").glob(f"*{trial_id}*/checkpoint_*/checkpoints/last/meta.json"):
        try:
            best = max(best, int(json.loads(meta.read_text())["iteration"]))
        except (OSError, ValueError, KeyError):
            continue
    return best


def _durable_statuses(out: Path) -> dict[str, tuple[str, int]] | None:
    """Trial statuses and last reported iterations as Tune had persisted them in its experiment
    state; None while the state is being rewritten (Tune writes it in place, not atomically)."""
    durable = {}
    for state in sorted((out / "ray").glob("*-weave/experiment_state-*.json")):
        try:
            data = json.loads(state.read_text())
        except (OSError, ValueError):  # being rewritten
            return None
        for trial_json, meta_json in data["trial_data"]:
            t, meta = json.loads(trial_json), json.loads(meta_json)
            durable[t["trial_id"]] = (t["status"], int((meta.get("last_result") or {}).get("iteration") or 0))
    return durable


def _signal_all(pids: list[tuple[int, int | None]], sig: int) -> None:
    """Signal each (pid, start time) that is still the same process."""
    for pid, started in pids:
        if _started(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _frozen_statuses(out: Path, frozen: list[tuple[int, int | None]]) -> dict[str, tuple[str, int]]:
    """Tune's persisted state once its writers are stopped; were they stopped in the middle of a rewrite
    (Tune writes it in place), they run on for a moment and are stopped again."""
    for _ in range(20):
        now = _durable_statuses(out)
        if now is not None:
            return now
        _signal_all(frozen, signal.SIGCONT)
        time.sleep(0.3)
        _signal_all(frozen, signal.SIGSTOP)
    raise AssertionError("Tune's experiment state stayed unreadable")


def test_search_resume_after_driver_sigkill(data, tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    out = tmp_path / "resume"
    env = dict(os.environ, DRAEM_ZOO_WORKDIR=str(tmp_path / "work"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "draem_zoo.cli", "search", "--data", str(data), "--out", str(out),
           "--categories", "weave", "--space", "search_spaces/quick.py", "--trials", "4", "--budget", "300",
           "--final-budget", "16", "--cpus-per-worker", "0.5", "--num-cpus", "2", "--max-concurrent", "2",
           "--quiet", *[a for s in SETS for a in ("--set", s)]]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    finished_before: set[str] = set()
    midway: set[str] = set()
    at_kill: dict[str, int] = {}
    while time.monotonic() < deadline:
        time.sleep(1)
        try:
            st = json.loads((out / "status.json").read_text())
        except (OSError, ValueError):
            continue
        trials = st["categories"][0]["trials"]
        finished_before = {t["trial_id"] for t in trials if t["status"] == "TERMINATED"}
        at_kill = {t["trial_id"]: t.get("iteration") or 0 for t in trials}
        # running trials whose Train run has persisted a checkpoint (what a resume can start from)
        ckpt = {t["trial_id"]: _durable_checkpoint(out, st["search_id"], t["trial_id"]) for t in trials
                if t["status"] == "RUNNING"}
        midway = {tid for tid, it in ckpt.items() if 0 < it < 260}
        # kill once Tune has also persisted a finished trial (its state lags the progress by up to
        # TUNE_GLOBAL_CHECKPOINT_S, more on a loaded machine): both kinds of trial are then exercised
        durable_now = _durable_statuses(out) or {}
        if finished_before and midway and any(s == "TERMINATED" for s, _ in durable_now.values()):
            break
    else:
        raise AssertionError("no moment with a finished trial Tune had persisted and a checkpointed running "
                             f"trial within 400 s: finished {sorted(finished_before)}, midway {sorted(midway)}")
    # Ray's processes are frozen first, then the driver alone is killed, with no chance to clean up: the
    # moment of a crash, held still. Left running, the category's Tune actor (in a process group of its own,
    # as every Ray worker is) would go on for seconds until Ray notices the driver's death: training,
    # checkpointing and, with num_to_keep=1, deleting the checkpoint that Tune's persisted state names (a race
    # of its own, not what this test is about). Raylet and GCS die with the driver (Ray's fate sharing).
    frozen = [(pid, _started(pid)) for pid in _descendants(proc.pid)]
    _signal_all(frozen, signal.SIGSTOP)
    os.kill(proc.pid, signal.SIGKILL)
    # a checkpoint may have landed between the poll and the kill: take the latest persisted one
    ckpt = {tid: max(it, _durable_checkpoint(out, st["search_id"], tid)) for tid, it in ckpt.items()}
    proc.wait()
    durable = _frozen_statuses(out, frozen)  # what Tune had persisted when the driver died
    record = json.loads((out / ".ray-processes.json").read_text())
    left = [p["pid"] for p in record["processes"] if _started(p["pid"]) == p["started"]]
    assert (out / ".draem-zoo.lock").is_file() and json.loads((out / ".draem-zoo.lock").read_text())["pid"] == proc.pid
    try:
        res = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    finally:
        _signal_all(frozen, signal.SIGKILL)  # what the resume did not reap (it reaps what the record lists)
    assert res.returncode == 0, res.stderr[-3000:]
    # the stale lock was taken over, and what Ray left running was stopped
    assert f"taking over the lock of process {proc.pid}" in res.stderr
    assert left and not [p for p in record["processes"] if _started(p["pid"]) == p["started"]]
    assert "Ray processes left running by the earlier, killed driver" in res.stderr
    assert not (out / ".draem-zoo.lock").exists() and not (out / ".ray-processes.json").exists()
    trials = {json.loads(p.read_text())["trial_id"]: json.loads(p.read_text())
              for p in (out / "weave" / "trials").glob("*.json")}
    assert len(trials) == 4 and finished_before <= set(trials)
    assert all(t["status"] == "TERMINATED" for t in trials.values()), (
        {tid: (t["status"], t["error"], t["iteration"]) for tid, t in trials.items()}, res.stderr[-3000:])
    kept = {tid for tid, (st, _) in durable.items() if st == "TERMINATED"}
    assert kept, "Tune had persisted no finished trial"
    for tid in kept:  # finished trials are kept as they were (a trial may finish in the actor's last moments)
        assert trials[tid]["iteration"] == durable[tid][1] and not trials[tid]["resumed"], (tid, durable[tid])
    for tid in finished_before - kept:  # finished within Tune's last second: resumed, never retrained
        t = trials[tid]
        assert not t["resumed"] or min(c["iteration"] for c in t["curve"]) >= at_kill[tid]
    for tid in midway - kept:  # continued from their checkpoints, not from iteration 0: no iteration reported twice
        t = trials[tid]
        its = [c["iteration"] for c in t["curve"]]
        after = [c["iteration"] for c in t["curve"] if c.get("resumed")]  # the reports after the restore
        assert its == sorted(set(its)) and its[-1] == t["iteration"], (tid, ckpt[tid], t)
        if not t["resumed"]:
            # the orphaned actor finished it (or ASHA stopped it) after the read above, and Tune persisted that:
            # kept as it was, never retrained
            assert t["iteration"] == 300 or t["stopped_early"], (tid, ckpt[tid], t)
            continue
        assert ckpt[tid] > 0 and after and min(after) > ckpt[tid], (tid, ckpt[tid], t)
    exp = next((out / "ray").glob("*-weave"))
    trial_dirs = list(exp.glob("trial_*"))
    assert len(trial_dirs) == 4
    for trial_dir in trial_dirs:
        finals = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
        # no trial ran twice to completion: a restored finished run replays its result, never retrains
        assert sum(1 for r in finals if r.get("final") and not r.get("replayed")) <= 1, trial_dir
    summary = json.loads((out / "weave" / "summary.json").read_text())
    assert summary["study"]["complete"] == 4
    assert (out / "weave" / "best" / "config.json").is_file()


@pytest.mark.parametrize("kind", ["visa", "mvtec_ad2", "dagm", "labels_only"])
def test_two_trial_search_on_each_dataset_layout(cluster, tmp_path, kind):
    from draem_zoo.data.demo_layouts import write_layout

    layout, masks = ("mvtec", False) if kind == "labels_only" else (kind, True)
    data = write_layout(layout, tmp_path / "parts", masks=masks)
    cat = {"visa": "candle", "mvtec_ad2": "can", "dagm": "Class1", "mvtec": "weave"}[layout]
    out = tmp_path / "results"
    run_search(opts(data, out, trials=2, budget=8, final_budget=8, max_concurrent=2))
    trials = [json.loads(p.read_text()) for p in (out / cat / "trials").glob("*.json")]
    assert len(trials) == 2 and all(t["category"] == cat and t["best_val_score"] is not None for t in trials)
    cfg = json.loads((out / cat / "best" / "config.json").read_text())
    assert cfg["data"]["dataset"] == layout and cfg["data"]["category"] == cat
    if kind == "mvtec_ad2":
        assert cfg["data"]["validation"] == "validation/good"
    board = (out / "leaderboard.md").read_text()
    row = next(line for line in board.splitlines() if line.startswith(f"| {cat} |"))
    if kind == "labels_only":
        assert cfg["metrics"]["test"]["pixel_ap"] is None and row.count("n/a") >= 3
        assert "Pixel metrics are n/a where the test images have no masks" in board and "labelled per image" in board
    else:
        assert cfg["metrics"]["test"]["pixel_ap"] is not None and "Pixel metrics are n/a" not in board
