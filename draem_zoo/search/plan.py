"""``draem-zoo search --plan``: what a search will cost, per category and in total, before launch.

No Ray, no training, no decoding: the numbers come from the categories' file counts, the space
file, the options and the models' sizes (the preflight builds every model the space suggests once,
and its sizes are reused). A team reads this before it books a cluster:

* trials: iterations per rank and epochs, DDP workers, validations per run, ASHA's rungs, the most
  iterations the trials can run (every trial to the budget) and the expected number (Tune's
  asynchronous ASHA simulated by :mod:`.asha`: about ``1 / reduction_factor`` of 32 trials go on at each
  rung, far more of a handful);
* finals: iterations per seed and per DDP rank, workers, seeds, validations;
* checkpoints: bytes per upload (last = weights + Adam's two moments, and best = weights) and what
  the storage retains (trial checkpoints are deleted when a trial ends; a final keeps its last);
* images decoded: once per node (the node cache), instead of once per trial;
* with ``throughput`` (one accelerator's training images/s, e.g. from ``scripts/bench_train.py
  --e2e``), or ``throughput_from`` (the JSON lines of ``scripts/gpu_check.py`` or ``bench_train.py
  --e2e``, the matching row read from them): accelerator-hours of the training steps;
* with ``rungs``: trials validate at geometric points where ASHA (reduction factor 3) cuts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..data import scan_category
from ..errors import DraemZooError
from ..pipeline.runconfig import make_run_config
from ..synthesis.textures import find_images
from ..train.budget import Budget, every
from .asha import asha_rungs, expected_iterations
from .space import overrides_of

FLOAT32 = 4


RUNG_FACTOR = 3  # with --rungs: the points' ratio and ASHA's reduction factor


def effective_reduction_factor(opts) -> float:
    """ASHA's reduction factor: 3 with geometric rungs (its cuts land on them), else the option's."""
    return RUNG_FACTOR if getattr(opts, "rungs", 0) else opts.reduction_factor


def geometric_rungs(total: int, rungs: int) -> tuple[int, list[int]]:
    """(ASHA's grace period, the validation points) of a trial of ``total`` iterations validating at ``rungs``
    points 1/3^(rungs-1) ... 1/3, 1 of it: the points are ASHA's own milestones (grace * 3^k), then the end."""
    grace = max(1, math.ceil(total / RUNG_FACTOR ** (rungs - 1)))  # rounded up: no milestone just short of the end
    return grace, [m for m in asha_rungs(total, grace, RUNG_FACTOR) if m < total] + [total]


def throughput_from(path: str | Path, variants: list[str], batch: int) -> dict[str, Any]:
    """One accelerator's whole-iteration training images/s from a measurement file: the JSON lines of
    ``scripts/gpu_check.py`` ("check": "train") or ``scripts/bench_train.py --e2e`` ("bench": "train_e2e").
    The row is the space's paper variant (else its first variant measured) at the plan's batch, with the
    synthesis workers training uses when they are measured, compiled where that was measured (training
    compiles on GPUs by default); of those, the fastest. Returns the row with its file."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as exc:
        raise DraemZooError(f"--throughput-from {p}: cannot read it ({exc.strerror or exc})") from None
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and (row.get("check") == "train" or row.get("bench") == "train_e2e") \
                and row.get("images_per_s") and row.get("variant") and row.get("batch"):
            rows.append(row)
    measured = sorted({r["variant"] for r in rows})
    variant = "paper" if "paper" in variants and "paper" in measured else next(
        (v for v in sorted(variants) if v in measured), None)
    mine = [r for r in rows if r["variant"] == variant and int(r["batch"]) == batch]
    if not mine:
        have = sorted({f"{r['variant']} batch {r['batch']}" for r in rows}) or ["no training rows"]
        raise DraemZooError(f"--throughput-from {p}: no training measurement of {' or '.join(sorted(variants))} at batch "
                            f"{batch} (it has: {', '.join(have)}); measure one with scripts/gpu_check.py or "
                            "scripts/bench_train.py --e2e, or give --throughput")
    for keep in (lambda r: str(r.get("synthesis", "")).startswith("workers"), lambda r: r.get("mode") == "compiled"):
        if any(keep(r) for r in mine):
            mine = [r for r in mine if keep(r)]
    best = max(mine, key=lambda r: r["images_per_s"])
    return {"file": str(p), "images_per_s": float(best["images_per_s"]),
            **{k: best.get(k) for k in ("variant", "batch", "size", "mode", "synthesis", "precision", "device", "name")}}


def validations_of(total: int, times: int) -> tuple[int, int]:
    """(period, number of validations) of a run of ``total`` iterations validating ``times`` times."""
    period = every(total, times)
    return period, math.ceil(total / period)


def make_plan(pre: dict[str, Any], opts) -> dict[str, Any]:
    """The plan of a search from the driver's preflight (``pre``) and its options."""
    space, base = pre["space"], pre["base"]
    trial_budget: Budget = pre["budget"]
    final_budget: Budget = pre["final_budget"]
    runs = [make_run_config(overrides_of(d), base=base) for d in pre["draws"]]  # what the space suggests
    largest = max(pre["model_sizes"].values(), key=lambda s: s["state_bytes"])  # built by the preflight
    batch = min(r.train.batch_size for r in runs)  # the most iterations an epoch budget can mean
    w_trial = opts.workers_per_trial
    w_final = opts.final_workers or opts.workers_per_trial
    finalists = len({r.model.variant for r in runs}) if opts.backbones_final else 1
    if space.final_per:  # every value of that parameter (an ablation's rows) is retrained
        finalists = max(finalists, len({repr(d.get(space.final_per)) for d in pre["draws"]}))
    finalists += getattr(opts, "front", 0)  # at most: a front member may be the best or a backbone's best
    upload = 2 * largest["state_bytes"] + largest["adam_bytes"]  # last (weights + Adam) + best (weights)
    final_keep = upload + 2 * largest["state_bytes"]  # its last checkpoint holds the exported model too
    textures = len(find_images(base.synthesis.anomaly_source)) if base.synthesis.anomaly_source else 0
    measured = None
    throughput = opts.throughput
    if getattr(opts, "throughput_from", None):
        measured = throughput_from(opts.throughput_from, sorted({r.model.variant for r in runs}), batch)
        throughput = measured["images_per_s"]
    final_px = max(r.model.image_size for r in runs)
    trial_px = getattr(opts, "trial_image_size", None) or final_px
    # a trial's step at TRIAL_IMAGE_SIZE costs its share of pixels of one at the size the throughput was
    # measured at (the final's): convolutions and synthesis scale with pixels (a first-order estimate)
    px_share = (trial_px / final_px) ** 2
    concurrency = opts.max_concurrent or None  # else: as many as the cluster holds, all of them at most
    cats: dict[str, Any] = {}
    for c in pre["categories"]:
        files = scan_category(base.data.root, c, base.data.val_fraction, base.data.split_seed, check_sizes=False,
                              dataset=base.data.dataset)
        n, n_val, n_test = len(files.train), len(files.val), len(files.test)
        t_it = trial_budget.iterations(n, batch, w_trial)
        rf = effective_reduction_factor(opts)
        if getattr(opts, "rungs", 0):  # validations at ASHA's milestones: a trial is judged where it stops
            grace, points = geometric_rungs(t_it, opts.rungs)
            t_every, t_vals, rungs = 0, len(points), points[:-1]
            t_exp = expected_iterations(t_it, 1, rungs, rf, opts.trials, concurrency)
        else:
            t_every, t_vals = validations_of(t_it, opts.validations)
            grace = max(t_every, min(t_it, t_every * opts.grace_validations))
            rungs, points = asha_rungs(t_it, grace, rf), None
            t_exp = expected_iterations(t_it, t_every, rungs, rf, opts.trials, concurrency)
        f_it = final_budget.iterations(n, batch, w_final)
        f_every, f_vals = validations_of(f_it, opts.validations)
        n_finals = finalists * opts.final_seeds
        trial_samples = opts.trials * t_exp * batch * w_trial
        final_samples = n_finals * f_it * batch * w_final
        hours = None
        if throughput:
            hours = (trial_samples * px_share + final_samples) / throughput / 3600
        cats[c] = {
            "n_train": n, "n_val": n_val, "n_test": n_test,
            "trial": {"budget": str(trial_budget), "iterations": t_it, "epochs": round(t_it * batch * w_trial / n, 2),
                      "batch_size": batch, "workers": w_trial, "image_size": trial_px, "validations": t_vals, "val_every": t_every,
                      "asha_rungs": rungs, "asha_grace": grace, "val_points": points, "max_iterations": opts.trials * t_it,
                      "expected_iterations": round(opts.trials * t_exp), "uploads_max": opts.trials * t_vals},
            "final": {"budget": str(final_budget), "iterations": f_it, "workers": w_final,
                      "epochs": round(f_it * batch * w_final / n, 2), "samples": f_it * batch * w_final,
                      "seeds": opts.final_seeds, "runs": n_finals, "validations": f_vals, "val_every": f_every},
            "decoded_per_node": {"category_images": n + n_val + 2 * n_test, "textures": textures},
            "storage_bytes": n_finals * final_keep + largest["state_bytes"],
            "accelerator_hours": None if hours is None else round(hours, 3),
        }
    n_cat = len(cats)
    totals = {
        "categories": n_cat, "trials": opts.trials * n_cat,
        "trial_max_iterations": sum(v["trial"]["max_iterations"] for v in cats.values()),
        "trial_expected_iterations": sum(v["trial"]["expected_iterations"] for v in cats.values()),
        "final_iterations": sum(v["final"]["iterations"] * v["final"]["runs"] for v in cats.values()),
        "storage_bytes": sum(v["storage_bytes"] for v in cats.values()),
        # while a trial runs it holds up to two checkpoints (the new one lands before the old goes)
        "storage_per_running_trial_bytes": 2 * upload,
        "storage_peak_bytes": (sum(v["storage_bytes"] for v in cats.values())
                               + 2 * upload * n_cat * min(opts.trials, opts.max_concurrent))
        if opts.max_concurrent else None,
        "decoded_per_node": sum(v["decoded_per_node"]["category_images"] for v in cats.values()) + textures,
        "decoded_without_cache": sum((opts.trials + v["final"]["runs"]) * (v["n_train"] + v["n_val"] + textures)
                                     + v["final"]["runs"] * 2 * v["n_test"] for v in cats.values()),
        "accelerator_hours": (round(sum(v["accelerator_hours"] for v in cats.values()), 2)
                              if throughput else None),
    }
    return {"space": str(space.path), "trials_per_category": opts.trials, "workers_per_trial": w_trial,
            "final_workers": w_final, "final_seeds": opts.final_seeds, "validations": opts.validations,
            "reduction_factor": effective_reduction_factor(opts), "rungs": getattr(opts, "rungs", 0),
            "max_concurrent": opts.max_concurrent or None,
            "image_size": {"trial": trial_px, "final": final_px, "trial_pixel_share": round(px_share, 4)},
            "throughput_images_per_s": throughput, "throughput_measured": measured,
            "batch_size": batch, "model": {"largest": largest, "variants": sorted({r.model.variant for r in runs})},
            "checkpoint_upload_bytes": upload, "categories": cats, "totals": totals}


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB" if b >= 1e8 else f"{b / 1e6:.1f} MB"


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as the table a person reads."""
    m = plan["model"]["largest"]
    lines = [
        f"plan: {plan['space']}, {plan['trials_per_category']} trials per category, batch {plan['batch_size']}, "
        f"{plan['workers_per_trial']} DDP worker(s) per trial, {plan['final_workers']} per final, "
        f"{plan['final_seeds']} final seed(s), "
        + (f"trials validating at {plan['rungs']} geometric rungs (ASHA reduction factor {plan['reduction_factor']:g}), "
           f"{plan['validations']} validations per final" if plan.get("rungs")
           else f"{plan['validations']} validations per run (ASHA reduction factor {plan['reduction_factor']:g})"),
        *([f"trials at {plan['image_size']['trial']} px, finals at {plan['image_size']['final']} px: a trial step "
           f"priced at {plan['image_size']['trial_pixel_share']:g} of a final one (its share of pixels)"]
          if plan["image_size"]["trial"] != plan["image_size"]["final"] else []),
        f"largest model: {m['params'] / 1e6:.1f} M parameters; one checkpoint upload "
        f"{_gb(plan['checkpoint_upload_bytes'])} (weights + Adam moments, and the best weights)",
        "",
        "| category | train imgs | trial it/rank (epochs) | ASHA rungs | trial it max / expected | final it/rank x "
        "workers (epochs) | validations trial/final | storage kept | accel-h |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c, v in plan["categories"].items():
        t, f = v["trial"], v["final"]
        hours = "n/a" if v["accelerator_hours"] is None else f"{v['accelerator_hours']:.2f}"
        lines.append(f"| {c} | {v['n_train']} | {t['iterations']} ({t['epochs']:g}) | "
                     f"{', '.join(map(str, t['asha_rungs'])) or '-'} | {t['max_iterations']} / "
                     f"{t['expected_iterations']} | {f['iterations']} x {f['workers']} ({f['epochs']:g}) | "
                     f"{t['validations']} / {f['validations']} | {_gb(v['storage_bytes'])} | {hours} |")
    tot = plan["totals"]
    hours = ("pass --throughput IMAGES_PER_S (one accelerator's training images/s, from scripts/bench_train.py "
             "--e2e) for accelerator-hours") if tot["accelerator_hours"] is None else \
        f"{tot['accelerator_hours']:.1f} accelerator-hours of training steps (validation not included)"
    m = plan.get("throughput_measured")
    if m:
        hours += (f", at {m['images_per_s']:g} images/s measured in {m['file']} ({m['variant']}, batch {m['batch']}, "
                  f"{m.get('mode') or '?'}, synthesis {m.get('synthesis') or '?'}"
                  + (f", {m.get('device') or m.get('name')}" if m.get("device") or m.get("name") else "") + ")")
    inflight = f"{plan['max_concurrent']} trials" if plan.get("max_concurrent") else "all trials"
    lines += ["", f"total: {tot['trials']} trials, {tot['trial_expected_iterations']} trial iterations expected "
              f"(Tune's asynchronous ASHA, {inflight} of a category in flight; at most {tot['trial_max_iterations']}), "
              f"{tot['final_iterations']} final iterations; {hours}",
              f"storage: {_gb(tot['storage_bytes'])} kept after the search; while the search runs, up to "
              f"{_gb(tot['storage_per_running_trial_bytes'])} per running trial"
              + (f" (peak {_gb(tot['storage_peak_bytes'])} with --max-concurrent)" if tot["storage_peak_bytes"] else "")
              + "; decoding: "
              f"{tot['decoded_per_node']} images once per node (without the cache: {tot['decoded_without_cache']})"]
    return "\n".join(lines)
