"""How many iterations an asynchronous ASHA search runs: Ray Tune's rule, simulated (no Ray needed).

Tune's ``AsyncHyperBandScheduler`` judges a trial when it first reports at or past a milestone: it goes
on if its score is at least the ``1 - 1/rf`` quantile (``np.nanpercentile``) of the scores recorded
there *before* it, so the first trial at a milestone always goes on, the second goes on if it beats
the first, and only with many trials does the share that goes on settle at ``1/rf``. With the 32
trials of a search that is close to 1/3 per rung; with a handful of trials it is far more (the
plan's old ``1/rf`` rule said 0.44 of what a 4-trial test search ran).

:func:`expected_iterations` simulates it: ``trials`` trials, at most ``concurrency`` running at once
(each starts when a slot frees), all at one speed, ranked alike at every milestone (the assumption
ASHA rests on; ``rungs.md`` measures it); the arrival order of ties is random. The mean over
``sims`` seeded draws is returned, so a plan is the same every time it is printed.
"""

from __future__ import annotations

import functools
import heapq
import math

import numpy as np

SIMS = 400


def asha_rungs(max_t: int, grace: int, reduction_factor: float) -> list[int]:
    """ASHA's milestones (iterations) as Ray Tune's ``AsyncHyperBandScheduler`` places them."""
    if grace >= max_t:
        return []
    n = int(math.log(max_t / grace) / math.log(reduction_factor) + 1)
    return [int(grace * reduction_factor**k) for k in range(n)]


def judged_at(total: int, val_every: int, rungs: list[int]) -> list[int]:
    """Where a trial is judged: its first report (a validation point) at or past each milestone before
    the end (a trial at the budget ends by itself)."""
    return sorted({min(total, math.ceil(r / max(1, val_every)) * max(1, val_every)) for r in rungs} - {total})


class TuneRule:
    """Tune's decision at a milestone: go on unless below the ``1 - 1/rf`` quantile of those recorded before."""

    def __init__(self, stops: tuple[int, ...], reduction_factor: float):
        self.recorded: list[list[float]] = [[] for _ in stops]
        self.q = (1 - 1 / reduction_factor) * 100

    def __call__(self, k: int, trial: int, score: float) -> bool:
        there = self.recorded[k]
        cutoff = np.nanpercentile(there, self.q) if there else None
        there.append(score)
        return cutoff is None or score >= cutoff


def simulate(total: int, stops: tuple[int, ...], reduction_factor: float, trials: int, concurrency: int,
             rng: np.random.Generator, judge=None) -> int:
    """Iterations one simulated search runs (all its trials together). ``judge(k, trial, score)``: does a
    trial go on at the k-th stop (default :class:`TuneRule`)."""
    quality = rng.permutation(trials).astype(float)  # one ranking, alike at every milestone
    judge = judge or TuneRule(stops, reduction_factor)
    events: list[tuple[float, float, int, int]] = []  # (time, tie-break, trial, stop index)
    running, waiting, spent = 0, list(range(trials)), 0

    def start(now: float) -> None:
        nonlocal running
        while waiting and running < concurrency:
            t = waiting.pop(0)
            running += 1
            heapq.heappush(events, (now + (stops[0] if stops else total), rng.random(), t, 0))

    start(0.0)
    while events:
        now, _, t, k = heapq.heappop(events)
        if k == len(stops):  # at the budget
            spent, running = spent + total, running - 1
            start(now)
            continue
        if not judge(k, t, quality[t]):
            spent, running = spent + stops[k], running - 1
            start(now)
            continue
        nxt = stops[k + 1] if k + 1 < len(stops) else total
        heapq.heappush(events, (now + nxt - stops[k], rng.random(), t, k + 1))
    return spent


@functools.lru_cache(maxsize=256)
def _mean(total: int, stops: tuple[int, ...], reduction_factor: float, trials: int, concurrency: int,
          sims: int) -> float:
    rng = np.random.default_rng(0)
    return float(np.mean([simulate(total, stops, reduction_factor, trials, concurrency, rng) for _ in range(sims)]))


def expected_iterations(total: int, val_every: int, rungs: list[int], reduction_factor: float,
                        trials: int = 32, concurrency: int | None = None, sims: int = SIMS) -> float:
    """Iterations one trial runs on average under Tune's asynchronous ASHA (see the module's text), for a
    search of ``trials`` trials with ``concurrency`` running at once (all of them when None)."""
    stops = tuple(judged_at(total, val_every, rungs))
    trials = max(1, int(trials))
    concurrency = max(1, min(trials, int(concurrency or trials)))
    return _mean(total, stops, float(reduction_factor), trials, concurrency, sims) / trials
