"""Losses: hand-computable cases beyond the parity fixture."""

from __future__ import annotations

import math

import pytest
import torch

from draem_zoo.errors import ConfigError
from draem_zoo.model.losses import LossConfig, draem_loss, focal_loss, ssim, ssim_loss


def test_ssim_identical_is_one_and_loss_zero():
    x = torch.rand(2, 3, 32, 32)
    assert abs(float(ssim(x, x)) - 1.0) < 1e-6
    assert abs(float(ssim_loss(x, x))) < 1e-6
    assert float(ssim_loss(x, torch.rand(2, 3, 32, 32))) > 0.5


def test_ssim_detects_value_range_like_the_original():
    x = torch.rand(1, 1, 24, 24)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    # the same images on the 0..255 scale give the same SSIM (L = 255 detected from img1)
    assert abs(float(ssim(x * 255, y * 255)) - float(ssim(x, y))) < 1e-4


def test_focal_gamma_zero_is_smoothed_cross_entropy():
    p1 = torch.tensor([0.9, 0.2, 0.6, 0.01]).view(1, 1, 2, 2)
    probs = torch.cat((1 - p1, p1), 1)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
    s = 1e-5
    expected = []
    for p, t in zip(p1.flatten().tolist(), mask.flatten().tolist()):
        pt = (1 - s) * (p if t else 1 - p) + s * (1 - p if t else p) + s
        expected.append(-math.log(pt))
    assert abs(float(focal_loss(probs, mask, gamma=0.0)) - sum(expected) / 4) < 1e-6
    # gamma down-weights easy pixels: the loss shrinks as gamma grows
    assert float(focal_loss(probs, mask, gamma=2.0)) < float(focal_loss(probs, mask, gamma=0.0))


def test_focal_alpha_weights_the_anomalous_class():
    probs = torch.tensor([[0.3, 0.7], [0.6, 0.4]]).view(2, 2, 1, 1)
    mask = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
    per_pixel_anom = float(focal_loss(probs[:1], mask[:1], gamma=2.0))
    per_pixel_norm = float(focal_loss(probs[1:], mask[1:], gamma=2.0))
    got = float(focal_loss(probs, mask, gamma=2.0, alpha=0.25))
    assert abs(got - (0.25 * per_pixel_anom + 0.75 * per_pixel_norm) / 2) < 1e-6


def test_focal_fractional_gamma_never_nan_on_confident_pixels():
    probs = torch.tensor([[0.0, 1.0]]).view(1, 2, 1, 1)
    loss = focal_loss(probs, torch.ones(1, 1, 1, 1), gamma=1.7)
    assert torch.isfinite(loss) and float(loss) >= 0


def test_draem_loss_weights():
    torch.manual_seed(0)
    rec, clean = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    logits, mask = torch.randn(2, 2, 16, 16), (torch.rand(2, 1, 16, 16) > 0.8).float()
    base = draem_loss(rec, clean, logits, mask, LossConfig())
    heavy = draem_loss(rec, clean, logits, mask, LossConfig(ssim_weight=3.0, focal_gamma=0.0))
    assert abs(float(base.total) - float(base.l2 + base.ssim + base.focal)) < 1e-6
    assert abs(float(heavy.total) - float(heavy.l2 + 3 * heavy.ssim + heavy.focal)) < 1e-6
    assert float(heavy.focal) > float(base.focal)


def test_loss_config_validation_names_key():
    with pytest.raises(ConfigError, match="loss.focal_alpha"):
        LossConfig(focal_alpha=1.5).validate()
    with pytest.raises(ConfigError, match="loss.ssim_weight"):
        LossConfig(ssim_weight=-1).validate()


def test_ssim_window_is_made_once_per_device_and_reused(monkeypatch):
    """The window is built once (on the host, then copied to the device) and cached: no host-to-device copy
    per step (on a GPU each one was a stream sync)."""
    from draem_zoo.model import losses

    monkeypatch.setattr(losses, "_WINDOWS", {})
    made = []
    real = losses.gaussian_1d
    monkeypatch.setattr(losses, "gaussian_1d", lambda *a: (made.append(a), real(*a))[1])
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    first = float(ssim_loss(x, y))
    (window,) = losses._WINDOWS.values()
    for _ in range(3):
        assert float(ssim_loss(x, y)) == first
    assert len(made) == 1 and len(losses._WINDOWS) == 1 and next(iter(losses._WINDOWS.values())) is window
    ssim_loss(x[:, :1], y[:, :1])  # another channel count: its own entry, made once
    assert len(made) == 2 and len(losses._WINDOWS) == 2


def test_separable_window_gives_the_2d_windows_ssim(monkeypatch):
    """The GPU's separable window (two 1-D passes) and the CPU's 2-D one agree to float rounding, with the
    original's zero padding, at the paper's size and on images smaller than the window."""
    from draem_zoo.model import losses

    torch.manual_seed(0)
    for shape in ((2, 3, 64, 64), (1, 3, 7, 9)):
        x, y = torch.rand(shape), torch.rand(shape)
        two_d = float(ssim(x, y))
        real = losses.ssim_window

        def separable(size, sigma, channels, device, dtype):
            row = losses.gaussian_1d(size, sigma).view(1, 1, 1, size).expand(channels, 1, 1, size).contiguous()
            return row, row.view(channels, 1, size, 1)

        monkeypatch.setattr(losses, "ssim_window", separable)
        assert abs(float(ssim(x, y)) - two_d) < 1e-6
        monkeypatch.setattr(losses, "ssim_window", real)
