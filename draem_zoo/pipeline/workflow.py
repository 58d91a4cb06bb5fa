"""One category, end to end: what ``draem-zoo train`` and every search trial run.

check and decode the data -> textures -> model -> synthetic validation set -> train
(checkpoints, best-on-validation) -> choose s_f and thresholds on validation -> test
metrics (reported, not used for selection unless asked) -> model directory.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..compiling import Compiled
from ..config import to_dict, validate_all
from ..data import load_category
from ..errors import DraemZooError
from ..evaluation.bootstrap import beats
from ..evaluation.evaluate import compute_maps, score_maps
from ..evaluation.thresholds import compute_thresholds
from ..evaluation.validation import TEXTURE_KEYS, make_validation_set, reference_synthesis, validation_metrics
from ..files import OutputLock, atomic_write_text
from ..model.draem import DraemModel, build_model
from ..model.modeldir import parameters_digest, save_model_dir
from ..model.scoring import ScoreConfig
from ..synthesis.config import SynthesisConfig
from ..synthesis.simulator import AnomalySynthesizer, load_textures, make_generator
from ..train.checkpoint import find_checkpoint, load_checkpoint
from ..train.trainer import Trainer, resolve_device
from .runconfig import RunConfig

RUN_CONFIG = "run_config.json"


@dataclasses.dataclass
class Distributed:
    """How this process takes part in data-parallel training (set by the Ray Train worker)."""

    rank: int = 0
    world_size: int = 1
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None
    lr_scale: float = 1.0
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def changed_settings(out: Path, run: RunConfig) -> list[str]:
    """Config keys (other than where it runs: the device, synthesis workers) where the run saved in ``out`` differs from ``run``."""
    saved = out / RUN_CONFIG
    if not saved.is_file():
        return []
    before, now, default = json.loads(saved.read_text()), run.to_dict(), RunConfig().to_dict()
    # a key the saved run predates (data.dataset, say) had its default then
    return sorted(f"{sec}.{k}" for sec in now for k in now[sec]
                  if before.get(sec, {}).get(k, default.get(sec, {}).get(k)) != now[sec][k]
                  and k not in ("device", "synthesis_workers"))


def _check_resume(out: Path, run: RunConfig, resume: bool) -> None:
    has_ckpt = find_checkpoint(out / "checkpoints" / "last") is not None
    if has_ckpt and not resume:
        raise DraemZooError(f"{out}: holds a checkpoint of an earlier run; pass --resume to continue it, or "
                            "choose another --out")
    if resume:
        diff = changed_settings(out, run)
        if diff:
            raise DraemZooError(f"{out}: --resume with different settings ({', '.join(diff[:6])}); resume with "
                                "the same flags, or train into another --out")


def train_category(run: RunConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
                   callbacks: list[Callable[[dict], None]] | None = None,
                   dist: Distributed | None = None, evaluate_test: bool = True,
                   analyze_test: bool | str = False) -> dict[str, Any]:
    """Train one model on one category and write its model directory to ``out_dir``.

    ``analyze_test`` (``draem-zoo reproduce``'s analysis of selection; never a search's) also scores the
    test split's image AUROC at every s_f at each validation, into the history's ``analysis``
    (``"full"``: pixel AP, AUPRO too, at the s_f validation chose: ``scripts/time_to_quality.py``);
    selection never reads it."""
    validate_all(run)
    dist = dist or Distributed()
    out = Path(out_dir)
    device = dist.device or resolve_device(run.train.device)
    if not dist.is_main:
        return _train(run, out, device, resume, progress, callbacks, dist, evaluate_test, analyze_test)
    if out.exists() and not out.is_dir():
        raise DraemZooError(f"--out {out}: is a file, not a folder; choose another --out")
    # one writer per model folder: a second `train --resume` into it stops here, naming the first
    with OutputLock(out, "this model folder"):
        return _train(run, out, device, resume, progress, callbacks, dist, evaluate_test, analyze_test)


def _train(run: RunConfig, out: Path, device: torch.device, resume: bool, progress: bool,
           callbacks: list[Callable[[dict], None]] | None, dist: Distributed, evaluate_test: bool,
           analyze_test: bool | str) -> dict[str, Any]:
    size = run.model.image_size
    # every file is checked first; each split is decoded once per node (the cache), and only what this
    # process uses: DDP ranks other than 0 train and never validate or test
    splits = ("train",) if not dist.is_main else ("train", "val", "test") if evaluate_test else ("train", "val")
    data = load_category(run.data, size, progress=progress and dist.is_main, splits=splits)
    textures = load_textures(run.synthesis, size, device, progress=progress and dist.is_main)
    if dist.is_main:
        _check_resume(out, run, resume)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / RUN_CONFIG, json.dumps(run.to_dict(), indent=2) + "\n")
    torch.manual_seed(run.train.seed)
    model = build_model(run.model).to(device)
    if device.type == "cuda" and run.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward: torch.nn.Module = model
    if dist.wrap is not None:
        forward = dist.wrap(model)
    vset = reference_validation_set(run, data, textures, progress and dist.is_main)  # empty on DDP ranks but 0
    autocast = torch.bfloat16 if device.type == "cuda" and run.train.bf16 else None

    last_validation: dict[str, Any] = {}  # the maps of the last weights' validation: finish() reuses them

    def validate(m: DraemModel) -> dict:
        if len(vset) == 0:
            return {}
        t0 = time.perf_counter()
        bar = tqdm(total=len(vset), desc="validating", unit="img", leave=False) if progress and dist.is_main else None
        try:
            maps = compute_maps(m, vset.images, run.eval.batch_size, bar.update if bar else None, on_device=True,
                                autocast=autocast)
        finally:
            if bar:
                bar.close()
        result = validation_metrics(maps, vset, run.eval.filter_sizes)
        if trainer.iteration >= trainer.total:
            last_validation.update(iteration=trainer.iteration, maps=maps, result=dict(result),
                                   seconds=time.perf_counter() - t0)
        if analyze_test and len(data.test):
            result["analysis"] = test_analysis(m, run, data, autocast,
                                               result.get("val_filter_size") if analyze_test == "full" else None)
        return result

    synth = AnomalySynthesizer(run.synthesis, textures, make_generator(run.train.seed, dist.rank))
    trainer = Trainer(model, data.train, synth, run.train, run.loss, out, validate=validate if dist.is_main else None,
                      callbacks=callbacks, forward=forward if forward is not model else None, rank=dist.rank,
                      world_size=dist.world_size, is_main=dist.is_main, progress=progress, lr_scale=dist.lr_scale,
                      better=lambda new, best: beats(new.get("replicates"), best.get("replicates"), new["val_score"],
                                                     best["val_score"]))
    fit = trainer.fit(resume=resume)
    digest = parameters_digest(model)  # the last weights; DDP ranks must agree
    if not dist.is_main:
        return {"rank": dist.rank, "iterations": fit["iterations"], "resumed_from": fit["resumed_from"],
                "last_weights_sha256": digest}
    result = finish(model, run, data, vset, fit, out, trainer, textures.source, dist, progress, evaluate_test,
                    last_validation)
    result["last_weights_sha256"] = digest
    return result


def finish(model: DraemModel, run: RunConfig, data, vset, fit: dict, out: Path, trainer: Trainer, source: str,
           dist: Distributed, progress: bool, evaluate_test: bool,
           last_validation: dict[str, Any] | None = None) -> dict[str, Any]:
    """After training: the weights, s_f on validation, test metrics, thresholds, the model directory.
    ``last_validation`` (the last iteration's validation: maps, metrics, seconds) is reused when those are
    the exported weights, instead of a second pass over the validation set."""
    exported = choose_weights(model, run, fit, out)
    validated = (last_validation or {}).get("iteration")
    same = validated == fit["iterations"] and (exported == "last" or fit["best"].get("iteration") == validated)
    val, val_maps = validate_final(model, run, vset, trainer.autocast, last_validation if same else None)
    filter_size = val["val_filter_size"] if val else ScoreConfig().filter_size
    test = None
    if evaluate_test and len(data.test) > 0:
        test_maps, infer_s = test_maps_of(model, run, data, progress, trainer.autocast)
        if run.eval.select_on == "test":
            filter_size = filter_size_on_test(test_maps, data, run, filter_size)
        test = score_test(test_maps, data, run, filter_size, infer_s)
    thresholds = compute_thresholds(val_maps, vset, filter_size, run.eval.target_fpr) if len(vset) else None
    model.score_config = ScoreConfig(filter_size=filter_size,
                                     image_threshold=thresholds["image_threshold"] if thresholds else None,
                                     pixel_threshold=thresholds["pixel_threshold"] if thresholds else None,
                                     precision="bf16" if trainer.autocast else "fp32")
    selection = selection_record(run, vset, val, filter_size, exported, fit)
    extra = {
        "run": run.to_dict(),
        "data": data.files.fingerprint(),
        "thresholds": thresholds,
        "metrics": {"validation": val, "test": test},
        "selection": selection,
        "training": training_record(model, run, fit, trainer, source, dist),
    }
    save_model_dir(model, out, extra)
    atomic_write_text(out / "history.json", json.dumps(fit["history"], indent=1) + "\n")
    return {"model_dir": str(out), "validation": val, "test": test, "thresholds": thresholds,
            "selection": selection, "training": extra["training"], "iterations": fit["iterations"],
            "resumed_from": fit["resumed_from"], "params": model.num_parameters()}


def choose_weights(model: DraemModel, run: RunConfig, fit: dict, out: Path) -> str:
    """Load the best-on-validation checkpoint when ``train.export=best`` and there is one; "best" or "last"."""
    if run.train.export == "best" and fit["best"].get("iteration") is not None:
        load_checkpoint(out / "checkpoints" / "best", model)
        model.eval()
        return "best"
    model.eval()
    return "last"


def validation_textures(run: RunConfig) -> SynthesisConfig:
    """Where the validation anomalies take their textures from (``eval.validation_source``)."""
    src = run.eval.validation_source
    if src == "auto":
        return reference_synthesis(run.synthesis)
    return SynthesisConfig() if src == "procedural" else SynthesisConfig(anomaly_source=src)


def validation_recipe(run: RunConfig) -> dict[str, Any]:
    """Everything the validation set of ``run`` depends on: runs whose recipes differ are scored on
    different validation sets and must not be ranked against each other."""
    e = run.eval
    data = {k: getattr(run.data, k) for k in ("root", "category", "val_fraction", "split_seed")}
    if run.data.dataset != "auto":  # the same root read as another layout holds out other normals
        data["dataset"] = run.data.dataset
    return {"data": data,
            "image_size": run.model.image_size,
            "textures": {k: getattr(validation_textures(run), k) for k in TEXTURE_KEYS},
            "families": list(e.validation_families), "seed": e.validation_seed, "per_normal": e.validation_per_normal,
            "max_per_family": e.validation_max_per_family}


def reference_validation_set(run: RunConfig, data, textures, progress: bool = False):
    """The category's validation set at this size: made with the paper's simulator settings and a
    fixed seed whatever the run searches, so every trial of a category is scored on the same set."""
    ref = validation_textures(run)
    same = all(getattr(ref, k) == getattr(run.synthesis, k) for k in TEXTURE_KEYS)
    bank = textures if same or not len(data.val) else load_textures(ref, run.model.image_size, "cpu")
    per_normal = run.eval.per_normal(len(data.val))
    total = len(data.val) * per_normal * len(run.eval.validation_families)
    bar = tqdm(total=total, desc="validation set", unit="anomaly", leave=False) if progress and total else None
    try:
        return make_validation_set(data.val, ref, bank, run.eval.validation_seed, run.eval.validation_families,
                                   per_normal, bar.update if bar else None)
    finally:
        if bar:
            bar.close()


def validate_final(model: DraemModel, run: RunConfig, vset, autocast: torch.dtype | None = None,
                   done: dict[str, Any] | None = None) -> tuple[dict | None, torch.Tensor | None]:
    """The exported weights' validation metrics (the score at every s_f, the chosen s_f) and maps; ``done``:
    these weights' validation already made during training (its maps, metrics and seconds)."""
    if not len(vset):
        return None, None
    if done:
        maps, val, seconds = done["maps"], dict(done["result"]), done["seconds"]
        val.pop("analysis", None)
    else:
        t0 = time.perf_counter()
        maps = compute_maps(model, vset.images, run.eval.batch_size, on_device=True, autocast=autocast)
        val = validation_metrics(maps, vset, run.eval.filter_sizes)
        seconds = time.perf_counter() - t0  # the whole validation: inference and metrics
    val["inference_images_per_s"] = round(len(vset) / max(seconds, 1e-9), 3)  # a speed without the test split
    val["seconds"] = round(seconds, 3)
    val.pop("replicates", None)
    return val, maps


def test_analysis(model: DraemModel, run: RunConfig, data, autocast: torch.dtype | None,
                  filter_size: int | None = None) -> dict[str, Any]:
    """The test image AUROC at every s_f of the model now (for the analysis of selection only); with
    ``filter_size`` (``analyze_test="full"``: the s_f validation chose) also the headline test metrics at it:
    image AUROC, pixel AUROC, pixel AP, AUPRO."""
    maps = compute_maps(model, data.test, run.eval.batch_size, on_device=True, autocast=autocast).float().cpu()
    sizes = run.eval.filter_sizes
    full = filter_size is not None
    masks = data.pixel_masks if full else None
    scored = score_maps(maps, data.test_labels, masks, sizes, filter_size if full else sizes[0],
                        aupro_limit=run.eval.aupro_fpr_limit, pixel=masks is not None)
    out = {"test_image_auroc_by_filter_size": {s: m["image_auroc"] for s, m in scored["by_filter_size"].items()}}
    if full:
        out.update({f"test_{k}": scored.get(k) for k in ("image_auroc", "pixel_auroc", "pixel_ap", "aupro")})
    return out


def test_maps_of(model: DraemModel, run: RunConfig, data, progress: bool,
                 autocast: torch.dtype | None = None) -> tuple[torch.Tensor, float]:
    """Anomaly maps of the test split (at the precision validation ran at: its thresholds are for those
    maps) and the seconds they took, warm: the batch shape is run once before the clock starts (cuDNN's
    autotuner times its kernels at a new shape), and the maps stay on the device until all are made."""
    device = next(model.parameters()).device
    if device.type == "cuda" and len(data.test):
        compute_maps(model, data.test[: run.eval.batch_size], run.eval.batch_size, autocast=autocast, on_device=True)
        torch.cuda.synchronize(device)
    bar = tqdm(total=len(data.test), desc="evaluating (test)", unit="img", leave=False) if progress else None
    t0 = time.perf_counter()
    try:
        maps = compute_maps(model, data.test, run.eval.batch_size, bar.update if bar else None, on_device=True,
                            autocast=autocast)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    finally:
        if bar:
            bar.close()
    return maps.cpu(), seconds


def filter_size_on_test(test_maps: torch.Tensor, data, run: RunConfig, current: int) -> int:
    """``eval.select_on=test`` only: the s_f (of eval.filter_sizes and ``current``) with the best test
    image AUROC; the export says so."""
    by = score_maps(test_maps, data.test_labels, None, run.eval.filter_sizes, current, pixel=False)
    return int(max(by["by_filter_size"], key=lambda s: by["by_filter_size"][s]["image_auroc"] or 0))


def score_test(test_maps: torch.Tensor, data, run: RunConfig, filter_size: int, infer_s: float) -> dict[str, Any]:
    """Every test metric, headline at ``filter_size``; reported, never used for selection. Pixel metrics
    are None, with ``pixel_note`` saying why, where the test images are labelled per image only."""
    test = {"split": "test", **score_maps(test_maps, data.test_labels, data.pixel_masks, run.eval.filter_sizes,
                                           filter_size, data.test_defects, run.eval.aupro_fpr_limit)}
    if data.files.pixel_note:
        test["pixel_note"] = data.files.pixel_note
    test["inference_images_per_s"] = round(len(data.test) / max(infer_s, 1e-9), 3)
    return test


def selection_record(run: RunConfig, vset, val: dict | None, filter_size: int, exported: str,
                     fit: dict) -> dict[str, Any]:
    """How the exported weights and s_f were chosen, for config.json."""
    selection = {"split": run.eval.select_on if len(vset) or run.eval.select_on == "test" else "none",
                 "filter_size": filter_size, "weights": exported, "best_iteration": fit["best"].get("iteration")}
    if val:
        selection["validation_fingerprint"] = val["val_fingerprint"]
    if val and run.eval.select_on == "validation":
        # s_f stays 21 unless another size is better beyond the validation set's noise: say how sure
        selection["filter_size_choice"] = val["val_filter_size_choice"]
        selection["validation_score_se"] = val["val_score_se"]
        selection["family_preferred_filter_size"] = {f: m["preferred_filter_size"]
                                                     for f, m in val["families"].items()}
        selection["filter_size_tie"] = val["val_filter_size_tie"]
        selection["validation_saturation"] = val["val_saturation"]
        selection["validation_score_by_filter_size"] = val["val_score_by_filter_size"]
    if run.eval.select_on == "test":
        selection["warning"] = "s_f was chosen on the test split, as asked; test metrics are optimistic"
    return selection


def training_record(model: DraemModel, run: RunConfig, fit: dict, trainer: Trainer, source: str,
                    dist: Distributed) -> dict[str, Any]:
    """What the training run was, for config.json."""
    n_train = len(trainer.images)
    return {"iterations": fit["iterations"], "seconds": fit["seconds"], "batch_size": run.train.batch_size,
            "budget": str(run.train.as_budget()), "samples": fit["samples"],
            "epochs": round(fit["samples"] / max(1, n_train), 3), "validations": fit["validations"],
            "world_size": dist.world_size, "effective_batch_size": run.train.batch_size * dist.world_size,
            "lr_scale": trainer.lr_scale, "lr_scaling": run.train.lr_scaling,
            "compiled": isinstance(trainer.step, Compiled) and trainer.step.failed is None,
            "timing": fit.get("timing"), "precision": "bf16" if trainer.autocast else "fp32",
            "anomaly_source": source, "device": str(next(model.parameters()).device)}


def load_run_config(path: str | Path) -> RunConfig:
    """The run config of a model directory (config.json) or a run_config.json."""
    p = Path(path)
    data = json.loads((p / "config.json").read_text())["run"] if p.is_dir() else json.loads(p.read_text())
    return RunConfig.from_dict(data, str(p))


__all__ = ["Distributed", "train_category", "load_run_config", "to_dict"]
