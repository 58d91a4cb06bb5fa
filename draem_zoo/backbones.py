"""timm encoders as DRAEM backbones.

A timm model built with ``features_only=True`` gives feature maps whose channels and
strides differ between families (resnet/efficientnet/mobilenetv3: 5 levels from
stride 2; convnext: 4 levels from stride 4). The decoders here are sized from
``feature_info``:

* :class:`TimmDiscriminative`: a small full-resolution stem (plain double convs at
  strides 1 .. first-stride/2) supplies the levels the encoder lacks, then a U-Net
  decoder fuses every level back to stride 1. Input: 6 channels (reconstruction, image).
* :class:`TimmReconstructive`: the deepest feature map only, decoded without skips by
  2x upsampling steps whose widths follow the paper's ladder (8w, 4w, 2w, w, w).

Inputs stay in [0, 1]; each encoder normalises with its own pretrained mean/std.
Pretrained weights come from a local file (``.safetensors``, or a torch file read with
``weights_only=True``) or, when none is given, from the Hugging Face Hub cache or a
download (:func:`draem_zoo.hub.timm_weights.fetch_timm_weights`), failing within seconds offline.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError
from .networks import PlainEncoder, ReconstructiveDecoder, UNetDecoder, draem_init


def load_weights_file(path: str | Path, key: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a local file without unpickling arbitrary objects."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}={str(path)!r}: no such file; give the path of a .safetensors or .pth weights file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or not a weights file
        raise ConfigError(f"{key}={str(path)!r}: cannot read weights ({type(exc).__name__}: {exc})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"{key}={str(path)!r}: the file holds no state dict of tensors")
    return sd


class TimmEncoder(nn.Module):
    """A timm ``features_only`` encoder with per-channel input normalisation."""

    def __init__(
        self,
        name: str,
        in_channels: int,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        key: str = "model.disc_encoder",
    ):
        super().__init__()
        import timm

        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:6]
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise ConfigError(f"{key}={name!r}: timm has no model of that name{hint}")
        kwargs: dict = {"features_only": True, "in_chans": in_channels}
        if pretrained and not pretrained_file:
            pretrained_file = _hub_weights(name, key)
        if pretrained_file:
            sd = load_weights_file(pretrained_file, key.replace("encoder", "pretrained_file"))
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"state_dict": sd})
        try:
            self.model = timm.create_model(name, **kwargs)
        except Exception as exc:
            if pretrained_file:
                raise ConfigError(
                    f"{key}={name!r}: the weights in {pretrained_file} do not fit this model ({exc})"
                ) from None
            raise ConfigError(f"{key}={name!r}: timm cannot build it with features_only=True ({exc})") from None
        if pretrained_file:
            _check_loaded(self.model, sd, name, pretrained_file, key)
        info = self.model.feature_info
        self.channels = list(info.channels())
        self.reductions = list(info.reductions() if hasattr(info, "reductions") else info.reduction())
        _check_strides(self.reductions, name, key)
        cfg = getattr(self.model, "pretrained_cfg", {}) or {}
        mean = list(cfg.get("mean", (0.485, 0.456, 0.406)))
        std = list(cfg.get("std", (0.229, 0.224, 0.225)))
        reps = math.ceil(in_channels / len(mean))
        self.register_buffer("mean", torch.tensor((mean * reps)[:in_channels]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor((std * reps)[:in_channels]).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model((x - self.mean) / self.std)


def _hub_weights(name: str, key: str) -> str:
    """Local path of timm's pretrained weights for ``name`` (Hub cache or download)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise ConfigError(f"{key}={name!r}: timm lists no Hub weights for it; pass "
                          f"{key.replace('encoder', 'pretrained_file')}=PATH or set model.pretrained=false")
    from .hub.timm_weights import fetch_timm_weights

    return str(fetch_timm_weights(repo, name, key))


def _check_loaded(model: nn.Module, sd: dict[str, torch.Tensor], name: str, path: str, key: str) -> None:
    """timm loads feature extractors non-strictly; make sure the file really fitted."""
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    hits = sum(1 for k, v in own.items()
               if (t := sd.get(k, sd.get(k.removeprefix("model.")))) is not None and t.shape == v.shape)
    if hits < 0.9 * len(own):
        raise ConfigError(f"{key.replace('encoder', 'pretrained_file')}={path!r}: the weights do not fit timm model "
                          f"{name!r} (only {hits} of its {len(own)} tensors found with the right shape)")


def _check_strides(reductions: list[int], name: str, key: str) -> None:
    ok = all(r > 0 and r & (r - 1) == 0 for r in reductions) and all(
        b == 2 * a for a, b in zip(reductions, reductions[1:])
    )
    if not ok or reductions[0] > 8:
        raise ConfigError(
            f"{key}={name!r}: its feature maps come at strides {reductions}; the decoder needs "
            "strides doubling level by level from at most 8 (CNN encoders such as resnet18, "
            "efficientnet_b0, mobilenetv3_large_100, convnext_nano)"
        )


class TimmDiscriminative(nn.Module):
    """U-Net whose encoder is a timm model; a plain stem supplies the fine levels."""

    def __init__(self, name: str, width: int, pretrained: bool = False, pretrained_file: str | None = None,
                 in_channels: int = 6, out_channels: int = 2):
        super().__init__()
        self.encoder = TimmEncoder(name, in_channels, pretrained, pretrained_file, "model.disc_encoder")
        n_stem = int(math.log2(self.encoder.reductions[0]))  # levels at strides 1 .. r0/2
        self.stem = PlainEncoder(in_channels, [width] * n_stem)
        skips = [width] * n_stem + self.encoder.channels
        outs = [max(skips[j], width) for j in range(len(skips) - 2, -1, -1)]
        self.decoder = UNetDecoder(skips, outs, out_channels)
        draem_init(self.stem)
        draem_init(self.decoder)
        self.size_multiple = self.encoder.reductions[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.stem(x) + self.encoder(x))


class TimmReconstructive(nn.Module):
    """Encoder-decoder without skips: timm encoder's deepest map, upsampled back to stride 1."""

    def __init__(self, name: str, width: int, pretrained: bool = False, pretrained_file: str | None = None,
                 in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        self.encoder = TimmEncoder(name, in_channels, pretrained, pretrained_file, "model.rec_encoder")
        steps = int(math.log2(self.encoder.reductions[-1]))
        ladder = [width * 2 ** max(0, steps - 2 - i) for i in range(steps)]  # paper: 8w 4w 2w w (w)
        top = 8 * width
        self.project = nn.Sequential(nn.Conv2d(self.encoder.channels[-1], top, 1), nn.BatchNorm2d(top), nn.ReLU(inplace=True))
        self.decoder = ReconstructiveDecoder([top, *[min(w, top) for w in ladder]], out_channels)
        draem_init(self.project)
        draem_init(self.decoder)
        self.size_multiple = self.encoder.reductions[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.project(self.encoder(x)[-1]))
