"""The results folder of a search, and the tables and plot made from it (no Ray needed).

    RESULTS/search.json                 the invocation (space, budgets, resources, ids)
    RESULTS/status.json                 live progress, written by the driver
    RESULTS/<category>/trials/<id>.json every trial: parameters, curve, metrics, status
    RESULTS/<category>/summary.json     best trial, final runs (per seed), study counts
    RESULTS/<category>/best/            the exported model directory of the best configuration
    RESULTS/<category>/front/<name>/    with --front N: the exported front members (:mod:`.front`)
    RESULTS/leaderboard.csv|.md         one row per category (role "best"), and one per front member
    RESULTS/backbones.csv|.md|.png      the backbone comparison
    RESULTS/front.csv|.md|.png          the accuracy-speed front of every category (:mod:`.front`)
    RESULTS/importance.csv|.md|.png     fANOVA / PED-ANOVA importance of every parameter (:mod:`.importance`)
    RESULTS/rungs.csv|.md               does early rank predict final rank: Spearman between validation points (:mod:`.rungs`)

``draem-zoo compare RESULTS`` rebuilds the tables and the plots from the JSON records (and the
categories' Optuna studies).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from .ablation import write_ablation
from .cost import cost_line, spent
from .front import front_board, front_lines, speed_of, write_front
from .importance import write_importance
from .records import (
    HEADLINE,
    _exported_filter_size,
    _fmt,
    _load,
    categories,
    final_stats,
    trial_records,
    variant_of,
    write_csv,
    write_json,
)
from .rungs import write_rungs


def write_category(out: Path, summary: dict[str, Any]) -> None:
    cat = out / summary["category"]
    for t in summary["trials"]:
        write_json(cat / "trials" / f"{t['trial_id']}.json", t)
    slim = {k: v for k, v in summary.items() if k != "trials"}
    slim["n_trials"] = len(summary["trials"])
    finals = summary.get("final") or []
    exported = summary.get("exported_trial")
    if exported:  # mean ± std over the seeds of the exported configuration only
        finals = [f for f in finals if f.get("trial_id") == exported]
    slim["finals_summary"] = final_stats(finals)
    write_json(cat / "summary.json", slim)


def leaderboard(out: Path) -> list[dict[str, Any]]:
    """One row per category (role "best": the exported best model), then its front members (role "front")."""
    rows = []
    for cat in categories(out):
        s = _load(out / cat / "summary.json")
        best = s.get("best_trial") or {}
        fs = s.get("finals_summary") or {}
        params = best.get("overrides") or {}
        rows.append({
            "category": cat, "variant": params.get("model.variant", "paper"), "trial_id": best.get("trial_id"),
            # the validation score of the exported model's final run(s); the trial's if there was none
            "trials": s.get("n_trials"), "val_score": (fs.get("val_score") or {}).get("mean", best.get("best_val_score")),
            # s_f of the exported model (chosen on its own validation maps), else the trial's
            "filter_size": _exported_filter_size(out / cat / "best") or best.get("val_filter_size"),
            "seeds": fs.get("seeds", 0),
            **{f"test_{k}": (fs.get(k) or {}).get("mean") for k in HEADLINE},
            **{f"test_{k}_std": (fs.get(k) or {}).get("std") for k in HEADLINE},
            "model_dir": str(out / cat / "best") if (out / cat / "best" / "model.safetensors").is_file() else None,
            "params": json.dumps({k: v for k, v in params.items() if k != "model.variant"}, sort_keys=True),
            "role": "best", "infer_images_per_s": best.get("infer_images_per_s"), "params_count": best.get("params_count"),
            "pixel_note": _exported_pixel_note(out / cat / "best"),
        })
        rows += front_board(out, cat, s)
    return rows


def _exported_pixel_note(model_dir: Path) -> str | None:
    """Why the exported model has no pixel metrics (its test images are labelled per image only), if so."""
    try:
        return ((_load(model_dir / "config.json").get("metrics") or {}).get("test") or {}).get("pixel_note")
    except (OSError, ValueError, AttributeError):
        return None


def _mean(vals: list[Any]) -> float | None:
    vals = [v for v in vals if v is not None]
    return statistics.fmean(vals) if vals else None


def _final_backbones(out: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """variant -> category -> metrics of its final runs, where every backbone was retrained."""
    per: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for cat in categories(out):
        s = _load(out / cat / "summary.json")
        if not s.get("backbones_final"):
            continue
        for f in s.get("final") or []:
            if f.get("status") == "done" and f.get("metrics"):
                per.setdefault(f.get("variant") or "paper", {}).setdefault(cat, []).append(f["metrics"])
    return per


def backbones(out: Path) -> list[dict[str, Any]]:
    """One row per backbone, every backbone on the same footing (``basis`` says which).

    ``basis == "final"`` (a search run with ``--backbones-final``): each backbone's best
    configuration by validation was retrained at the final budget; its test metrics (mean over
    seeds, then over categories). ``basis == "trial"``: each backbone's best search trial by
    validation, at the search-trial budget; trials ASHA stopped early have no test metrics.
    """
    finals = _final_backbones(out)
    rows = []
    if finals:
        for variant, cats in sorted(finals.items()):
            per_cat = {c: {k: _mean([m.get(f"test_{k}") for m in ms]) for k in (*HEADLINE, "images_per_s")}
                       | {"val_score": _mean([m.get("val_score") for m in ms]),
                          "iteration": _mean([m.get("iteration") for m in ms]),
                          "train_seconds": _mean([m.get("train_seconds") for m in ms]),
                          "params": next((m.get("params") for m in ms if m.get("params")), None)}
                       for c, ms in cats.items()}
            rows.append(_row(variant, "final", per_cat))
        return rows
    per: dict[str, dict[str, dict[str, Any]]] = {}
    speeds: dict[tuple[str, str], list[float]] = {}
    for r in trial_records(out):
        if r.get("best_val_score") is None:
            continue
        speed = speed_of(r)[0]
        if speed:  # speed belongs to the backbone: a trial ASHA stopped early measured it too
            speeds.setdefault((variant_of(r), r["category"]), []).append(speed)
        cur = per.setdefault(variant_of(r), {}).get(r["category"])
        if cur is None or r["best_val_score"] > cur["best_val_score"]:
            per[variant_of(r)][r["category"]] = r
    for variant, cats in sorted(per.items()):
        per_cat = {c: {**{k: None for k in HEADLINE},
                       "images_per_s": statistics.median(speeds[variant, c]) if speeds.get((variant, c)) else None,
                       "val_score": r["best_val_score"], "iteration": r.get("iteration"),
                       "train_seconds": r.get("train_seconds"), "params": r.get("params_count"),
                       "stopped_early": bool(r.get("stopped_early"))} for c, r in cats.items()}
        rows.append(_row(variant, "trial", per_cat))
    return rows


def _row(variant: str, basis: str, per_cat: dict[str, dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"backbone": variant, "basis": basis, "categories": len(per_cat),
                           "iterations": _mean([v["iteration"] for v in per_cat.values()]),
                           "val_score": _mean([v["val_score"] for v in per_cat.values()])}
    if basis == "trial":
        row["stopped_early"] = sum(v.get("stopped_early", False) for v in per_cat.values())
    for k in HEADLINE:
        row[f"test_{k}"] = _mean([v[k] for v in per_cat.values()])
        for c, v in sorted(per_cat.items()):
            row[f"{c}:{k}"] = v[k]
    for c, v in sorted(per_cat.items()):
        row[f"{c}:val_score"] = v["val_score"]
    row["infer_images_per_s"] = _mean([v["images_per_s"] for v in per_cat.values()])
    row["params"] = next((v["params"] for v in per_cat.values() if v.get("params")), None)
    secs = [v["train_seconds"] for v in per_cat.values() if v.get("train_seconds") and v.get("iteration")]
    its = [v["iteration"] for v in per_cat.values() if v.get("train_seconds") and v.get("iteration")]
    row["train_seconds"] = _mean(secs)
    row["train_s_per_iteration"] = (sum(secs) / sum(its)) if secs and sum(its) else None
    return row


def basis_text(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(one-line title, explanation) of what a backbone comparison compares."""
    if not rows:
        return "no backbone finished", ""
    its = max((r["iterations"] or 0) for r in rows)
    if rows[0]["basis"] == "final":
        return (f"final models, each backbone retrained for {its:.0f} iterations",
                "Each backbone's best configuration (by validation score) was retrained at the final budget and "
                "evaluated on the test split: all backbones on the same footing.")
    return (f"search trials (up to {its:.0f} iterations), not the final models",
            "Each backbone's best search trial by validation score, at the search-trial budget: these are NOT "
            "the final models (the leaderboard's numbers come from the final retraining of the winner "
            "only). Search trials are never evaluated on the test split, so the test columns are n/a; the "
            "inference speed is the median over the backbone's trials of what each measured (model.predict, "
            "or the validation pass for trials recorded before that). Run the search with --backbones-final to "
            "compare every backbone's final model on test.")


def asha_savings(out: Path) -> dict[str, Any]:
    """Iterations the trials ran against every trial running its full budget."""
    recs = trial_records(out)
    ran = sum(r.get("iteration") or 0 for r in recs)
    full = sum(r.get("budget") or 0 for r in recs)
    return {"trials": len(recs), "stopped_early": sum(bool(r.get("stopped_early")) for r in recs),
            "iterations_run": ran, "iterations_full": full, "saved_fraction": (1 - ran / full) if full else None}


def write_tables(out: Path) -> dict[str, Path]:
    """leaderboard.csv/.md, backbones.csv/.md/.png, front.csv/.md/.png and importance.csv/.md/.png from the
    JSON records."""
    out = Path(out)
    board = leaderboard(out)
    write_csv(out / "leaderboard.csv", board)
    lines = ["| category | backbone | val score | s_f | image AUROC | pixel AUROC | pixel AP | AUPRO | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in board if r["role"] == "best"):
        cells = [_fmt({"mean": r[f"test_{k}"], "std": r[f"test_{k}_std"] or 0} if r[f"test_{k}"] is not None
                      and r["seeds"] > 1 else r[f"test_{k}"]) for k in HEADLINE]
        lines.append(f"| {r['category']} | {r['variant']} | {_fmt(r['val_score'], False)} | {r['filter_size']} | "
                     + " | ".join(cells) + f" | {r['seeds']} |")
    notes = [f"- {r['category']}: {r['pixel_note']}" for r in board if r["role"] == "best" and r.get("pixel_note")]
    if notes:
        lines += ["", "Pixel metrics are n/a where the test images have no masks:", *notes]
    sv = asha_savings(out)
    lines += ["", "Selection uses the validation score (synthetic anomalies on held-out normal images); "
              "test metrics (%) are reported only. ± is the standard deviation over final seeds.", "",
              f"Search: {sv['trials']} trials, {sv['stopped_early']} stopped early by ASHA; "
              f"{sv['iterations_run']} of {sv['iterations_full']} trial iterations run"
              + (f" ({100 * sv['saved_fraction']:.0f}% of the compute saved)." if sv["saved_fraction"] is not None
                 else ".")]
    line = cost_line(spent(out))
    if line:
        lines += ["", line]
    lines += front_lines([r for r in board if r["role"] == "front"])
    (out / "leaderboard.md").write_text("# Leaderboard\n\n" + "\n".join(lines) + "\n")

    bb = backbones(out)
    write_csv(out / "backbones.csv", bb)
    title, explain = basis_text(bb)
    lines = ["| backbone | trained (iterations) | categories | val score | image AUROC | pixel AUROC | pixel AP | AUPRO "
             "| params (M) | inference img/s | train s/it |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in bb:
        trained = f"{r['iterations']:.0f}" if r["iterations"] is not None else "n/a"
        if r.get("stopped_early"):
            trained += f" ({r['stopped_early']} stopped early)"
        lines.append(f"| {r['backbone']} | {trained} | {r['categories']} | {_fmt(r['val_score'], False)} | "
                     + " | ".join(_fmt(r[f"test_{k}"]) for k in HEADLINE)
                     + f" | {_fmt(r['params'] / 1e6 if r['params'] else None, False)} | "
                       f"{_fmt(r['infer_images_per_s'], False)} | {_fmt(r['train_s_per_iteration'], False)} |")
    lines += ["", explain, "Test metrics (%) are averaged over categories (per-category values in backbones.csv); "
              "selection never reads test images."]
    (out / "backbones.md").write_text(f"# Backbone comparison: {title}\n\n" + "\n".join(lines) + "\n")
    plot_backbones(bb, out / "backbones.png", title, sorted(categories(out)))
    files = {n: out / n for n in ("leaderboard.csv", "leaderboard.md", "backbones.csv", "backbones.md",
                                  "backbones.png")}
    return {**files, **write_front(out), **write_importance(out), **write_ablation(out), **write_rungs(out)}


METRIC_NAMES = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pixel_ap": "pixel AP",
                "aupro": "AUPRO"}


def plot_backbones(rows: list[dict[str, Any]], path: Path, title: str = "", cats: list[str] | None = None) -> None:
    """Two panels a reader needs no README for: accuracy against speed, and the four test metrics."""
    import matplotlib  # lazily: a second to import, and only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.6), dpi=120, gridspec_kw={"width_ratios": [1, 1.15]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    tested = any(r.get("test_image_auroc") is not None for r in rows)
    # search trials are never tested: without finals, accuracy is the validation score
    key, scale, ylabel = ("image_auroc", 100, "test image AUROC (%)") if tested else \
        ("val_score", 1, "validation score (search trials are never tested)")
    drawn = 0
    for i, r in enumerate(rows):
        y, x = r.get("test_image_auroc" if tested else "val_score"), r.get("infer_images_per_s")
        if y is None or not x:
            continue
        drawn += 1
        c = colors[i % len(colors)]
        ax.scatter([x], [scale * y], s=80, color=c, zorder=3)
        for cat in cats or []:  # each category, small and faint
            v = r.get(f"{cat}:{key}")
            if v is not None:
                ax.scatter([x], [scale * v], s=14, color=c, alpha=0.35, zorder=2)
        size = f" ({r['params'] / 1e6:.1f} M params)" if r.get("params") else ""
        ax.annotate(r["backbone"] + size, (x, scale * y), textcoords="offset points", xytext=(6, 5), fontsize=8)
    if drawn:
        from matplotlib.ticker import ScalarFormatter

        xs = [r["infer_images_per_s"] for r in rows if r.get("infer_images_per_s")]
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.6, max(xs) * 3.0)  # room for the labels
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="x", which="minor", labelsize=7)
        lo, hi = ax.get_ylim()
        pad = 0.01 * scale
        ax.set_ylim(lo - 0.05 * (hi - lo + pad), min(hi + 0.12 * (hi - lo + pad), 1.01 * scale))
    else:
        ax.text(0.5, 0.5, "no scores to show", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("inference speed (images/s, " + ("measured during test evaluation)" if tested else
                                                    "median over the backbone's trials)"))
    ax.set_ylabel(ylabel)
    ax.set_title("accuracy against speed (big dot: mean, small: each category)", fontsize=10)
    ax.grid(alpha=0.3)

    keys = list(METRIC_NAMES)
    width = 0.8 / max(1, len(rows))
    if not tested:  # one bar per backbone: its validation score, mean over categories
        for i, r in enumerate(rows):
            v = r.get("val_score")
            bx.bar([i], [v or 0.0], 0.6, color=colors[i % len(colors)])
            bx.annotate("n/a" if v is None else f"{v:.3f}", (i, v or 0.0), textcoords="offset points",
                        xytext=(0, 2), ha="center", fontsize=8)
        bx.set_xticks(range(len(rows)), [r["backbone"] for r in rows], fontsize=7, rotation=15)
        bx.set_ylabel("validation score, mean over categories")
        bx.set_title("validation score per backbone (retrain with --backbones-final for test metrics)", fontsize=9)
        bx.grid(axis="y", alpha=0.3)
        rows = []  # the test-metric bars below have nothing to show
    for i, r in enumerate(rows):
        vals = [100 * r[f"test_{k}"] if r.get(f"test_{k}") is not None else 0.0 for k in keys]
        pos = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(keys))]
        bars = bx.bar(pos, vals, width, label=r["backbone"], color=colors[i % len(colors)])
        for b, k in zip(bars, keys):
            v = r.get(f"test_{k}")
            bx.annotate("n/a" if v is None else f"{100 * v:.0f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
    if rows:
        bx.set_xticks(range(len(keys)), [METRIC_NAMES[k] for k in keys])
        bx.set_ylabel("test metric (%), mean over categories")
        bx.set_ylim(0, 122)
        bx.set_title("test metrics per backbone", fontsize=10)
        bx.legend(fontsize=8, loc="upper center", ncol=min(3, max(1, len(rows))), frameon=False)
        bx.grid(axis="y", alpha=0.3)
    noun = "category" if len(cats or []) == 1 else "categories"
    where = f"{len(cats)} {noun} ({', '.join(cats[:6])}{', ...' if len(cats) > 6 else ''})" if cats else ""
    fig.suptitle(f"DRAEM backbones compared: {title}\n{where}; models selected on validation, test split reported "
                 "only", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def nan_to_none(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x
