"""Search-space files and the results tables (no Ray needed)."""

from __future__ import annotations

import json
import pickle

import pytest

from draem_zoo.errors import DraemZooError
from draem_zoo.pipeline.runconfig import RunConfig, make_run_config
from draem_zoo.search import results, status
from draem_zoo.search.space import check_space, load_space, overrides_of, suggest

SPACES = ("quick", "default", "backbones")


@pytest.mark.parametrize("name", SPACES)
def test_shipped_spaces_load_and_check(name):
    space = load_space(f"search_spaces/{name}.py")
    assert space.metric == "best_val_score" and space.mode == "max" and space.budget
    drawn = check_space(space, RunConfig(), draws=10)
    assert drawn and all("model.variant" in d for d in drawn)
    fn = pickle.loads(pickle.dumps(space.fn))  # Tune checkpoints the searcher with plain pickle
    assert callable(fn)


def test_default_space_is_conditional_and_covers_backbones():
    import optuna

    space = load_space("search_spaces/default.py")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1), direction="maximize")
    seen = {}
    for _ in range(60):
        t = study.ask()
        d = suggest(space, t)
        seen.setdefault(d["model.variant"], set()).update(d)
        study.tell(t, 0.0)
    assert {"paper", "paper-small", "timm-resnet18", "timm-efficientnet_b0", "timm-mobilenetv3_large_100",
            "timm-convnext_nano"} <= set(seen)
    assert "model.disc_width" in seen["timm-resnet18"] and "model.disc_width" not in seen["paper"]
    assert "_beta_high" in seen["paper"] and "_beta_high" not in overrides_of({"_beta_high": 1, "a.b": 2})


def test_the_default_space_evaluates_the_papers_configuration_first():
    """Trial 0 of every category is the paper's configuration: the run config's own defaults."""
    drawn = check_space(load_space("search_spaces/default.py"), RunConfig(), draws=3, build_models=False)
    paper = make_run_config(overrides_of(drawn[0]))
    ref = RunConfig()
    assert paper.model == ref.model and paper.loss == ref.loss and paper.synthesis == ref.synthesis
    assert paper.train.lr == ref.train.lr == 1e-4 and paper.train.batch_size == 8
    assert drawn[0]["model.variant"] == "paper" and drawn[0]["synthesis.beta"] == [0.0, 0.8]
    assert drawn[1] != drawn[0]  # then the sampler's own suggestions


def test_a_space_can_search_the_recipe(tmp_path):
    (tmp_path / "recipe.py").write_text(
        "def space(trial):\n"
        "    trial.suggest_categorical('train.lr_schedule', ['multistep', 'cosine', 'onecycle'])\n"
        "    trial.suggest_float('train.warmup', 0.0, 0.2)\n"
        "    trial.suggest_categorical('train.ema_decay', [0.0, 0.99, 0.999])\n")
    drawn = check_space(load_space(tmp_path / "recipe.py"), RunConfig(), draws=12)
    assert {d["train.lr_schedule"] for d in drawn} == {"multistep", "cosine", "onecycle"}
    assert any(d["train.ema_decay"] > 0 for d in drawn)
    (tmp_path / "badrecipe.py").write_text(
        "def space(trial):\n    trial.suggest_categorical('train.lr_schedule', ['multistep', 'linear'])\n")
    with pytest.raises(DraemZooError, match="lr_schedule"):
        check_space(load_space(tmp_path / "badrecipe.py"), RunConfig(), draws=8)


def test_bad_space_files_are_named(tmp_path):
    (tmp_path / "nospace.py").write_text("METRIC = 'val_score'\n")
    with pytest.raises(DraemZooError, match="nospace.py: defines no function space"):
        load_space(tmp_path / "nospace.py")
    (tmp_path / "broken.py").write_text("def space(trial):\n  return 1/0\nx = undefined_name\n")
    with pytest.raises(DraemZooError, match="broken.py: the file does not run"):
        load_space(tmp_path / "broken.py")
    (tmp_path / "badvariant.py").write_text(
        "def space(trial):\n    trial.suggest_categorical('model.variant', ['paper', 'timm-notamodel'])\n")
    with pytest.raises(DraemZooError, match="timm-notamodel|notamodel"):
        check_space(load_space(tmp_path / "badvariant.py"), RunConfig(), draws=20)
    (tmp_path / "badkey.py").write_text("def space(trial):\n    trial.suggest_float('loss.lambda', 0.1, 1)\n")
    with pytest.raises(DraemZooError, match="loss.lambda"):
        check_space(load_space(tmp_path / "badkey.py"), RunConfig(), draws=2)
    with pytest.raises(DraemZooError, match="no such search-space file"):
        load_space(tmp_path / "missing.py")
    (tmp_path / "badpoint.py").write_text(
        "POINTS_TO_EVALUATE = [{'model.variant': 'paper'}, {'model.variant': 'paper-huge'}]\n"
        "def space(trial):\n    trial.suggest_categorical('model.variant', ['paper', 'paper-tiny'])\n")
    with pytest.raises(DraemZooError, match=r"POINTS_TO_EVALUATE\[1\]|paper-huge"):
        check_space(load_space(tmp_path / "badpoint.py"), RunConfig(), draws=3)
    (tmp_path / "notalist.py").write_text("POINTS_TO_EVALUATE = {'a': 1}\ndef space(trial):\n    return {}\n")
    with pytest.raises(DraemZooError, match="POINTS_TO_EVALUATE must be a list"):
        load_space(tmp_path / "notalist.py")


def test_a_search_never_selects_on_test(tmp_path, capsys):
    """METRIC = test_* and eval.select_on=test stop a search with one line, before Ray starts."""
    from draem_zoo.cli import parser as cli
    from draem_zoo.data.demo import make_demo_dataset

    (tmp_path / "ontest.py").write_text("METRIC = 'test_image_auroc'\nBUDGET = 4\n"
                                         "def space(trial):\n    trial.suggest_float('loss.focal_gamma', 1, 3)\n")
    with pytest.raises(DraemZooError, match="validation data only"):
        load_space(tmp_path / "ontest.py")
    root = make_demo_dataset(tmp_path / "data", categories=("weave",), size=32, n_train=10, n_test_good=2,
                             n_test_defect=2)
    argv = ["search", "--data", str(root), "--trials", "1", "--num-cpus", "1"]
    assert cli.main([*argv, "--space", str(tmp_path / "ontest.py"), "--out", str(tmp_path / "s1")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "METRIC = 'test_image_auroc'" in err[0] and "validation data only" in err[0]
    assert cli.main([*argv, "--space", "search_spaces/quick.py", "--out", str(tmp_path / "s2"),
                     "--set", "eval.select_on=test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval.select_on=test" in err[0]
    (tmp_path / "moving.py").write_text("BUDGET = 4\ndef space(trial):\n"
                                         "    trial.suggest_categorical('eval.validation_seed', [1, 2])\n")
    assert cli.main([*argv, "--space", str(tmp_path / "moving.py"), "--out", str(tmp_path / "s3")]) == 2
    assert "change the validation set (seed)" in capsys.readouterr().err
    assert not (tmp_path / "s1").exists() or not list((tmp_path / "s1").rglob("*trial*"))
    # a metric that trials never report: refused by name before Ray starts (Tune would wait, then fail)
    (tmp_path / "typo.py").write_text("METRIC = 'val_scroe'\nBUDGET = 4\n"
                                       "def space(trial):\n    trial.suggest_float('loss.focal_gamma', 1, 3)\n")
    assert cli.main([*argv, "--space", str(tmp_path / "typo.py"), "--out", str(tmp_path / "s4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "METRIC = 'val_scroe': trials never report it" in err[0] and "best_val_score" in err[0]
    assert not (tmp_path / "s4").exists()


def test_trials_within_the_noise_are_tied_and_the_cheaper_model_wins():
    from draem_zoo.search.category import choose_trial

    trials = [{"trial_id": "big", "best_val_score": 0.80, "val_score_se": 0.01, "params_count": 97_000_000},
              {"trial_id": "small", "best_val_score": 0.795, "val_score_se": 0.01, "params_count": 6_000_000},
              {"trial_id": "worse", "best_val_score": 0.70, "val_score_se": 0.01, "params_count": 1_000}]
    best = choose_trial(trials)
    assert best["trial_id"] == "small" and best["selection"]["tied"] == ["big", "small"]
    assert best["selection"]["top_trial"] == "big"
    assert choose_trial([dict(t, val_score_se=0.001) for t in trials])["trial_id"] == "big"  # beyond the noise
    assert choose_trial([dict(t, val_score_se=None) for t in trials])["trial_id"] == "big"


def test_points_to_evaluate_come_first():
    import optuna

    space = load_space("search_spaces/quick.py")
    assert [p["model.variant"] for p in space.points] == ["paper-tiny", "timm-mobilenetv3_small_100"]
    study = optuna.create_study(direction="maximize")
    for p in space.points:
        study.enqueue_trial(p)
    first = []
    for _ in range(2):
        t = study.ask()
        first.append(suggest(space, t)["model.variant"])
        study.tell(t, 0.0)
    assert first == ["paper-tiny", "timm-mobilenetv3_small_100"]


def _first_trials(space, n, seed=0):
    """The first ``n`` suggestions of a category's study set up as the search sets it up (sampler, enqueued points)."""
    import optuna

    study = optuna.create_study(direction="maximize", sampler=space.make_sampler(seed))
    for p in space.enqueued_points():
        study.enqueue_trial(p)
    drawn = []
    for _ in range(n):
        t = study.ask()
        drawn.append(suggest(space, t))
        try:
            study.tell(t, 0.0)
        except RuntimeError:  # a grid sampler stops the study once its grid is exhausted
            break
    return drawn


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_the_paper_configuration_is_trial_0_of_the_default_and_backbones_spaces(seed):
    paper = RunConfig()
    default = _first_trials(load_space("search_spaces/default.py"), 3, seed)
    first = default[0]
    assert first["model.variant"] == "paper" and not first["model.sspcab"]
    assert (first["loss.ssim_weight"], first["loss.focal_gamma"], first["train.lr"]) == (
        paper.loss.ssim_weight, paper.loss.focal_gamma, paper.train.lr)
    assert tuple(first["synthesis.beta"]) == tuple(paper.synthesis.beta)
    assert default[1] != first  # after it, the sampler draws
    space = load_space("search_spaces/backbones.py")
    grid = _first_trials(space, space.grid_size(), seed)
    assert grid[0]["model.variant"] == "paper"
    # the grid sampler runs the point first instead of enqueueing it: every variant exactly once
    assert sorted(t["model.variant"] for t in grid) == sorted(space.grid["model.variant"])
    assert space.enqueued_points() == [] and space.enqueued_points("tpe") == [{"model.variant": "paper"}]


def _trial(tid, variant, val, speed):
    return {"trial_id": tid, "overrides": {"model.variant": variant, "loss.ssim_weight": 1.0}, "status": "TERMINATED",
            "best_val_score": val, "val_filter_size": 21, "iteration": 40, "budget": 40, "train_seconds": 20.0,
            "params_count": 1000, "images_per_s": speed, "curve": []}  # search trials are never tested


def test_backbone_speed_is_the_median_over_its_trials(tmp_path):
    # the best paper trial was stopped early by ASHA before it measured a speed: the backbone's speed is
    # the median of what its other trials measured (model.predict preferred over the validation pass)
    stopped = dict(_trial("a1", "paper", 0.7, None), stopped_early=True, iteration=20)
    trials = [stopped, dict(_trial("a2", "paper", 0.5, 99.0), infer_images_per_s=12.0),
              _trial("a3", "paper", 0.4, 16.0), _trial("a4", "timm-resnet18", 0.6, 30.0)]
    results.write_category(tmp_path, {"category": "a", "trials": trials, "best_trial": trials[0], "final": []})
    bb = {r["backbone"]: r for r in results.backbones(tmp_path)}
    assert bb["paper"]["val_score"] == pytest.approx(0.7) and bb["paper"]["stopped_early"] == 1
    assert bb["paper"]["infer_images_per_s"] == pytest.approx(14.0)  # median of 12 (predict) and 16
    assert bb["timm-resnet18"]["infer_images_per_s"] == pytest.approx(30.0)


def test_results_tables_and_plot(tmp_path):
    for cat, offs in (("a", 0.0), ("b", 0.1)):
        trials = [_trial(f"{cat}1", "paper", 0.5 + offs, 10.0), _trial(f"{cat}2", "paper", 0.4, 10.0),
                  _trial(f"{cat}3", "timm-resnet18", 0.6 + offs, 30.0)]
        finals = [{"seed": 0, "status": "done", "metrics": {"test_image_auroc": 0.75, "test_pixel_auroc": 0.9,
                                                            "test_pixel_ap": 0.4, "test_aupro": 0.6, "val_score": 0.7}},
                  {"seed": 1, "status": "done", "metrics": {"test_image_auroc": 0.85, "test_pixel_auroc": 0.92,
                                                            "test_pixel_ap": 0.5, "test_aupro": 0.7, "val_score": 0.6}}]
        results.write_category(tmp_path, {"category": cat, "trials": trials, "best_trial": trials[2], "final": finals})
    files = results.write_tables(tmp_path)
    assert all(p.is_file() for p in files.values())
    board = results.leaderboard(tmp_path)
    assert [r["category"] for r in board] == ["a", "b"] and board[0]["variant"] == "timm-resnet18"
    assert board[0]["test_image_auroc"] == pytest.approx(0.8) and board[0]["test_image_auroc_std"] == pytest.approx(0.05)
    bb = {r["backbone"]: r for r in results.backbones(tmp_path)}
    # per backbone the best trial by validation (a1: 0.5, b1: 0.6); trials have no test metrics at all
    assert bb["paper"]["val_score"] == pytest.approx(0.55) and bb["paper"]["categories"] == 2
    assert bb["paper"]["test_image_auroc"] is None and bb["paper"]["a:val_score"] == pytest.approx(0.5)
    assert bb["timm-resnet18"]["infer_images_per_s"] == pytest.approx(30.0)
    # trial-budget numbers say so, in the table, the CSV and the plot's title
    assert bb["paper"]["basis"] == "trial" and bb["paper"]["iterations"] == 40
    bmd = (tmp_path / "backbones.md").read_text()
    assert bmd.startswith("# Backbone comparison: search trials (up to 40 iterations), not the final models")
    assert "--backbones-final" in bmd and "basis" in (tmp_path / "backbones.csv").read_text().splitlines()[0]
    md = (tmp_path / "leaderboard.md").read_text()
    assert "80.00 ± 5.00" in md and "validation" in md
    assert (tmp_path / "backbones.png").stat().st_size > 1000
    snapshot = {"search_id": "s", "state": "running", "updated": 0, "trials_per_category": 3,
                "categories": [{"category": "a", "phase": "search", "final": [],
                                "trials": [{"status": "TERMINATED", "best_val_score": 0.5}, {"status": "RUNNING"}]}]}
    text = status.format_status(snapshot)
    assert "a" in text and "0.5000" in text
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["n_trials"] == 3


def test_progress_log_is_one_line_per_event_off_a_terminal():
    import io

    def st(trials, phase="search", final=()):
        return {"search_id": "s", "state": "running", "updated": 0, "trials_per_category": 2,
                "categories": [{"category": "bottle", "phase": phase, "trials": trials, "final": list(final)}]}

    steps = [st([{"trial_id": "t1", "status": "RUNNING"}]),
             st([{"trial_id": "t1", "status": "RUNNING", "iteration": 8, "total": 40, "val_score": 0.3,
                  "best_val_score": 0.3}]),
             st([{"trial_id": "t1", "status": "RUNNING", "iteration": 8, "total": 40, "val_score": 0.3,
                  "best_val_score": 0.3}]),  # nothing happened: nothing printed
             st([{"trial_id": "t1", "status": "TERMINATED", "iteration": 16, "total": 40, "best_val_score": 0.4},
                 {"trial_id": "t2", "status": "TERMINATED", "iteration": 40, "total": 40, "best_val_score": 0.5}]),
             st([], "final", [{"seed": 0, "status": "running", "variant": "paper", "iterations": 800, "workers": 1,
                               "trial_id": "t2"},
                              {"seed": 0, "status": "queued", "variant": "paper", "iterations": 800, "workers": 1,
                               "trial_id": "t1", "row": "DRAEM_rect"}])]
    out = io.StringIO()
    log = status.ProgressLog(out, tty=False)
    for s in steps:
        log.show(s)
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == ["bottle: search", "bottle trial t1: started", "bottle trial t1: iteration 8/40, val 0.3, best 0.3",
                     "bottle trial t1: stopped by ASHA at iteration 16/40, best val 0.4",
                     "bottle trial t2: finished at iteration 40/40, best val 0.5", "bottle: final",
                     "bottle final seed 0 of trial t2 (paper, 800 iterations x 1 workers): running",
                     "bottle final seed 0 of trial t1 (DRAEM_rect, paper, 800 iterations x 1 workers): queued"]
    table = io.StringIO()
    tty = status.ProgressLog(table, tty=True)
    for s in steps:
        tty.show(s)
    assert table.getvalue().count("category ") == 4  # the whole table, once per change


def test_backbone_comparison_of_final_models(tmp_path):
    """With --backbones-final every backbone's best configuration has a final run: compare those."""
    def final(variant, tid, seed, auroc, val):
        return {"seed": seed, "status": "done", "variant": variant, "trial_id": tid,
                "metrics": {"test_image_auroc": auroc, "test_pixel_auroc": 0.9, "test_pixel_ap": 0.5, "test_aupro": 0.7,
                            "val_score": val, "iteration": 800, "test_images_per_s": 50.0, "params": 10 ** 6,
                            "train_seconds": 80.0}}
    for cat in ("a", "b"):
        trials = [_trial(f"{cat}1", "paper-tiny", 0.6, 10.0), _trial(f"{cat}2", "timm-x", 0.5, 5.0)]
        finals = [final("paper-tiny", f"{cat}1", 0, 0.96, 0.8), final("paper-tiny", f"{cat}1", 1, 0.98, 0.7),
                  final("timm-x", f"{cat}2", 0, 0.90, 0.75), final("timm-x", f"{cat}2", 1, 0.80, 0.72)]
        results.write_category(tmp_path, {"category": cat, "trials": trials, "best_trial": trials[0], "final": finals,
                                          "backbones_final": True, "exported_trial": f"{cat}1"})
    results.write_tables(tmp_path)
    bb = {r["backbone"]: r for r in results.backbones(tmp_path)}
    assert set(bb) == {"paper-tiny", "timm-x"} and all(r["basis"] == "final" for r in bb.values())
    # the final runs' test metrics (mean over seeds): the search trials have none
    assert bb["paper-tiny"]["test_image_auroc"] == pytest.approx(0.97) and bb["timm-x"]["test_image_auroc"] == \
        pytest.approx(0.85)
    assert bb["paper-tiny"]["iterations"] == 800
    assert (tmp_path / "backbones.md").read_text().startswith(
        "# Backbone comparison: final models, each backbone retrained for 800 iterations")
    # the leaderboard's mean ± std is over the exported configuration's seeds only
    board = results.leaderboard(tmp_path)
    assert board[0]["test_image_auroc"] == pytest.approx(0.97) and board[0]["seeds"] == 2
