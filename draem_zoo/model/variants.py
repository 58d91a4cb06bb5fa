"""Named model variants and the model config.

A variant is a preset of :class:`ModelConfig` fields; the config stores every field
resolved, so a saved config rebuilds the model without knowing the preset. Names:

* ``paper``: the paper's networks, reconstructive width 128, discriminative width 64.
* ``paper-small``: the same with halved widths (64 / 32).
* ``paper-tiny``: quarter widths (32 / 16), for CPUs and demos.
* ``timm-<name>``: the discriminative encoder is the timm model ``<name>`` (any CNN that
  timm builds with ``features_only=True``), e.g. ``timm-resnet18``,
  ``timm-efficientnet_b0``, ``timm-mobilenetv3_large_100``, ``timm-convnext_nano``; the
  reconstructive network is the paper's at width 64 unless ``rec_encoder`` is set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

PAPER_VARIANTS = {
    "paper": {"rec_width": 128, "disc_width": 64},
    "paper-small": {"rec_width": 64, "disc_width": 32},
    "paper-tiny": {"rec_width": 32, "disc_width": 16},
}
TIMM_DEFAULTS = {"rec_width": 64, "disc_width": 32}
# The timm variants the project ships search spaces and benchmarks for.
LISTED_TIMM = ("resnet18", "efficientnet_b0", "mobilenetv3_large_100", "convnext_nano")
TIMM_PREFIX = "timm-"


@dataclass
class ModelConfig:
    """Architecture and input conventions of a DRAEM model.

    rec_width / disc_width: base widths of the reconstructive and discriminative
    networks (for a timm discriminator, the width of its stem and finest decoder level).
    rec_encoder / disc_encoder: timm model names replacing the paper's encoders (None = paper).
    pretrained: start timm encoders from pretrained weights; pretrained_file /
    rec_pretrained_file: local weights files for them (works offline).
    image_size: the square input size the model is trained and run at.
    channel_order: "RGB", or "BGR" for checkpoints trained on cv2-read images.
    """

    variant: str = "paper"
    rec_width: int = 128
    disc_width: int = 64
    rec_encoder: str | None = None
    disc_encoder: str | None = None
    pretrained: bool = False
    pretrained_file: str | None = None
    rec_pretrained_file: str | None = None
    image_size: int = 256
    channel_order: Literal["RGB", "BGR"] = "RGB"

    @classmethod
    def for_variant(cls, name: str, **overrides) -> "ModelConfig":
        return cls(**{**variant_fields(name), **overrides})

    def validate(self) -> None:
        for key in ("rec_width", "disc_width"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{key}={value!r}: widths must be positive integers (paper: 128 / 64)")
        if self.image_size < 8:
            raise ConfigError(f"model.image_size={self.image_size}: too small; use at least 32 (paper: 256)")
        if (self.pretrained_file or self.rec_pretrained_file) and not (self.disc_encoder or self.rec_encoder):
            raise ConfigError("model.pretrained_file is set but no timm encoder is: choose a timm-* variant "
                              "or set model.disc_encoder / model.rec_encoder")


def variant_fields(name: str) -> dict:
    """The ModelConfig fields a variant name stands for."""
    if name in PAPER_VARIANTS:
        return {"variant": name, "rec_encoder": None, "disc_encoder": None, **PAPER_VARIANTS[name]}
    if name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX):
        return {"variant": name, "disc_encoder": name[len(TIMM_PREFIX):], "rec_encoder": None, **TIMM_DEFAULTS}
    raise ConfigError(
        f"unknown variant {name!r}; choose one of {', '.join(list_variants())} or timm-<any timm CNN name>"
    )


def list_variants() -> list[str]:
    return [*PAPER_VARIANTS, *(TIMM_PREFIX + n for n in LISTED_TIMM)]


def with_variant(cfg: ModelConfig, name: str) -> ModelConfig:
    """Switch ``cfg`` to another variant, keeping the input conventions."""
    keep = {"image_size": cfg.image_size, "channel_order": cfg.channel_order, "pretrained": cfg.pretrained}
    return dataclasses.replace(ModelConfig.for_variant(name), **keep)
