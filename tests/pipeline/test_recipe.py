"""The training recipe's options: learning-rate schedules, warm-up, the weight average (EMA), validate_at."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from draem_zoo.errors import ConfigError
from draem_zoo.pipeline.runconfig import make_run_config
from draem_zoo.pipeline.workflow import train_category
from draem_zoo.train.config import TrainConfig
from draem_zoo.train.ema import WeightAverage, decay_at
from draem_zoo.train.schedule import lr_at

TINY = ["model.rec_width=4", "model.disc_width=4", "model.image_size=32", "train.batch_size=4",
        "eval.filter_sizes=1,5,11", "eval.batch_size=32", "synthesis.procedural_textures=8",
        "train.iterations=8", "train.checkpoint_every=2", "train.val_every=4", "train.report_every=1", "train.seed=3"]


def run_of(root, *extra):
    return make_run_config([f"data.root={root}", "data.category=weave", *TINY, *extra])


def test_multistep_is_the_papers_schedule():
    # the original: MultiStepLR(milestones=[0.8 * n, 0.9 * n], gamma=0.2) at 1e-4
    n = 1000
    assert [lr_at(i, n, 1e-4) for i in (0, 799, 800, 899, 900, 999)] == pytest.approx(
        [1e-4, 1e-4, 2e-5, 2e-5, 4e-6, 4e-6], rel=1e-12)
    assert TrainConfig().lr_at(850, n) == pytest.approx(2e-5)


def test_warmup_is_linear_then_the_schedule():
    n, lr = 1000, 1e-3
    # 10% warm-up: lr/100 at step 0, lr at step 99 (its peak), then the schedule over the rest
    assert lr_at(0, n, lr, "multistep", 0.1) == pytest.approx(lr / 100)
    assert lr_at(49, n, lr, "multistep", 0.1) == pytest.approx(lr / 2)
    assert lr_at(99, n, lr, "multistep", 0.1) == pytest.approx(lr)
    assert lr_at(100, n, lr, "multistep", 0.1) == pytest.approx(lr)
    assert lr_at(900, n, lr, "multistep", 0.1) == pytest.approx(lr * 0.04)
    # cosine after the warm-up: lr at its start, lr/2 half-way through the rest, ~0 at the end
    assert lr_at(100, n, lr, "cosine", 0.1) == pytest.approx(lr)
    assert lr_at(550, n, lr, "cosine", 0.1) == pytest.approx(lr / 2)
    assert lr_at(999, n, lr, "cosine", 0.1) == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * 899 / 900)))
    assert lr_at(999, n, lr, "cosine", 0.1) < lr * 1e-4
    assert lr_at(0, n, lr, "cosine") == pytest.approx(lr)


def test_onecycle_has_torchs_shape():
    n, lr = 1000, 1e-3
    assert lr_at(0, n, lr, "onecycle") == pytest.approx(lr / 25)  # div_factor 25
    assert lr_at(299, n, lr, "onecycle") == pytest.approx(lr)  # the peak at pct_start 0.3 (step 0.3 n - 1)
    assert lr_at(999, n, lr, "onecycle") == pytest.approx(lr / 25 / 1e4)  # final_div_factor 1e4
    assert lr_at(99, n, lr, "onecycle", warmup=0.1) == pytest.approx(lr)  # warmup sets pct_start
    # the same curve as torch's OneCycleLR (cosine annealing, no momentum cycling) at every step
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=n, pct_start=0.3,
                                                cycle_momentum=False, anneal_strategy="cos")
    torch_lrs = []
    for _ in range(n):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [lr_at(i, n, lr, "onecycle") for i in range(n)]
    assert max(abs(a - b) / b for a, b in zip(ours, torch_lrs)) < 1e-9


def test_recipe_keys_are_checked():
    for bad in (dict(lr_schedule="step"), dict(warmup=1.0), dict(ema_decay=1.0), dict(validate_at=(0.0,))):
        with pytest.raises(ConfigError):
            TrainConfig(**bad).validate()
    assert TrainConfig(validate_at=(1 / 64, 1 / 8, 0.5)).val_points(640) == [10, 80, 320, 640]


def test_weight_average_follows_its_formula():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))
    avg = WeightAverage(net, 0.9)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for k in range(1, 30):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(4, 2, 5, 5))  # training mode: the BatchNorm statistics move too
        avg.update(k)
        d = decay_at(0.9, k)
        for name, v in net.state_dict().items():
            expected[name] = v.clone() if not v.is_floating_point() else d * expected[name] + (1 - d) * v
    assert decay_at(0.9, 1) == pytest.approx(2 / 11) and decay_at(0.9, 1000) == 0.9
    for name, v in avg.state_dict().items():
        torch.testing.assert_close(v, expected[name], rtol=1e-5, atol=1e-6)
    assert int(avg.state_dict()["1.num_batches_tracked"]) == 29


def _tensors(path):
    return load_file(str(path))


def test_ema_changes_what_is_exported_not_how_it_trains(root, tmp_path):
    off = tmp_path / "off"
    on = tmp_path / "on"
    train_category(run_of(root, "train.export=last"), off, progress=False)
    train_category(run_of(root, "train.export=last", "train.ema_decay=0.9"), on, progress=False)
    raw_off = _tensors(off / "checkpoints" / "last" / "state.safetensors")
    raw_on = _tensors(on / "checkpoints" / "last" / "state.safetensors")
    exported_off, exported_on = _tensors(off / "model.safetensors"), _tensors(on / "model.safetensors")
    weights = [k for k in raw_off if k.startswith("model.")]
    # the raw trajectory is the same bit for bit with and without the average; off exports the raw weights
    for k in weights:
        assert torch.equal(raw_off[k], raw_on[k]), k
        assert torch.equal(exported_off[k[len("model."):]], raw_off[k]), k
    # on: the average is kept beside them, and it is what is exported
    assert not any(k.startswith("average.") for k in raw_off)
    for k in weights:
        assert torch.equal(exported_on[k[len("model."):]], raw_on["average." + k[len("model."):]]), k
    differ = [k for k in weights if raw_on[k].is_floating_point()
              and not torch.equal(exported_on[k[len("model."):]], raw_on[k])]
    assert len(differ) > len(weights) // 2
    cfg = json.loads((on / "config.json").read_text())
    assert cfg["run"]["train"]["ema_decay"] == 0.9 and cfg["run"]["train"]["lr_schedule"] == "multistep"


def test_ema_resume_gives_the_uninterrupted_average(root, tmp_path):
    extra = ("train.ema_decay=0.8", "train.lr_schedule=onecycle", "train.warmup=0.25")
    straight = tmp_path / "straight"
    train_category(run_of(root, *extra), straight, progress=False)

    def crash(rec):
        if rec["iteration"] == 7:
            raise RuntimeError("boom")

    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError):
        train_category(run_of(root, *extra), crashed, progress=False, callbacks=[crash])
    assert json.loads((crashed / "checkpoints" / "last" / "meta.json").read_text())["iteration"] == 6
    train_category(run_of(root, *extra), crashed, resume=True, progress=False)
    for name in ("checkpoints/last/state.safetensors", "checkpoints/best/state.safetensors", "model.safetensors"):
        a, b = _tensors(straight / name), _tensors(crashed / name)
        assert set(a) == set(b) and any(k.startswith("average.") for k in a) == name.startswith("checkpoints/last")
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    history = json.loads((straight / "history.json").read_text())
    lrs = {r["iteration"]: r["lr"] for r in history}
    assert lrs[1] == pytest.approx(lr_at(0, 8, 1e-4, "onecycle", 0.25))
    assert lrs[2] == pytest.approx(1e-4)  # the peak at step 0.25 * 8 - 1 = 1 (the lr of iteration 2)


def test_validate_at_validates_at_those_points_only(root, tmp_path):
    out = tmp_path / "m"
    result = train_category(run_of(root, "train.validate_at=0.125,0.25,0.5"), out, progress=False,
                            analyze_test="full")
    history = json.loads((out / "history.json").read_text())
    validated = [r["iteration"] for r in history if r.get("val_score") is not None]
    assert validated == [1, 2, 4, 8]
    for r in history:
        if r.get("val_score") is not None:
            a = r["analysis"]
            assert 0 <= a["test_image_auroc"] <= 1 and 0 <= a["test_pixel_ap"] <= 1 and 0 <= a["test_aupro"] <= 1
            assert a["test_image_auroc"] == a["test_image_auroc_by_filter_size"][str(r["val_filter_size"])]
    assert result["iterations"] == 8
