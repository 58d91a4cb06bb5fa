"""The paper's Table 3 architecture ablations as model.mode: "discriminative" (Disc.) and "reconstructive"
(Recon.-AE): what is built, the loss each trains on, the anomaly map and score, saving and loading."""

from __future__ import annotations

import json

import pytest
import torch

from draem_zoo import build_model
from draem_zoo.errors import ConfigError
from draem_zoo.model.losses import LossConfig, draem_loss, ssim_loss
from draem_zoo.model.modeldir import load_model_dir, save_model_dir
from draem_zoo.model.scoring import image_scores, ssim_anomaly_map
from draem_zoo.pipeline.runconfig import make_run_config
from draem_zoo.train.step import ForwardLoss, run_step


def _batch(size: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x, clean = torch.rand(2, 3, size, size, generator=g), torch.rand(2, 3, size, size, generator=g)
    return x, clean, (torch.rand(2, 1, size, size, generator=g) > 0.7).float()


@pytest.mark.parametrize("variant", ["paper-tiny", "timm-resnet18"])
def test_discriminative_mode_sees_the_image_alone(variant):
    torch.manual_seed(0)
    model = build_model(variant, rec_width=4, disc_width=8, image_size=64, mode="discriminative").eval()
    assert model.reconstructive is None
    assert not any(k.startswith("reconstructive.") for k in model.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        rec, logits = model(x)
        direct = model.discriminative(x)  # 3 input channels: the image, no reconstruction
    assert rec is None and logits.shape == (2, 2, 64, 64)
    torch.testing.assert_close(logits, direct, atol=0, rtol=0)
    pred = model.predict(x)
    torch.testing.assert_close(pred.anomaly_map, torch.softmax(direct, 1)[:, 1:], atol=1e-6, rtol=0)
    torch.testing.assert_close(pred.score, image_scores(pred.anomaly_map, 21), atol=1e-6, rtol=0)
    assert pred.reconstruction is None


def test_discriminative_mode_trains_on_the_focal_loss_alone():
    torch.manual_seed(0)
    model = build_model("paper-tiny", disc_width=8, image_size=64, mode="discriminative")
    x, clean, mask = _batch()
    with torch.no_grad():
        total, l2, ss, fl, sp = ForwardLoss(model, LossConfig(focal_weight=2.0))(x, clean, mask)
    assert float(l2) == float(ss) == float(sp) == 0.0 and float(fl) > 0
    assert torch.equal(total, 2.0 * fl)
    with torch.no_grad():
        expected = draem_loss(None, clean, model(x)[1], mask, LossConfig()).focal
    assert float(fl) == pytest.approx(float(expected), rel=1e-6)


def test_reconstructive_mode_map_is_one_minus_ssim():
    torch.manual_seed(0)
    model = build_model("paper-tiny", rec_width=8, image_size=64, mode="reconstructive").eval()
    assert model.discriminative is None and model.size_multiple == 16
    assert not any(k.startswith("discriminative.") for k in model.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        rec, logits = model(x)
    assert logits is None and rec.shape == (2, 3, 64, 64)
    pred = model.predict(x)
    torch.testing.assert_close(pred.anomaly_map, ssim_anomaly_map(rec, x), atol=1e-6, rtol=0)
    torch.testing.assert_close(pred.reconstruction, rec, atol=1e-6, rtol=0)
    torch.testing.assert_close(pred.score, image_scores(pred.anomaly_map, 21), atol=1e-6, rtol=0)
    assert float(pred.anomaly_map.min()) >= 0 and float(pred.anomaly_map.max()) <= 1


def test_ssim_anomaly_map_values():
    x = torch.rand(2, 3, 40, 40)
    assert float(ssim_anomaly_map(x, x).abs().max()) < 1e-5  # a perfect reconstruction: no anomaly
    # constant images: inside (away from the zero padding) SSIM = C1 / (c^2 + C1) with C1 = 1e-4
    c = 0.5
    img, rec = torch.full((1, 3, 40, 40), c), torch.zeros(1, 3, 40, 40)
    amap = ssim_anomaly_map(rec, img)
    assert amap.shape == (1, 1, 40, 40)
    assert float(amap[0, 0, 20, 20]) == pytest.approx(1 - 1e-4 / (c * c + 1e-4), abs=1e-6)
    # a local defect shows where it is
    defect = img.clone()
    defect[:, :, 10:14, 25:29] = torch.rand(1, 3, 4, 4)
    m = ssim_anomaly_map(img, defect)[0, 0]
    assert float(m[12, 27]) > 0.5 and float(m[30, 5]) < 1e-5
    assert ssim_anomaly_map(torch.rand(1, 3, 8, 10), torch.rand(1, 3, 8, 10)).shape == (1, 1, 8, 10)  # tiny


def test_reconstructive_mode_trains_on_l2_and_ssim_alone():
    torch.manual_seed(0)
    model = build_model("paper-tiny", rec_width=4, image_size=64, mode="reconstructive")
    x, clean, mask = _batch()
    with torch.no_grad():
        total, l2, ss, fl, sp = ForwardLoss(model, LossConfig(ssim_weight=3.0))(x, clean, mask)
    assert float(fl) == float(sp) == 0.0
    assert torch.equal(total, l2 + 3.0 * ss)
    with torch.no_grad():
        rec, _ = model(x)
    assert float(l2) == pytest.approx(float(((rec - clean) ** 2).mean()), rel=1e-4)
    assert float(ss) == pytest.approx(float(ssim_loss(rec, clean)), rel=1e-4)
    # with SSPCAB too: L2 + SSIM + 0.1 * the block's MSE
    with_block = build_model("paper-tiny", rec_width=4, image_size=64, mode="reconstructive", sspcab=True)
    terms = run_step(ForwardLoss(with_block, LossConfig()), x, clean, mask,
                     torch.optim.Adam(with_block.parameters(), lr=1e-3))
    got = {k: float(v.detach()) for k, v in vars(terms).items()}
    assert got["focal"] == 0 and got["sspcab"] > 0
    assert got["total"] == pytest.approx(got["l2"] + got["ssim"] + 0.1 * got["sspcab"], rel=1e-6)


def test_a_few_steps_lower_each_modes_loss():
    for mode in ("discriminative", "reconstructive"):
        torch.manual_seed(0)
        model = build_model("paper-tiny", rec_width=4, disc_width=4, image_size=32, mode=mode)
        step = ForwardLoss(model, LossConfig())
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, clean, mask = _batch(32, seed=1)
        losses = [float(run_step(step, x, clean, mask, opt).total.detach()) for _ in range(6)]
        assert losses[-1] < losses[0], (mode, losses)


@pytest.mark.parametrize("mode", ["discriminative", "reconstructive"])
def test_mode_model_dir_round_trip(tmp_path, mode):
    torch.manual_seed(0)
    model = build_model("paper-tiny", rec_width=4, disc_width=4, image_size=32, mode=mode).eval()
    model.score_config.filter_size = 5
    d = save_model_dir(model, tmp_path / mode)
    assert json.loads((d / "config.json").read_text())["model"]["mode"] == mode
    loaded = load_model_dir(d)
    assert loaded.config.mode == mode and set(loaded.state_dict()) == set(model.state_dict())
    x = torch.rand(2, 3, 48, 40)  # another size: resized in, map back at 48 x 40
    a, b = model.predict(x), loaded.predict(x)
    assert a.anomaly_map.shape == (2, 1, 48, 40)
    assert torch.equal(a.anomaly_map, b.anomaly_map) and torch.equal(a.score, b.score)


@pytest.mark.parametrize("overrides,match", [
    (["model.mode=both"], "model.mode"),
    (["model.variant=timm-resnet18", "model.mode=reconstructive"], "model.disc_encoder='resnet18'"),
    (["model.mode=discriminative", "model.rec_encoder=resnet18"], "model.rec_encoder='resnet18'"),
])
def test_bad_modes_are_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        make_run_config(overrides)


def test_mode_survives_a_variant_switch_and_paper_default_is_draem():
    run = make_run_config(["model.mode=reconstructive", "model.variant=paper-small"])
    assert (run.model.mode, run.model.rec_width) == ("reconstructive", 64)
    assert make_run_config([]).model.mode == "draem"
    model = build_model("paper-tiny", image_size=32)
    assert model.discriminative.encoder.stages[0][0].in_channels == 6  # (reconstruction, image)
