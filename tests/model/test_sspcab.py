"""DRAEM+SSPCAB: the masked block, its place in the reconstructive network, its loss, config and saving."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from draem_zoo import build_model, list_variants
from draem_zoo.errors import ConfigError
from draem_zoo.model.losses import LossConfig, draem_loss
from draem_zoo.model.modeldir import load_model_dir, save_model_dir
from draem_zoo.model.sspcab import SSPCAB
from draem_zoo.pipeline.runconfig import make_run_config
from draem_zoo.train.step import ForwardLoss, run_step

SHAPES = [(1, 1), (1, 0), (2, 1), (3, 2)]  # (k', d)


def _offsets(k: int, d: int) -> list[int]:
    """Input offsets (from the output position) that a corner kernel reads, along one axis."""
    return [*range(-k - d, -d), *range(d + 1, d + k + 1)]


@pytest.mark.parametrize("k,d", SHAPES)
def test_masked_conv_never_sees_the_centre(k, d):
    torch.manual_seed(0)
    block = SSPCAB(8, kernel=k, dilation=d).eval()
    n, c = 17, 8
    x = torch.rand(1, 8, n, n)
    y = x.clone()
    y[:, :, c, c] += 5.0  # perturb the centre input pixel, every channel
    with torch.no_grad():
        a, b = block.masked_conv(x), block.masked_conv(y)
    assert a.shape == x.shape  # same-size output
    assert torch.equal(a[:, :, c, c], b[:, :, c, c])  # its own output position never reads it
    changed = (a - b).abs().amax(1)[0] > 0
    # exactly the positions whose corner kernels cover the pixel: four k' x k' squares at distance d + 1
    want = torch.zeros(n, n, dtype=torch.bool)
    for dy in _offsets(k, d):
        for dx in _offsets(k, d):
            want[c - dy, c - dx] = True
    assert torch.equal(changed, want)
    assert block.receptive_field == 2 * k + 2 * d + 1
    assert int(want.sum()) == (2 * k) ** 2


@pytest.mark.parametrize("k,d", SHAPES)
def test_block_is_one_masked_kernel_then_relu_and_squeeze_excitation(k, d):
    """The four corner convolutions equal one (2k'+2d+1)^2 kernel with a zero cross in the middle."""
    torch.manual_seed(1)
    ch = 16
    block = SSPCAB(ch, kernel=k, dilation=d)
    size = block.receptive_field
    big = torch.zeros(ch, ch, size, size)
    far = k + 2 * d + 1  # where the far corners start
    big[:, :, :k, :k] = block.conv1.weight
    big[:, :, far:, :k] = block.conv2.weight
    big[:, :, :k, far:] = block.conv3.weight
    big[:, :, far:, far:] = block.conv4.weight
    bias = block.conv1.bias + block.conv2.bias + block.conv3.bias + block.conv4.bias
    x = torch.randn(2, ch, 9, 11)
    with torch.no_grad():
        masked = F.conv2d(x, big, bias, padding=k + d)
        torch.testing.assert_close(block.masked_conv(x), masked, atol=1e-5, rtol=0)
        act = torch.relu(masked)
        squeeze = act.mean((2, 3))
        excite = torch.sigmoid(block.se.fc2(torch.relu(block.se.fc1(squeeze))))
        torch.testing.assert_close(block(x), act * excite[:, :, None, None], atol=1e-5, rtol=0)
    assert block.se.fc1.out_features == ch // 8 and block.se.fc2.out_features == ch  # reduction 8
    assert SSPCAB(4).se.fc1.out_features == 1  # fewer than 8 channels still build


@pytest.mark.parametrize("variant", list_variants())
@pytest.mark.parametrize("sspcab", [False, True])
def test_every_variant_with_and_without_sspcab(variant, sspcab):
    torch.manual_seed(0)
    model = build_model(variant, rec_width=8, disc_width=8, image_size=64, sspcab=sspcab)
    last = model.reconstructive.encoder.stages[-1]
    assert isinstance(last, SSPCAB) is sspcab
    x = torch.rand(2, 3, 64, 64)
    rec, logits, io = model(x, with_sspcab=True)
    assert rec.shape == (2, 3, 64, 64) and logits.shape == (2, 2, 64, 64)
    if sspcab:
        assert [tuple(t.shape) for t in io] == [(2, 64, 4, 4), (2, 64, 4, 4)]  # 8w channels at stride 16
        assert (last.kernel, last.dilation) == (1, 1)  # the original's defaults
    else:
        assert io is None
    with torch.no_grad():
        rec2, logits2 = model(x)  # without the flag: the plain pair, the same values
    torch.testing.assert_close(rec2, rec, atol=0, rtol=0)
    torch.testing.assert_close(logits2, logits, atol=0, rtol=0)
    pred = model.predict(x)
    assert pred.anomaly_map.shape == (2, 1, 64, 64) and pred.score.shape == (2,)


def test_sspcab_changes_only_the_last_encoder_block():
    base = build_model("paper-tiny", image_size=64)
    with_block = build_model("paper-tiny", image_size=64, sspcab=True, sspcab_kernel=2, sspcab_dilation=0)
    a, b = set(base.state_dict()), set(with_block.state_dict())
    assert a - b and all(k.startswith("reconstructive.encoder.stages.4.") for k in a - b)
    assert sorted(b - a) == sorted(f"reconstructive.encoder.stages.4.{n}.{p}" for n in
                                   ("conv1", "conv2", "conv3", "conv4", "se.fc1", "se.fc2")
                                   for p in ("weight", "bias"))
    assert with_block.reconstructive.encoder.stages[4].conv1.weight.shape == (256, 256, 2, 2)  # 8w, w = 32
    # the DRAEM initialisation reaches the block's convolutions: N(0, 0.02)
    w = torch.cat([with_block.reconstructive.encoder.stages[4].get_submodule(f"conv{i}").weight.detach().flatten()
                   for i in range(1, 5)])
    assert abs(float(w.std()) - 0.02) < 2e-3


def test_sspcab_loss_term_is_weighted_mse_in_the_total():
    torch.manual_seed(0)
    rec, clean = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    logits, mask = torch.randn(2, 2, 16, 16), (torch.rand(2, 1, 16, 16) > 0.8).float()
    block_in, block_out = torch.rand(2, 8, 4, 4), torch.rand(2, 8, 4, 4)
    base = draem_loss(rec, clean, logits, mask, LossConfig())
    t = draem_loss(rec, clean, logits, mask, LossConfig(), (block_in, block_out))
    mse = float(((block_in - block_out) ** 2).mean())
    assert float(t.sspcab) == pytest.approx(mse, rel=1e-6)
    assert float(t.total) == pytest.approx(float(base.total) + 0.1 * mse, rel=1e-6)  # lambda = 0.1
    heavy = draem_loss(rec, clean, logits, mask, LossConfig(sspcab_weight=2.0), (block_in, block_out))
    assert float(heavy.total) == pytest.approx(float(base.total) + 2.0 * mse, rel=1e-6)
    assert float(base.sspcab) == 0.0 and t.as_floats()["sspcab"] == pytest.approx(mse, rel=1e-6)


def test_training_step_adds_the_blocks_own_input_output_mse():
    torch.manual_seed(0)
    model = build_model("paper-tiny", rec_width=4, disc_width=4, image_size=64, sspcab=True)
    seen = {}
    model.reconstructive.encoder.stages[-1].register_forward_hook(
        lambda mod, inp, out: seen.update(inp=inp[0].detach(), out=out.detach()))
    x, clean = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    mask = (torch.rand(2, 1, 64, 64) > 0.7).float()
    with torch.no_grad():
        total, l2, ss, fl, sp = ForwardLoss(model, LossConfig())(x, clean, mask)
    assert float(sp) == pytest.approx(float(F.mse_loss(seen["out"], seen["inp"])), rel=1e-6)
    assert float(total) == pytest.approx(float(l2 + ss + fl + 0.1 * sp), rel=1e-6)
    # the self-supervised term alone trains the block and what feeds it, nothing after it
    only = ForwardLoss(model, LossConfig(l2_weight=0, ssim_weight=0, focal_weight=0, sspcab_weight=1.0))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    terms = run_step(only, x, clean, mask, opt)
    assert float(terms.total.detach()) == pytest.approx(float(terms.sspcab.detach()), rel=1e-6)
    block = model.reconstructive.encoder.stages[-1]
    assert float(block.conv1.weight.grad.abs().sum()) > 0
    assert float(model.reconstructive.encoder.stages[0][0].weight.grad.abs().sum()) > 0
    assert float(model.reconstructive.decoder.head.weight.grad.abs().sum()) == 0
    assert float(model.discriminative.decoder.head.weight.grad.abs().sum()) == 0


def test_paper_model_step_has_no_sspcab_term():
    torch.manual_seed(0)
    model = build_model("paper-tiny", rec_width=4, disc_width=4, image_size=32)
    x, clean = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mask = (torch.rand(2, 1, 32, 32) > 0.7).float()
    with torch.no_grad():
        total, l2, ss, fl, sp = ForwardLoss(model, LossConfig())(x, clean, mask)
    assert float(sp) == 0.0 and torch.equal(total, l2 + ss + fl)


@pytest.mark.parametrize("overrides,match", [
    ({"sspcab": True, "rec_encoder": "resnet18"}, "model.rec_encoder='resnet18'"),
    ({"sspcab": True, "mode": "discriminative"}, "model.sspcab=true"),
    ({"sspcab": True, "sspcab_kernel": 0}, "model.sspcab_kernel=0"),
    ({"sspcab_dilation": -1}, "model.sspcab_dilation=-1"),
    ({"sspcab_kernel": 1.5}, "model.sspcab_kernel=1.5"),
    ({"sspcab": True, "sspcab_dilation": 2, "image_size": 63}, r"3x3 feature maps.*image_size >= 64"),
])
def test_bad_sspcab_settings_are_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_model("paper-tiny", **overrides)


def test_sspcab_config_keys_and_variant_switch():
    run = make_run_config(["model.sspcab=true", "model.sspcab_kernel=2", "model.sspcab_dilation=3",
                           "model.variant=paper-small", "loss.sspcab_weight=0.5"])
    m = run.model
    assert (m.variant, m.rec_width, m.sspcab, m.sspcab_kernel, m.sspcab_dilation) == ("paper-small", 64, True, 2, 3)
    assert run.loss.sspcab_weight == 0.5 and make_run_config([]).loss.sspcab_weight == 0.1
    assert make_run_config([]).model.sspcab is False
    with pytest.raises(ConfigError, match="loss.sspcab_weight"):
        make_run_config(["loss.sspcab_weight=-0.1"])
    with pytest.raises(ConfigError, match="model.rec_encoder='resnet18'"):
        make_run_config(["model.sspcab=true", "model.rec_encoder=resnet18"])


def test_sspcab_model_dir_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("paper-tiny", rec_width=4, disc_width=4, image_size=32, sspcab=True, sspcab_kernel=2,
                        sspcab_dilation=0).eval()
    d = save_model_dir(model, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())["model"]
    assert (cfg["sspcab"], cfg["sspcab_kernel"], cfg["sspcab_dilation"], cfg["mode"]) == (True, 2, 0, "draem")
    loaded = load_model_dir(d)
    block = loaded.reconstructive.encoder.stages[-1]
    assert isinstance(block, SSPCAB) and (block.kernel, block.dilation) == (2, 0)
    torch.testing.assert_close(block.se.fc1.weight, model.reconstructive.encoder.stages[-1].se.fc1.weight,
                               atol=0, rtol=0)
    x = torch.rand(2, 3, 32, 32)
    a, b = model.predict(x), loaded.predict(x)
    assert torch.equal(a.anomaly_map, b.anomaly_map) and torch.equal(a.score, b.score)
