"""What a search teaches about its parameters: fANOVA and PED-ANOVA importances (no Ray needed).

For each category, and pooled over categories, every searched parameter's importance from
``optuna.importance.get_param_importances`` with ``FanovaImportanceEvaluator`` (seed 0) and
``PedAnovaImportanceEvaluator`` (its defaults: the top 10% of trials against all). The parameters
and their distributions come from the category's Optuna study (:mod:`.study`; where the study is not
in a file, from replaying each trial's parameters through the search's ``space.py``).

One budget: ASHA stops weak trials at different iterations, and a score after 8 iterations is not a
score after 16. So every trial is compared at one rung, the deepest validation point every compared
trial reached (compared: the finished trials with a validation score), with the space's metric
(``best_val_score``: the best validation score so far) as it stood there; the tables say which
iteration. Pooled over categories, each category's trials are scored at its own rung and ranked
within the category (0 the worst, 1 the best), so that an easy category does not drown a hard one.

A parameter set only by some trials (conditional: ``model.disc_width`` of timm backbones) is rated on
those trials, beside the parameters all of them have. With few trials the numbers mean little
(fANOVA fits a random forest to the trials; PED-ANOVA's top 10% of 8 trials is one trial): under
:data:`TOO_FEW` trials the tables say so plainly, and an evaluator that fails says why instead.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from .records import write_csv
from .study import load_category_study

EVALUATORS = {"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}
TOO_FEW = 20  # trials per study under which importances are mostly noise


def _evaluator(name: str):
    import optuna

    if name == "fanova":
        return optuna.importance.FanovaImportanceEvaluator(seed=0)
    return optuna.importance.PedAnovaImportanceEvaluator()


def rung_scores(records: list[dict[str, Any]], metric: str = "best_val_score") -> dict[str, Any]:
    """The trials compared at one budget: ``iteration`` (the deepest validation point every compared
    trial reached), ``scores`` (trial id -> the metric there), ``params`` (trial id -> parameters),
    ``budget`` and ``excluded`` (trials without a score, or failed)."""
    reached: dict[str, list[dict[str, Any]]] = {}
    excluded = 0
    for r in records:
        curve = [c for c in r.get("curve") or [] if c.get(metric) is not None and c.get("iteration") is not None]
        if r.get("status", "TERMINATED") != "TERMINATED" or not curve:
            excluded += 1
            continue
        reached[r["trial_id"]] = curve
    if not reached:
        return {"iteration": None, "scores": {}, "params": {}, "budget": None, "excluded": excluded}
    rung = min(max(c["iteration"] for c in curve) for curve in reached.values())
    scores = {tid: [c for c in curve if c["iteration"] <= rung][-1][metric] for tid, curve in reached.items()}
    by_id = {r["trial_id"]: r for r in records}
    return {"iteration": rung, "scores": scores, "params": {t: by_id[t].get("params") or {} for t in scores},
            "budget": max((by_id[t].get("budget") or 0) for t in scores) or None,
            "stopped_early": sum(bool(by_id[t].get("stopped_early")) for t in scores), "excluded": excluded}


def distributions(out: Path, category: str, params: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """(parameter -> Optuna distribution, where they came from) for a category's trials."""
    meta_path = out / "search.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    dists: dict[str, Any] = {}
    if meta.get("storage") and meta.get("search_id"):
        study = load_category_study(meta["storage"], f"{meta['search_id']}-{category}")
        if study is not None:
            for t in study.trials:
                dists.update(t.distributions)
            if dists:
                return dists, "the category's Optuna study"
    if (out / "space.py").is_file():
        import optuna

        from .space import load_space

        space = load_space(out / "space.py")
        for p in params.values():
            trial = optuna.trial.FixedTrial(p)
            try:
                space.fn(trial)
            except Exception:  # a trial the space would not suggest again: its parameters stay unrated
                continue
            dists.update(trial.distributions)
        return dists, "replayed through space.py (the study is not kept in a file)"
    return dists, "none (no study and no space.py)"


def _study(values: dict[str, float], params: dict[str, dict[str, Any]], dists: dict[str, Any], direction: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)
    for tid, value in values.items():
        p = {k: (tuple(v) if isinstance(v, list) else v) for k, v in params[tid].items() if k in dists}
        try:
            study.add_trial(optuna.trial.create_trial(params=p, distributions={k: dists[k] for k in p}, value=value))
        except ValueError:  # a value outside the distribution the study has for it (another space version)
            continue
    return study


def _importances(study, names: list[str], evaluator: str) -> tuple[dict[str, float], str]:
    import optuna

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            got = optuna.importance.get_param_importances(study, evaluator=_evaluator(evaluator), params=names)
        except Exception as exc:
            return {}, f"{EVALUATORS[evaluator]} failed: {type(exc).__name__}: {exc}"
    notes = sorted({str(w.message) for w in caught if "experimental" not in str(w.message).lower()})
    return {k: float(v) for k, v in got.items()}, "; ".join(notes)


def evaluate(values: dict[str, float], params: dict[str, dict[str, Any]], dists: dict[str, Any],
             direction: str = "maximize") -> list[dict[str, Any]]:
    """One row per (evaluator, parameter): ``importance`` (None where it cannot be computed), ``trials``
    it was computed on, ``conditional`` and a ``note``."""
    names = sorted(dists)
    have = {n: [t for t in values if n in params[t]] for n in names}
    varied = [n for n in names if not dists[n].single() and have[n]]
    common = [n for n in varied if len(have[n]) == len(values)]
    rows = []
    for ev in EVALUATORS:
        result: dict[str, tuple[float | None, int, str]] = {}
        if common:
            got, note = _importances(_study(values, params, dists, direction), common, ev)
            for n in common:
                result[n] = (got.get(n), len(values), note)
        for n in varied:
            if n in common:
                continue
            subset = {t: values[t] for t in have[n]}
            names_here = [m for m in varied if all(m in params[t] for t in subset)]
            if len(subset) < 2:
                result[n] = (None, len(subset), f"set by {len(subset)} trial: nothing to compare")
                continue
            got, note = _importances(_study(subset, params, dists, direction), names_here, ev)
            result[n] = (got.get(n), len(subset), f"conditional: rated on the {len(subset)} trials that set it"
                         + (f"; {note}" if note else ""))
        for n in names:
            imp, n_trials, note = result.get(n, (None, len(have[n]), "one value only: nothing to rate"
                                                 if dists[n].single() else "set by no compared trial"))
            rows.append({"evaluator": ev, "parameter": n, "importance": imp, "trials": n_trials,
                         "conditional": n not in common and n in varied, "note": note})
    return rows


def _ranked(scores: dict[str, float], direction: str) -> dict[str, float]:
    """Scores as their rank within the category, 0 (worst) to 1 (best); ties share their mean rank."""
    sign = 1 if direction == "maximize" else -1
    order = sorted(scores, key=lambda t: sign * scores[t])
    if len(order) == 1:
        return {order[0]: 1.0}
    pos: dict[str, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            pos[order[k]] = (i + j) / 2 / (len(order) - 1)
        i = j + 1
    return pos


def importance_rows(out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows of importance.csv, one summary per scope: category or "pooled") of a results folder."""
    out = Path(out)
    rows: list[dict[str, Any]] = []
    scopes: list[dict[str, Any]] = []
    pooled_values: dict[str, float] = {}
    pooled_params: dict[str, dict[str, Any]] = {}
    pooled_dists: dict[str, Any] = {}
    for summary_path in sorted(out.glob("*/summary.json")):
        cat = summary_path.parent.name
        summary = json.loads(summary_path.read_text())
        direction = "minimize" if summary.get("mode") == "min" else "maximize"
        recs = [json.loads(p.read_text()) for p in sorted((out / cat / "trials").glob("*.json"))]
        at = rung_scores(recs, summary.get("metric") or "best_val_score")
        dists, source = distributions(out, cat, at["params"] or {r["trial_id"]: r.get("params") or {} for r in recs})
        scope = {"scope": cat, "trials": len(at["scores"]), "iteration": at["iteration"], "budget": at["budget"],
                 "stopped_early": at.get("stopped_early", 0), "excluded": at["excluded"], "source": source,
                 "parameters": sorted(dists)}
        scopes.append(scope)
        for r in evaluate(at["scores"], at["params"], dists, direction) if at["scores"] and dists else \
                [{"evaluator": e, "parameter": n, "importance": None, "trials": 0, "conditional": False,
                  "note": "no compared trial"} for e in EVALUATORS for n in sorted(dists)]:
            rows.append({"scope": cat, **r, "iteration": at["iteration"]})
        for tid, v in _ranked(at["scores"], direction).items():
            pooled_values[f"{cat}/{tid}"] = v
            pooled_params[f"{cat}/{tid}"] = at["params"][tid]
        pooled_dists.update(dists)
    if len(scopes) > 1 and pooled_values:
        scopes.append({"scope": "pooled", "trials": len(pooled_values), "iteration": None, "budget": None,
                       "stopped_early": sum(s["stopped_early"] for s in scopes), "excluded":
                       sum(s["excluded"] for s in scopes), "source": "every category, ranked within its category",
                       "parameters": sorted(pooled_dists)})
        for r in evaluate(pooled_values, pooled_params, pooled_dists):
            rows.append({"scope": "pooled", **r, "iteration": "each category's rung"})
    return rows, scopes


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def scope_text(s: dict[str, Any]) -> str:
    """What a scope's numbers rest on, in a sentence or two."""
    if not s["trials"]:
        return f"No finished trial with a validation score ({s['excluded']} without one): nothing to rate."
    if s["scope"] == "pooled":
        text = (f"{s['trials']} trials of all categories, each scored at its category's rung and ranked within its "
                "category (0 the worst, 1 the best).")
    else:
        text = (f"{s['trials']} trials compared at iteration {s['iteration']}"
                + (f" of {s['budget']}" if s["budget"] else "") + ": the deepest validation point every compared "
                f"trial reached ({s['stopped_early']} were stopped early by ASHA"
                + (f"; {s['excluded']} without a score left out" if s["excluded"] else "") + "). "
                f"Parameters from {s['source']}.")
    if s["trials"] < TOO_FEW:
        text += (f" **Too few trials ({s['trials']}) for these numbers to mean much**: fANOVA fits a random forest to "
                 f"{s['trials']} points and PED-ANOVA compares the top 10% of them with all; under {TOO_FEW} trials "
                 "read them as noise, not as a finding.")
    return text


def write_importance(out: Path) -> dict[str, Path]:
    """``importance.csv``, ``importance.md`` and ``importance.png`` (a heat map) of a results folder."""
    out = Path(out)
    rows, scopes = importance_rows(out)
    write_csv(out / "importance.csv", rows or [{"scope": None, "evaluator": None, "parameter": None,
                                                 "importance": None, "trials": 0, "conditional": None,
                                                 "note": "no category", "iteration": None}])
    lines = ["# Hyperparameter importance", "",
             "Importance of every searched parameter from Optuna's `get_param_importances` with fANOVA and "
             "PED-ANOVA, on trials compared at one budget: per evaluator the parameters every compared trial has sum "
             "to 1; a conditional parameter (set by some trials only) is rated in its own evaluation on the trials "
             "that set it, on that evaluation's scale.", ""]
    for s in scopes:
        lines += [f"## {s['scope']}", "", scope_text(s), ""]
        mine = [r for r in rows if r["scope"] == s["scope"]]
        if not mine:
            continue
        lines += ["| parameter | " + " | ".join(EVALUATORS.values()) + " | trials | note |",
                  "|---|" + "---|" * len(EVALUATORS) + "---|---|"]
        for name in s["parameters"]:
            cells = {r["evaluator"]: r for r in mine if r["parameter"] == name}
            notes = "; ".join(sorted({c["note"] for c in cells.values() if c["note"]}))
            lines.append(f"| {name} | " + " | ".join(_pct(cells[e]["importance"]) if e in cells else "n/a"
                                                     for e in EVALUATORS)
                         + f" | {max(c['trials'] for c in cells.values())} | {notes.replace('|', '/')} |")
        lines.append("")
    if not scopes:
        lines.append("No finished category to rate.")
    (out / "importance.md").write_text("\n".join(lines) + "\n")
    plot_importance(rows, scopes, out / "importance.png")
    return {n: out / n for n in ("importance.csv", "importance.md", "importance.png")}


def plot_importance(rows: list[dict[str, Any]], scopes: list[dict[str, Any]], path: Path) -> None:
    """Heat maps, categories (and pooled) x parameters, one per evaluator; grey where there is no number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = sorted({r["parameter"] for r in rows if r["parameter"]})
    labels = [s["scope"] + (f" ({s['trials']})" if s["trials"] else "") for s in scopes]
    fig, axes = plt.subplots(1, len(EVALUATORS), figsize=(3 + 1.3 * max(1, len(names)) * len(EVALUATORS),
                                                           1.6 + 0.45 * max(1, len(scopes))), dpi=110, squeeze=False)
    for ax, (ev, title) in zip(axes[0], EVALUATORS.items()):
        grid = np.full((max(1, len(scopes)), max(1, len(names))), np.nan)
        for r in rows:
            if r["evaluator"] == ev and r["importance"] is not None and r["parameter"] in names:
                grid[[s["scope"] for s in scopes].index(r["scope"]), names.index(r["parameter"])] = r["importance"]
        cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
        ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if np.isnan(v) or v > 0.5 else "white")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(title, fontsize=9)
    few = [s for s in scopes if 0 < s["trials"] < TOO_FEW]
    fig.suptitle("Hyperparameter importance (rows: category, trials compared)"
                 + (f"; under {TOO_FEW} trials: too few to mean much" if few else ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
