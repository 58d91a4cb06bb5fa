"""The device check runs every path on a CPU at tiny sizes (the real run needs an accelerator)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_every_check_on_a_cpu(tmp_path):
    out = tmp_path / "gpu_check.jsonl"
    res = subprocess.run([sys.executable, "scripts/gpu_check.py", "--smoke", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:] + res.stdout[-2000:]
    rows = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert [json.loads(x) for x in out.read_text().splitlines()] == rows  # written as measured, line by line
    checks = [r["check"] for r in rows]
    assert checks[0] == "device" and checks[-1] == "summary"
    assert checks.index("profile") < checks.index("inference") < checks.index("cli_train")
    train = [r for r in rows if r["check"] == "train"]
    # eager workers first, then compiled workers, then the on-device synthesis modes
    assert [(r["batch"], r["mode"], r["synthesis"].split(" ")[0]) for r in train] == [
        (2, "eager", "workers"), (4, "eager", "workers"), (2, "compiled", "workers"), (4, "compiled", "workers"),
        (2, "eager", "dense"), (4, "eager", "dense"), (2, "eager", "sparse"), (4, "eager", "sparse")]
    for r in train:
        assert r["images_per_s"] > 0 and r["timed_iterations"] >= 20 and 0 <= r["synthesis_share"] < 1
        assert (r["compile_seconds"] is not None) == (r["mode"] == "compiled")
        assert r["mode"] == "eager" or (r["compile_seconds"] > 0 and r["graphs"] >= 1 and r["backend"] == "aot_eager")
    profile = next(r for r in rows if r["check"] == "profile")
    assert 1 <= len(profile["top"]) <= 10 and all(0 < t["share"] <= 1 for t in profile["top"])
    inference = next(r for r in rows if r["check"] == "inference")
    assert inference["validation_images_per_s"] > 0 and inference["test_images_per_s"] > 0
    assert inference["validation_images"] == 14 and inference["validation_metrics_seconds"] > 0
    cli = next(r for r in rows if r["check"] == "cli_train")
    assert cli["iterations"] == 20 and cli["images_per_s"] > 0 and cli["validation_seconds"] > 0
    assert cli["checkpoint_seconds"] >= 0 and cli["first_step_seconds"] > 0 and cli["test_inference_images_per_s"] > 0
    assert rows[-1]["failed"] == 0 and rows[-1]["done"] >= 11


TTQ_SETS = ["model.rec_width=4", "model.disc_width=4", "model.image_size=32", "train.batch_size=4",
            "eval.filter_sizes=1,5", "synthesis.procedural_textures=8"]


def test_time_to_quality_runs_end_to_end_and_resumes(tmp_path):
    from draem_zoo.data.demo import make_demo_dataset

    root = make_demo_dataset(tmp_path / "data", categories=("weave",), size=32, n_train=10, n_test_good=3,
                             n_test_defect=2)
    out = tmp_path / "ttq"
    cmd = [sys.executable, "scripts/time_to_quality.py", "--data", str(root), "--category", "weave", "--out", str(out),
           "--recipe", "paper:", "--recipe", "ema:train.ema_decay=0.9",
           "--recipe", "b8:train.batch_size=8,train.lr_schedule=cosine,train.warmup=0.1",
           "--seeds", "0,1", "--samples", "64", "--points", "3", *[a for s in TTQ_SETS for a in ("--set", s)]]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    for name in ("time_to_quality.csv", "time_to_quality.md", "time_to_quality.png"):
        assert (out / name).stat().st_size > 0, name
    lines = (out / "time_to_quality.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert len(rows) == 3 * 2 * 3  # recipes x seeds x points
    # equal samples at every point, whatever the batch: 16, 32, 64 (batch 4: 4, 8, 16 iterations; batch 8: 2, 4, 8)
    for recipe, iterations in (("paper", ["4", "8", "16"]), ("b8", ["2", "4", "8"])):
        mine = [r for r in rows if r["recipe"] == recipe and r["seed"] == "0"]
        assert [r["iteration"] for r in mine] == iterations and [r["samples"] for r in mine] == ["16", "32", "64"]
    for r in rows:
        assert 0 <= float(r["val_score"]) <= 1 and 0 <= float(r["test_image_auroc"]) <= 1
        assert 0 <= float(r["test_pixel_ap"]) <= 1 and 0 <= float(r["test_aupro"]) <= 1 and float(r["seconds"]) > 0
    ref = summary["recipes"]["paper"]
    assert ref["seeds"] == 2 and ref["samples"] == 64 and ref["final_se"] >= 0
    md = (out / "time_to_quality.md").read_text()
    assert "| ema | train.ema_decay=0.9 |" in md and "samples to 95%" in md
    # resumable: a finished run is read back, not trained again; a run cut after its first checkpoint continues
    cut = out / "runs" / "ema-s1"
    (cut / "config.json").unlink()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ema seed 1: continuing" in res.stderr and "paper seed 0" not in res.stderr
    # its curve came back from its checkpoint: the same table
    assert (out / "time_to_quality.csv").read_text().splitlines() == lines
    # rank_check on those runs: saturation, s_f and checkpoint agreement with test, seed-to-seed gaps in SEs
    runs = sorted((out / "runs").iterdir())
    res = subprocess.run([sys.executable, "scripts/rank_check.py", *map(str, runs),
                          "--seed-groups", "paper-s0,paper-s1;ema-s0,ema-s1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    check = json.loads(res.stdout)
    models = {m["model"]: m for m in check["models"]}
    assert len(models) == 6 and len(check["saturation_new"]) == 6
    assert all(0 <= s <= 1 for s in check["saturation_new"])
    for m in models.values():
        fa = m["filter_size_agreement"]
        assert fa["points"] == len(m["new"]["by_filter_size"]) and fa["se"] == round(m["new"]["se"], 4)
        assert set(m["new"]["levels"]) <= {"0", "1", "2", "3"}
        assert m["checkpoint_agreement"]["points"] == 3  # the three validated points, each with its test
    assert check["checkpoint_agreement"]["models"] == 6
    pairs = {tuple(p["models"]): p for p in check["seed_to_seed_new"]}
    p = pairs[("paper-s0", "paper-s1")]
    gap = abs(models["paper-s0"]["new"]["val_score"] - models["paper-s1"]["new"]["val_score"])
    assert p["gap"] == round(gap, 4)
    assert p["gap_in_se"] == round(gap / ((models["paper-s0"]["new"]["se"] + models["paper-s1"]["new"]["se"]) / 2), 2)


def test_rank_fidelity_trains_every_config_at_every_rung_and_both_sizes(tmp_path):
    from draem_zoo.data.demo import make_demo_dataset

    root = make_demo_dataset(tmp_path / "data", categories=("weave",), size=32, n_train=10, n_test_good=2,
                             n_test_defect=1)
    out = tmp_path / "fid"
    cmd = [sys.executable, "scripts/rank_fidelity.py", "--data", str(root), "--category", "weave", "--out", str(out),
           "--space", "search_spaces/quick.py", "--variant", "paper-tiny", "--configs", "3", "--budget", "9",
           "--rungs", "3", "--size", "32", "--low-size", "16",
           *[a for s in ("model.rec_width=4", "model.disc_width=4", "train.batch_size=4", "eval.filter_sizes=1,3",
                         "synthesis.procedural_textures=8", "data.val_fraction=0.3") for a in ("--set", s)]]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["points"] == [1, 3, 9] and summary["configs"] == 3 and summary["sizes"] == [32, 16]
    assert set(summary["to_last"]["32"]) == {"1", "3"} and set(summary["low_vs_full"]) == {"1", "3", "9"}
    lines = (out / "fidelity.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 * 2 * 3  # configs x sizes x rungs
    configs = json.loads((out / "configs.json").read_text())
    assert len(configs) == 3 and all(c["model.variant"] == "paper-tiny" for c in configs)
    assert "| weave@32px | 1 |" in (out / "tables" / "rungs.md").read_text()
    # finished runs are read back, not trained again
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "training" not in again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1]) == summary


@pytest.mark.slow
def test_bench_predict_times_every_path_over_the_same_images(tmp_path):
    cmd = [sys.executable, "scripts/bench_predict.py", "--images", "24", "--size", "32", "--set", "rec_width=8",
           "--set", "disc_width=8", "--batch-size", "8", "--workers", "1", "--requests", "16", "--clients", "2",
           "--paths", "before,local,ray,decode,serve", "--work", str(tmp_path)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert [r["path"] for r in rows] == ["before", "local", "ray", "decode", "decode", "serve"]
    assert [r["workers"] for r in rows[3:5]] == [0, 1] and all(r["images"] == 24 for r in rows[3:5])
    rows = rows[:3] + rows[5:]
    for r in rows[:3]:
        assert r["images"] == 24 and r["images_per_s"] > 0 and r["image_size"] == 32
    serve = rows[3]
    assert serve["requests"] == 16 and serve["requests_per_s"] > 0 and 0 < serve["p50_ms"] <= serve["p99_ms"]


def test_dataset_parity_reads_one_category_three_ways_to_the_same_numbers(tmp_path):
    from draem_zoo.data.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "d", categories=("weave",), size=32, n_train=10, n_test_good=3,
                             n_test_defect=2)
    res = subprocess.run([sys.executable, "scripts/dataset_parity.py", "--data", str(data), "--category", "weave",
                          "--iterations", "4", "--image-size", "32", "--set", "model.rec_width=4",
                          "--set", "model.disc_width=4", "--set", "eval.filter_sizes=1,5",
                          "--set", "synthesis.procedural_textures=8"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["visa_csv_equals_mvtec"] and out["labels_only_image_metrics_equal"]
    assert out["labels_only_pixel_metrics_none"] and "labelled per image only" in out["runs"]["labels_only"]["pixel_note"]
    assert out["runs"]["visa_csv"]["dataset"] == "visa" and out["runs"]["mvtec"]["pixel_ap"] is not None
