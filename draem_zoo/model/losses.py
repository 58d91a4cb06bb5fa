"""DRAEM's losses: L2 + lambda * SSIM-loss for the reconstruction, focal loss for the mask.

Both follow the original code exactly by default:

* SSIM: Gaussian window (size 11, sigma 1.5) applied per channel with zero padding of
  size//2; the value range L is detected from the first image as the original does
  (max > 128 -> 255 else 1, minus min < -0.5 -> -1 else 0), without a host sync; the
  loss is 1 - mean(SSIM map). The window shrinks to min(size, H, W) for tiny images.
* Focal loss on softmax probabilities with the original's label smoothing: the one-hot
  target is clamped to [smooth, 1 - smooth], pt = sum(onehot * p) + smooth, loss =
  -alpha_t (1 - pt)^gamma log(pt), averaged over pixels. ``alpha`` (optional) weighs the
  anomalous class by alpha and the normal class by 1 - alpha (None = both 1, as the
  paper). (1 - pt) is clamped at 0 so that a non-integer gamma never meets a
  negative base.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError


@dataclass
class LossConfig:
    """Loss weights and shapes; the search varies ssim_weight (lambda) and focal_gamma."""

    ssim_weight: float = 1.0
    l2_weight: float = 1.0
    focal_weight: float = 1.0
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    focal_smooth: float = 1e-5
    ssim_window: int = 11
    ssim_sigma: float = 1.5

    def validate(self) -> None:
        for key in ("ssim_weight", "l2_weight", "focal_weight", "focal_gamma"):
            if getattr(self, key) < 0:
                raise ConfigError(f"loss.{key}={getattr(self, key)}: must be >= 0")
        if self.focal_alpha is not None and not 0.0 <= self.focal_alpha <= 1.0:
            raise ConfigError(f"loss.focal_alpha={self.focal_alpha}: must be in [0, 1] or none")
        if not 0.0 <= self.focal_smooth < 0.5:
            raise ConfigError(f"loss.focal_smooth={self.focal_smooth}: must be in [0, 0.5)")
        if self.ssim_window < 1 or self.ssim_sigma <= 0:
            raise ConfigError("loss.ssim_window must be >= 1 and loss.ssim_sigma > 0")


def gaussian_window(size: int, sigma: float, channels: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(channels, 1, size, size) normalised Gaussian window for a grouped conv."""
    g = torch.tensor([math.exp(-((x - size // 2) ** 2) / (2.0 * sigma**2)) for x in range(size)])
    g = (g / g.sum()).unsqueeze(1)
    w2 = (g @ g.t()).to(dtype=dtype, device=device)
    return w2.expand(channels, 1, size, size).contiguous()


def ssim(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two (B, C, H, W) batches, computed as the original ``ssim``."""
    img1 = img1.float()
    img2 = img2.float()
    max_val = torch.where(img1.max() > 128, 255.0, 1.0)
    min_val = torch.where(img1.min() < -0.5, -1.0, 0.0)
    value_range = max_val - min_val
    _, channels, h, w = img1.shape
    pad = window_size // 2
    real = min(window_size, h, w)
    window = gaussian_window(real, sigma, channels, img1.device, img1.dtype)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=pad, groups=channels)

    mu1, mu2 = blur(img1), blur(img2)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = blur(img1 * img1) - mu1_sq
    sigma2_sq = blur(img2 * img2) - mu2_sq
    sigma12 = blur(img1 * img2) - mu1_mu2
    c1 = (0.01 * value_range) ** 2
    c2 = (0.03 * value_range) ** 2
    v1 = 2.0 * sigma12 + c2
    v2 = sigma1_sq + sigma2_sq + c2
    ssim_map = ((2 * mu1_mu2 + c1) * v1) / ((mu1_sq + mu2_sq + c1) * v2)
    return ssim_map.mean()


def ssim_loss(reconstruction: torch.Tensor, target: torch.Tensor, window_size: int = 11,
              sigma: float = 1.5) -> torch.Tensor:
    """1 - SSIM(reconstruction, target), the original's argument order."""
    return 1.0 - ssim(reconstruction, target, window_size, sigma)


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = None,
               smooth: float = 1e-5) -> torch.Tensor:
    """Focal loss on (B, C, H, W) softmax probabilities against a (B, 1, H, W) 0/1 mask."""
    num_class = probs.shape[1]
    p = probs.float().permute(0, 2, 3, 1).reshape(-1, num_class)
    idx = target.reshape(-1).long()
    one_hot = F.one_hot(idx, num_class).float()
    if smooth:
        one_hot = one_hot.clamp(smooth / (num_class - 1), 1.0 - smooth)
    pt = (one_hot * p).sum(1) + smooth
    logpt = pt.log()
    modulator = (1.0 - pt).clamp_min(0.0)
    loss = -torch.pow(modulator, gamma) * logpt
    if alpha is not None:
        weights = torch.tensor([1.0 - alpha] + [alpha] * (num_class - 1), device=p.device)
        loss = weights[idx] * loss
    return loss.mean()


@dataclass
class LossTerms:
    total: torch.Tensor
    l2: torch.Tensor
    ssim: torch.Tensor
    focal: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {"loss": self.total.item(), "l2": self.l2.item(), "ssim": self.ssim.item(), "focal": self.focal.item()}


def draem_loss(reconstruction: torch.Tensor, clean: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor,
               cfg: LossConfig) -> LossTerms:
    """l2_weight * L2 + ssim_weight * SSIM-loss + focal_weight * focal(softmax(logits), mask)."""
    rec = reconstruction.float()
    l2 = F.mse_loss(rec, clean.float())
    ss = ssim_loss(rec, clean, cfg.ssim_window, cfg.ssim_sigma)
    probs = torch.softmax(logits.float(), dim=1)
    fl = focal_loss(probs, mask, cfg.focal_gamma, cfg.focal_alpha, cfg.focal_smooth)
    total = cfg.l2_weight * l2 + cfg.ssim_weight * ss + cfg.focal_weight * fl
    return LossTerms(total, l2, ss, fl)
