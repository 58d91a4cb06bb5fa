"""The config mechanism: JSON round trips and typed key=value overrides."""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

import pytest

from draem_zoo.config import apply_overrides, from_dict, to_dict
from draem_zoo.errors import ConfigError
from draem_zoo.model.losses import LossConfig
from draem_zoo.model.variants import ModelConfig
from draem_zoo.synthesis.simulator import SynthesisConfig


@dataclasses.dataclass
class Bundle:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    synthesis: SynthesisConfig = dataclasses.field(default_factory=SynthesisConfig)
    mode: Literal["a", "b"] = "a"


def test_json_round_trip_is_exact():
    cfg = apply_overrides(Bundle(), ["synthesis.beta=0.1,0.5", "loss.focal_alpha=0.25", "model.disc_encoder=resnet18"])
    text = json.dumps(to_dict(cfg))
    back = from_dict(Bundle, json.loads(text))
    assert back == cfg
    assert back.synthesis.beta == (0.1, 0.5) and isinstance(back.synthesis.beta, tuple)


def test_overrides_are_typed():
    cfg = apply_overrides(Bundle(), ["ssim_weight=2", "model.pretrained=true", "focal_alpha=none",
                                     "synthesis.anomaly_source=/data/dtd/images", "mode=b",
                                     "synthesis.augmentations=gamma,invert", "synthesis.num_augmentations=2"])
    assert cfg.loss.ssim_weight == 2.0 and isinstance(cfg.loss.ssim_weight, float)
    assert cfg.model.pretrained is True and cfg.loss.focal_alpha is None
    assert cfg.synthesis.anomaly_source == "/data/dtd/images" and cfg.mode == "b"
    assert cfg.synthesis.augmentations == ("gamma", "invert")
    cfg = apply_overrides(Bundle(), {"loss.focal_gamma": 3, "model.variant": "paper-small"})
    assert cfg.loss.focal_gamma == 3.0


@pytest.mark.parametrize("item,message", [
    ("loss.ssim_wieght=2", "unknown config key"),
    ("ssim_weight=abc", "loss.ssim_weight: expected a number"),
    ("model.rec_width=1.5", "model.rec_width: expected an integer"),
    ("model.pretrained=maybe", "model.pretrained: expected true or false"),
    ("mode=c", "mode: 'c' is not one of"),
    ("synthesis.beta=0.1", "expected 2 values"),
    ("noequals", "expected key=value"),
    ("model.rec_width=0", "model.rec_width=0"),
])
def test_bad_overrides_name_the_key(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Bundle(), [item])


@dataclasses.dataclass
class A:
    size: int = 1


@dataclasses.dataclass
class B:
    a: A = dataclasses.field(default_factory=A)
    b: A = dataclasses.field(default_factory=A)


def test_ambiguous_leaf_names_ask_for_the_full_key():
    with pytest.raises(ConfigError, match="ambiguous"):
        apply_overrides(B(), ["size=3"])
    assert apply_overrides(B(), ["b.size=3"]).b.size == 3


def test_unknown_json_keys_are_refused():
    data = to_dict(Bundle())
    data["loss"]["lambda"] = 1.0
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(Bundle, data, "config.json")
