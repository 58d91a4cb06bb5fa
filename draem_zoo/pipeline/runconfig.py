"""The whole configuration of one training run: one dataclass per concern, bundled.

``RunConfig`` is what ``draem-zoo train`` builds from its flags and ``--set key=value``
pairs, what a search trial builds from a search-space suggestion, and what is saved in
``config.json`` beside the weights; ``make_run_config`` replays any of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..config import apply_overrides, from_dict, to_dict, validate_all
from ..data import DataConfig
from ..evaluation.evaluate import EvalConfig
from ..model.losses import LossConfig
from ..model.variants import ModelConfig, with_variant
from ..synthesis.simulator import SynthesisConfig
from ..train.trainer import TrainConfig


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "run config") -> "RunConfig":
        cfg = from_dict(cls, data, where)
        validate_all(cfg)
        return cfg


VARIANT_KEYS = ("model.variant", "variant")


def make_run_config(overrides: dict[str, Any] | list[str] | None = None, base: RunConfig | None = None,
                    variant: str | None = None) -> RunConfig:
    """``base`` (default: the paper's settings) with a variant and overrides applied.

    A variant (the ``variant`` argument or a ``model.variant`` override) is applied first,
    resetting the architecture fields to its preset; every other override comes after,
    so ``{"model.variant": "timm-resnet18", "model.disc_width": 16}`` means what it says.
    """
    cfg = base or RunConfig()
    items = overrides or []
    if isinstance(items, dict):
        items = dict(items)
        for k in VARIANT_KEYS:
            if k in items:
                variant = str(items.pop(k))
    else:
        rest = []
        for item in items:
            key = item.split("=", 1)[0].strip()
            if key in VARIANT_KEYS and "=" in item:
                variant = item.split("=", 1)[1].strip()
            else:
                rest.append(item)
        items = rest
    if variant:
        cfg = dataclasses.replace(cfg, model=with_variant(cfg.model, variant))
    return apply_overrides(cfg, items)
