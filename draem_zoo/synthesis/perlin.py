"""Batched Perlin noise and the anomaly masks DRAEM thresholds from it.

Each sample gets its own lattice resolution (2^a x 2^b, a and b uniform integers in
[scale_min, scale_max]) and its own gradients; the noise is evaluated for the whole
batch at once by gathering the four corner gradients of every pixel's cell, with the
original's quintic fade and sqrt(2) scaling. The original needs the image size to be a
multiple of the largest lattice resolution; here the noise is generated at the next
multiple and cropped, so any size works. Masks are the noise rotated by a uniform
angle (bilinear, zero fill, as imgaug's Affine) and thresholded.

Every sample draws a gradient grid of the largest lattice size, so the random stream
(and the absence of host syncs) does not depend on the resolutions drawn.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .imageops import rotate


def _fade(t: torch.Tensor) -> torch.Tensor:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _axis_weights(res: torch.Tensor, size: int, grid: int, max_res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (N, size, max_res+1) lattice weights along one axis.

    ``w[i, p, j]`` is the fade weight of lattice line j at pixel p (non-zero for the two
    lines around p) and ``d[i, p, j] = w * (pos(p) - j)``, the same weight times the offset
    from line j that the gradient dot product needs.
    """
    pos = torch.arange(size, device=res.device, dtype=torch.float32).unsqueeze(0) * (res.float() / grid).unsqueeze(1)
    cell = pos.floor()
    t = _fade(pos - cell)
    cell = cell.long()
    lines = max_res + 1
    w = F.one_hot(cell, lines).float() * (1 - t).unsqueeze(-1) + F.one_hot(cell + 1, lines).float() * t.unsqueeze(-1)
    d = w * (pos.unsqueeze(-1) - torch.arange(lines, device=res.device, dtype=torch.float32))
    return w, d


def gradient_angles(n: int, max_res: int, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, max_res+1, max_res+1) uniform gradient angles, one lattice per sample."""
    return 2 * math.pi * torch.rand(n, max_res + 1, max_res + 1, generator=generator, device=device)


def perlin_noise(res_y: torch.Tensor, res_x: torch.Tensor, height: int, width: int, max_res: int,
                 generator: torch.Generator | None = None, angles: torch.Tensor | None = None) -> torch.Tensor:
    """(N, H, W) Perlin noise, sample i on a res_y[i] x res_x[i] lattice (each <= max_res).

    ``angles`` (from :func:`gradient_angles`) are drawn here when not given.

    The original's interpolation ``lerp(lerp(n00, n10, ty), lerp(n01, n11, ty), tx)`` is
    separable: with row weights A (offsets P) and column weights B (offsets Q), the noise
    is ``sqrt(2) * (P Gy B^T + A Gx Q^T)`` for the gradient grids Gy, Gx: two batched
    matrix products instead of four per-pixel gathers.
    """
    n = res_y.shape[0]
    gh = math.ceil(height / max_res) * max_res  # generate at a multiple of every resolution, crop
    gw = math.ceil(width / max_res) * max_res
    if angles is None:
        angles = gradient_angles(n, max_res, generator, res_y.device)
    a, p = _axis_weights(res_y, height, gh, max_res)
    b, q = _axis_weights(res_x, width, gw, max_res)
    noise = p @ torch.cos(angles) @ b.transpose(1, 2) + a @ torch.sin(angles) @ q.transpose(1, 2)
    return math.sqrt(2) * noise


def perlin_masks(n: int, height: int, width: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu", scale_min: int = 0, scale_max: int = 5,
                 rotation: float = 90.0, threshold: float = 0.5) -> torch.Tensor:
    """(N, 1, H, W) binary float masks drawn as the original generator does."""
    device = torch.device(device)
    a = torch.randint(scale_min, scale_max + 1, (n,), generator=generator, device=device)
    b = torch.randint(scale_min, scale_max + 1, (n,), generator=generator, device=device)
    angle = (torch.rand(n, generator=generator, device=device) * 2 - 1) * rotation
    angles = gradient_angles(n, 2**scale_max, generator, device)
    return masks_from_draws(2**a, 2**b, angle, angles, height, width, threshold)


def masks_from_draws(res_y: torch.Tensor, res_x: torch.Tensor, angle: torch.Tensor, grad_angles: torch.Tensor,
                     height: int, width: int, threshold: float = 0.5) -> torch.Tensor:
    """Masks from already-drawn lattice sizes, rotation angles and gradient angles."""
    max_res = grad_angles.shape[-1] - 1
    noise = perlin_noise(res_y, res_x, height, width, max_res, angles=grad_angles)
    return (rotate(noise.unsqueeze(1), angle) > threshold).float()
