"""Train -> export -> load -> evaluate -> predict, resume, and bad input before training."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import draem_zoo
from draem_zoo.cli import parser as cli
from draem_zoo.errors import DraemZooError
from draem_zoo.pipeline.runconfig import make_run_config
from draem_zoo.pipeline.workflow import train_category
from draem_zoo.train import trainer as trainer_mod

TINY = ["model.rec_width=4", "model.disc_width=4", "model.image_size=32", "train.batch_size=4",
        "eval.filter_sizes=1,5,11", "eval.batch_size=32", "synthesis.procedural_textures=8"]


def tiny_run(root, *extra):
    return make_run_config([f"data.root={root}", "data.category=weave", *TINY, *extra])


def test_train_export_load_evaluate_predict(root, tmp_path, capsys):
    out = tmp_path / "model"
    code = cli.main(["train", "--data", str(root), "--category", "weave", "--out", str(out), "--iterations", "6",
                     "--image-size", "32", "--batch-size", "4", "--quiet", "--json",
                     *[a for s in TINY[:2] + TINY[4:] for a in ("--set", s)]])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["selection"]["split"] == "validation"
    cfg = json.loads((out / "config.json").read_text())
    for key in ("model", "score", "run", "data", "thresholds", "metrics", "selection", "training", "weights_sha256",
                "package_version"):
        assert key in cfg, key
    assert cfg["data"]["category"] == "weave" and cfg["data"]["files"] == 19
    assert cfg["metrics"]["test"]["split"] == "test" and cfg["metrics"]["validation"]["val_score"] is not None
    assert cfg["score"]["filter_size"] in (1, 5, 11)
    assert cfg["score"]["image_threshold"] == cfg["thresholds"]["image_threshold"]
    assert (out / "checkpoints" / "last" / "state.safetensors").is_file()
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))

    model = draem_zoo.load(str(out))
    assert model.score_config.image_threshold is not None and not model.training

    assert cli.main(["evaluate", "--model", str(out), "--data", str(root), "--category", "weave", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro"):
        assert 0.0 <= ev[k] <= 1.0, k
    assert set(ev["per_defect"]) == {"hole", "scratch", "stain"}
    assert ev["n_images"] == 9
    assert abs(ev["image_auroc"] - cfg["metrics"]["test"]["image_auroc"]) < 1e-6  # same maps, same s_f

    pics = tmp_path / "pics"
    assert cli.main(["predict", "--model", str(out), str(root / "weave" / "test" / "hole"),
                     str(root / "weave" / "test" / "good" / "000.png"), "--out", str(pics), "--overlays", "all"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["scored"] == 3
    lines = [json.loads(x) for x in (pics / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and len(list((pics / "overlays").glob("*.png"))) == 3
    thr = cfg["score"]["image_threshold"]
    for rec in lines:
        assert set(("image", "score", "anomalous", "threshold")) <= set(rec)
        assert rec["anomalous"] == (rec["score"] >= thr)  # the stored threshold decides


def _same_weights(a_dir, b_dir):
    for name in ("checkpoints/last/state.safetensors", "model.safetensors"):
        a, b = load_file(str(a_dir / name)), load_file(str(b_dir / name))
        assert set(a) == set(b), name
        for k in a:
            assert torch.equal(a[k], b[k]), (str(b_dir), name, k)


RESUME = ("train.iterations=8", "train.checkpoint_every=2", "train.val_every=4", "train.report_every=1", "train.seed=3")


@pytest.fixture(scope="module")
def straight(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "m"
    train_category(tiny_run(root, *RESUME), out, progress=False)
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_reproduces_an_uninterrupted_run(root, tmp_path, straight, monkeypatch, capsys, workers):
    """With synthesis in 2 worker processes too: their batches are the in-process ones, so the weights
    match the run without workers (``straight``) bit for bit."""
    run = tiny_run(root, *RESUME, f"train.synthesis_workers={workers}")

    def crash_at(n, exc):
        def cb(rec):
            if rec["iteration"] == n:
                raise exc
        return cb

    # a real Ctrl-C in the middle of iteration 6 (after its batch was drawn, before the step): the
    # iteration finishes, is saved, and the run stops; resume is bit-exact
    real_step = trainer_mod.train_step
    calls = {"n": 0}

    def step_with_sigint(*a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*a, **k)

    monkeypatch.setattr(trainer_mod, "train_step", step_with_sigint)
    before = signal.getsignal(signal.SIGINT)  # Python's default; SIG_IGN where pytest was started in the background
    with pytest.raises(KeyboardInterrupt):
        train_category(run, tmp_path / "ctrlc", progress=False)
    monkeypatch.setattr(trainer_mod, "train_step", real_step)
    meta = json.loads((tmp_path / "ctrlc" / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["iteration"] == 6
    assert "checkpoint saved at iteration 6 of 8" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    train_category(run, tmp_path / "ctrlc", resume=True, progress=False)
    assert "resuming from iteration 6 of 8" in capsys.readouterr().err
    # a hard crash at iteration 7: only the periodic checkpoint (6) survives
    with pytest.raises(RuntimeError):
        train_category(run, tmp_path / "crash", progress=False, callbacks=[crash_at(7, RuntimeError("boom"))])
    assert json.loads((tmp_path / "crash" / "checkpoints" / "last" / "meta.json").read_text())["iteration"] == 6
    train_category(run, tmp_path / "crash", resume=True, progress=False)
    for name in ("ctrlc", "crash"):
        _same_weights(straight, tmp_path / name)


def test_crash_between_the_renames_of_a_save_resumes_from_the_backup(root, tmp_path, straight, monkeypatch, capsys):
    """Killed after `last` -> `.last.old` and before the new folder became `last`: resume uses the backup,
    says so, and reaches the uninterrupted weights; the next save keeps the backup until `last` exists."""
    run = tiny_run(root, *RESUME)
    out = tmp_path / "m"
    real_replace = os.replace
    seen = {"n": 0}

    def replace_then_die(src, dst):
        real_replace(src, dst)
        if Path(dst).name == ".last.old":
            seen["n"] += 1
            if seen["n"] == 2:  # the save at iteration 6 (the one at 4 moved an earlier `last` aside first)
                raise SystemExit("killed between the renames")

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(SystemExit):
        train_category(run, out, progress=False)
    monkeypatch.setattr(os, "replace", real_replace)
    ckpts = out / "checkpoints"
    assert not (ckpts / "last").exists() and (ckpts / ".last.old" / "meta.json").is_file()
    assert json.loads((ckpts / ".last.old" / "meta.json").read_text())["iteration"] == 4
    with pytest.raises(DraemZooError, match="pass --resume"):  # the backup counts as a checkpoint
        train_category(run, out, progress=False)
    capsys.readouterr()
    result = train_category(run, out, resume=True, progress=False)
    assert result["resumed_from"] == 4
    assert "resuming from iteration 4 of 8 (from" in capsys.readouterr().err
    assert not (ckpts / ".last.old").exists()
    _same_weights(straight, out)


def test_resume_without_a_checkpoint_says_it_starts_afresh(root, tmp_path, capsys):
    result = train_category(tiny_run(root, "train.iterations=2"), tmp_path / "m", resume=True, progress=False)
    assert result["resumed_from"] == 0
    assert f"--resume: no checkpoint in {tmp_path / 'm' / 'checkpoints'}; starting afresh" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate-state", "break-meta"])
def test_a_damaged_checkpoint_is_named_or_the_backup_used(root, tmp_path, capsys, damage):
    out = tmp_path / "m"
    argv = ["train", "--data", str(root), "--category", "weave", "--out", str(out), "--iterations", "4",
            "--image-size", "32", "--batch-size", "4", "--quiet",
            *[a for s in TINY[:2] + TINY[4:] + ["train.checkpoint_every=2", "train.val_every=2"]
              for a in ("--set", s)]]
    assert cli.main(argv) == 0
    last = out / "checkpoints" / "last"
    shutil.copytree(last, tmp_path / "intact")
    victim = last / ("state.safetensors" if damage == "truncate-state" else "meta.json")
    victim.write_bytes(victim.read_bytes()[:40])
    capsys.readouterr()
    assert cli.main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(victim) in err and "damaged" in err, err
    # with an intact copy beside it (what a save keeps between its renames), resume falls back to it
    shutil.copytree(tmp_path / "intact", out / "checkpoints" / ".last.old")
    assert cli.main([*argv, "--resume"]) == 0
    assert "resuming from iteration 4 of 4 (from" in capsys.readouterr().err


def test_resume_guards(root, tmp_path):
    run = tiny_run(root, "train.iterations=2")
    train_category(run, tmp_path / "m", progress=False)
    with pytest.raises(DraemZooError, match="pass --resume"):
        train_category(run, tmp_path / "m", progress=False)
    other = tiny_run(root, "train.iterations=2", "loss.ssim_weight=3")
    with pytest.raises(DraemZooError, match="different settings.*loss.ssim_weight"):
        train_category(other, tmp_path / "m", resume=True, progress=False)


@pytest.mark.parametrize("args,needle", [
    (["--set", "loss.ssim_wieght=2"], "unknown config key"),
    (["--set", "train.batch_size=two"], "train.batch_size: expected an integer"),
    (["--category", "bottle"], "no category 'bottle'"),
    (["--anomaly-source", "/nonexistent/dtd"], "anomaly source folder does not exist"),
])
def test_bad_input_fails_before_training(root, tmp_path, capsys, args, needle):
    base = {"--data": str(root), "--category": "weave", "--out": str(tmp_path / "o")}
    for k in ("--category",):
        if k in args:
            base.pop(k)
    argv = ["train", *[x for kv in base.items() for x in kv], "--iterations", "2", "--quiet", *args]
    assert cli.main(argv) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_cli_help_and_config(capsys):
    for cmd in ("train", "evaluate", "predict", "describe", "config", "variants", "convert-official"):
        with pytest.raises(SystemExit) as e:
            cli.main([cmd, "--help"])
        assert e.value.code == 0
    capsys.readouterr()
    assert cli.main(["config", "--variant", "timm-resnet18", "--set", "loss.focal_gamma=3"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model"]["disc_encoder"] == "resnet18" and cfg["loss"]["focal_gamma"] == 3.0


def test_each_role_decodes_only_what_it_uses(root, tmp_path, monkeypatch):
    """A final run reads every split, a search trial no test split, a DDP rank other than 0 only the
    training images (it never validates or tests)."""
    from draem_zoo.pipeline import workflow
    from draem_zoo.pipeline.workflow import Distributed

    seen = []
    real = workflow.load_category

    def spy(cfg, size, progress=False, splits=("train", "val", "test")):
        seen.append(splits)
        return real(cfg, size, progress=progress, splits=splits)

    monkeypatch.setattr(workflow, "load_category", spy)
    run = tiny_run(root, "train.iterations=2")
    assert train_category(run, tmp_path / "final", progress=False)["test"] is not None
    assert train_category(run, tmp_path / "trial", progress=False, evaluate_test=False)["test"] is None
    other = train_category(run, tmp_path / "rank1", progress=False, dist=Distributed(rank=1, world_size=2))
    assert other["rank"] == 1 and "validation" not in other
    assert seen == [("train", "val", "test"), ("train", "val"), ("train",)]


@pytest.mark.parametrize("export,best_at_end", [("last", None), ("best", True), ("best", False)])
def test_the_exported_weights_are_validated_once(root, tmp_path, monkeypatch, export, best_at_end):
    """The last iteration's validation is the export's when those are the exported weights: finish() reuses
    its maps instead of a second pass over the validation set; other weights are validated again."""
    from draem_zoo.pipeline import workflow

    passes, real = [], workflow.compute_maps
    monkeypatch.setattr(workflow, "compute_maps", lambda m, images, *a, **k: (passes.append(len(images)),
                                                                               real(m, images, *a, **k))[1])
    if best_at_end is not None:  # the best checkpoint is the last validation's, or the first's
        monkeypatch.setattr(workflow, "beats", lambda *a: best_at_end)
    run = tiny_run(root, "train.iterations=4", "train.val_every=2", f"train.export={export}")
    result = train_category(run, tmp_path / "m", progress=False, evaluate_test=False)
    n_val = result["validation"]["n_images"]
    assert passes == [n_val] * (2 if best_at_end is not False else 3)
    if best_at_end is not None:
        assert result["selection"]["best_iteration"] == (4 if best_at_end else 2)
    again = workflow.validate_final(draem_zoo.load(str(tmp_path / "m")), run, workflow.reference_validation_set(
        run, workflow.load_category(run.data, 32, splits=("train", "val")), workflow.load_textures(run.synthesis, 32,
                                                                                                  "cpu")))[0]
    assert again["val_score"] == pytest.approx(result["validation"]["val_score"], abs=1e-6)


def test_trials_differing_in_simulator_settings_are_validated_on_one_set(root, tmp_path):
    """The validation set follows the paper's simulator settings, not the run's: same fingerprint."""
    cfgs = []
    for i, beta in enumerate(("0.0,0.8", "0.0,0.5")):
        run = tiny_run(root, "train.iterations=2", "data.val_fraction=0.3", f"synthesis.beta={beta}",
                       "synthesis.perlin_threshold=0.6" if i else "synthesis.perlin_threshold=0.5")
        train_category(run, tmp_path / f"m{i}", progress=False, evaluate_test=False)
        cfgs.append(json.loads((tmp_path / f"m{i}" / "config.json").read_text()))
    prints = [c["selection"]["validation_fingerprint"] for c in cfgs]
    assert len(prints[0]) == 64 and prints[0] == prints[1]
    assert cfgs[0]["run"]["synthesis"]["beta"] != cfgs[1]["run"]["synthesis"]["beta"]
    sel = cfgs[0]["selection"]
    # the s_f decision, its noise and every family's own preference are on record
    assert sel["filter_size_choice"]["baseline"] == 11 and "low" in sel["filter_size_choice"]
    assert sel["validation_score_se"] >= 0 and set(sel["family_preferred_filter_size"]) >= {"draem", "small"}
    # another validation seed is another set, and says so
    run = tiny_run(root, "train.iterations=2", "data.val_fraction=0.3", "eval.validation_seed=1")
    train_category(run, tmp_path / "m2", progress=False, evaluate_test=False)
    other = json.loads((tmp_path / "m2" / "config.json").read_text())["selection"]["validation_fingerprint"]
    assert other != prints[0]


def test_a_diverged_run_stops_with_one_line_and_keeps_no_bad_checkpoint(root, tmp_path, capsys):
    from safetensors.torch import load_file as load_st

    from draem_zoo.errors import TrainingDiverged
    from draem_zoo.evaluation.validation import ValidationSet, validation_metrics

    out = tmp_path / "m"
    code = cli.main(["train", "--data", str(root), "--category", "weave", "--out", str(out), "--iterations", "40",
                     "--image-size", "32", "--batch-size", "4", "--quiet", "--set", "train.lr=1e6",
                     "--set", "train.checkpoint_every=2", *[a for s in TINY[:2] + TINY[4:] for a in ("--set", s)]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "training diverged" in err[0] and "1e+06" in err[0], err
    assert "iteration" in err[0] and "lower train.lr" in err[0]
    state = out / "checkpoints" / "last" / "state.safetensors"
    if state.is_file():  # whatever was saved is finite: the check runs before every save
        assert all(bool(torch.isfinite(v).all()) for v in load_st(state).values() if v.is_floating_point())
    assert not (out / "config.json").exists()
    vs = ValidationSet(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 1, 8, 8, dtype=torch.bool),
                       torch.tensor([0, 1]), ["normal", "draem"])
    with pytest.raises(TrainingDiverged, match="NaN or inf"):
        validation_metrics(torch.full((2, 1, 8, 8), float("nan")), vs, (1, 3))
