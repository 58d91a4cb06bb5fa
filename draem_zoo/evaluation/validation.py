"""Validation without test data: what model selection and the search optimise.

The validation set is built from the held-out normal training images only: the normals
themselves (label 0) and, for every family of :mod:`draem_zoo.evaluation.anomalies` (training-like
``draem``, ``faint``, ``small``, ``cutpaste``, ``tone``, ``scratch``), ``per_normal`` anomalies made
on each normal, graded from easy to hard. No test image is ever read here. It is made with fixed
reference simulator settings (the paper's defaults) and a fixed seed, whatever a trial searches, so
every trial of a category is scored on the same set; its ``fingerprint`` (sha256 over images,
masks, families and sources) is recorded, and runs with different fingerprints are not ranked
against each other.

The score, for every mean-filter size s:

    val_score(s) = mean over families f of ( image AUROC_f(s) + pixel AP_f ) / 2

where image AUROC_f is taken on the normals against family f, pixel AP_f over the pixels of the
normals and family f. The hard families keep both terms below 1.0 for a good model. Everything is
computed where the maps are (the accelerator during training): the mean filters, the image
scores, and the pixel APs from per-image histograms (:mod:`.pixelstats`). A bootstrap over the
normals (:mod:`.bootstrap`) gives the score's standard error, and s_f stays at the paper's 21
unless another size is better beyond that noise. ``val_saturation`` is the fraction of (family,
size) image AUROCs that are exactly 1.0: how much of the score has run out of room.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, TrainingDiverged
from ..model.scoring import image_scores_by_size, largest_filter
from ..synthesis.config import SynthesisConfig
from ..synthesis.textures import TextureBank
from . import bootstrap as bs
from . import pixelstats as px
from .anomalies import FAMILIES, make_family


@dataclass
class ValidationSet:
    images: torch.Tensor  # (K, 3, S, S) uint8
    masks: torch.Tensor  # (K, 1, S, S) bool
    labels: torch.Tensor  # (K,) int64
    family: list[str]  # "normal" or the family name, per image
    source: torch.Tensor | None = None  # (K,) the held-out normal each image is (or was made from)
    fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return {f: self.family.count(f) for f in ("normal", *FAMILIES) if f in self.family}

    def sources(self) -> np.ndarray:
        """The cluster (held-out normal) of every image; without a record, anomalies are dealt to
        the normals in turn."""
        if self.source is not None:
            return self.source.numpy()
        fam = np.array(self.family)
        out = np.zeros(len(fam), np.int64)
        normals = np.flatnonzero(fam == "normal")
        out[normals] = np.arange(len(normals))
        for f in set(self.family) - {"normal"}:
            idx = np.flatnonzero(fam == f)
            out[idx] = np.arange(len(idx)) % max(1, len(normals))
        return out


def check_families(families: Sequence[str], key: str = "eval.validation_families") -> None:
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or len(set(families)) != len(families):
        raise ConfigError(f"{key}={list(families)}: give distinct families out of {', '.join(FAMILIES)}")


# the synthesis keys that say which textures fill the anomalies (the texture bank), not how strongly
TEXTURE_KEYS = ("anomaly_source", "max_textures", "procedural_textures", "procedural_seed")


def reference_synthesis(synthesis: SynthesisConfig) -> SynthesisConfig:
    """The simulator settings every validation set is made with: the paper's defaults, with the run's
    texture source (which textures fill the anomalies, not how strongly a trial simulates them)."""
    return SynthesisConfig(**{k: getattr(synthesis, k) for k in TEXTURE_KEYS})


def fingerprint_of(images: torch.Tensor, masks: torch.Tensor, family: list[str], source: torch.Tensor) -> str:
    h = hashlib.sha256(b"draem-zoo-validation/2")
    for t in (images, masks, source):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    h.update("\n".join(family).encode())
    return h.hexdigest()


def make_validation_set(normals: torch.Tensor, synthesis: SynthesisConfig, textures: TextureBank, seed: int,
                        families: Sequence[str] = FAMILIES, per_normal: int = 1,
                        progress: Callable[[int], None] | None = None) -> ValidationSet:
    """The held-out normals and ``per_normal`` anomalies of every family on each of them (``progress``
    is called with the number of anomalies made, family by family)."""
    check_families(families)
    normals = normals.cpu()
    n, _, h, w = normals.shape
    images, masks, family = [normals], [torch.zeros(n, 1, h, w, dtype=torch.bool)], ["normal"] * n
    source = [torch.arange(n)]
    if n:
        bank = TextureBank(textures.images.cpu(), textures.source) if textures.images.device.type != "cpu" else textures
        for name in families:
            for r in range(per_normal):
                made = make_family(name, normals, synthesis, bank, seed + 7919 * r)
                keep = made.masks.flatten(1).any(1)  # an anomaly that changed nothing is no anomaly
                images.append(made.images[keep])
                masks.append(made.masks[keep])
                source.append(torch.arange(n)[keep])
                family += [name] * int(keep.sum())
                if progress:
                    progress(n)
    labels = torch.tensor([f != "normal" for f in family], dtype=torch.long)
    imgs, msks, src = torch.cat(images), torch.cat(masks), torch.cat(source)
    return ValidationSet(imgs, msks, labels, family, src, fingerprint_of(imgs, msks, family, src))


def _preferred(by_size: dict[int, float]) -> int:
    top = max(by_size.values())
    return bs.baseline_size([s for s, v in by_size.items() if v == top])


def validation_metrics(maps: torch.Tensor, vset: ValidationSet, filter_sizes, n_boot: int = bs.N_BOOT) -> dict:
    """Per-family metrics, the score at every filter size with its bootstrap spread, the chosen s_f.

    ``maps`` (K, 1, S, S) may be on any device; the filters and histograms run there, and only
    per-image scores and histograms come back. Sizes larger than the maps are left out (at 32 px, 41)."""
    top = largest_filter(tuple(maps.shape[-2:]))
    sizes = sorted(set(int(s) for s in filter_sizes if int(s) <= top)) or [top]
    if not bool(torch.isfinite(maps).all()):
        raise TrainingDiverged("the model's anomaly maps on the validation set contain NaN or inf: the model has "
                               "diverged (lower train.lr) or its weights are damaged")
    fam = np.array(vset.family)
    src = vset.sources()
    with torch.no_grad():
        scores = {s: v.float().cpu().numpy() for s, v in image_scores_by_size(maps, sizes).items()}
        hist = px.histograms(maps, vset.masks).cpu().numpy()  # (K, 2, BINS)
    normals = np.flatnonzero(fam == "normal")
    n = len(normals)
    w = bs.weights(n, n_boot)  # (B, n) resampling counts of the held-out normals
    norm_hist = hist[normals].reshape(n, -1)
    per_family: dict[str, dict] = {}
    point: dict[int, list[float]] = {s: [] for s in sizes}
    reps: dict[int, list[np.ndarray]] = {s: [] for s in sizes}
    for f in [f for f in FAMILIES if (fam == f).any()]:
        idx = np.flatnonzero(fam == f)
        owner = np.clip(src[idx], 0, max(0, n - 1))  # the normal each anomaly was made on
        # pixel AP: every normal's histogram plus the histograms of family f made on it
        fam_hist = np.zeros_like(norm_hist)
        np.add.at(fam_hist, owner, hist[idx].reshape(len(idx), -1))
        both = (norm_hist + fam_hist).reshape(n, 2, px.BINS)
        ap = px.average_precision(both.sum(0))
        ap_reps = (px.average_precision((w @ both.reshape(n, -1)).reshape(-1, 2, px.BINS)) if n
                   else np.full(n_boot, np.nan))  # the resampled sets' histograms: one BLAS product
        wa = w[:, owner] if n else np.zeros((n_boot, len(idx)))
        aurocs, aurocs_reps = {}, {}
        for s in sizes:
            kernel = bs.pairwise(scores[s][idx], scores[s][normals])
            aurocs[s] = bs.auroc(kernel) if n and len(idx) else None
            aurocs_reps[s] = bs.auroc(kernel, wa, w) if n and len(idx) else np.full(n_boot, np.nan)
            point[s].append(0.5 * ((aurocs[s] or 0.0) + (ap or 0.0)))
            reps[s].append(0.5 * (np.nan_to_num(aurocs_reps[s]) + np.nan_to_num(ap_reps)))
        valid = {s: v for s, v in aurocs.items() if v is not None}
        per_family[f] = {"n": int(len(idx)), "pixel_ap": ap,
                         "image_auroc": {str(s): aurocs[s] for s in sizes},
                         "preferred_filter_size": _preferred(valid) if valid else None}
    score_by_size = {s: float(np.mean(point[s])) if point[s] else 0.0 for s in sizes}
    rep_by_size = {s: np.mean(reps[s], 0) if reps[s] else np.full(n_boot, np.nan) for s in sizes}
    best, info = bs.choose_filter_size(score_by_size, rep_by_size)
    cells = [v for m in per_family.values() for v in m["image_auroc"].values() if v is not None]
    return {"val_score": score_by_size[best], "val_score_se": bs.standard_error(rep_by_size[best]),
            "val_filter_size": int(best), "val_filter_size_tie": info["tied"],
            "val_filter_size_choice": {k: v for k, v in info.items() if k != "tied"},
            "val_score_by_filter_size": {str(k): v for k, v in score_by_size.items()},
            "val_saturation": (sum(v == 1.0 for v in cells) / len(cells)) if cells else None,
            "families": per_family, "n_images": len(vset), "n_normal": n,
            "val_fingerprint": vset.fingerprint, "bootstrap": {"resamples": n_boot, "over": "held-out normals"},
            "replicates": [round(float(x), 6) for x in rep_by_size[best]]}
