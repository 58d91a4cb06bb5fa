"""The anomaly source: texture images that fill the simulated defects.

``TextureBank.from_folder`` reads a folder of images (the DTD layout
``images/<class>/*.jpg`` or any folder, searched recursively), decodes each once,
resizes it to the training size and keeps the whole bank as one uint8 tensor on the
training device.

When no folder is given, ``TextureBank.procedural`` makes textures on the device from
a seed: fractal Perlin noise, sinusoidal gratings, checkerboards, blotches and coloured
noise, each in random colours. They let everything run without downloading DTD; the
config records ``anomaly_source: null`` and the procedural count and seed, so a model
card can say which source a model was trained with. DTD gives the paper's results.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.cache import cached_stack
from ..data.images import RGB_RESIZE, list_images, read_many, read_rgb
from ..errors import DataError
from .perlin import perlin_noise


def find_images(folder: str | Path) -> list[Path]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: the anomaly source folder does not exist; give a folder of texture images "
                        "(e.g. DTD's dtd/images) or leave it out to use procedural textures")
    return list_images(folder, recursive=True)  # a broken link is named; folder links are followed once


class TextureBank:
    """(N, 3, H, W) uint8 textures on one device, plus a description of their origin."""

    def __init__(self, images: torch.Tensor, source: str):
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8 or images.shape[0] == 0:
            raise ValueError(f"textures must be a non-empty (N, 3, H, W) uint8 tensor, got {tuple(images.shape)}")
        self.images = images
        self.source = source

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    @classmethod
    def from_folder(cls, folder: str | Path, size: int | tuple[int, int], device: torch.device | str = "cpu",
                    max_textures: int | None = None, seed: int = 0, progress: bool = False) -> "TextureBank":
        paths = find_images(folder)
        if not paths:
            raise DataError(
                f"{folder}: no images found (looked recursively for {', '.join(('.jpg', '.png', '.bmp', '.tif'))}); "
                "point anomaly_source at DTD's images/ folder or any folder of texture images"
            )
        if max_textures is not None and len(paths) > max_textures:
            g = torch.Generator().manual_seed(seed)
            keep = torch.randperm(len(paths), generator=g)[:max_textures].sort().values
            paths = [paths[i] for i in keep.tolist()]
        threads = min(8, os.cpu_count() or 1)

        def decode() -> torch.Tensor:
            bar = tqdm(total=len(paths), desc="textures", unit="img", leave=False) if progress else None
            try:
                return torch.stack(read_many(paths, lambda p: read_rgb(p, size), threads=threads,
                                             progress=bar.update if bar else None))
            finally:
                if bar:
                    bar.close()

        images, _ = cached_stack(paths, f"rgb:{size}:{RGB_RESIZE}", decode, threads)  # decoded once per node
        return cls(images.to(device), f"folder:{Path(folder).expanduser().resolve()} ({len(paths)} images)")

    @classmethod
    def procedural(cls, count: int, size: int | tuple[int, int], device: torch.device | str = "cpu",
                   seed: int = 0) -> "TextureBank":
        h, w = (size, size) if isinstance(size, int) else size
        device = torch.device(device)
        g = torch.Generator(device=device).manual_seed(seed)
        kinds = torch.arange(count, device=device) % 5
        out = torch.empty(count, 3, h, w, device=device)
        for k, maker in enumerate((_fractal, _grating, _checker, _blotches, _color_noise)):
            idx = (kinds == k).nonzero().flatten()
            if len(idx):
                out[idx] = maker(len(idx), h, w, g, device)
        images = (out.clamp(0, 1) * 255).round().to(torch.uint8)
        return cls(images, f"procedural:{count}:seed={seed}")


def _colors(n: int, k: int, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, k, 3, 1, 1, generator=g, device=device)


def _fractal(n, h, w, g, device) -> torch.Tensor:
    noise = torch.zeros(n, h, w, device=device)
    amp = 1.0
    for octave in range(4):
        res = torch.full((n,), 2 ** (octave + 1), device=device)
        noise += amp * perlin_noise(res, res, h, w, 2 ** (octave + 1), g)
        amp *= 0.5
    t = ((noise - noise.amin((1, 2), keepdim=True)) / (noise.amax((1, 2), keepdim=True) - noise.amin((1, 2), keepdim=True) + 1e-6))
    c = _colors(n, 2, g, device)
    return c[:, 0] * (1 - t.unsqueeze(1)) + c[:, 1] * t.unsqueeze(1)


def _grating(n, h, w, g, device) -> torch.Tensor:
    ys = torch.arange(h, device=device).view(1, h, 1).float()
    xs = torch.arange(w, device=device).view(1, 1, w).float()
    theta = torch.rand(n, 1, 1, generator=g, device=device) * math.pi
    freq = 2 * math.pi / (4 + torch.rand(n, 1, 1, generator=g, device=device) * 28)
    t = 0.5 + 0.5 * torch.sin(freq * (xs * torch.cos(theta) + ys * torch.sin(theta)))
    c = _colors(n, 2, g, device)
    return c[:, 0] * (1 - t.unsqueeze(1)) + c[:, 1] * t.unsqueeze(1)


def _checker(n, h, w, g, device) -> torch.Tensor:
    cell = (4 + torch.rand(n, 1, 1, generator=g, device=device) * 28).floor()
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    t = (((ys / cell).floor() + (xs / cell).floor()) % 2).float()
    c = _colors(n, 2, g, device)
    return c[:, 0] * (1 - t.unsqueeze(1)) + c[:, 1] * t.unsqueeze(1)


def _blotches(n, h, w, g, device) -> torch.Tensor:
    res = 2 ** torch.randint(1, 5, (n,), generator=g, device=device)
    t = (perlin_noise(res, res, h, w, 16, g) > 0.1).float().unsqueeze(1)
    c = _colors(n, 2, g, device)
    return c[:, 0] * (1 - t) + c[:, 1] * t


def _color_noise(n, h, w, g, device) -> torch.Tensor:
    base = _colors(n, 1, g, device)[:, 0]
    return base + 0.25 * (torch.rand(n, 3, h, w, generator=g, device=device) - 0.5)
