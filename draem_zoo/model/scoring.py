"""From anomaly maps to image scores, and the reconstruction-error map of a reconstructive-only model.

The paper's image score is the maximum of the anomaly map after a mean filter of size
s_f (stride 1, zero padding counted in the mean, same-size output; s_f = 21). The
filter is not trained, so every size in a list can be scored from the same maps.

The reconstructive-only model (the paper's Table 3 "Recon.-AE") has no discriminator: its map
is 1 - SSIM(reconstruction, image) per pixel (:func:`ssim_anomaly_map`), as the paper's ablation
compares "the reconstructed image output of the sub-network ... to the input image using the
SSIM function".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .losses import ssim_from_blur


@dataclass
class ScoreConfig:
    """How a model turns its anomaly map into decisions.

    filter_size: mean-filter size s_f for the image score (odd; 1 = no filter).
    image_threshold / pixel_threshold: decision thresholds chosen on validation data
    (None until a training run has set them).
    precision: the precision the networks ran at when the thresholds were chosen ("bf16": the training's
    autocast on a GPU); ``predict`` runs them at it on a GPU, so the thresholds fit the maps (on a CPU
    it runs fp32).
    """

    filter_size: int = 21
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    precision: Literal["fp32", "bf16"] = "fp32"

    def validate(self) -> None:
        check_filter_size(self.filter_size, "score.filter_size")


def largest_filter(image_size: int | tuple[int, int]) -> int:
    """The largest valid s_f for maps of ``image_size`` (an int: square): the largest odd size <= the shorter side."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    side = max(1, min(int(h), int(w)))
    return side if side % 2 else side - 1


def check_filter_size(size: int, key: str = "filter_size", image_size: int | tuple[int, int] | None = None) -> int:
    """``size`` if it is a valid s_f: an odd integer >= 1 and, when ``image_size`` (the anomaly maps' size,
    that is the model's input size; an int: square) is given, not larger than it. Otherwise a ConfigError
    naming ``key`` (the flag or config key it came from), the maps' size and the valid range."""
    top = None if image_size is None else largest_filter(image_size)
    h, w = (image_size, image_size) if isinstance(image_size, int) else (image_size or (0, 0))
    odd = isinstance(size, int) and not isinstance(size, bool) and size >= 1 and size % 2 == 1
    if odd and (top is None or size <= top):
        return size
    if top is None:
        raise ConfigError(f"{key}={size!r}: the mean filter size must be an odd integer >= 1 (1 = no filter)")
    why = (f"larger than the model's {w}x{h} anomaly maps (the filter would average the whole map away and every "
           "image would score about the same)" if odd else f"not an odd integer (the model's anomaly maps are {w}x{h})")
    raise ConfigError(f"{key}={size!r}: {why}; s_f must be an odd integer from 1 to {top} (1 = no filter; the paper's is 21)")


def gaussian_band(n: int, size: int, sigma: float, device=None, dtype=torch.float64) -> torch.Tensor:
    """(n, n) matrix M with M[i, j] = g[j - i] for the normalised Gaussian g of odd ``size``: M @ x is the
    1-D Gaussian filter of x along its first axis with zero padding (same size), made of tensor ops."""
    r = size // 2
    norm = sum(math.exp(-(k * k) / (2.0 * sigma**2)) for k in range(-r, r + 1))
    i = torch.arange(n, device=device, dtype=dtype)
    d = i[None, :] - i[:, None]
    return torch.exp(-(d * d) / (2.0 * sigma**2)) * (d.abs() <= r).to(dtype) / norm


def ssim_anomaly_map(reconstruction: torch.Tensor, images: torch.Tensor, window_size: int = 11,
                     sigma: float = 1.5) -> torch.Tensor:
    """(B, 1, H, W) float32 map in [0, 1]: 1 - SSIM(reconstruction, images), averaged over the channels.

    Images in [0, 1] (value range 1); the loss's Gaussian window (11, sigma 1.5, at most the images'
    shorter side, odd) with zero padding, as two banded matrix products, in float64 (float32 on MPS):
    SSIM's windowed variances E[x^2] - E[x]^2 lose about 1e-4 to cancellation in float32 on flat
    surfaces, which would make the map depend on the runtime (ONNX Runtime's float64 MatMul keeps
    exported graphs within 1e-4 of ``predict``). 1 - SSIM lies in [0, 2]; it is clipped to [0, 1]
    (SSIM < 0, windows anti-correlated with the image, count as fully anomalous), so that the map
    keeps the discriminator's range."""
    dt = torch.float32 if images.device.type == "mps" else torch.float64
    a, b = reconstruction.to(dt), images.to(dt)
    h, w = a.shape[-2:]
    real = min(window_size, h, w)
    real -= 1 - real % 2  # odd, so that the map keeps the images' size
    rows = gaussian_band(h, real, sigma, a.device, dt)
    cols = gaussian_band(w, real, sigma, a.device, dt).transpose(0, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return rows @ x @ cols

    s = ssim_from_blur(a, b, blur, 1.0)
    return (1.0 - s.mean(dim=1, keepdim=True)).clamp(0.0, 1.0).to(torch.float32)


def mean_filter(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Mean filter of odd ``size`` over (B, 1, H, W) maps, same-size output."""
    check_filter_size(size)
    if size == 1:
        return maps
    return F.avg_pool2d(maps, size, stride=1, padding=size // 2, count_include_pad=True)


def image_scores(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Max of the mean-filtered anomaly map, one score per image: (B,)."""
    return mean_filter(maps, size).amax(dim=(1, 2, 3))


def image_scores_by_size(maps: torch.Tensor, sizes: list[int] | tuple[int, ...],
                         chunk: int = 64) -> dict[int, torch.Tensor]:
    """Scores for every filter size in ``sizes`` from the same maps, on the maps' device.

    One summed-area table (float64) per chunk of images serves every size: a window sum is four
    lookups, whatever the size, where ``avg_pool2d`` costs size² per pixel (41² on the CPU: about
    a second per hundred 128 px maps). Equal to :func:`image_scores` (zero padding, divided by
    size²) to float32 rounding."""
    sizes = [check_filter_size(int(s)) for s in sizes]
    out: dict[int, list[torch.Tensor]] = {s: [] for s in sizes}
    big = max(sizes, default=1) // 2
    for start in range(0, maps.shape[0], chunk):
        m = maps[start: start + chunk, 0]
        h, w = m.shape[1:]
        dt = torch.float64 if m.device.type != "mps" else torch.float32
        sat = F.pad(m.to(dt), (big + 1, big, big + 1, big)).cumsum(1).cumsum(2)  # leading zero row/column
        for s in sizes:
            if s == 1:
                out[s].append(m.flatten(1).amax(1).float())
                continue
            r = s // 2
            lo, hi = big - r, big + r + 1  # window [i + big - r, i + big + r] in padded coordinates
            box = sat[:, hi: hi + h, hi: hi + w] - sat[:, lo: lo + h, hi: hi + w]
            box -= sat[:, hi: hi + h, lo: lo + w]
            box += sat[:, lo: lo + h, lo: lo + w]
            out[s].append((box.flatten(1).amax(1) / (s * s)).float())
    empty = maps.new_zeros(0, dtype=torch.float32)
    return {s: torch.cat(v) if v else empty for s, v in out.items()}
