"""The DRAEM model: reconstructive + discriminative sub-networks and prediction.

``forward`` runs both sub-networks on images in the model's channel order (training
uses it); ``predict`` takes RGB images in [0, 1] of any size and returns the anomaly
map (softmax channel 1, at the input's resolution) and the image score (max of the
mean-filtered map). Inputs whose size is not a multiple of the networks' total stride
are padded (replicate) and the outputs cropped, so any image size works.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import TimmDiscriminative, TimmReconstructive
from .networks import DiscriminativeUNet, ReconstructiveNet
from .scoring import ScoreConfig, image_scores, mean_filter
from .variants import ModelConfig


@dataclass
class Prediction:
    """What ``DraemModel.predict`` returns for a batch of B images of size H x W."""

    anomaly_map: torch.Tensor  # (B, 1, H, W) in [0, 1]: softmax channel 1
    score: torch.Tensor  # (B,) max of the mean-filtered map (at model resolution)
    reconstruction: torch.Tensor  # (B, 3, H, W) RGB
    filter_size: int
    anomalous: torch.Tensor | None = field(default=None)  # (B,) bool, when a threshold is known
    mask: torch.Tensor | None = field(default=None)  # (B, 1, H, W) bool, when a pixel threshold is known


def build_networks(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """The two sub-networks a model config describes."""
    cfg.validate()
    if cfg.rec_encoder:
        rec: nn.Module = TimmReconstructive(cfg.rec_encoder, cfg.rec_width, cfg.pretrained, cfg.rec_pretrained_file)
    else:
        rec = ReconstructiveNet(cfg.rec_width)
    if cfg.disc_encoder:
        disc: nn.Module = TimmDiscriminative(cfg.disc_encoder, cfg.disc_width, cfg.pretrained, cfg.pretrained_file)
    else:
        disc = DiscriminativeUNet(cfg.disc_width)
    return rec, disc


class DraemModel(nn.Module):
    """Both DRAEM sub-networks with their config; build with :func:`build_model`."""

    def __init__(self, config: ModelConfig, score: ScoreConfig | None = None):
        super().__init__()
        self.config = config
        self.score_config = score or ScoreConfig()
        self.reconstructive, self.discriminative = build_networks(config)
        self.size_multiple = max(getattr(self.reconstructive, "size_multiple", 16),
                                 getattr(self.discriminative, "size_multiple", 32))

    def to_model_order(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB images to the channel order the weights expect."""
        return rgb.flip(1) if self.config.channel_order == "BGR" else rgb

    def from_model_order(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) if self.config.channel_order == "BGR" else x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, discriminator logits) for images in model channel order."""
        h, w = x.shape[-2:]
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")
        rec = self.reconstructive(x)
        logits = self.discriminative(torch.cat((rec, x), dim=1))
        if ph or pw:
            rec = rec[..., ph // 2: ph // 2 + h, pw // 2: pw // 2 + w]
            logits = logits[..., ph // 2: ph // 2 + h, pw // 2: pw // 2 + w]
        return rec, logits

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, filter_size: int | None = None) -> Prediction:
        """Anomaly maps and image scores for RGB images in [0, 1], shape (B, 3, H, W).

        Images are resized to the model's ``image_size`` if needed; the map comes back
        at the input size. ``filter_size`` defaults to the model's own s_f.
        """
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"predict expects (B, 3, H, W) RGB images, got shape {tuple(images.shape)}")
        size = filter_size if filter_size is not None else self.score_config.filter_size
        param = next(self.parameters())
        x = images.to(device=param.device, dtype=torch.float32)
        in_hw = tuple(x.shape[-2:])
        s = self.config.image_size
        if in_hw != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        was_training = self.training
        self.eval()
        try:
            rec, logits = self(self.to_model_order(x))
        finally:
            self.train(was_training)
        amap = torch.softmax(logits.float(), dim=1)[:, 1:]
        score = image_scores(amap, size)
        rec = self.from_model_order(rec.float())
        if in_hw != (s, s):
            amap = F.interpolate(amap, size=in_hw, mode="bilinear", align_corners=False)
            rec = F.interpolate(rec, size=in_hw, mode="bilinear", align_corners=False)
        pred = Prediction(anomaly_map=amap, score=score, reconstruction=rec, filter_size=size)
        if self.score_config.image_threshold is not None:
            pred.anomalous = score >= self.score_config.image_threshold
        if self.score_config.pixel_threshold is not None:
            pred.mask = amap >= self.score_config.pixel_threshold
        return pred

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(cfg: ModelConfig | str, score: ScoreConfig | None = None, **overrides) -> DraemModel:
    """Build any variant: ``build_model("paper-small")`` or ``build_model(ModelConfig(...))``."""
    if isinstance(cfg, str):
        cfg = ModelConfig.for_variant(cfg, **overrides)
    elif overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return DraemModel(cfg, score)


__all__ = ["DraemModel", "Prediction", "build_model", "mean_filter"]
