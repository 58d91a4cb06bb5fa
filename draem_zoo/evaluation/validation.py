"""Validation without test data: what model selection and the search optimise.

The validation set is built from the held-out normal training images only: the normals
themselves (label 0) and, for every family of :mod:`draem_zoo.evaluation.anomalies` (training-like
``draem``, ``faint``, ``small``, ``cutpaste``, ``tone``, ``scratch``), ``per_normal`` anomalies made
on each normal, each on one of four rungs of a difficulty ladder (easy to barely visible). No test
image is ever read here. It is made with fixed reference simulator settings (the paper's defaults)
and a fixed seed, whatever a trial searches, so every trial of a category is scored on the same
set; its ``fingerprint`` (sha256 over images, masks, families, rungs and sources) is recorded, and
runs with different fingerprints are not ranked against each other.

The score, for every mean-filter size s, weighs the rungs equally (no rung dominates; a good model
that finds every easy anomaly is ranked by the hard ones):

    val_score(s)   = mean over rungs L of ( mean over families f of cell(f, L, s) )
    cell(f, L, s)  = ( image(f, L, s) + pixel AP(f, L) ) / 2
    image(f, L, s) = ( image AUROC + image margin ) / 2

on the normals against the anomalies of family f on rung L. The image margin is
(1 + mean anomaly score - mean normal score) / 2 on the maps' probability scale: where every anomaly
already outscores every normal (AUROC 1.0, nothing left to rank), it still moves as the two groups
separate further. Pixel AP is over the pixels of the normals and of those anomalies. Everything is
computed where the maps are (the accelerator during training): the mean filters, the image scores,
and the pixel APs from per-image histograms (:mod:`.pixelstats`).

A bootstrap (:mod:`.bootstrap`) gives the score's standard error over both draws a validation set
rests on: the held-out normals (each with the anomalies made on it) and, within them, the synthetic
anomalies (Poisson weights). s_f stays at the paper's 21 unless another size is better beyond that
noise. ``val_saturation`` is the fraction of (family, size) image AUROCs, over all rungs, that are
exactly 1.0: how much of the ranking has run out of room; ``levels`` gives the score per rung.
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
from .anomalies import FAMILIES, LEVELS, level_of, make_family


@dataclass
class ValidationSet:
    images: torch.Tensor  # (K, 3, S, S) uint8
    masks: torch.Tensor  # (K, 1, S, S) bool
    labels: torch.Tensor  # (K,) int64
    family: list[str]  # "normal" or the family name, per image
    source: torch.Tensor | None = None  # (K,) the held-out normal each image is (or was made from)
    fingerprint: str | None = None
    level: torch.Tensor | None = None  # (K,) the rung of the difficulty ladder (-1: a normal)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return {f: self.family.count(f) for f in ("normal", *FAMILIES) if f in self.family}

    def levels(self) -> np.ndarray:
        """The rung of every image (-1 for the normals); without a record, every anomaly is on rung 0."""
        if self.level is not None:
            return self.level.numpy()
        return np.where(np.array(self.family) == "normal", -1, 0)

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


def fingerprint_of(images: torch.Tensor, masks: torch.Tensor, family: list[str], source: torch.Tensor,
                   level: torch.Tensor) -> str:
    h = hashlib.sha256(b"draem-zoo-validation/3")
    for t in (images, masks, source, level):
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
    source, level = [torch.arange(n)], [torch.full((n,), -1, dtype=torch.long)]
    if n:
        bank = TextureBank(textures.images.cpu(), textures.source) if textures.images.device.type != "cpu" else textures
        for name in families:
            for r in range(per_normal):
                made = make_family(name, normals, synthesis, bank, seed + 7919 * r)
                keep = made.masks.flatten(1).any(1)  # an anomaly that changed nothing is no anomaly
                images.append(made.images[keep])
                masks.append(made.masks[keep])
                source.append(torch.arange(n)[keep])
                level.append(torch.from_numpy(level_of(made.difficulty))[keep])
                family += [name] * int(keep.sum())
                if progress:
                    progress(n)
    labels = torch.tensor([f != "normal" for f in family], dtype=torch.long)
    imgs, msks, src, lvl = torch.cat(images), torch.cat(masks), torch.cat(source), torch.cat(level)
    return ValidationSet(imgs, msks, labels, family, src, fingerprint_of(imgs, msks, family, src, lvl), lvl)


def _preferred(by_size: dict[int, float]) -> int:
    top = max(by_size.values())
    return bs.baseline_size([s for s, v in by_size.items() if v == top])


def _mean(xs: list) -> np.ndarray | float:
    return np.mean(xs, 0) if len(xs) else np.nan


def validation_metrics(maps: torch.Tensor, vset: ValidationSet, filter_sizes, n_boot: int = bs.N_BOOT) -> dict:
    """Per-family and per-rung metrics, the score at every filter size with its bootstrap spread, the
    chosen s_f.

    ``maps`` (K, 1, S, S) may be on any device; the filters and histograms run there, and only
    per-image scores and histograms come back. Sizes larger than the maps are left out (at 32 px, 41)."""
    top = largest_filter(tuple(maps.shape[-2:]))
    sizes = sorted(set(int(s) for s in filter_sizes if int(s) <= top)) or [top]
    if not bool(torch.isfinite(maps).all()):
        raise TrainingDiverged("the model's anomaly maps on the validation set contain NaN or inf: the model has "
                               "diverged (lower train.lr) or its weights are damaged")
    fam, lvl, src = np.array(vset.family), vset.levels(), vset.sources()
    with torch.no_grad():
        scores = {s: v.float().cpu().numpy() for s, v in image_scores_by_size(maps, sizes).items()}
        hist = px.histograms(maps, vset.masks).cpu().numpy().astype(np.float64)  # (K, 2, BINS)
    normals = np.flatnonzero(fam == "normal")
    n = len(normals)
    w = bs.weights(n, n_boot)  # (B, n) resampling counts of the held-out normals
    u = bs.anomaly_weights(len(fam), n_boot)  # (B, K) Poisson weights of the anomalies within them
    norm_hist = hist[normals].reshape(n, -1)
    norm_rep = w @ norm_hist if n else None  # (B, 2 * BINS) the resampled normals' pixels
    # cells[f][L]: per size, the point value and replicates of the image AUROC, margin and the cell
    cells: dict[str, dict[int, dict]] = {}
    per_family: dict[str, dict] = {}
    for f in [f for f in FAMILIES if (fam == f).any()]:
        pooled = np.flatnonzero(fam == f)
        cells[f] = {}
        for level in sorted(set(lvl[pooled].tolist())):
            idx = pooled[lvl[pooled] == level]
            owner = np.clip(src[idx], 0, max(0, n - 1))  # the normal each anomaly was made on
            wa = w[:, owner] * u[:, idx] if n else np.zeros((n_boot, len(idx)))
            both = norm_hist.sum(0) + hist[idx].reshape(len(idx), -1).sum(0)
            ap = px.average_precision(both.reshape(2, px.BINS))
            ap_reps = (px.average_precision((norm_rep + wa @ hist[idx].reshape(len(idx), -1)).reshape(-1, 2, px.BINS))
                       if n else np.full(n_boot, np.nan))
            c: dict = {"n": int(len(idx)), "pixel_ap": ap, "ap_reps": np.nan_to_num(ap_reps), "by": {}}
            for s in sizes:
                a, z = scores[s][idx], scores[s][normals]
                kernel, margin = bs.pairwise(a, z), 0.5 * (1.0 + (a[:, None] - z[None, :]))
                auroc = bs.auroc(kernel) if n else None
                mar = bs.auroc(margin) if n else None  # a weighted mean over pairs, as AUROC is
                reps = ((bs.auroc(kernel, wa, w), bs.auroc(margin, wa, w)) if n
                        else (np.full(n_boot, np.nan),) * 2)
                image = 0.5 * ((auroc or 0.0) + (mar or 0.0))
                image_reps = 0.5 * (np.nan_to_num(reps[0]) + np.nan_to_num(reps[1]))
                c["by"][s] = {"auroc": auroc, "margin": mar, "auroc_reps": np.nan_to_num(reps[0]),
                              "margin_reps": np.nan_to_num(reps[1]), "cell": 0.5 * (image + (ap or 0.0)),
                              "cell_reps": 0.5 * (image_reps + c["ap_reps"])}
            cells[f][level] = c
        aurocs = {s: bs.auroc(bs.pairwise(scores[s][pooled], scores[s][normals])) if n else None for s in sizes}
        own = {s: float(np.mean([c["by"][s]["cell"] for c in cells[f].values()])) for s in sizes} if n else {}
        per_family[f] = {
            "n": int(len(pooled)), "pixel_ap": float(np.mean([c["pixel_ap"] or 0.0 for c in cells[f].values()])),
            "image_auroc": {str(s): aurocs[s] for s in sizes},
            "image_margin": {str(s): float(np.mean([c["by"][s]["margin"] or 0.0 for c in cells[f].values()]))
                             for s in sizes},
            "levels": {str(L): {"n": c["n"], "pixel_ap": c["pixel_ap"],
                                "image_auroc": {str(s): c["by"][s]["auroc"] for s in sizes},
                                "image_margin": {str(s): c["by"][s]["margin"] for s in sizes}}
                       for L, c in cells[f].items()},
            "score": {str(s): v for s, v in own.items()},
            "preferred_filter_size": _preferred(own) if own else None}
    rungs = sorted({L for f in cells for L in cells[f]})

    def rung_mean(s: int, key: str) -> tuple[dict[int, float], dict[int, np.ndarray]]:
        """Per rung, the mean over families of ``key`` at size s (point value and replicates)."""
        point = {L: float(np.mean([cells[f][L]["by"][s][key] or 0.0 for f in cells if L in cells[f]])) for L in rungs}
        reps = {L: _mean([cells[f][L]["by"][s][key + "_reps"] for f in cells if L in cells[f]]) for L in rungs}
        return point, reps

    score_by_size, rep_by_size = {}, {}
    for s in sizes:
        point, reps = rung_mean(s, "cell")
        score_by_size[s] = float(np.mean(list(point.values()))) if point else 0.0
        rep_by_size[s] = _mean(list(reps.values())) if reps else np.full(n_boot, np.nan)
    best, info = bs.choose_filter_size(score_by_size, rep_by_size)
    by_rung, _ = rung_mean(best, "cell")
    image_se = {}
    for key in ("auroc", "margin"):
        _, reps = rung_mean(best, key)
        image_se[key] = bs.standard_error(_mean(list(reps.values()))) if reps else None
    levels = {str(L): {"n": sum(cells[f][L]["n"] for f in cells if L in cells[f]), "score": by_rung[L],
                       "image_auroc": float(np.mean([cells[f][L]["by"][best]["auroc"] or 0.0 for f in cells
                                                     if L in cells[f]])),
                       "pixel_ap": float(np.mean([cells[f][L]["pixel_ap"] or 0.0 for f in cells if L in cells[f]]))}
              for L in rungs}
    cells_1 = [v for m in per_family.values() for v in m["image_auroc"].values() if v is not None]
    return {"val_score": score_by_size[best], "val_score_se": bs.standard_error(rep_by_size[best]),
            "val_filter_size": int(best), "val_filter_size_tie": info["tied"],
            "val_filter_size_choice": {k: v for k, v in info.items() if k != "tied"},
            "val_score_by_filter_size": {str(k): v for k, v in score_by_size.items()},
            "val_saturation": (sum(v == 1.0 for v in cells_1) / len(cells_1)) if cells_1 else None,
            "levels": levels, "image_se": image_se,
            "families": per_family, "n_images": len(vset), "n_normal": n, "n_levels": LEVELS,
            "val_fingerprint": vset.fingerprint,
            "bootstrap": {"resamples": n_boot, "over": "held-out normals with their anomalies, and the anomalies "
                                                      "within them"},
            "replicates": [round(float(x), 6) for x in rep_by_size[best]]}
