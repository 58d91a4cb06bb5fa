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
``weights_only=True``) or, when none is given, from timm's own pretrained entry on the Hugging
Face Hub, which timm fetches through its cache (offline once fetched); offline without them the
error comes within seconds and says how to supply a local file instead.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import ConfigError
from .networks import PlainEncoder, ReconstructiveDecoder, UNetDecoder, draem_init


def load_weights_file(path: str | Path, key: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a local file without unpickling arbitrary objects."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}={str(path)!r}: no such file; give the path of a .safetensors or .pth weights file")
    try:
        if p.suffix == ".safetensors":
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
        import timm  # lazily: a second or two to import, and the paper's variants do not need it

        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:6]
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise ConfigError(f"{key}={name!r}: timm has no model of that name{hint}")
        kwargs: dict = {"features_only": True, "in_chans": in_channels}
        if pretrained_file:
            sd = load_weights_file(pretrained_file, key.replace("encoder", "pretrained_file"))
            try:
                self.model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"state_dict": sd},
                                               **kwargs)
            except Exception as exc:
                raise ConfigError(f"{key}={name!r}: the weights in {pretrained_file} do not fit this model "
                                  f"({exc})") from None
            _check_loaded(self.model, sd, name, pretrained_file, key)
        elif pretrained:
            self.model = _from_timm_hub(timm, name, kwargs, key)
        else:
            try:
                self.model = timm.create_model(name, **kwargs)
            except Exception as exc:
                raise ConfigError(f"{key}={name!r}: timm cannot build it with features_only=True ({exc})") from None
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


def hub_endpoint() -> str:
    """The Hugging Face Hub endpoint timm downloads from (``HF_ENDPOINT``, as huggingface_hub reads it)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def endpoint_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the Hub endpoint (skipped, i.e. True, behind a proxy)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True
    url = urlparse(hub_endpoint())
    try:
        with socket.create_connection((url.hostname or "", url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=timeout):
            return True
    except OSError:
        return False


def _from_timm_hub(timm, name: str, kwargs: dict, key: str) -> nn.Module:
    """``name`` with timm's pretrained weights, which timm fetches from its Hugging Face Hub entry
    through the local Hub cache. ``HF_HUB_OFFLINE=1`` uses the cache alone (Hugging Face's own
    switch); without it an unreachable Hub is an error within seconds, not after the client's retries."""
    cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    file_key = key.replace("encoder", "pretrained_file")
    advice = (f"Offline, fetch them on a machine with internet (timm.create_model({name!r}, pretrained=True), then "
              f"save its state_dict with safetensors) and pass {file_key}=PATH, or set model.pretrained=false.")
    if not repo:
        raise ConfigError(f"{key}={name!r}: timm lists no Hub weights for it; pass {file_key}=PATH or set "
                          "model.pretrained=false")
    if not hub_offline() and not endpoint_reachable():
        raise ConfigError(f"{key}={name!r}: pretrained weights come from {repo} on the Hugging Face Hub, and "
                          f"{hub_endpoint()} cannot be reached. If they are in the local Hub cache already, set "
                          "HF_HUB_OFFLINE=1 to use it. " + advice)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # offline and not cached, network trouble, a missing file variant
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        where = "are not in the local Hub cache (HF_HUB_OFFLINE is set)" if hub_offline() else \
            f"could not be downloaded from {repo}"
        raise ConfigError(f"{key}={name!r}: pretrained weights {where} ({type(exc).__name__}: {first}). "
                          + advice) from None


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
