"""Rectangular anomaly masks, for the DRAEM paper's DRAEM_rect ablation row.

The paper compares its Perlin-noise masks with rectangular ones. Here (``synthesis.
mask_shape: rectangle``) a mask is the union of ``rect_count`` rectangles (an integer
uniform in the configured range), each with its centre uniform over the image, its
height and width uniform fractions ``rect_size`` of the image's, and rotated about its
centre by U(-mask_rotation, mask_rotation) degrees, as the Perlin masks are; the image
border clips it. A pixel belongs to a rectangle when its centre does, so masks are 0/1;
they are never empty where the shortest side allowed, ``rect_size[0]`` of the image, is
1.5 pixels or more (a rectangle's centre lies in the image, and the pixel centre nearest
to it, at most 0.71 pixels away, then lies inside it). With the defaults, (1, 3) rectangles of sides 0.1 to 0.5
of the image, a mask covers at most 3 x 0.25 = 75% of the image.
"""

from __future__ import annotations

import math

import torch

from .config import SynthesisConfig


def draw_rectangles(cfg: SynthesisConfig, b: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Every sample's rectangles: a count and, for the most the range allows, centres, sizes and angles."""
    most = cfg.rect_count[1]
    lo, hi = cfg.rect_size
    return {
        "rect_count": torch.randint(cfg.rect_count[0], most + 1, (b,), generator=generator),
        "rect_centre": torch.rand(b, most, 2, generator=generator),  # (y, x) as fractions of (H, W)
        "rect_size": lo + torch.rand(b, most, 2, generator=generator) * (hi - lo),  # (height, width) fractions
        "rect_angle": (torch.rand(b, most, generator=generator) * 2 - 1) * cfg.mask_rotation,
    }


def rectangle_masks(count: torch.Tensor, centre: torch.Tensor, size: torch.Tensor, angle: torch.Tensor,
                    height: int, width: int) -> torch.Tensor:
    """(N, 1, H, W) float 0/1 union of the first ``count[i]`` of sample i's rectangles.

    ``centre`` and ``size`` are (N, R, 2) fractions (y, x) of the image; ``angle`` (N, R) degrees.
    Each pixel centre is expressed in every rectangle's own frame (in pixels, so that rotated
    rectangles keep their right angles) and tested against the half-sides."""
    n, r = angle.shape
    dev = angle.device
    py = (torch.arange(height, device=dev, dtype=torch.float32) + 0.5).view(1, 1, height, 1)
    px = (torch.arange(width, device=dev, dtype=torch.float32) + 0.5).view(1, 1, 1, width)
    dy = py - (centre[..., 0] * height).view(n, r, 1, 1)
    dx = px - (centre[..., 1] * width).view(n, r, 1, 1)
    a = (angle.float() * (math.pi / 180.0)).view(n, r, 1, 1)
    c, s = torch.cos(a), torch.sin(a)
    along = (c * dx + s * dy).abs() <= (size[..., 1] * (width / 2)).view(n, r, 1, 1)
    across = (c * dy - s * dx).abs() <= (size[..., 0] * (height / 2)).view(n, r, 1, 1)
    used = (torch.arange(r, device=dev).view(1, r) < count.view(n, 1)).view(n, r, 1, 1)
    return (along & across & used).any(1, keepdim=True).float()
