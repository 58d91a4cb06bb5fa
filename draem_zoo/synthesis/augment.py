"""The texture augmenter: ``num_augmentations`` distinct operations out of the original's 10.

Each sample draws its own operations (distinct, in a random order, as the original's
``iaa.Sequential`` of 3 of its 10 augmenters) and its own parameters. A texture is
carried as 8-bit levels plus a per-channel lookup table: the six point operations
(gamma, solarize, posterize, invert, autocontrast, equalize) only rewrite the table,
and the image is materialised before a spatial or colour-mixing operation
(brightness, sharpness, hue/saturation, rotation), whose result is put back on 8-bit
levels as imgaug's uint8 images are. A table is applied only where a point operation
changed it.

The draws are on the host, so which texture runs which operation is known there, and
each texture gets exactly its own chain, nothing more. Dense mode (accelerators) plans it
(:func:`plan_augment`): at each position, every operation runs once, on the sub-batch of
the textures that drew it there, padded to a fixed capacity (:mod:`.plan`). Sparse mode
(CPUs, :func:`augment_rows`) runs each texture's chain on its own: one image's working set
stays in a CPU's cache, where grouping a few images per operation makes the same work
take 1.2 to 1.4 times as long. Both compute the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import imageops as ops
from .config import SynthesisConfig
from .kernels import EAGER, Kernels
from .plan import Upload, pad_rows, put_rows, take_rows

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


PARAM_KEYS = tuple(sorted({p for params in PARAMS.values() for p in params}))


@dataclass
class AugmentPlan:
    """Dense mode's work: the steps (operation, upload key, ``plain``: whether the tables of all its
    rows are still the identity, so that an image needs no lookup) and, at the end, which rows need a
    lookup (``final``: "none", "all", or "some": the rows under the upload key ``final_key``)."""

    steps: list[tuple[str, str, bool]]
    final: str
    final_key: str


def plan_augment(d: dict[str, torch.Tensor], names: tuple[str, ...], batch: int, upload: Upload,
                 prefix: str = "aug") -> AugmentPlan:
    """Dense mode: the plan that augments the rows of the host draws ``d`` (one row per texture, from a
    batch of ``batch``): position by position, each operation on the rows that drew it there, padded to
    their capacity (:func:`.plan.pad_rows`). Each step's rows and parameters go into ``upload``."""
    steps = []
    chosen = d["ops"].tolist()
    plain = [True] * len(chosen)  # per row: is its table the identity (no point operation since an image one)?
    for pos in range(d["ops"].shape[1]):
        groups: dict[int, list[int]] = {}
        for j, row in enumerate(chosen):
            groups.setdefault(row[pos], []).append(j)
        for op_index in sorted(groups):  # disjoint rows: the order within a position does not matter
            name, members = names[op_index], groups[op_index]
            key = f"{prefix}.{pos}.{name}"
            rows = torch.tensor(pad_rows(members, batch))
            upload.add(key, rows)
            for p in PARAMS[name]:
                upload.add(f"{key}.{p}", d[p][rows, pos])
            steps.append((name, key, all(plain[j] for j in members)))
            for j in members:
                plain[j] = name not in POINT_OPS
    looked_up = [j for j, p in enumerate(plain) if not p]
    final = "none" if not looked_up else "all" if len(looked_up) == len(plain) else "some"
    if final == "some":
        upload.add(f"{prefix}.final", torch.tensor(pad_rows(looked_up, batch)))
    return AugmentPlan(steps, final, f"{prefix}.final")


def run_augment(levels: torch.Tensor, plan: AugmentPlan, dev: dict[str, torch.Tensor],
                k: Kernels = EAGER) -> torch.Tensor:
    """Dense mode: float (n, 3, H, W) textures, ``plan`` applied to uint8 ``levels`` (updated in place)
    with the rows and parameters ``dev`` (the sent upload)."""
    n, c = levels.shape[:2]
    lut = ops.identity_lut(n, c, levels.device)
    identity = ops.identity_lut(1, c, levels.device)
    for name, key, plain in plan.steps:
        rows = dev[key]
        args = tuple(dev[f"{key}.{p}"] for p in PARAMS[name])
        if name in POINT_OPS:
            table = take_rows(lut, rows)
            extra = ()
            if name in NEEDS_HISTOGRAM:
                extra = (k.current_histogram(k.channel_histograms(take_rows(levels, rows)), table),)
            put_rows(lut, rows, k[name](table, *extra, *args))
        else:  # an identity lookup is the division alone (the same numbers)
            image = (take_rows(levels, rows).float().div_(255.0) if plain else
                     k.apply_lut(take_rows(levels, rows), take_rows(lut, rows)))
            put_rows(levels, rows, k.to_uint8(k[name](image, *args)))  # back on 8-bit levels
            if not plain:
                put_rows(lut, rows, identity.expand(rows.shape[0], -1, -1))
    if plan.final == "all":
        return k.apply_lut(levels, lut)
    out = levels.float().div_(255.0)
    if plan.final == "some":  # a lookup only where a point operation came last
        rows = dev[plan.final_key]
        put_rows(out, rows, k.apply_lut(take_rows(levels, rows), take_rows(lut, rows)))
    return out


def upload_params(d: dict[str, torch.Tensor], upload: Upload, prefix: str = "aug") -> None:
    """Sparse mode: every augmentation parameter of the rows of the host draws ``d``, for the device."""
    for p in PARAM_KEYS:
        upload.add(f"{prefix}.{p}", d[p])


def augment_rows(levels: torch.Tensor, chosen: list[list[int]], dev: dict[str, torch.Tensor],
                 names: tuple[str, ...], prefix: str = "aug") -> torch.Tensor:
    """Sparse mode: float (n, 3, H, W) textures, each row of uint8 ``levels`` through its own chain
    (``chosen``: the host's operation choices per row) with the parameters :func:`upload_params` sent."""
    d = {p: dev[f"{prefix}.{p}"] for p in PARAM_KEYS}
    out = torch.empty(levels.shape, dtype=torch.float32, device=levels.device)
    for j, row in enumerate(chosen):
        out[j: j + 1] = _augment_one(levels[j: j + 1], d, names, row, slice(j, j + 1))
    return out


def _args(name: str, d: dict[str, torch.Tensor], rows, pos: int) -> tuple[torch.Tensor, ...]:
    return tuple(d[p][rows, pos] for p in PARAMS[name])


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


def augment(levels: torch.Tensor, d: dict[str, torch.Tensor], names: tuple[str, ...], dense: bool = False,
            k: Kernels = EAGER) -> torch.Tensor:
    """Float (n, 3, H, W) textures from uint8 ``levels`` and their host draws ``d`` (rows = textures)."""
    upload = Upload()
    if dense:
        plan = plan_augment(d, names, levels.shape[0], upload)
        return run_augment(levels.clone(), plan, upload.send(levels.device), k)
    upload_params(d, upload)
    return augment_rows(levels, d["ops"].tolist(), upload.send(levels.device), names)
