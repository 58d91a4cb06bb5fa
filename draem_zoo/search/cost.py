"""What a search cost, beside what its plan said it would (no Ray needed).

The plan (:mod:`.plan`) counts training-step samples: every trial to ASHA's expected iteration,
every final to its budget, at one accelerator's throughput. After the search the same quantity is
measured: a trial's step time is its iterations at its last steady-state speed (``it_per_s``, which
leaves validation and checkpoints out, as the plan does), a final's the same (else its ``train_seconds``), each
times the accelerators it held (its GPUs, or on a CPU cluster its workers). The throughput the
search actually trained at then prices the plan's own sample count: ``ratio`` = spent / planned at
that throughput says how far the plan's iteration arithmetic (ASHA's expected stops) was from what
ran, whatever the hardware; ``planned_hours`` is the plan's figure at ``--throughput`` when given.
Trials at a lower TRIAL_IMAGE_SIZE count their samples at their share of a final's pixels, in the
measurement as in the plan (``samples`` are final-size samples).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .records import _load, categories, trial_records


def _accelerators(workers: int, gpus_per_trial: float, workers_per_trial: int) -> float:
    """The accelerators a run of ``workers`` DDP workers holds: its GPUs, or its workers on CPUs."""
    if gpus_per_trial > 0:
        return gpus_per_trial * workers / max(1, workers_per_trial)
    return float(workers)


def spent(out: Path) -> dict[str, Any] | None:
    """Accelerator-hours of training steps the search spent, and the plan's estimate beside them."""
    out = Path(out)
    if not (out / "plan.json").is_file() or not (out / "search.json").is_file():
        return None
    plan, opts = _load(out / "plan.json"), _load(out / "search.json").get("options") or {}
    batch, w_trial = int(plan["batch_size"]), int(plan["workers_per_trial"])
    w_final = int(plan.get("final_workers") or w_trial)
    gpus = float(opts.get("gpus_per_trial") or 0.0)
    share = float((plan.get("image_size") or {}).get("trial_pixel_share") or 1.0)  # TRIAL_IMAGE_SIZE
    trial_s = trial_samples = final_s = final_samples = 0.0
    trials = finals = reused = 0
    for t in trial_records(out):
        if t.get("reused_from"):  # --warm-start: an earlier search paid for it
            reused += 1
            continue
        speeds = [c["it_per_s"] for c in t.get("curve") or [] if c.get("it_per_s")]
        if not speeds or not t.get("iteration"):
            continue
        trials += 1
        trial_s += t["iteration"] / speeds[-1] * _accelerators(w_trial, gpus, w_trial)
        trial_samples += t["iteration"] * batch * w_trial * share
    for cat in categories(out):
        summary = _load(out / cat / "summary.json") if (out / cat / "summary.json").is_file() else {}
        for f in summary.get("final") or []:
            m = f.get("metrics") or {}
            steps = (m["iteration"] / m["it_per_s"]) if m.get("it_per_s") and m.get("iteration") else m.get("train_seconds")
            if f.get("status") != "done" or not steps:
                continue
            workers = int(f.get("workers") or w_final)
            finals += 1
            final_s += steps * _accelerators(workers, gpus, w_trial)
            final_samples += (m.get("iteration") or f.get("iterations") or 0) * batch * workers
    seconds = trial_s + final_s
    if not seconds:
        return None
    tot = plan["totals"]
    planned_samples = (tot["trial_expected_iterations"] * batch * w_trial * share
                       + tot["final_iterations"] * batch * w_final)
    throughput = (trial_samples + final_samples) / seconds  # images/s per accelerator, as measured
    at_measured = planned_samples / throughput / 3600
    hours = seconds / 3600
    return {"hours": round(hours, 6), "trial_hours": round(trial_s / 3600, 6), "final_hours": round(final_s / 3600, 6),
            "trials": trials, "reused_trials": reused, "finals": finals, "samples": int(trial_samples + final_samples),
            "planned_samples": int(planned_samples), "images_per_s_per_accelerator": round(throughput, 3),
            "planned_hours_at_measured_throughput": round(at_measured, 6),
            "ratio": round(hours / at_measured, 3) if at_measured else None,
            "planned_hours": tot.get("accelerator_hours"), "planned_throughput": plan.get("throughput_images_per_s")}


def cost_line(cost: dict[str, Any] | None) -> str:
    """One sentence for the leaderboard."""
    if not cost:
        return ""
    planned = ("" if cost.get("planned_hours") is None else
               f"; the plan said {cost['planned_hours']:g} at {cost['planned_throughput']:g} images/s")
    return (f"Cost: {cost['hours']:.3g} accelerator-hours of training steps ({cost['trial_hours']:.3g} in {cost['trials']} "
            f"trials, {cost['final_hours']:.3g} in {cost['finals']} finals) at {cost['images_per_s_per_accelerator']:g} "
            f"images/s per accelerator; the plan's {cost['planned_samples']} samples at that speed come to "
            f"{cost['planned_hours_at_measured_throughput']:.3g} (spent / planned {cost['ratio']}){planned}"
            + (f"; {cost['reused_trials']} trials reused from the --warm-start search cost nothing here (the plan "
               "counted them)" if cost.get("reused_trials") else "") + ".")
