"""Warm starts: a search that begins from what an earlier search learnt (``--warm-start RESULTS``).

For each category the earlier search's results give two things:

- **points to evaluate first**: the category's own best trials (``OWN_TOP``, best first), then every other
  category's best (hyperparameters transfer between MVTec categories more than they differ), deduplicated;
  then the space's own POINTS_TO_EVALUATE that none of them already satisfies;
- **results to reuse**: the category's finished trials whose whole trial run (configuration, data,
  budget, validation points, image size) is the one this search would train. They join this search's
  study as completed Optuna trials (``study.add_trial``, a copy of the earlier study's trial, marked
  ``warm_start_from``), its ASHA rungs and its trial records (``reused_from``), and are not trained again:
  the category runs that many fewer new trials. A point a reused trial already is is not enqueued.

Nothing here imports Ray; :mod:`.category` calls it inside the category's actor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DraemZooError
from .records import trial_records
from .study import load_category_study

OWN_TOP = 3  # the category's own best trials enqueued (other categories: their best one each)
WARM_ATTR = "warm_start_from"  # Optuna user attribute of a copied trial: "<earlier search id>/<trial id>"


def read_earlier(results: str | Path, mode: str = "max") -> dict[str, Any]:
    """An earlier search's results folder, checked: its search.json, plan.json and trial records, ranked
    by ``mode`` (this search's space's MODE)."""
    out = Path(results).expanduser().resolve()
    if not (out / "search.json").is_file():
        raise DraemZooError(f"--warm-start {results}: no search.json there; give the --out folder of an earlier "
                            "`draem-zoo search`")
    meta = json.loads((out / "search.json").read_text())
    plan = json.loads((out / "plan.json").read_text()) if (out / "plan.json").is_file() else {}
    recs = [r for r in trial_records(out) if r.get("status") == "TERMINATED" and r.get("best_val_score") is not None
            and not r.get("error")]
    if not recs:
        raise DraemZooError(f"--warm-start {results}: the search there has no finished trial with a validation "
                            "score yet (nothing to start from)")
    return {"out": str(out), "meta": meta, "plan": plan, "records": recs, "mode": mode}


def _ranked(recs: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    sign = -1 if mode == "max" else 1
    return sorted(recs, key=lambda r: (sign * r["best_val_score"], str(r.get("trial_id"))))


def _covers(full: dict[str, Any], partial: dict[str, Any]) -> bool:
    """``full`` (a trial's parameters) satisfies every value ``partial`` (a point) fixes."""
    return all(k in full and full[k] == v for k, v in partial.items())


def warm_points(earlier: dict[str, Any], category: str, space_points: list[dict[str, Any]],
                reused: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points a category's study enqueues (module docstring), without those a reused trial already is."""
    recs, mode = earlier["records"], earlier["mode"]
    own = _ranked([r for r in recs if r.get("category") == category], mode)[:OWN_TOP]
    others: dict[str, dict[str, Any]] = {}
    for r in _ranked([r for r in recs if r.get("category") != category], mode):
        others.setdefault(r["category"], r)
    points: list[dict[str, Any]] = []
    for r in [*own, *_ranked(list(others.values()), mode)]:
        p = dict(r.get("params") or {})
        if p and p not in points:
            points.append(p)
    points += [dict(p) for p in space_points if not any(_covers(q, p) for q in points)]
    done = [dict(r.get("params") or {}) for r in reused]
    return [p for p in points if not any(_covers(d, p) for d in done)]


def reusable(earlier: dict[str, Any], category: str, trial_run: Callable[[dict[str, Any], str], dict[str, Any]]
             ) -> list[dict[str, Any]]:
    """The category's earlier trial records whose trial run is this search's (``trial_run(params, side)``
    gives the run-config dict of a trial with those parameters in this search, ``side="now"``, or in the
    earlier one, ``side="earlier"``), each marked ``reused_from``."""
    out = []
    for r in _ranked([r for r in earlier["records"] if r.get("category") == category], earlier["mode"]):
        params = dict(r.get("params") or {})
        try:
            same = trial_run(params, "earlier") == trial_run(params, "now")
        except DraemZooError:  # the earlier configuration is no valid run here (another space)
            same = False
        if same:
            out.append(dict(r, reused_from=f"{earlier['meta']['search_id']}/{r['trial_id']}"))
    return out


def frozen_trials(earlier: dict[str, Any], category: str, reused: list[dict[str, Any]]) -> list[Any]:
    """Copies of the reused trials' entries in the earlier study (parameters with their distributions,
    value, intermediate values), ready for ``study.add_trial``; a trial the earlier study does not hold
    (an object-store search keeps no study file) is left out of the study: its record is still reused."""
    import optuna

    meta = earlier["meta"]
    study = load_category_study(meta.get("storage") or "", f"{meta['search_id']}-{category}") \
        if meta.get("storage") else None
    by_tune_id = {}
    if study is not None:
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            tid = t.user_attrs.get("tune_trial_id")
            if tid:
                by_tune_id[tid] = t
    out = []
    for r in reused:
        t = by_tune_id.get(r["trial_id"])
        if t is None:
            continue
        attrs = {k: v for k, v in t.user_attrs.items() if k != "tune_trial_id"}
        out.append(optuna.trial.create_trial(
            params=dict(t.params), distributions=dict(t.distributions), value=r["best_val_score"],
            intermediate_values=dict(t.intermediate_values), user_attrs={**attrs, WARM_ATTR: r["reused_from"]}))
    return out
