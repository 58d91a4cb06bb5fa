"""Batched image operations with one parameter per sample.

torchvision's tensor transforms take one parameter per call; anomaly synthesis needs a
different parameter for every sample of a batch, on the training device, without
host syncs. These functions take float images in [0, 1] of shape (N, C, H, W) and
per-sample parameter tensors of shape (N,) (or (N, C)).

They reproduce the augmenters the original DRAEM draws from (imgaug): gamma
contrast, brightness, sharpness (PIL's kernel), hue/saturation, solarize, posterize
(bit masking), invert, autocontrast with cutoff and equalize (PIL's histogram rules),
and rotation about the centre with bilinear interpolation and black fill. The point
operations work on 256-entry lookup tables so that chains of them cost one gather;
the tests check every operation PIL also has against PIL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _col(v: torch.Tensor) -> torch.Tensor:  # (N,) or (N, C) -> broadcastable over (N, C, H, W)
    return v.reshape(v.shape[0], *([1] * 3)) if v.ndim == 1 else v.reshape(*v.shape, *([1] * (4 - v.ndim)))


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre by its own angle; bilinear, zero fill.

    The sampling grid is built by broadcasting (3x cheaper than ``affine_grid`` on CPU).
    """
    n, _, h, w = x.shape
    a = torch.deg2rad(degrees.to(x.dtype)).view(n, 1, 1)
    c, s = torch.cos(a), torch.sin(a)
    xs = ((torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1).view(1, 1, w)
    ys = ((torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1).view(1, h, 1)
    grid = torch.empty(n, h, w, 2, device=x.device, dtype=x.dtype)
    torch.add(c * xs, (s * (h / w)) * ys, out=grid[..., 0])
    torch.add((-s * (w / h)) * xs, c * ys, out=grid[..., 1])
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def brightness(x: torch.Tensor, mul: torch.Tensor, add: torch.Tensor, add_first: torch.Tensor) -> torch.Tensor:
    """Multiply and add to the luma channel (YCbCr Y), keeping chroma; ``add`` in [0, 1] units."""
    y = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]) if x.shape[1] == 3 else x
    mul, add = _col(mul), _col(add)
    new_y = torch.where(_col(add_first), (y + add) * mul, y * mul + add)
    return (x + (new_y - y)).clamp(0, 1)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.Sharpness``: blend with PIL's smoothing kernel
    [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13; the one-pixel border is left unchanged."""
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    blurred = x.clone()
    blurred[..., 1:-1, 1:-1] = (box + 4.0 * x[..., 1:-1, 1:-1]) * (1.0 / 13.0)
    return torch.lerp(blurred, x, _col(factor).to(x.dtype)).clamp_(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h, s, v), each (N, H, W), h in [0, 1)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    inv = 1.0 / delta.clamp_min(1e-12)
    s = delta / maxc.clamp_min(1e-12)
    h = torch.where(maxc == r, (g - b) * inv, torch.where(maxc == g, (b - r) * inv + 2.0, (r - g) * inv + 4.0))
    h = h.mul_(1.0 / 6.0)
    h += (h < 0).to(h.dtype)  # red sector wraps below zero; delta == 0 gives h == 0
    return h, s, maxc


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB from h in [0, 1), s, v via ``c_n = v - v s clamp(min(k, 4 - k), 0, 1)``,
    ``k = (n + 6 h) mod 6`` for n = 5, 3, 1."""
    h6, vs = h * 6.0, v * s
    out = torch.empty(h.shape[0], 3, *h.shape[1:], device=h.device, dtype=h.dtype)
    for c, n in enumerate((5.0, 3.0, 1.0)):
        k = h6 + n
        k -= 6.0 * (k >= 6.0).to(k.dtype)
        torch.addcmul(v, vs, torch.minimum(k, 4.0 - k).clamp_(0, 1), value=-1.0, out=out[:, c])
    return out


def hue_saturation(x: torch.Tensor, hue_shift: torch.Tensor, sat_add: torch.Tensor) -> torch.Tensor:
    """Shift hue (fraction of the colour circle, |shift| < 1) and add to saturation ([0, 1] units)."""
    h, s, v = rgb_to_hsv(x.clamp(0, 1))
    h += hue_shift.view(-1, 1, 1)
    h -= torch.floor(h)
    s = (s + sat_add.view(-1, 1, 1)).clamp_(0, 1)
    return hsv_to_rgb(h, s, v)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] floats to 8-bit levels."""
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


# --- point operations on lookup tables ---------------------------------------------------
# A texture is held as 8-bit levels plus a per-channel table ``lut`` (N, C, 256) in [0, 1]
# saying what each level currently maps to. Point operations (the six of the original's
# ten augmentations that act on each 8-bit value alone, as imgaug applies them) only
# rewrite the table; ``apply_lut`` materialises the image once, when needed. Table entries
# are kept on 8-bit levels, as imgaug's uint8 images are.


def identity_lut(n: int, c: int, device=None) -> torch.Tensor:
    return torch.arange(256, device=device, dtype=torch.float32).div_(255.0).expand(n, c, 256).clone()


def _levels(lut: torch.Tensor) -> torch.Tensor:
    return lut.mul(255.0).round_().clamp_(0, 255)


def apply_lut(levels: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float image of uint8 ``levels`` mapped through ``lut``."""
    n, c, h, w = levels.shape
    return lut.gather(2, levels.reshape(n, c, h * w).long()).reshape(n, c, h, w)


def channel_histograms(levels: torch.Tensor) -> torch.Tensor:
    """(N, C, 256) counts of each 8-bit level per image and channel.

    One scatter-add for the whole batch: ``torch.bincount`` would take a kernel per row and, on
    a GPU, two host syncs per row (it reads the input's min and max back to size its output)."""
    n, c = levels.shape[:2]
    rows = levels.reshape(n * c, -1).long()
    ones = torch.ones((), device=levels.device).expand(rows.shape)
    return torch.zeros(n * c, 256, device=levels.device).scatter_add_(1, rows, ones).view(n, c, 256)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Floats put on 8-bit levels: the same numbers as ``to_uint8(x) / 255``."""
    return x.mul(255.0).round_().clamp_(0, 255).div_(255.0)


def current_histogram(base_hist: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """The histogram of the image the table describes, from its levels' histogram."""
    return torch.zeros_like(base_hist).scatter_add_(2, _levels(lut).long(), base_hist)


def _compose(lut: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Apply a per-level table (N, C, 256), indexed by current 8-bit level, after ``lut``."""
    return table.gather(2, _levels(lut).long())


def lut_gamma(lut: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Gamma contrast, gamma (N,) or per channel (N, C)."""
    g = gamma.view(gamma.shape[0], -1, 1)
    return _levels(lut.pow(g)).div_(255.0)


def lut_solarize(lut: torch.Tensor, threshold: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Invert the levels at or above ``threshold`` (in [0, 1]) of the samples where ``apply``."""
    thr = torch.where(apply, threshold, 2.0).view(-1, 1, 1)  # 2.0: nothing flips
    return torch.where(lut >= thr - 1e-6, 1.0 - lut, lut)


def lut_posterize(lut: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the ``bits`` (1..8) highest bits of each 8-bit level (PIL / imgaug posterize)."""
    keep = ((0xFF << (8 - bits.long())) & 0xFF).view(-1, 1, 1)
    return (_levels(lut).long() & keep).float().div_(255.0)


def lut_invert(lut: torch.Tensor) -> torch.Tensor:
    return 1.0 - lut


def lut_autocontrast(lut: torch.Tensor, hist: torch.Tensor, cutoff_percent: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.autocontrast`` per channel, cutting ``cutoff`` % of pixels from each end;
    ``hist`` is the current image's histogram."""
    total = hist.sum(2, keepdim=True)
    cut = torch.floor(total * cutoff_percent.float().view(-1, 1, 1) / 100.0)
    lo = (hist.cumsum(2) <= cut).sum(2, keepdim=True).float()
    hi = 255.0 - (hist.flip(2).cumsum(2) <= cut).sum(2, keepdim=True).float()
    ok = hi > lo
    scale = torch.where(ok, 255.0 / (hi - lo).clamp_min(1.0), 1.0)
    offset = torch.where(ok, -lo * scale, 0.0)
    levels = torch.arange(256, device=lut.device, dtype=torch.float32)
    table = torch.floor(levels * scale + offset).clamp_(0, 255).div_(255.0)
    return _compose(lut, table)


def lut_equalize(lut: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.equalize`` (torchvision's rule too) per channel; ``hist`` as above."""
    levels = torch.arange(256, device=lut.device)
    total = hist.sum(2, keepdim=True)
    last = torch.where(hist > 0, levels, -1).amax(2, keepdim=True)  # highest occupied level
    step = torch.div(total - hist.gather(2, last.clamp_min(0)), 255, rounding_mode="floor")
    before = hist.cumsum(2) - hist
    table = torch.div(before + torch.div(step, 2, rounding_mode="floor"), step.clamp_min(1), rounding_mode="floor")
    table = torch.where(step > 0, table.clamp_(0, 255), levels.float()).div_(255.0)
    return _compose(lut, table)


# --- the same point operations on float images (quantised to 8-bit levels first) ---------


def _point(x: torch.Tensor, fn, *params, needs_hist: bool = False) -> torch.Tensor:
    levels = to_uint8(x)
    lut = identity_lut(x.shape[0], x.shape[1], x.device)
    extra = (channel_histograms(levels),) if needs_hist else ()
    return apply_lut(levels, fn(lut, *extra, *params))


def gamma_contrast(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    return _point(x, lut_gamma, gamma)


def solarize(x: torch.Tensor, threshold: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    return _point(x, lut_solarize, threshold, apply)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    return _point(x, lut_posterize, bits)


def invert(x: torch.Tensor) -> torch.Tensor:
    return _point(x, lut_invert)


def autocontrast(x: torch.Tensor, cutoff_percent: torch.Tensor) -> torch.Tensor:
    return _point(x, lut_autocontrast, cutoff_percent, needs_hist=True)


def equalize(x: torch.Tensor) -> torch.Tensor:
    return _point(x, lut_equalize, needs_hist=True)
