"""The anomaly simulator's configuration: every number of the original DRAEM simulator.

``SynthesisConfig`` is what the simulator (:mod:`.simulator`), the augmenter (:mod:`.augment`)
and the validation set's texture fills read; ``AUGMENTATIONS`` names the original's ten
texture augmentations, in the order the config lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

AUGMENTATIONS = ("gamma", "brightness", "sharpness", "hue_saturation", "solarize",
                 "posterize", "invert", "autocontrast", "equalize", "rotate")


@dataclass
class SynthesisConfig:
    """Anomaly simulation; every default is the original DRAEM's value.

    anomaly_source: texture folder (DTD: dtd/images); None = procedural textures
    (procedural_textures of them, from procedural_seed). Ranges are (low, high);
    brightness_add, saturation_add and solarize_threshold are in 8-bit units and
    hue_shift in imgaug units (255 = the whole colour circle), as imgaug takes them.

    Two options serve the DRAEM paper's ablation rows and are off by default:
    ``mask_shape="rectangle"`` (DRAEM_rect) replaces the Perlin mask of an anomaly by the
    union of ``rect_count`` (uniform integer range) rectangles, each with its centre uniform
    over the image, its height and width uniform fractions ``rect_size`` of the image's, and
    rotated by U(-mask_rotation, mask_rotation) degrees (clipped by the image border; never
    empty, since the centre lies inside). ``fill="color"`` (DRAEM_color) fills each anomaly
    with one uniformly random 8-bit RGB colour instead of an augmented texture; it is still
    blended with beta, and the texture augmentations are not applied to it (on a plain colour
    they would only map it to another random colour, and the rotation would paint black
    corners into it).
    """

    anomaly_source: str | None = None
    procedural_textures: int = 200
    procedural_seed: int = 0
    max_textures: int | None = None
    anomaly_prob: float = 0.5
    beta: tuple[float, float] = (0.0, 0.8)
    perlin_scale: tuple[int, int] = (0, 5)
    perlin_threshold: float = 0.5
    mask_shape: Literal["perlin", "rectangle"] = "perlin"
    rect_count: tuple[int, int] = (1, 3)
    rect_size: tuple[float, float] = (0.1, 0.5)
    fill: Literal["texture", "color"] = "texture"
    mask_rotation: float = 90.0
    base_rotation_prob: float = 0.3
    base_rotation: float = 90.0
    num_augmentations: int = 3
    augmentations: tuple[str, ...] = AUGMENTATIONS
    gamma: tuple[float, float] = (0.5, 2.0)
    brightness_mul: tuple[float, float] = (0.8, 1.2)
    brightness_add: tuple[float, float] = (-30.0, 30.0)
    sharpness: tuple[float, float] = (0.0, 2.0)
    hue_shift: tuple[float, float] = (-50.0, 50.0)
    saturation_add: tuple[float, float] = (-50.0, 50.0)
    solarize_prob: float = 0.5
    solarize_threshold: tuple[float, float] = (32.0, 128.0)
    posterize_bits: tuple[int, int] = (1, 8)
    autocontrast_cutoff: tuple[float, float] = (0.0, 20.0)
    texture_rotation: float = 45.0

    def validate(self) -> None:
        for key in ("anomaly_prob", "base_rotation_prob", "solarize_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"synthesis.{key}={getattr(self, key)}: must be a probability in [0, 1]")
        for key in ("beta", "perlin_scale", "rect_count", "rect_size", "gamma", "brightness_mul", "brightness_add",
                    "sharpness", "hue_shift", "saturation_add", "solarize_threshold", "posterize_bits",
                    "autocontrast_cutoff"):
            lo, hi = getattr(self, key)
            if lo > hi:
                raise ConfigError(f"synthesis.{key}=({lo}, {hi}): low is above high")
        if not (0.0 <= self.beta[0] and self.beta[1] <= 1.0):
            raise ConfigError(f"synthesis.beta={self.beta}: opacity range must lie in [0, 1]")
        if not (0 <= self.perlin_scale[0] and self.perlin_scale[1] <= 8):
            raise ConfigError(f"synthesis.perlin_scale={self.perlin_scale}: exponents must lie in 0..8")
        if not (1 <= self.posterize_bits[0] and self.posterize_bits[1] <= 8):
            raise ConfigError(f"synthesis.posterize_bits={self.posterize_bits}: bits must lie in 1..8")
        if self.mask_shape not in ("perlin", "rectangle"):
            raise ConfigError(f"synthesis.mask_shape={self.mask_shape!r}: choose 'perlin' (DRAEM's masks) or "
                              "'rectangle' (the paper's DRAEM_rect ablation)")
        if self.fill not in ("texture", "color"):
            raise ConfigError(f"synthesis.fill={self.fill!r}: choose 'texture' (augmented anomaly source images) or "
                              "'color' (one plain colour per anomaly, the paper's DRAEM_color ablation)")
        if not (1 <= self.rect_count[0] and self.rect_count[1] <= 8):
            raise ConfigError(f"synthesis.rect_count={self.rect_count}: the number of rectangles must lie in 1..8")
        if not (0.0 < self.rect_size[0] and self.rect_size[1] <= 1.0):
            raise ConfigError(f"synthesis.rect_size={self.rect_size}: rectangle sides are fractions of the image "
                              "size in (0, 1]")
        unknown = [a for a in self.augmentations if a not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(f"synthesis.augmentations: unknown {unknown}; choose from {', '.join(AUGMENTATIONS)}")
        if not 0 <= self.num_augmentations <= len(self.augmentations):
            raise ConfigError(f"synthesis.num_augmentations={self.num_augmentations}: must be between 0 and "
                              f"the number of augmentations listed ({len(self.augmentations)})")
        if self.procedural_textures < 1:
            raise ConfigError("synthesis.procedural_textures must be >= 1")
