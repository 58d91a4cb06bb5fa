"""``draem-zoo search --plan`` at MVTec AD's real scale: the real per-category training counts (tiny
images), the default space, 4 DDP workers per trial; every number checked against hand arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from draem_zoo.cli import main
from draem_zoo.errors import DraemZooError
from draem_zoo.search.asha import asha_rungs, expected_iterations, simulate
from draem_zoo.search.driver import SearchOptions, plan_search
from draem_zoo.train.budget import Budget, parse_budget

MVTEC_TRAIN = {"bottle": 209, "cable": 224, "capsule": 219, "carpet": 280, "grid": 264, "hazelnut": 391,
               "leather": 245, "metal_nut": 220, "pill": 267, "screw": 320, "tile": 230, "toothbrush": 60,
               "transistor": 213, "wood": 247, "zipper": 240}
# by hand: train/good minus round(10%) held out for validation (Python rounds 24.5 to 24: leather)
N_TRAIN = {"bottle": 188, "cable": 202, "capsule": 197, "carpet": 252, "grid": 238, "hazelnut": 352, "leather": 221,
           "metal_nut": 198, "pill": 240, "screw": 288, "tile": 207, "toothbrush": 54, "transistor": 192, "wood": 222,
           "zipper": 216}
# round(700 * n_train / (8 * 4)): the paper's samples shared by 4 workers of batch 8
FINAL_ITERS = {"bottle": 4112, "cable": 4419, "capsule": 4309, "carpet": 5512, "grid": 5206, "hazelnut": 7700,
               "leather": 4834, "metal_nut": 4331, "pill": 5250, "screw": 6300, "tile": 4528, "toothbrush": 1181,
               "transistor": 4200, "wood": 4856, "zipper": 4725}


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec")
    px = np.zeros((8, 8, 3), np.uint8)
    for cat, n in MVTEC_TRAIN.items():
        good = root / cat / "train" / "good"
        good.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(px).save(good / f"{i:03d}.png")
    return root


PAPER_SCHEDULE = "search_spaces/default.py"  # with its fidelity schedule set aside (the fixture below)


@pytest.fixture(scope="module", autouse=True)
def paper_schedule(tmp_path_factory):
    """default.py at the paper's schedule for every trial (no rungs, full size): the hand arithmetic below."""
    global PAPER_SCHEDULE
    path = tmp_path_factory.mktemp("space") / "default_full.py"
    path.write_text(Path("search_spaces/default.py").read_text() + "\nRUNGS = 0\nTRIAL_IMAGE_SIZE = 0\n")
    PAPER_SCHEDULE = str(path)
    yield
    PAPER_SCHEDULE = "search_spaces/default.py"


def plan_opts(root, out, **kw):
    base = dict(data=str(root), out=str(out), space=PAPER_SCHEDULE, trials=32, workers_per_trial=4,
                progress=False, plan=True)
    return SearchOptions(**{**base, **kw})


def test_plan_with_geometric_rungs_at_mvtec_scale(mvtec, tmp_path):
    """--rungs 4: trials validate at 1/27, 1/9, 1/3 and all of the budget, where ASHA (reduction factor 3)
    cuts; the expected trial costs about a sixth of today's."""
    today = plan_search(plan_opts(mvtec, tmp_path / "a", throughput=163.6))
    plan = plan_search(plan_opts(mvtec, tmp_path / "b", throughput=163.6, rungs=4))
    assert plan["rungs"] == 4 and plan["reduction_factor"] == 3
    for cat, v in plan["categories"].items():
        it, t = FINAL_ITERS[cat], v["trial"]
        g = -(-it // 27)  # ceil(it / 27): ASHA's grace, its milestones g, 3g, 9g
        assert t["asha_grace"] == g and t["asha_rungs"] == [g, 3 * g, 9 * g], cat
        assert t["val_points"] == [g, 3 * g, 9 * g, it] and t["validations"] == 4, cat
        # Tune's asynchronous ASHA with the 32 trials in flight: more than the third of the trials a
        # synchronous halving keeps at each rung (the first to arrive always goes on), well under all of them
        rule = g + (3 * g - g) / 3 + (9 * g - 3 * g) / 9 + (it - 9 * g) / 27
        assert t["expected_iterations"] == round(32 * expected_iterations(it, 1, [g, 3 * g, 9 * g], 3, 32)), cat
        assert 1.2 * 32 * rule < t["expected_iterations"] < 2 * 32 * rule, cat
        assert v["final"] == today["categories"][cat]["final"]  # finals are not touched
    bottle = plan["categories"]["bottle"]["trial"]
    assert bottle["val_points"] == [153, 459, 1377, 4112] and bottle["expected_iterations"] == 22117
    before, after = today["totals"], plan["totals"]
    assert after["trial_expected_iterations"] < before["trial_expected_iterations"] / 3.5
    assert after["accelerator_hours"] < before["accelerator_hours"] / 3.4
    # fewer trials in flight at once keep more (an early trial meets fewer rivals at a rung)
    few = plan_search(plan_opts(mvtec, tmp_path / "f", throughput=163.6, rungs=4, max_concurrent=4))
    assert few["totals"]["trial_expected_iterations"] > 1.2 * after["trial_expected_iterations"]
    with pytest.raises(DraemZooError, match="--rungs 1"):
        plan_search(plan_opts(mvtec, tmp_path / "c", rungs=1))
    # a space's RUNGS is the default of --rungs
    space = tmp_path / "rungs_space.py"
    space.write_text(Path("search_spaces/default.py").read_text() + "\nRUNGS = 4\n")
    assert plan_search(plan_opts(mvtec, tmp_path / "d", space=str(space)))["categories"]["bottle"]["trial"][
        "val_points"] == [153, 459, 1377, 4112]
    space.write_text(Path("search_spaces/default.py").read_text() + "\nRUNGS = 1\n")
    with pytest.raises(DraemZooError, match="RUNGS = 1"):
        plan_search(plan_opts(mvtec, tmp_path / "e", space=str(space)))


def test_plan_prices_trials_at_their_image_size(mvtec, tmp_path):
    """TRIAL_IMAGE_SIZE 128 under a 256 px final: the same iterations, each trial step priced at a quarter of
    a final one (its share of pixels); the space's value is the default of --trial-image-size."""
    full = plan_search(plan_opts(mvtec, tmp_path / "a", throughput=163.6, rungs=4))
    low = plan_search(plan_opts(mvtec, tmp_path / "b", throughput=163.6, rungs=4, trial_image_size=128))
    assert low["image_size"] == {"trial": 128, "final": 256, "trial_pixel_share": 0.25}
    assert full["image_size"] == {"trial": 256, "final": 256, "trial_pixel_share": 1.0}
    for cat, v in low["categories"].items():
        t, f = v["trial"], v["final"]
        assert t["image_size"] == 128 and t["expected_iterations"] == full["categories"][cat]["trial"]["expected_iterations"]
        hand = (t["expected_iterations"] * 32 * 0.25 + f["iterations"] * 32) / 163.6 / 3600
        assert v["accelerator_hours"] == pytest.approx(hand, abs=1e-3), cat
    assert low["totals"]["accelerator_hours"] < 0.4 * full["totals"]["accelerator_hours"]
    assert low["totals"]["accelerator_hours"] < 18  # the target for MVTec AD at 163.6 images/s
    # the default space's measured schedule (RUNGS = 3, TRIAL_IMAGE_SIZE = 128): within the 18 hours
    default = plan_search(plan_opts(mvtec, tmp_path / "g", throughput=163.6, space="search_spaces/default.py"))
    assert default["rungs"] == 3 and default["image_size"]["trial"] == 128
    assert default["categories"]["bottle"]["trial"]["val_points"] == [457, 1371, 4112]
    assert 12 < default["totals"]["accelerator_hours"] < 18
    with pytest.raises(DraemZooError, match="--trial-image-size 256: not below"):
        plan_search(plan_opts(mvtec, tmp_path / "c", trial_image_size=256))
    space = tmp_path / "tis_space.py"
    space.write_text(Path("search_spaces/default.py").read_text() + "\nTRIAL_IMAGE_SIZE = 128\n")
    assert plan_search(plan_opts(mvtec, tmp_path / "d", space=str(space), rungs=4))["image_size"]["trial"] == 128
    # --trial-image-size 0 sets the space's aside: trials at the final's size
    assert plan_search(plan_opts(mvtec, tmp_path / "e", space=str(space), rungs=4,
                                 trial_image_size=0))["image_size"]["trial"] == 256
    space.write_text(Path("search_spaces/default.py").read_text() + "\nTRIAL_IMAGE_SIZE = 16\n")
    with pytest.raises(DraemZooError, match="TRIAL_IMAGE_SIZE = 16"):
        plan_search(plan_opts(mvtec, tmp_path / "f", space=str(space)))


def test_plan_reads_its_throughput_from_a_gpu_check_file(mvtec, tmp_path, capsys):
    """--throughput-from: the paper variant at the plan's batch, with the synthesis workers, compiled where
    measured; the hours are those of --throughput with that figure."""
    rows = [{"check": "device", "device": "cuda", "name": "NVIDIA H200"},
            {"check": "train", "variant": "paper", "batch": 8, "mode": "eager", "synthesis": "workers (4 processes)",
             "images_per_s": 150.2, "device": "NVIDIA H200"},
            {"check": "train", "variant": "paper", "batch": 8, "mode": "compiled", "synthesis": "workers (4 processes)",
             "images_per_s": 163.6, "device": "NVIDIA H200"},
            {"check": "train", "variant": "paper", "batch": 8, "mode": "compiled", "synthesis": "dense",
             "images_per_s": 170.0},
            {"check": "train", "variant": "paper", "batch": 32, "mode": "compiled", "synthesis": "workers",
             "images_per_s": 215.0},
            {"check": "summary", "failed": 0}]
    path = tmp_path / "gpu_check.jsonl"
    path.write_text("not json\n" + "\n".join(json.dumps(r) for r in rows) + "\n")
    plan = plan_search(plan_opts(mvtec, tmp_path / "r", throughput_from=str(path)))
    given = plan_search(plan_opts(mvtec, tmp_path / "r", throughput=163.6))
    m = plan["throughput_measured"]
    assert m["images_per_s"] == 163.6 and m["mode"] == "compiled" and m["synthesis"].startswith("workers")
    assert plan["totals"]["accelerator_hours"] == given["totals"]["accelerator_hours"]
    assert main(["search", "--data", str(mvtec), "--out", str(tmp_path / "r2"), "--trials", "32",
                 "--workers-per-trial", "4", "--plan", "--throughput-from", str(path)]) == 0
    assert f"at 163.6 images/s measured in {path}" in capsys.readouterr().out
    # a file without the plan's variant and batch is named, with what it holds
    path.write_text(json.dumps(rows[4]) + "\n")
    with pytest.raises(DraemZooError, match=r"no training measurement of .*paper.* at batch 8 \(it has: paper batch 32\)"):
        plan_search(plan_opts(mvtec, tmp_path / "r", throughput_from=str(path)))
    with pytest.raises(DraemZooError, match="cannot read it"):
        plan_search(plan_opts(mvtec, tmp_path / "r", throughput_from=str(tmp_path / "missing.jsonl")))


def test_plan_at_mvtec_scale_matches_hand_arithmetic(mvtec, tmp_path):
    plan = plan_search(plan_opts(mvtec, tmp_path / "results", throughput=150.0))
    assert not (tmp_path / "results").exists()  # a plan writes nothing
    assert set(plan["categories"]) == set(MVTEC_TRAIN)
    for cat, v in plan["categories"].items():
        n, it = N_TRAIN[cat], FINAL_ITERS[cat]
        assert v["n_train"] == n and v["n_val"] == MVTEC_TRAIN[cat] - n, cat
        f, t = v["final"], v["trial"]
        assert f["iterations"] == it and f["workers"] == 4 and f["samples"] == it * 32, cat
        assert f["iterations"] == round(700 * n / 32)
        every = -(-it // 5)  # ceil: 5 validations per run, whatever the budget
        assert f["val_every"] == every and f["validations"] == 5 <= 10, cat
        # trials run the paper's budget too (the schedule a trial is tuned with is the final's)
        assert t["iterations"] == it and t["validations"] == 5
        assert t["epochs"] == pytest.approx(700, abs=32 / n)  # whole iterations: within one of 700 epochs
        # ASHA: grace 2 validations, reduction 2, max_t the budget: rungs at 2 and 4 validations
        assert t["asha_rungs"] == [2 * every, 4 * every], cat
        assert t["max_iterations"] == 32 * it
        # Tune's asynchronous ASHA (32 trials in flight): a synchronous halving would keep half the trials at
        # each rung, 2e + (4e - 2e) / 2 + (it - 4e) / 4 per trial; with a reduction factor of 2 the
        # asynchronous one lands near it (the first to arrive goes on, but so does every score above the
        # median of those before it), far below the full budget
        per = expected_iterations(it, every, [2 * every, 4 * every], 2, 32)
        assert 0.9 * (2 * every + every + (it - 4 * every) / 4) < per < 0.75 * it
        assert t["expected_iterations"] == round(32 * per), cat
        assert v["decoded_per_node"]["category_images"] == MVTEC_TRAIN[cat]
        # accelerator-hours: (expected trial samples + final samples) / 150 images/s
        hours = (32 * per * 32 + it * 32) / 150 / 3600
        assert v["accelerator_hours"] == pytest.approx(hours, abs=1e-3), cat
    bottle = plan["categories"]["bottle"]
    assert bottle["trial"]["asha_rungs"] == [1646, 3292] and bottle["trial"]["expected_iterations"] == round(
        32 * expected_iterations(4112, 823, [1646, 3292], 2, 32))
    # the largest model the default space suggests is the paper's (97.4 M parameters); one upload is
    # its last checkpoint (weights + Adam's two moments) and its best weights: ~1.56 GB
    big = plan["model"]["largest"]
    assert 97.0e6 < big["params"] < 97.9e6
    assert plan["checkpoint_upload_bytes"] == 2 * big["state_bytes"] + 8 * big["params"]
    assert 1.5e9 < plan["checkpoint_upload_bytes"] < 1.6e9
    tot = plan["totals"]
    assert tot["final_iterations"] == sum(FINAL_ITERS.values())
    assert tot["trial_max_iterations"] == 32 * sum(FINAL_ITERS.values())
    assert tot["accelerator_hours"] == pytest.approx(sum(v["accelerator_hours"] for v in plan["categories"].values()),
                                                     abs=0.01)
    # kept after the search: per final run its last checkpoint (with the exported model) + best/ copy
    keep = plan["checkpoint_upload_bytes"] + 2 * big["state_bytes"]
    assert tot["storage_bytes"] == 15 * (keep + big["state_bytes"])


def test_plan_json_from_the_cli_in_seconds_without_ray(mvtec, tmp_path):
    code = ("import json, sys, time; t = time.monotonic(); from draem_zoo.cli import main; "
            f"rc = main(['search', '--data', {str(mvtec)!r}, '--out', {str(tmp_path / 'r')!r}, '--space', "
            "'search_spaces/default.py', '--trials', '32', '--workers-per-trial', '4', '--plan', '--json']); "
            "sys.stderr.write(json.dumps({'ray': 'ray' in sys.modules, 's': time.monotonic() - t}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    plan = json.loads(res.stdout)
    facts = json.loads(res.stderr.strip().splitlines()[-1])
    assert facts["ray"] is False and facts["s"] < 120, facts  # no Ray imported, let alone started
    for cat, it in FINAL_ITERS.items():
        c = plan["categories"][cat]
        assert c["n_train"] == N_TRAIN[cat] and c["final"]["iterations"] == it and c["final"]["workers"] == 4
        assert c["final"]["validations"] <= 10 and c["trial"]["max_iterations"] == 32 * it
    assert plan["totals"]["accelerator_hours"] is None and plan["totals"]["storage_bytes"] > 0


def test_plan_table_for_people(mvtec, tmp_path, capsys):
    assert main(["search", "--data", str(mvtec), "--out", str(tmp_path / "r"), "--space", "search_spaces/default.py",
                 "--categories", "bottle,toothbrush", "--trials", "8", "--plan", "--throughput", "150"]) == 0
    text = capsys.readouterr().out
    assert "| bottle | 188 | 16450 (700) |" in text  # 1 worker: round(700 * 188 / 8)
    assert "| toothbrush | 54 | 4725 (700) |" in text
    assert "accelerator-hours" in text and "kept after the search" in text


def test_budgets_in_one_unit():
    assert parse_budget("100 epochs") == Budget(100.0, "epochs") == parse_budget("100ep")
    assert parse_budget("20000") == Budget(20000, "iterations") == parse_budget(20000) == parse_budget("20000 it")
    assert parse_budget(0) == Budget(700.0, "epochs") == parse_budget("0")
    assert Budget(700.0, "epochs").iterations(188, 8, 4) == 4112 and Budget(700.0, "epochs").iterations(188, 8) == 16450
    assert Budget(500, "iterations").iterations(188, 8, 4) == 500  # iterations are per rank as written
    for bad in ("lots", "-3", "1.5", "0 epochs", True):
        with pytest.raises(DraemZooError):
            parse_budget(bad)


def test_asha_rungs_and_expectation_like_ray():
    from ray.tune.schedulers.async_hyperband import _Bracket

    for max_t, grace, rf in ((4112, 1646, 2), (40, 16, 2), (100, 10, 3), (20, 20, 2)):
        ours = asha_rungs(max_t, grace, rf)
        theirs = sorted(m for m, _ in _Bracket(grace, max_t, rf, 0)._rungs) if grace < max_t else []
        assert ours == theirs, (max_t, grace, rf)


def test_expected_iterations_follow_tunes_asynchronous_asha():
    import numpy as np
    from ray.tune.schedulers.async_hyperband import _Bracket

    # one trial: the first at every milestone always goes on, so it runs the whole budget
    assert expected_iterations(100, 10, [20, 40], 2, trials=1) == 100
    # two, one after the other, ranked alike at every milestone: the second goes on (to the end) iff it is
    # the better one, else stops at the first judgement: (100 + (100 + 20) / 2) / 2 per trial
    assert expected_iterations(100, 10, [20, 40], 2, trials=2, concurrency=1) == pytest.approx(80, abs=2.5)
    assert expected_iterations(100, 30, [20, 40], 2, trials=2, concurrency=1) == pytest.approx(82.5, abs=2.5)
    # many trials: the share that goes on at each judgement settles at 1/rf (the plan's old rule)
    many = expected_iterations(100, 10, [20, 40], 2, trials=2000, concurrency=50, sims=3)
    assert many == pytest.approx(20 + 20 / 2 + 60 / 4, rel=0.03)
    # a handful of trials goes on far more than 1/rf: 4 trials, rungs 1, 3, 9 of 27 at rf 3
    few = expected_iterations(27, 1, [1, 3, 9], 3, trials=4)
    assert few > 1.8 * (1 + 2 / 3 + 6 / 9 + 18 / 27)
    # the simulation's rule is Tune's own: Ray's _Bracket, driven by the same draws, decides alike
    stops = (3, 9, 27)
    for trials, conc in ((4, 4), (9, 2), (30, 30)):
        bracket = _Bracket(3, 81, 3, 0)

        class Trial:
            def __init__(self, i):
                self.trial_id = str(i)

        def ray_judge(k, t, score, bracket=bracket):
            return bracket.on_result(Trial(t), stops[k], score) != "STOP"

        ours = simulate(81, stops, 3, trials, conc, np.random.default_rng(5))
        theirs = simulate(81, stops, 3, trials, conc, np.random.default_rng(5), judge=ray_judge)
        assert ours == theirs, (trials, conc)


def test_bad_budgets_and_trial_counts_fail_before_anything(mvtec, tmp_path):
    start = time.monotonic()
    with pytest.raises(DraemZooError, match="--budget"):
        plan_search(plan_opts(mvtec, tmp_path / "r", budget="a lot"))
    with pytest.raises(DraemZooError, match="--trials 0"):
        plan_search(plan_opts(mvtec, tmp_path / "r", trials=0))
    assert time.monotonic() - start < 60
