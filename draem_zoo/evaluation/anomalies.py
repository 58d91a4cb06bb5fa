"""The anomalies of the validation set: families of simulated defects on a ladder, easy to hard.

Model selection needs a validation set on which good and bad models, and good and bad
mean-filter sizes, score differently. The training simulator's own anomalies are too
easy for that (a trained model finds all of them at every filter size), so the
validation set mixes families that span easy to hard and that training mostly never sees:

* ``draem``    the training simulator (Perlin mask, augmented texture, beta in the training range),
               its change scaled down to 10% at the hard end;
* ``faint``    the same texture fill, nearly transparent: 25% down to 2% opacity;
* ``small``    an augmented-texture ellipse of 0.4% of the image down to a handful of pixels;
* ``cutpaste`` a patch of another normal image (8% down to 0.2% of the image), recoloured less and
               less (at the hard end not at all);
* ``tone``     a soft-edged local blur, brightness, colour or contrast change, down to barely
               visible shifts (a few grey levels);
* ``scratch``  a thin curved stroke, darker or lighter than the surface by 80% down to 6%.

Within a family each anomaly gets a difficulty d in [0, 1), stratified over the images, that
shrinks its size and weakens its contrast; sizes scale with the image size. The difficulty puts
it on one of ``LEVELS`` rungs of a ladder (``level_of``: 0 the easiest quarter, 3 the hardest),
and the validation score weighs the rungs equally, so that a good model, which finds every easy
anomaly, is still ranked by the hard ones. Only pixels that really changed (by at least a grey
level; two in ``tone``) are labelled anomalous. Everything is drawn from the seed, so the same
normals always give the same validation set. Shapes are drawn with PIL, blurs with torchvision.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageDraw

from ..synthesis import imageops as ops
from ..synthesis.augment import augment
from ..synthesis.simulator import AnomalySynthesizer, SynthesisConfig, make_generator
from ..synthesis.textures import TextureBank

FAMILIES = ("draem", "faint", "small", "cutpaste", "tone", "scratch")
TONE_OPS = ("blur", "brightness", "colour", "contrast")
LEVELS = 4  # rungs of the difficulty ladder


def level_of(d: np.ndarray | float) -> np.ndarray:
    """The rung (0 easiest .. LEVELS-1 hardest) of difficulties in [0, 1)."""
    return np.minimum((np.asarray(d, np.float64) * LEVELS).astype(np.int64), LEVELS - 1)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _loglerp(a: float, b: float, t: float) -> float:
    return math.exp(_lerp(math.log(a), math.log(b), t))


def difficulties(n: int, rng: np.random.Generator) -> np.ndarray:
    """n difficulties in [0, 1), one per stratum of width 1/n, in random order."""
    return (rng.permutation(n) + rng.random(n)) / max(n, 1)


def _polygon_mask(h: int, w: int, points: np.ndarray) -> np.ndarray:
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in points], fill=255)
    return np.asarray(img) > 0


def ellipse_mask(h: int, w: int, area: float, rng: np.random.Generator, margin: float = 0.1) -> np.ndarray:
    """A rotated ellipse of about ``area`` pixels (at least one), aspect 1-3, centre away from the border."""
    aspect = float(rng.uniform(1.0, 3.0))
    a = math.sqrt(max(area, 1.0) * aspect / math.pi)
    b = a / aspect
    cx, cy = rng.uniform(margin * w, (1 - margin) * w), rng.uniform(margin * h, (1 - margin) * h)
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    ang = rng.uniform(0, math.pi)
    x, y = a * np.cos(t), b * np.sin(t)
    pts = np.stack([cx + x * math.cos(ang) - y * math.sin(ang), cy + x * math.sin(ang) + y * math.cos(ang)], 1)
    mask = _polygon_mask(h, w, pts)
    if not mask.any():
        mask[min(h - 1, int(cy)), min(w - 1, int(cx))] = True
    return mask


def stroke_mask(h: int, w: int, length: float, width: int, rng: np.random.Generator) -> np.ndarray:
    """A quadratic Bezier stroke of about ``length`` pixels and ``width`` pixels, inside the image."""
    for _ in range(20):
        x0, y0 = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
        ang = rng.uniform(0, 2 * math.pi)
        x2, y2 = x0 + length * math.cos(ang), y0 + length * math.sin(ang)
        if 0 <= x2 < w and 0 <= y2 < h:
            break
    else:
        x2, y2 = min(max(x2, 0), w - 1), min(max(y2, 0), h - 1)
    bend = rng.uniform(-0.3, 0.3) * length
    cx, cy = (x0 + x2) / 2 - bend * math.sin(ang), (y0 + y2) / 2 + bend * math.cos(ang)
    t = np.linspace(0, 1, 32)[:, None]
    pts = (1 - t) ** 2 * np.array([x0, y0]) + 2 * (1 - t) * t * np.array([cx, cy]) + t**2 * np.array([x2, y2])
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).line([(float(x), float(y)) for x, y in pts], fill=255, width=max(1, width), joint="curve")
    return np.asarray(img) > 0


@dataclasses.dataclass
class Anomalies:
    images: torch.Tensor  # (n, 3, H, W) uint8
    masks: torch.Tensor  # (n, 1, H, W) bool
    difficulty: np.ndarray  # (n,) in [0, 1)


def _changed(before: torch.Tensor, after: torch.Tensor, region: torch.Tensor, levels: int = 1) -> torch.Tensor:
    """The pixels of ``region`` whose value changed by at least ``levels`` grey levels (uint8 images)."""
    return region & ((after.int() - before.int()).abs().amax(1, keepdim=True) >= levels)


def _texture_fill(normals: torch.Tensor, synthesis: SynthesisConfig, textures: TextureBank,
                  generator: torch.Generator) -> torch.Tensor:
    """One augmented texture per image, drawn as the training simulator draws them: (n, 3, H, W) float."""
    synth = AnomalySynthesizer(synthesis, textures, generator, dense=False)
    d = synth.draw(normals.shape[0])
    return augment(textures.images[d["texture"]], d, synthesis.augmentations, dense=False)


def _simulated(normals: torch.Tensor, synthesis: SynthesisConfig, textures: TextureBank, seed: int,
               beta: tuple[float, float] | None, strength, stream: int) -> Anomalies:
    """The training simulator's anomalies, their change from the normal scaled by ``strength(d)``."""
    cfg = dataclasses.replace(synthesis, anomaly_prob=1.0, base_rotation_prob=0.0, **({"beta": beta} if beta else {}))
    batch = AnomalySynthesizer(cfg, textures, make_generator(seed, 0), dense=False)(normals)
    d = difficulties(len(normals), np.random.default_rng([seed, stream]))
    k = torch.tensor([strength(t) for t in d], dtype=torch.float32).view(-1, 1, 1, 1)
    x = normals.float() / 255
    out = ops.to_uint8(x + (batch.augmented - x) * k)
    return Anomalies(out, _changed(normals, out, batch.mask.bool()), d)


def draem(normals, synthesis, textures, seed) -> Anomalies:
    return _simulated(normals, synthesis, textures, seed, None, lambda t: _lerp(1.0, 0.1, t), 1)


def faint(normals, synthesis, textures, seed) -> Anomalies:
    """The texture fill at 25% down to 2% opacity."""
    return _simulated(normals, synthesis, textures, seed, (0.0, 0.0), lambda t: _loglerp(0.25, 0.02, t), 2)


def small(normals, synthesis, textures, seed) -> Anomalies:
    """Texture ellipses of 0.4% down to 0.01% of the image (262 down to 7 pixels at 256 px; at least 4),
    at 100% down to 25% opacity."""
    n, _, h, w = normals.shape
    rng = np.random.default_rng([seed, 3])
    d = difficulties(n, rng)
    masks = np.stack([ellipse_mask(h, w, max(4.0, _loglerp(4e-3, 1e-4, t) * h * w), rng) for t in d])
    m = torch.from_numpy(masks).unsqueeze(1)
    x = normals.float() / 255
    tex = _texture_fill(normals, synthesis, textures, make_generator(seed, 3))
    opacity = torch.tensor([_lerp(1.0, 0.25, t) for t in d], dtype=torch.float32).view(-1, 1, 1, 1)
    out = ops.to_uint8(x + (tex - x) * m.float() * opacity)
    return Anomalies(out, _changed(normals, out, m), d)


def cutpaste(normals, synthesis, textures, seed) -> Anomalies:
    """A patch (8% down to 0.2% of the image, aspect 0.3-3.3) of another normal, recoloured by up to
    0.1 in hue and 20% in brightness at the easy end, not at all at the hard end."""
    n, _, h, w = normals.shape
    rng = np.random.default_rng([seed, 4])
    d = difficulties(n, rng)
    out = normals.clone()
    masks = torch.zeros(n, 1, h, w, dtype=torch.bool)
    for i in range(n):
        area = _loglerp(0.08, 0.002, d[i]) * h * w
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
        ph = max(2, min(h - 1, round(math.sqrt(area / aspect))))
        pw = max(2, min(w - 1, round(math.sqrt(area * aspect))))
        src = (i + 1 + int(rng.integers(0, max(1, n - 1)))) % n if n > 1 else i
        sy, sx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        ty, tx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        patch = normals[src: src + 1, :, sy: sy + ph, sx: sx + pw].float() / 255
        strength = 1 - d[i]
        patch = ops.hue_saturation(patch, torch.tensor([rng.uniform(-0.1, 0.1) * strength]), torch.tensor([0.0]))
        patch = ops.brightness(patch, torch.tensor([1 + rng.choice([-1, 1]) * 0.2 * strength]), torch.tensor([0.0]),
                               torch.tensor([False]))
        out[i, :, ty: ty + ph, tx: tx + pw] = ops.to_uint8(patch)[0]
        masks[i, :, ty: ty + ph, tx: tx + pw] = True
    return Anomalies(out, masks, d)


def _tone_op(x: torch.Tensor, op: str, strength: float, rng: np.random.Generator, scale: float) -> torch.Tensor:
    """One local photometric change of the whole image ``x`` (1, 3, H, W); the caller masks it."""
    sign = float(rng.choice([-1.0, 1.0]))
    if op == "blur":
        sigma = _lerp(0.5, 3.0, strength) * scale
        k = 2 * math.ceil(3 * sigma) + 1
        return TF.gaussian_blur(x, [k, k], [sigma, sigma])
    if op == "brightness":
        return x + sign * _lerp(0.012, 0.25, strength)
    if op == "colour":
        direction = torch.from_numpy(rng.normal(size=3)).float()
        direction = direction - direction.mean()  # a hue shift, not a brightness change
        direction = direction / direction.norm().clamp_min(1e-6)
        return x + direction.view(1, 3, 1, 1) * _lerp(0.012, 0.25, strength)
    factor = _lerp(0.95, 0.3, strength) if sign < 0 else 1 / _lerp(0.95, 0.4, strength)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return mean + (x - mean) * factor


def tone(normals, synthesis, textures, seed) -> Anomalies:
    """A soft-edged ellipse (6% down to 0.5% of the image) blurred, brightened/darkened (by 25% down to
    1.2%: three grey levels), tinted or contrast-changed; the mask keeps the pixels that changed by at
    least 2 levels. Where a blur
    or contrast change would leave too little changed (a flat surface), brightness is used."""
    n, _, h, w = normals.shape
    rng = np.random.default_rng([seed, 5])
    d = difficulties(n, rng)
    scale = max(h, w) / 256
    feather = max(0.5, 1.5 * scale)
    kf = 2 * math.ceil(3 * feather) + 1
    out = torch.empty_like(normals)
    masks = torch.zeros(n, 1, h, w, dtype=torch.bool)
    for i in range(n):
        region = torch.from_numpy(ellipse_mask(h, w, _loglerp(0.06, 0.005, d[i]) * h * w, rng)).float()[None, None]
        alpha = TF.gaussian_blur(region, [kf, kf], [feather, feather])
        x = normals[i: i + 1].float() / 255
        op = TONE_OPS[i % len(TONE_OPS)]
        for attempt in (op, "brightness"):
            y = ops.to_uint8((x + (_tone_op(x, attempt, 1 - d[i], rng, scale) - x) * alpha).clamp(0, 1))
            changed = (y.int() - normals[i: i + 1].int()).abs().amax(1, keepdim=True) >= 2
            if changed.sum() >= 0.25 * region.sum():
                break
        out[i: i + 1] = y
        masks[i: i + 1] = changed
    return Anomalies(out, masks, d)


def scratch(normals, synthesis, textures, seed) -> Anomalies:
    """A thin curved stroke (45% down to 8% of the image side; 1-3 px at 256 px) blended
    towards black or white by 80% down to 6%."""
    n, _, h, w = normals.shape
    rng = np.random.default_rng([seed, 6])
    d = difficulties(n, rng)
    scale = max(h, w) / 256
    out = torch.empty_like(normals)
    masks = torch.zeros(n, 1, h, w, dtype=torch.bool)
    for i in range(n):
        width = max(1, round(_lerp(3.0, 1.0, d[i]) * scale))
        m = torch.from_numpy(stroke_mask(h, w, _lerp(0.45, 0.08, d[i]) * max(h, w), width, rng))[None, None]
        x = normals[i: i + 1].float() / 255
        target = 0.05 if rng.random() < 0.5 else 0.95
        a = _lerp(0.8, 0.06, d[i])
        out[i: i + 1] = ops.to_uint8(x + (target - x) * a * m.float())
        masks[i: i + 1] = _changed(normals[i: i + 1], out[i: i + 1], m)
    return Anomalies(out, masks, d)


MAKERS = {"draem": draem, "faint": faint, "small": small, "cutpaste": cutpaste, "tone": tone, "scratch": scratch}


def make_family(name: str, normals: torch.Tensor, synthesis: SynthesisConfig, textures: TextureBank,
                seed: int) -> Anomalies:
    """One anomaly of family ``name`` on each of the (n, 3, H, W) uint8 CPU ``normals``."""
    return MAKERS[name](normals, synthesis, textures, seed + 1009 * FAMILIES.index(name))
