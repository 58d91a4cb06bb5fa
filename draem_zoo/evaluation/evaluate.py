"""Evaluation: anomaly maps computed once, every mean-filter size scored from them.

``compute_maps`` runs the model over uint8 images in batches; ``score_maps`` turns maps,
labels and masks into the metrics: image AUROC / AP / F1-max for every filter size in
``filter_sizes`` (the filter is not trained, so s_f costs no inference), pixel AUROC /
AP / F1-max and AUPRO (independent of s_f), and per-defect-type image AUROC. ``evaluate_model``
checks the headline s_f against the model's map size first, and says in ``notes`` which metrics
could not be computed and why (no anomalous or no normal test images, only empty masks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError
from ..model.draem import DraemModel
from ..model.scoring import check_filter_size, image_scores_by_size, largest_filter
from .metrics import aupro, image_metrics, pixel_metrics
from .validation import check_families


@dataclass
class EvalConfig:
    """How models are scored and selected.

    filter_sizes: mean-filter sizes scored from the same maps (s_f is chosen on validation).
    target_fpr: false-positive rate on validation normals that sets the image threshold.
    select_on: "validation" (default); "test" picks s_f on test images (the export says so).
    validation_families: the simulated-anomaly families of the validation set
    (see :mod:`draem_zoo.evaluation.anomalies`); validation_seed: the seed they are drawn from;
    validation_per_normal: anomalies of each family made on each held-out normal (more of them,
    less noise: synthetic anomalies cost compute, not data); validation_source: the textures that
    fill the validation anomalies: "auto" (the run's anomaly source), "procedural" (200 procedural
    textures, seed 0) or a folder; pin it when a search varies the training source, so that every
    trial is scored on the same validation set. validation_max_per_family: at most this many anomalies
    of a family (0: no cap): a category with many held-out normals gets fewer per normal (at least
    one), so that validating costs in proportion (MVTec AD's categories, at most 39 held-out normals,
    stay at ``validation_per_normal``; 3,000 training images: 300 normals, one each).
    """

    filter_sizes: tuple[int, ...] = (1, 5, 11, 21, 31, 41)
    batch_size: int = 16
    aupro_fpr_limit: float = 0.3
    target_fpr: float = 0.01
    select_on: Literal["validation", "test"] = "validation"
    validation_families: tuple[str, ...] = ("draem", "faint", "small", "cutpaste", "tone", "scratch")
    validation_seed: int = 20240
    validation_per_normal: int = 3
    validation_source: str = "auto"
    validation_max_per_family: int = 300

    def per_normal(self, n_normals: int) -> int:
        """Anomalies of each family made on each of ``n_normals`` held-out normals (the cap applied)."""
        cap = self.validation_max_per_family
        if cap <= 0 or n_normals * self.validation_per_normal <= cap:
            return self.validation_per_normal
        return max(1, cap // max(1, n_normals))

    def validate(self) -> None:
        if not self.filter_sizes:
            raise ConfigError("eval.filter_sizes: give at least one size, e.g. 1,5,11,21,31,41")
        for s in self.filter_sizes:
            check_filter_size(s, "eval.filter_sizes")
        if not 0.0 < self.target_fpr < 1.0:
            raise ConfigError(f"eval.target_fpr={self.target_fpr}: must be in (0, 1)")
        if self.batch_size < 1:
            raise ConfigError("eval.batch_size must be >= 1")
        check_families(self.validation_families)
        if self.validation_per_normal < 1:
            raise ConfigError("eval.validation_per_normal must be >= 1")
        if self.validation_max_per_family < 0:
            raise ConfigError("eval.validation_max_per_family must be >= 0 (0: no cap)")


def compute_maps(model: DraemModel, images: torch.Tensor, batch_size: int = 16,
                 progress: Callable[[int], None] | None = None, on_device: bool = False,
                 autocast: torch.dtype | None = None) -> torch.Tensor:
    """(N, 1, S, S) float32 anomaly maps for (N, 3, S, S) uint8 RGB images: on the CPU, or
    (``on_device``) where the model is, for validation to score them there; ``autocast`` runs the
    networks in that dtype (the training's bf16 on GPUs; None: the model's own ``score.precision``).
    On a GPU the last, shorter chunk is padded to the batch shape (repeats of its last image; the
    model in eval mode treats images independently), so cuDNN's autotuner meets one shape only."""
    device = next(model.parameters()).device
    pad = device.type == "cuda" and len(images) > batch_size
    out: torch.Tensor | None = None  # filled in place: no list of chunks beside a concatenated copy
    for start in range(0, len(images), batch_size):
        chunk = images[start: start + batch_size].to(device, non_blocking=True).float().div_(255.0)
        n = len(chunk)
        if pad and n < batch_size:
            chunk = torch.cat([chunk, chunk[-1:].expand(batch_size - n, *chunk.shape[1:])])
        with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            amap = model.predict(chunk, filter_size=1).anomaly_map[:n]
        if out is None:
            out = torch.empty((len(images), *amap.shape[1:]), dtype=torch.float32,
                              device=device if on_device else "cpu")
        out[start: start + n].copy_(amap)
        if progress:
            progress(n)
    if out is None:
        s = model.config.image_size
        return torch.zeros(0, 1, s, s, device=device if on_device else "cpu")
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def score_maps(maps: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None, filter_sizes, selected: int,
               defects: list[str] | None = None, aupro_limit: float = 0.3, pixel: bool = True) -> dict:
    """Metrics of one split. ``selected`` is the s_f whose image metrics are the headline."""
    y = labels.numpy().astype(bool)
    sizes = sorted(set(filter_sizes) | {selected})
    scores = {s: v.numpy() for s, v in image_scores_by_size(maps, sizes).items()}
    by_size = {}
    for s in sizes:
        m = image_metrics(y, scores[s])
        by_size[str(s)] = {"image_auroc": _r(m["auroc"]), "image_ap": _r(m["ap"]), "image_f1_max": _r(m["f1_max"])}
    head = by_size[str(selected)]
    out = {"n_images": int(len(y)), "n_anomalous": int(y.sum()), "filter_size": selected, **head}
    if pixel and masks is not None:
        mk = masks.numpy().astype(bool)[:, 0]
        mp = maps.numpy()[:, 0]
        p = pixel_metrics(mk, mp)
        out.update({"pixel_auroc": _r(p["auroc"]), "pixel_ap": _r(p["ap"]), "pixel_f1_max": _r(p["f1_max"]),
                    "aupro": _r(aupro(mk, mp, aupro_limit))})
    elif pixel:  # no masks (image labels only): the keys are there, without a value
        out.update(dict.fromkeys(("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro")))
    if defects is not None:
        per = {}
        normal = ~y
        for d in sorted(set(defects)):
            if d == "good":
                continue
            sel = np.array([x == d for x in defects]) | normal
            m = image_metrics(y[sel], scores[selected][sel])
            per[d] = {"n": int(sum(x == d for x in defects)), "image_auroc": _r(m["auroc"])}
        out["per_defect"] = per
    out["by_filter_size"] = by_size
    return out


def metric_notes(labels: torch.Tensor, masks: torch.Tensor | None, split: str = "test") -> list[str]:
    """One line per group of metrics that cannot be computed on this split, saying why (they come out
    as None: AUROC and AP need both classes)."""
    y = labels.numpy().astype(bool) if isinstance(labels, torch.Tensor) else np.asarray(labels, dtype=bool)
    n, n_anom = int(len(y)), int(y.sum())
    if not n:
        return [f"no metric: the {split} split has no images"]
    notes = []
    if n_anom == 0:
        notes.append(f"image AUROC/AP/F1-max: the {split} split has no anomalous images (all {n} are under "
                     f"{split}/good); add anomalous test images (MVTec AD layout: {split}/<defect>/ folders, with "
                     "ground_truth/<defect>/ masks for the pixel metrics)")
    elif n_anom == n:
        notes.append(f"image AUROC/AP/F1-max and per-defect AUROC: the {split} split has no normal images (all {n} "
                     f"are anomalous; {split}/good/ is empty or missing)")
    if masks is not None:
        mk = masks.bool()
        if n_anom == 0:
            notes.append(f"pixel AUROC/AP/F1-max/AUPRO: no ground-truth masks (there are no anomalous {split} images)")
        elif not bool(mk.any()):
            size = "x".join(str(d) for d in mk.shape[-2:][::-1])
            notes.append(f"pixel AUROC/AP/F1-max/AUPRO: every ground-truth mask is empty (no anomalous pixel in the "
                         f"{n_anom} masks of the anomalous images at the {size} evaluation size); masks are non-zero "
                         "where the defect is")
        elif bool(mk.all()):
            notes.append("pixel AUROC/AP/F1-max/AUPRO: every pixel of every test image is marked anomalous in the masks "
                         "(no normal pixels to compare with)")
    return notes


def evaluate_model(model: DraemModel, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor,
                   defects: list[str], cfg: EvalConfig, filter_size: int | None = None,
                   progress: bool = False, split: str = "test", pixel_note: str | None = None) -> dict:
    """Maps once, then every metric; headline image metrics at ``filter_size`` (the ``--filter-size``
    given, else the model's s_f), which must fit the model's maps (a ConfigError otherwise, before any
    inference). Sizes of ``cfg.filter_sizes`` larger than the maps are left out of ``by_filter_size``.
    ``notes`` lists the metrics that could not be computed, and why (``masks`` None: the test images are
    labelled per image only, ``pixel_note`` says so)."""
    side = model.config.image_size
    if filter_size is not None:
        selected = check_filter_size(filter_size, "--filter-size", side)
    else:
        try:
            selected = check_filter_size(model.score_config.filter_size, "score.filter_size", side)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; this is the model's own s_f (its config.json): evaluate it at another "
                              "with --filter-size N") from None
    sizes = tuple(s for s in cfg.filter_sizes if s <= largest_filter(side))
    bar = None
    if progress:
        bar = tqdm(total=len(images), desc=f"evaluating ({split})", unit="img", leave=False)
    try:
        maps = compute_maps(model, images, cfg.batch_size, bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    out = {"split": split, **score_maps(maps, labels, masks, sizes, selected, defects, cfg.aupro_fpr_limit),
           "notes": metric_notes(labels, masks, split) + ([pixel_note] if pixel_note and masks is None else [])}
    if pixel_note and masks is None:
        out["pixel_note"] = pixel_note
    return out
