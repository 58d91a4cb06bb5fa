"""Validation without test data: what model selection and the search optimise.

The validation set is built from the held-out normal training images only: the normals
themselves (label 0) and, for every family of :mod:`draem_zoo.evaluation.anomalies` (training-like
``draem``, ``faint``, ``small``, ``cutpaste``, ``tone``, ``scratch``), one anomaly made on
each normal, graded from easy to hard. No test image is ever read here.

The score, for every mean-filter size s:

    val_score(s) = mean over families f of ( image AUROC_f(s) + pixel AP_f ) / 2

where image AUROC_f is taken on the normals against family f, pixel AP_f over the pixels of
the normals and family f. The hard families keep both terms below 1.0 for a good model, so
checkpoints, trials and filter sizes separate. s_f is the size with the highest score; only
when several sizes score exactly the same (every digit) is the tie broken towards the paper's
s_f = 21, and the result says so (``val_filter_size_tie``). ``val_saturation`` is the
fraction of (family, size) image AUROCs that are exactly 1.0: how much of the score has run
out of room to separate models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..model.scoring import image_scores_by_size
from ..synthesis.simulator import SynthesisConfig
from ..synthesis.textures import TextureBank
from .anomalies import FAMILIES, make_family
from .metrics import image_metrics, pixel_metrics

PAPER_FILTER_SIZE = 21


@dataclass
class ValidationSet:
    images: torch.Tensor  # (K, 3, S, S) uint8
    masks: torch.Tensor  # (K, 1, S, S) bool
    labels: torch.Tensor  # (K,) int64
    family: list[str]  # "normal" or the family name, per image

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return {f: self.family.count(f) for f in ("normal", *FAMILIES) if f in self.family}


def check_families(families: Sequence[str], key: str = "eval.validation_families") -> None:
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or len(set(families)) != len(families):
        raise ConfigError(f"{key}={list(families)}: give distinct families out of {', '.join(FAMILIES)}")


def make_validation_set(normals: torch.Tensor, synthesis: SynthesisConfig, textures: TextureBank, seed: int,
                        families: Sequence[str] = FAMILIES) -> ValidationSet:
    """The held-out normals and one anomaly of every family on each of them."""
    check_families(families)
    normals = normals.cpu()
    n, _, h, w = normals.shape
    images, masks, family = [normals], [torch.zeros(n, 1, h, w, dtype=torch.bool)], ["normal"] * n
    if n:
        bank = TextureBank(textures.images.cpu(), textures.source) if textures.images.device.type != "cpu" else textures
        for name in families:
            made = make_family(name, normals, synthesis, bank, seed)
            keep = made.masks.flatten(1).any(1)  # an anomaly that changed nothing is no anomaly
            images.append(made.images[keep])
            masks.append(made.masks[keep])
            family += [name] * int(keep.sum())
    labels = torch.tensor([f != "normal" for f in family], dtype=torch.long)
    return ValidationSet(torch.cat(images), torch.cat(masks), labels, family)


def choose_filter_size(score_by_size: dict[int, float]) -> tuple[int, list[int]]:
    """The size with the highest score, and the sizes tied with it (exactly equal scores).

    Ties go to the size nearest the paper's 21 (then the smaller one)."""
    top = max(score_by_size.values())
    tied = sorted(s for s, v in score_by_size.items() if v == top)
    return min(tied, key=lambda s: (abs(s - PAPER_FILTER_SIZE), s)), tied


def validation_metrics(maps: torch.Tensor, vset: ValidationSet, filter_sizes) -> dict:
    """Per-family metrics, the validation score at every filter size, the chosen size, saturation."""
    sizes = list(filter_sizes)
    fam = np.array(vset.family)
    y = vset.labels.numpy().astype(bool)
    scores = {s: v.numpy() for s, v in image_scores_by_size(maps, sizes).items()}
    all_masks, all_maps = vset.masks.numpy()[:, 0], maps.numpy()[:, 0]
    per_family: dict[str, dict] = {}
    for f in [f for f in FAMILIES if (fam == f).any()]:
        sel = (fam == "normal") | (fam == f)
        pix = pixel_metrics(all_masks[sel], all_maps[sel])
        per_family[f] = {"n": int((fam == f).sum()), "pixel_ap": pix["ap"], "pixel_auroc": pix["auroc"],
                         "image_auroc": {str(s): image_metrics(y[sel], scores[s][sel])["auroc"] for s in sizes}}
    score_by_size: dict[int, float] = {}
    for s in sizes:
        parts = [0.5 * ((m["image_auroc"][str(s)] or 0.0) + (m["pixel_ap"] or 0.0)) for m in per_family.values()]
        score_by_size[s] = float(np.mean(parts)) if parts else 0.0
    best, tied = choose_filter_size(score_by_size)
    cells = [v for m in per_family.values() for v in m["image_auroc"].values() if v is not None]
    return {"val_score": score_by_size[best], "val_filter_size": int(best),
            "val_filter_size_tie": tied if len(tied) > 1 else None,
            "val_score_by_filter_size": {str(k): v for k, v in score_by_size.items()},
            "val_saturation": (sum(v == 1.0 for v in cells) / len(cells)) if cells else None,
            "families": per_family, "n_images": len(vset), "n_normal": int((fam == "normal").sum())}
