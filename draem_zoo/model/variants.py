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

Orthogonal to the variant (kept by :func:`with_variant`):

* ``mode``: ``draem`` (both sub-networks, the paper's method), or one of the paper's Table 3
  architecture ablations: ``discriminative`` ("Disc.": the discriminative U-Net alone, on the
  image only, trained with the focal loss alone) and ``reconstructive`` ("Recon.-AE": the
  reconstructive network alone, trained with L2 + SSIM, anomaly map 1 - SSIM(reconstruction,
  image)); see :mod:`.draem`.
* ``sspcab``: DRAEM+SSPCAB (Ristea et al., CVPR 2022): the reconstructive network's last encoder
  block becomes the masked-convolution block of :mod:`.sspcab` (``sspcab_kernel`` k',
  ``sspcab_dilation`` d), trained with its self-reconstruction loss (``loss.sspcab_weight``).
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
MODES = ("draem", "discriminative", "reconstructive")
# fields that are not part of a variant's preset: switching variants keeps them
KEPT_FIELDS = ("image_size", "channel_order", "pretrained", "mode", "sspcab", "sspcab_kernel", "sspcab_dilation")


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
    mode: "draem" (the paper's method), "discriminative" or "reconstructive" (the paper's Table 3
    ablations "Disc." and "Recon.-AE": one sub-network alone).
    sspcab: DRAEM+SSPCAB, the reconstructive network's last encoder block replaced by SSPCAB with
    sub-kernel size sspcab_kernel (k', the original's default 1) and dilation sspcab_dilation (d, 1).
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
    mode: Literal["draem", "discriminative", "reconstructive"] = "draem"
    sspcab: bool = False
    sspcab_kernel: int = 1
    sspcab_dilation: int = 1

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
        self._validate_mode()
        self._validate_sspcab()

    def _validate_mode(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"model.mode={self.mode!r}: choose one of {', '.join(MODES)} (draem: the paper's method; "
                              "the others: its Table 3 ablations with one sub-network alone)")
        if self.mode == "reconstructive" and self.disc_encoder:
            raise ConfigError(f"model.mode='reconstructive' builds no discriminative network, so "
                              f"model.disc_encoder={self.disc_encoder!r} (variant {self.variant!r}) would be ignored: "
                              "choose a paper-* variant (and model.rec_encoder for a timm reconstructive encoder)")
        if self.mode == "discriminative" and self.rec_encoder:
            raise ConfigError(f"model.mode='discriminative' builds no reconstructive network, so "
                              f"model.rec_encoder={self.rec_encoder!r} would be ignored: set model.rec_encoder=none")

    def _validate_sspcab(self) -> None:
        for key, low in (("sspcab_kernel", 1), ("sspcab_dilation", 0)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"model.{key}={value!r}: must be an integer >= {low} (SSPCAB's defaults: "
                                  "kernel k'=1, dilation d=1)")
        if not self.sspcab:
            return
        if self.mode == "discriminative":
            raise ConfigError("model.sspcab=true replaces a block of the reconstructive network, which "
                              "model.mode='discriminative' does not build: set model.sspcab=false or model.mode=draem")
        side = self.image_size // 16  # the block's feature maps (the reconstructive encoder's stride is 16)
        if side < self.sspcab_dilation + 2:
            raise ConfigError(f"model.sspcab_dilation={self.sspcab_dilation} at model.image_size={self.image_size}: "
                              f"the SSPCAB block works on {side}x{side} feature maps, where every kernel it has reads "
                              f"zero padding only (it would output a constant); use model.image_size >= "
                              f"{16 * (self.sspcab_dilation + 2)} or a smaller dilation")
        if self.rec_encoder:
            raise ConfigError(f"model.sspcab=true replaces the last encoder block of the paper's reconstructive "
                              f"network; model.rec_encoder={self.rec_encoder!r} (a timm encoder) has no such block: "
                              "set model.rec_encoder=none or model.sspcab=false")


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
    """Switch ``cfg`` to another variant, keeping the input conventions, the mode and SSPCAB."""
    keep = {k: getattr(cfg, k) for k in KEPT_FIELDS}
    return dataclasses.replace(ModelConfig.for_variant(name), **keep)
