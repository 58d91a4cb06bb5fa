"""The learning rate at an iteration: the paper's steps, cosine, one-cycle; an optional linear warm-up.

Every schedule is a function of (iteration, budget) alone, so a resumed run is at the same learning
rate as an uninterrupted one without any saved scheduler state. ``it`` counts from 0 (the learning rate
of the step that makes iteration ``it + 1``); ``total`` is the run's budget in iterations.

* ``multistep`` (the paper's, default): ``lr``, times ``gamma`` at each milestone (fractions of the
  budget: 0.8 and 0.9, gamma 0.2, as the original's ``MultiStepLR``).
* ``cosine``: ``lr`` annealed along half a cosine to 0 at the end of the budget.
* ``onecycle``: ``torch.optim.lr_scheduler.OneCycleLR``'s curve (cosine, its default factors): up from
  ``lr / 25`` to ``lr`` along half a cosine over the warm-up (``warmup``, 0.3 of the budget when 0), then
  down to ``lr / 25e4`` at the last step.

``warmup`` (a fraction of the budget) for ``multistep`` and ``cosine``: linear from ``lr / w`` up to
``lr`` over the first ``w = floor(warmup * total)`` iterations, then the schedule over the rest.
"""

from __future__ import annotations

import math

SCHEDULES = ("multistep", "cosine", "onecycle")
ONECYCLE_START = 25.0  # OneCycleLR's div_factor: the start is lr / 25
ONECYCLE_END = 1e4  # OneCycleLR's final_div_factor: the end is start / 1e4
ONECYCLE_WARMUP = 0.3  # OneCycleLR's pct_start


def _cos(frac: float) -> float:
    """1 at frac 0, 0 at frac 1, along half a cosine."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))


def lr_at(it: int, total: int, lr: float, schedule: str = "multistep", warmup: float = 0.0,
          milestones: tuple[float, ...] = (0.8, 0.9), gamma: float = 0.2) -> float:
    """The learning rate of step ``it`` (0-based) of ``total`` (the module docstring)."""
    total = max(int(total), 1)
    if schedule == "onecycle":  # OneCycleLR's phases: the peak at step pct * total - 1, the end at total - 1
        peak = max(float((warmup or ONECYCLE_WARMUP) * total) - 1.0, 1.0)
        start, end = lr / ONECYCLE_START, lr / ONECYCLE_START / ONECYCLE_END
        if it <= peak:
            return lr + (start - lr) * _cos(it / peak)
        return end + (lr - end) * _cos((it - peak) / max(total - 1 - peak, 1.0))
    w = math.floor(warmup * total)
    if it < w:
        return lr * (it + 1) / w
    if schedule == "cosine":
        return lr * _cos((it - w) / max(total - w, 1))
    if schedule != "multistep":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}: one of {', '.join(SCHEDULES)}")
    drops = sum(1 for m in milestones if it >= math.floor(m * total))
    return lr * gamma**drops
