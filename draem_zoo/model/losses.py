"""DRAEM's losses: L2 + lambda * SSIM-loss for the reconstruction, focal loss for the mask.

Both follow the original code exactly by default:

* SSIM: Gaussian window (size 11, sigma 1.5) applied per channel with zero padding of
  size//2 (the window cached on the device; separable on GPUs); the value range L is
  detected from the first image as the original does
  (max > 128 -> 255 else 1, minus min < -0.5 -> -1 else 0), without a host sync; the
  loss is 1 - mean(SSIM map). The window shrinks to min(size, H, W) for tiny images.
* Focal loss on softmax probabilities with the original's label smoothing: the one-hot
  target is clamped to [smooth, 1 - smooth], pt = sum(onehot * p) + smooth, loss =
  -alpha_t (1 - pt)^gamma log(pt), averaged over pixels. ``alpha`` (optional) weighs the
  anomalous class by alpha and the normal class by 1 - alpha (None = both 1, as the
  paper). (1 - pt) is clamped at 0 so that a non-integer gamma never meets a
  negative base.
* SSPCAB (DRAEM+SSPCAB only): sspcab_weight (lambda = 0.1, the SSPCAB paper's for DRAEM) times
  the MSE between the SSPCAB block's input and output.

A model that lacks a sub-network (``model.mode``, the paper's Table 3 ablations) produces no
reconstruction or no logits; its missing terms are 0 and stay out of the total, so the
discriminative-only model trains on the focal loss alone and the reconstructive-only one on
L2 + SSIM alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .sspcab import sspcab_loss


@dataclass
class LossConfig:
    """Loss weights and shapes; the search varies ssim_weight (lambda) and focal_gamma.

    sspcab_weight: weight of SSPCAB's self-reconstruction loss (models with model.sspcab only).
    """

    ssim_weight: float = 1.0
    l2_weight: float = 1.0
    focal_weight: float = 1.0
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    focal_smooth: float = 1e-5
    ssim_window: int = 11
    ssim_sigma: float = 1.5
    sspcab_weight: float = 0.1

    def validate(self) -> None:
        for key in ("ssim_weight", "l2_weight", "focal_weight", "focal_gamma", "sspcab_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"loss.{key}={getattr(self, key)}: must be >= 0")
        if self.focal_alpha is not None and not 0.0 <= self.focal_alpha <= 1.0:
            raise ConfigError(f"loss.focal_alpha={self.focal_alpha}: must be in [0, 1] or none")
        if not 0.0 <= self.focal_smooth < 0.5:
            raise ConfigError(f"loss.focal_smooth={self.focal_smooth}: must be in [0, 0.5)")
        if self.ssim_window < 1 or self.ssim_sigma <= 0:
            raise ConfigError("loss.ssim_window must be >= 1 and loss.ssim_sigma > 0")


def gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    """(size,) normalised Gaussian taps: the original 2-D window is their outer product."""
    g = torch.tensor([math.exp(-((x - size // 2) ** 2) / (2.0 * sigma**2)) for x in range(size)])
    return g / g.sum()


def gaussian_window(size: int, sigma: float, channels: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(channels, 1, size, size) normalised Gaussian window for a grouped conv (the original's)."""
    g = gaussian_1d(size, sigma).unsqueeze(1)
    w2 = (g @ g.t()).to(dtype=dtype, device=device)
    return w2.expand(channels, 1, size, size).contiguous()


# (size, sigma, channels, device, dtype) -> the window's conv weights, made once per device: building it on the
# host in every step cost a host-to-device copy (and a stream sync) per step on a GPU
_WINDOWS: dict[tuple, tuple[torch.Tensor, ...]] = {}


def ssim_window(size: int, sigma: float, channels: int, device: torch.device, dtype: torch.dtype
                ) -> tuple[torch.Tensor, ...]:
    """The Gaussian window's grouped-conv weights for ``channels`` channels, cached per device and dtype.

    On a GPU it is separable, a (C, 1, 1, size) row and a (C, 1, size, 1) column: two passes of ``size``
    taps (22 for 11 x 11) instead of one of ``size**2`` (121); with zero padding the same sums in another
    order (float rounding). On a CPU the one 2-D pass is kept: oneDNN's 1 x k depthwise convolutions
    measured slower there (8 x 3 x 256 x 256, the five moments stacked: 0.22 s separable, 0.16 s 2-D)."""
    key = (size, float(sigma), channels, str(device), dtype)
    found = _WINDOWS.get(key)
    if found is None:
        if torch.device(device).type == "cuda":
            row = gaussian_1d(size, sigma).to(dtype=dtype, device=device).view(1, 1, 1, size)
            row = row.expand(channels, 1, 1, size).contiguous()
            found = (row, row.view(channels, 1, size, 1))
        else:
            found = (gaussian_window(size, sigma, channels, device, dtype),)
        _WINDOWS[key] = found
    return found


def ssim(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two (B, C, H, W) batches, computed as the original ``ssim``: the five windowed
    moments in one grouped convolution over their channel-stack (one launch instead of five)."""
    img1 = img1.float()
    img2 = img2.float()
    max_val = torch.where(img1.max() > 128, 255.0, 1.0)
    min_val = torch.where(img1.min() < -0.5, -1.0, 0.0)
    value_range = max_val - min_val
    _, channels, h, w = img1.shape
    pad = window_size // 2
    real = min(window_size, h, w)
    window = ssim_window(real, sigma, 5 * channels, img1.device, img1.dtype)
    stack = torch.cat([img1, img2, img1 * img1, img2 * img2, img1 * img2], 1)
    if len(window) == 2:  # separable (GPU)
        blurred = F.conv2d(F.conv2d(stack, window[0], padding=(0, pad), groups=5 * channels), window[1],
                           padding=(pad, 0), groups=5 * channels)
    else:
        blurred = F.conv2d(stack, window[0], padding=pad, groups=5 * channels)
    return ssim_of_moments(*blurred.chunk(5, 1), value_range).mean()


def ssim_from_blur(img1: torch.Tensor, img2: torch.Tensor, blur: Callable[[torch.Tensor], torch.Tensor],
                   value_range: torch.Tensor | float) -> torch.Tensor:
    """The per-pixel SSIM map of two batches, given the windowed mean ``blur`` (the original's formula)."""
    return ssim_of_moments(blur(img1), blur(img2), blur(img1 * img1), blur(img2 * img2), blur(img1 * img2),
                           value_range)


def ssim_of_moments(mu1: torch.Tensor, mu2: torch.Tensor, e11: torch.Tensor, e22: torch.Tensor, e12: torch.Tensor,
                    value_range: torch.Tensor | float) -> torch.Tensor:
    """The SSIM map from the windowed means of x, y, x*x, y*y and x*y (the original's formula)."""
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = e11 - mu1_sq
    sigma2_sq = e22 - mu2_sq
    sigma12 = e12 - mu1_mu2
    c1 = (0.01 * value_range) ** 2
    c2 = (0.03 * value_range) ** 2
    v1 = 2.0 * sigma12 + c2
    v2 = sigma1_sq + sigma2_sq + c2
    return ((2 * mu1_mu2 + c1) * v1) / ((mu1_sq + mu2_sq + c1) * v2)


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
    """The weighted total and the unweighted terms (0 where the model has no such part)."""

    total: torch.Tensor
    l2: torch.Tensor
    ssim: torch.Tensor
    focal: torch.Tensor
    sspcab: torch.Tensor | None = None

    def as_floats(self) -> dict[str, float]:
        out = {"loss": self.total.item(), "l2": self.l2.item(), "ssim": self.ssim.item(), "focal": self.focal.item()}
        if self.sspcab is not None:
            out["sspcab"] = self.sspcab.item()
        return out


def draem_loss(reconstruction: torch.Tensor | None, clean: torch.Tensor, logits: torch.Tensor | None,
               mask: torch.Tensor, cfg: LossConfig,
               sspcab_io: tuple[torch.Tensor, torch.Tensor] | None = None) -> LossTerms:
    """l2_weight * L2 + ssim_weight * SSIM-loss + focal_weight * focal(softmax(logits), mask)
    [+ sspcab_weight * MSE(SSPCAB input, SSPCAB output)].

    ``reconstruction`` None (a discriminative-only model): no L2 and SSIM terms; ``logits`` None (a
    reconstructive-only model): no focal term; ``sspcab_io`` None: no SSPCAB term. Missing terms
    are reported as 0 and add nothing to the total."""
    terms = []
    if reconstruction is not None:
        rec = reconstruction.float()
        l2 = F.mse_loss(rec, clean.float())
        ss = ssim_loss(rec, clean, cfg.ssim_window, cfg.ssim_sigma)
        terms += [cfg.l2_weight * l2, cfg.ssim_weight * ss]
    if logits is not None:
        probs = torch.softmax(logits.float(), dim=1)
        fl = focal_loss(probs, mask, cfg.focal_gamma, cfg.focal_alpha, cfg.focal_smooth)
        terms.append(cfg.focal_weight * fl)
    if not terms:
        raise ValueError("draem_loss needs a reconstruction, logits or both")
    zero = terms[0].new_zeros(())
    if reconstruction is None:
        l2 = ss = zero
    if logits is None:
        fl = zero
    sp = zero
    if sspcab_io is not None:
        sp = sspcab_loss(*sspcab_io)
        terms.append(cfg.sspcab_weight * sp)
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return LossTerms(total, l2, ss, fl, sp)
