"""The DRAEM model: reconstructive + discriminative sub-networks and prediction.

``forward`` runs the sub-networks on images in the model's channel order (training
uses it); ``predict`` takes RGB images in [0, 1] of any size and returns the anomaly
map (softmax channel 1, at the input's resolution) and the image score (max of the
mean-filtered map). Inputs whose size is not a multiple of the networks' total stride
are padded (replicate) and the outputs cropped, so any image size works.

``model.mode`` selects the paper's method or one of its Table 3 architecture ablations
(DRAEM paper, section 4.2, "Architecture"):

* ``draem``: the discriminator reads (reconstruction, image) concatenated; map = softmax channel 1.
* ``discriminative`` ("Disc."): the reconstructive sub-network is "removed from the pipeline" and
  the discriminative one trained alone: it reads the (augmented) image only (3 channels), is
  trained with the focal loss alone, and its softmax channel 1 is the map. It reconstructs
  nothing: ``forward`` returns None for the reconstruction, and so does ``predict``.
* ``reconstructive`` ("Recon.-AE"): the reconstructive sub-network alone, trained as in DRAEM
  (augmented image in, anomaly-free image as the target, L2 + SSIM; the paper notes that this
  "simulated anomaly training" is what lifts it above a plain autoencoder) and evaluated as an
  autoencoder: map = 1 - SSIM(reconstruction, image) (:func:`~.scoring.ssim_anomaly_map`).
  ``forward`` returns None for the logits.

In every mode the map is (B, 1, H, W) in [0, 1] and the image score is its max after the mean
filter, so evaluation, scoring and ONNX export treat all modes alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import TimmDiscriminative, TimmReconstructive
from .networks import DiscriminativeUNet, ReconstructiveNet
from .scoring import ScoreConfig, image_scores, mean_filter, ssim_anomaly_map
from .variants import ModelConfig


@dataclass
class Prediction:
    """What ``DraemModel.predict`` returns for a batch of B images of size H x W."""

    anomaly_map: torch.Tensor  # (B, 1, H, W) in [0, 1]: softmax channel 1 (reconstructive mode: 1 - SSIM)
    score: torch.Tensor  # (B,) max of the mean-filtered map (at model resolution)
    reconstruction: torch.Tensor | None  # (B, 3, H, W) RGB; None for a discriminative-only model
    filter_size: int
    anomalous: torch.Tensor | None = field(default=None)  # (B,) bool, when a threshold is known
    mask: torch.Tensor | None = field(default=None)  # (B, 1, H, W) bool, when a pixel threshold is known


def map_meaning(cfg: ModelConfig) -> str:
    """What a model's anomaly map is, in words (for exported files and cards)."""
    if cfg.mode == "reconstructive":
        return "anomaly map: 1 - SSIM(reconstruction, image) averaged over channels, clipped to [0, 1]"
    return "anomaly map: softmax channel 1, in [0, 1]"


def build_networks(cfg: ModelConfig) -> tuple[nn.Module | None, nn.Module | None]:
    """The sub-networks a model config describes (None for the one its mode leaves out)."""
    cfg.validate()
    rec: nn.Module | None = None
    disc: nn.Module | None = None
    if cfg.mode != "discriminative":
        if cfg.rec_encoder:
            rec = TimmReconstructive(cfg.rec_encoder, cfg.rec_width, cfg.pretrained, cfg.rec_pretrained_file)
        else:
            sspcab = (cfg.sspcab_kernel, cfg.sspcab_dilation) if cfg.sspcab else None
            rec = ReconstructiveNet(cfg.rec_width, sspcab=sspcab)
    if cfg.mode != "reconstructive":
        cin = 6 if cfg.mode == "draem" else 3  # (reconstruction, image), or the image alone
        if cfg.disc_encoder:
            disc = TimmDiscriminative(cfg.disc_encoder, cfg.disc_width, cfg.pretrained, cfg.pretrained_file,
                                      in_channels=cin)
        else:
            disc = DiscriminativeUNet(cfg.disc_width, in_channels=cin)
    return rec, disc


class DraemModel(nn.Module):
    """The DRAEM sub-networks (both, or one for the ablation modes) with their config; build with
    :func:`build_model`."""

    def __init__(self, config: ModelConfig, score: ScoreConfig | None = None):
        super().__init__()
        self.config = config
        self.score_config = score or ScoreConfig()
        self.reconstructive, self.discriminative = build_networks(config)
        multiples = [getattr(net, "size_multiple", default) for net, default in
                     ((self.reconstructive, 16), (self.discriminative, 32)) if net is not None]
        self.size_multiple = max(multiples)

    def to_model_order(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB images to the channel order the weights expect."""
        return rgb.flip(1) if self.config.channel_order == "BGR" else rgb

    def from_model_order(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) if self.config.channel_order == "BGR" else x

    def forward(self, x: torch.Tensor, with_sspcab: bool = False):
        """(reconstruction, discriminator logits) for images in model channel order; either is None
        where the mode builds no such sub-network. ``with_sspcab=True`` (training) adds a third item:
        the SSPCAB block's (input, output) for its loss, or None for a model without SSPCAB."""
        h, w = x.shape[-2:]
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")
        rec = logits = io = None
        if self.reconstructive is not None:
            if with_sspcab and self.config.sspcab:
                rec, io = self.reconstructive(x, with_sspcab=True)
            else:
                rec = self.reconstructive(x)
        if self.discriminative is not None:
            logits = self.discriminative(x if rec is None else torch.cat((rec, x), dim=1))
        if ph or pw:
            if rec is not None:
                rec = rec[..., ph // 2: ph // 2 + h, pw // 2: pw // 2 + w]
            if logits is not None:
                logits = logits[..., ph // 2: ph // 2 + h, pw // 2: pw // 2 + w]
        return (rec, logits, io) if with_sspcab else (rec, logits)

    def anomaly_maps(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(reconstruction or None, anomaly map (B, 1, H, W) in [0, 1]) for images in model channel order
        in [0, 1], at their size: softmax channel 1, or 1 - SSIM for a reconstructive-only model."""
        rec, logits = self(x)
        if logits is None:
            return rec, ssim_anomaly_map(rec.float(), x.float())
        return rec, torch.softmax(logits.float(), dim=1)[:, 1:]

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
        amp = self.score_config.precision == "bf16" and param.device.type == "cuda"
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
                rec, amap = self.anomaly_maps(self.to_model_order(x))
        finally:
            self.train(was_training)
        score = image_scores(amap, size)
        if rec is not None:
            rec = self.from_model_order(rec.float())
        if in_hw != (s, s):
            amap = F.interpolate(amap, size=in_hw, mode="bilinear", align_corners=False)
            if rec is not None:
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


__all__ = ["DraemModel", "Prediction", "build_model", "map_meaning", "mean_filter"]
