"""``draem-zoo search --plan``: what a search will cost, per category and in total, before launch.

No Ray, no training, no decoding: the numbers come from the categories' file counts, the space
file, the options and the models' sizes (the preflight builds every model the space suggests once,
and its sizes are reused). A team reads this before it books a cluster:

* trials: iterations per rank and epochs, DDP workers, validations per run, ASHA's rungs, the most
  iterations the trials can run (every trial to the budget) and the expected number (ASHA keeps
  ``1 / reduction_factor`` of the trials at each rung);
* finals: iterations per seed and per DDP rank, workers, seeds, validations;
* checkpoints: bytes per upload (last = weights + Adam's two moments, and best = weights) and what
  the storage retains (trial checkpoints are deleted when a trial ends; a final keeps its last);
* images decoded: once per node (the node cache), instead of once per trial;
* with ``throughput`` (one accelerator's training images/s, e.g. from ``scripts/bench_train.py
  --e2e``): accelerator-hours of the training steps.
"""

from __future__ import annotations

import math
from typing import Any

from ..data.mvtec import scan_category
from ..pipeline.runconfig import make_run_config
from ..synthesis.textures import find_images
from ..train.budget import Budget, every
from .space import overrides_of

FLOAT32 = 4


def asha_rungs(max_t: int, grace: int, reduction_factor: float) -> list[int]:
    """ASHA's milestones (iterations) as Ray Tune's ``AsyncHyperBandScheduler`` places them."""
    if grace >= max_t:
        return []
    n = int(math.log(max_t / grace) / math.log(reduction_factor) + 1)
    return [int(grace * reduction_factor**k) for k in range(n)]


def expected_iterations(total: int, val_every: int, rungs: list[int], reduction_factor: float) -> float:
    """Iterations one trial runs on average if ASHA keeps 1/rf of the trials at every rung; a trial is
    judged at its first report (a validation point) at or past a rung."""
    stops = sorted({min(total, math.ceil(r / val_every) * val_every) for r in rungs} | {total})
    expected, alive, last = 0.0, 1.0, 0
    for i, s in enumerate(stops):
        expected += alive * (s - last)
        last = s
        if i < len(stops) - 1:
            alive /= reduction_factor
    return expected


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
    cats: dict[str, Any] = {}
    for c in pre["categories"]:
        files = scan_category(base.data.root, c, base.data.val_fraction, base.data.split_seed, check_sizes=False)
        n, n_val, n_test = len(files.train), len(files.val), len(files.test)
        t_it = trial_budget.iterations(n, batch, w_trial)
        t_every, t_vals = validations_of(t_it, opts.validations)
        grace = max(t_every, min(t_it, t_every * opts.grace_validations))
        rungs = asha_rungs(t_it, grace, opts.reduction_factor)
        t_exp = expected_iterations(t_it, t_every, rungs, opts.reduction_factor)
        f_it = final_budget.iterations(n, batch, w_final)
        f_every, f_vals = validations_of(f_it, opts.validations)
        n_finals = finalists * opts.final_seeds
        trial_samples = opts.trials * t_exp * batch * w_trial
        final_samples = n_finals * f_it * batch * w_final
        hours = None
        if opts.throughput:
            hours = (trial_samples + final_samples) / opts.throughput / 3600
        cats[c] = {
            "n_train": n, "n_val": n_val, "n_test": n_test,
            "trial": {"budget": str(trial_budget), "iterations": t_it, "epochs": round(t_it * batch * w_trial / n, 2),
                      "batch_size": batch, "workers": w_trial, "validations": t_vals, "val_every": t_every,
                      "asha_rungs": rungs, "max_iterations": opts.trials * t_it,
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
                              if opts.throughput else None),
    }
    return {"space": str(space.path), "trials_per_category": opts.trials, "workers_per_trial": w_trial,
            "final_workers": w_final, "final_seeds": opts.final_seeds, "validations": opts.validations,
            "reduction_factor": opts.reduction_factor, "throughput_images_per_s": opts.throughput,
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
        f"{plan['final_seeds']} final seed(s), {plan['validations']} validations per run",
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
    lines += ["", f"total: {tot['trials']} trials, {tot['trial_expected_iterations']} trial iterations expected "
              f"(at most {tot['trial_max_iterations']}), {tot['final_iterations']} final iterations; {hours}",
              f"storage: {_gb(tot['storage_bytes'])} kept after the search; while the search runs, up to "
              f"{_gb(tot['storage_per_running_trial_bytes'])} per running trial"
              + (f" (peak {_gb(tot['storage_peak_bytes'])} with --max-concurrent)" if tot["storage_peak_bytes"] else "")
              + "; decoding: "
              f"{tot['decoded_per_node']} images once per node (without the cache: {tot['decoded_without_cache']})"]
    return "\n".join(lines)
