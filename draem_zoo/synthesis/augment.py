"""The texture augmenter: ``num_augmentations`` distinct operations out of the original's 10.

Each sample draws its own operations (distinct, in a random order, as the original's
``iaa.Sequential`` of 3 of its 10 augmenters) and its own parameters. A texture is
carried as 8-bit levels plus a per-channel lookup table: the six point operations
(gamma, solarize, posterize, invert, autocontrast, equalize) only rewrite the table,
and the image is materialised before a spatial or colour-mixing operation
(brightness, sharpness, hue/saturation, rotation), whose result is put back on 8-bit
levels as imgaug's uint8 images are. "Dense" mode runs every operation on the whole
batch and keeps, per sample, the one it drew (no host syncs; for GPUs); "sparse" mode
runs each sample's own chain (for CPUs). Both compute the same numbers per sample.
"""

from __future__ import annotations

import torch

from . import imageops as ops
from .config import SynthesisConfig

POINT_OPS = {"gamma": ops.lut_gamma, "solarize": ops.lut_solarize, "posterize": ops.lut_posterize,
             "invert": ops.lut_invert, "autocontrast": ops.lut_autocontrast, "equalize": ops.lut_equalize}
NEEDS_HISTOGRAM = {"autocontrast", "equalize"}
IMAGE_OPS = {"brightness": ops.brightness, "sharpness": ops.sharpness, "hue_saturation": ops.hue_saturation,
             "rotate": ops.rotate}
PARAMS = {
    "gamma": ("gamma",), "brightness": ("bright_mul", "bright_add", "bright_add_first"),
    "sharpness": ("sharpness",), "hue_saturation": ("hue", "saturation"),
    "solarize": ("solarize_threshold", "solarize_apply"), "posterize": ("posterize_bits",), "invert": (),
    "autocontrast": ("autocontrast_cutoff",), "equalize": (), "rotate": ("texture_angle",),
}


def draw_params(cfg: SynthesisConfig, b: int, generator: torch.Generator, device) -> dict[str, torch.Tensor]:
    """Operation choices ``ops`` (b, k) and every operation's parameters (b, k[, 3])."""
    k = cfg.num_augmentations

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=device)

    def span(rng: tuple[float, float], *shape: int) -> torch.Tensor:
        return rng[0] + u(*shape) * (rng[1] - rng[0])

    return {
        "ops": u(b, len(cfg.augmentations)).argsort(1)[:, :k],
        "gamma": span(cfg.gamma, b, k, 3),  # per channel, as imgaug's per_channel=True
        "bright_mul": span(cfg.brightness_mul, b, k),
        "bright_add": span(cfg.brightness_add, b, k) / 255.0,
        "bright_add_first": u(b, k) < 0.5,
        "sharpness": span(cfg.sharpness, b, k),
        "hue": span(cfg.hue_shift, b, k) / 255.0,
        "saturation": span(cfg.saturation_add, b, k) / 255.0,
        "solarize_apply": u(b, k) < cfg.solarize_prob,
        "solarize_threshold": span(cfg.solarize_threshold, b, k) / 255.0,
        "posterize_bits": torch.randint(cfg.posterize_bits[0], cfg.posterize_bits[1] + 1, (b, k),
                                        generator=generator, device=device),
        "autocontrast_cutoff": span(cfg.autocontrast_cutoff, b, k),
        "texture_angle": (u(b, k) * 2 - 1) * cfg.texture_rotation,
    }


def _args(name: str, d: dict[str, torch.Tensor], rows, pos: int) -> tuple[torch.Tensor, ...]:
    return tuple(d[p][rows, pos] for p in PARAMS[name])


def augment(levels: torch.Tensor, d: dict[str, torch.Tensor], names: tuple[str, ...], dense: bool) -> torch.Tensor:
    """Float (n, 3, H, W) textures from uint8 ``levels`` and their draws ``d`` (rows = samples)."""
    if dense:
        return _augment_dense(levels, d, names)
    out = torch.empty(levels.shape, dtype=torch.float32, device=levels.device)
    for j, row in enumerate(d["ops"].tolist()):
        out[j: j + 1] = _augment_one(levels[j: j + 1], d, names, row, slice(j, j + 1))
    return out


def _augment_one(levels: torch.Tensor, d, names, row: list[int], rows: slice) -> torch.Tensor:
    # state: either ``image`` (floats on 8-bit levels) or ``levels`` + ``lut`` (None = identity)
    image: torch.Tensor | None = None
    lut = hist = None
    for pos, op_index in enumerate(row):
        name = names[op_index]
        if name in POINT_OPS:
            if image is not None:
                levels, image, hist = ops.to_uint8(image), None, None
            if lut is None:
                lut = ops.identity_lut(1, levels.shape[1], levels.device)
            extra = ()
            if name in NEEDS_HISTOGRAM:
                hist = ops.channel_histograms(levels) if hist is None else hist
                extra = (ops.current_histogram(hist, lut),)
            lut = POINT_OPS[name](lut, *extra, *_args(name, d, rows, pos))
        else:
            if image is None:
                image = levels.float().div_(255.0) if lut is None else ops.apply_lut(levels, lut)
                lut = None
            image = ops.quantize(IMAGE_OPS[name](image, *_args(name, d, rows, pos)))
    if image is not None:
        return image
    return levels.float().div_(255.0) if lut is None else ops.apply_lut(levels, lut)


def _augment_dense(levels: torch.Tensor, d, names) -> torch.Tensor:
    n, c = levels.shape[:2]
    every = torch.arange(n, device=levels.device)
    lut = ops.identity_lut(n, c, levels.device)
    identity = lut.clone()
    for pos in range(d["ops"].shape[1]):
        chosen = d["ops"][:, pos]
        hist = current = None
        image = None
        new_lut, new_levels = lut, levels
        for op_index, name in enumerate(names):
            sel = chosen == op_index
            if name in POINT_OPS:
                extra = ()
                if name in NEEDS_HISTOGRAM:
                    hist = ops.channel_histograms(levels) if hist is None else hist
                    current = ops.current_histogram(hist, lut) if current is None else current
                    extra = (current,)
                changed = POINT_OPS[name](lut, *extra, *_args(name, d, every, pos))
                new_lut = torch.where(sel.view(-1, 1, 1), changed, new_lut)
            else:
                image = ops.apply_lut(levels, lut) if image is None else image
                y = ops.to_uint8(IMAGE_OPS[name](image, *_args(name, d, every, pos)))  # == quantize()
                new_levels = torch.where(sel.view(-1, 1, 1, 1), y, new_levels)
                new_lut = torch.where(sel.view(-1, 1, 1), identity, new_lut)
        lut, levels = new_lut, new_levels
    return ops.apply_lut(levels, lut)
