"""Validation without test data: what model selection and the search optimise.

The validation set is built from the held-out normal training images only:

* the normals themselves (label 0);
* ``draem``: anomalies made from them by the training simulator with a fixed seed (no
  base rotation, an anomaly in every image);
* ``cutpaste`` (a harder check, a family training never uses): a rectangular patch cut
  from another normal image, rotated and recoloured a little, pasted at a random place.

The validation score is the mean, over the two families, of (image AUROC + pixel AP) / 2
on normals + that family; image AUROC is taken at the best mean-filter size, which is
reported with it. No test image is ever read here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from . import imageops as ops
from .metrics import image_metrics, pixel_metrics
from .scoring import image_scores_by_size
from .synthesis import AnomalySynthesizer, SynthesisConfig, make_generator
from .textures import TextureBank

FAMILIES = ("draem", "cutpaste")


@dataclass
class ValidationSet:
    images: torch.Tensor  # (K, 3, S, S) uint8
    masks: torch.Tensor  # (K, 1, S, S) bool
    labels: torch.Tensor  # (K,) int64
    family: list[str]  # "normal", "draem" or "cutpaste" per image

    def __len__(self) -> int:
        return len(self.labels)


def cutpaste(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a patch of another image (rotated, recoloured) into each image; (images, masks)."""
    n, _, h, w = images.shape
    out = images.clone()
    masks = torch.zeros(n, 1, h, w, dtype=torch.bool)
    for i in range(n):
        u = torch.rand(8, generator=generator).tolist()
        area = (0.02 + 0.1 * u[0]) * h * w
        aspect = float(np.exp(np.log(0.3) + u[1] * (np.log(3.3) - np.log(0.3))))
        ph = max(2, min(h - 1, int(round((area / aspect) ** 0.5))))
        pw = max(2, min(w - 1, int(round((area * aspect) ** 0.5))))
        src = (i + 1 + int(u[2] * max(1, n - 1))) % n if n > 1 else i
        sy, sx = int(u[3] * (h - ph)), int(u[4] * (w - pw))
        ty, tx = int(u[5] * (h - ph)), int(u[6] * (w - pw))
        patch = images[src: src + 1, :, sy: sy + ph, sx: sx + pw].float() / 255
        patch = ops.hue_saturation(patch, torch.tensor([u[7] * 0.2 - 0.1]), torch.tensor([0.1]))
        patch = ops.brightness(patch, torch.tensor([0.8 + 0.4 * u[0]]), torch.tensor([0.0]), torch.tensor([False]))
        out[i, :, ty: ty + ph, tx: tx + pw] = ops.to_uint8(patch)[0]
        masks[i, :, ty: ty + ph, tx: tx + pw] = True
    return out, masks


def make_validation_set(normals: torch.Tensor, synthesis: SynthesisConfig, textures: TextureBank, seed: int,
                        with_cutpaste: bool = True) -> ValidationSet:
    """Normals + one DRAEM-simulated and (optionally) one cut-paste anomaly per normal."""
    normals = normals.cpu()
    n, _, h, w = normals.shape
    images, masks, labels, family = [normals], [torch.zeros(n, 1, h, w, dtype=torch.bool)], [torch.zeros(n)], ["normal"] * n
    if n:
        cfg = dataclasses.replace(synthesis, anomaly_prob=1.0, base_rotation_prob=0.0)
        bank = TextureBank(textures.images.cpu(), textures.source) if textures.images.device.type != "cpu" else textures
        synth = AnomalySynthesizer(cfg, bank, make_generator(seed, 0), dense=False)
        batch = synth(normals)
        images.append(ops.to_uint8(batch.augmented))
        masks.append(batch.mask.bool())
        labels.append(batch.has_anomaly)
        family += ["draem"] * n
        if with_cutpaste:
            cp, cpm = cutpaste(normals, torch.Generator().manual_seed(seed + 1))
            images.append(cp)
            masks.append(cpm)
            labels.append(torch.ones(n))
            family += ["cutpaste"] * n
    return ValidationSet(torch.cat(images), torch.cat(masks), torch.cat(labels).long(), family)


def validation_metrics(maps: torch.Tensor, vset: ValidationSet, filter_sizes) -> dict:
    """Per-family metrics, the validation score at every filter size, and the best size."""
    fam = np.array(vset.family)
    y = vset.labels.numpy().astype(bool)
    scores = {s: v.numpy() for s, v in image_scores_by_size(maps, list(filter_sizes)).items()}
    families = [f for f in FAMILIES if (fam == f).any()]
    per_family: dict[str, dict] = {}
    score_by_size: dict[int, float] = {}
    for f in families:
        sel = (fam == "normal") | (fam == f)
        pix = pixel_metrics(vset.masks.numpy()[sel, 0], maps.numpy()[sel, 0])
        per_family[f] = {"pixel_ap": pix["ap"], "pixel_auroc": pix["auroc"], "image_auroc": {}}
        for s in filter_sizes:
            per_family[f]["image_auroc"][str(s)] = image_metrics(y[sel], scores[s][sel])["auroc"]
    for s in filter_sizes:
        parts = []
        for f in families:
            ia, pa = per_family[f]["image_auroc"][str(s)], per_family[f]["pixel_ap"]
            parts.append(0.5 * ((ia or 0.0) + (pa or 0.0)))
        score_by_size[s] = float(np.mean(parts)) if parts else 0.0
    # best size; ties go to the size nearest the paper's 21
    best = max(filter_sizes, key=lambda s: (round(score_by_size[s], 9), -abs(s - 21)))
    return {"val_score": score_by_size[best], "val_filter_size": int(best),
            "val_score_by_filter_size": {str(k): v for k, v in score_by_size.items()},
            "families": per_family, "n_images": len(vset), "n_normal": int((fam == "normal").sum())}
