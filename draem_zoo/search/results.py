"""The results folder of a search, and the tables and plot made from it (no Ray needed).

    RESULTS/search.json                 the invocation (space, budgets, resources, ids)
    RESULTS/status.json                 live progress, written by the driver
    RESULTS/<category>/trials/<id>.json every trial: parameters, curve, metrics, status
    RESULTS/<category>/summary.json     best trial, final runs (per seed), study counts
    RESULTS/<category>/best/            the exported model directory of the best configuration
    RESULTS/leaderboard.csv|.md         one row per category
    RESULTS/backbones.csv|.md|.png      the backbone comparison

``draem-zoo compare RESULTS`` rebuilds the tables and the plot from the JSON records.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

HEADLINE = ("image_auroc", "pixel_auroc", "pixel_ap", "aupro")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)


def write_category(out: Path, summary: dict[str, Any]) -> None:
    cat = out / summary["category"]
    for t in summary["trials"]:
        write_json(cat / "trials" / f"{t['trial_id']}.json", t)
    slim = {k: v for k, v in summary.items() if k != "trials"}
    slim["n_trials"] = len(summary["trials"])
    slim["finals_summary"] = final_stats(summary.get("final") or [])
    write_json(cat / "summary.json", slim)


def final_stats(finals: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over the final seeds of each test metric."""
    done = [f["metrics"] for f in finals if f.get("status") == "done" and f.get("metrics")]
    out: dict[str, Any] = {"seeds": len(done)}
    for k in HEADLINE + ("image_ap",):
        vals = [m.get(f"test_{k}") for m in done if m.get(f"test_{k}") is not None]
        if vals:
            out[k] = {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0}
    return out


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def categories(out: Path) -> list[str]:
    return sorted(p.parent.name for p in out.glob("*/summary.json"))


def _fmt(x: Any, pct: bool = True) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, dict):
        return f"{100 * x['mean']:.2f} ± {100 * x['std']:.2f}" if pct else f"{x['mean']:.3f} ± {x['std']:.3f}"
    return f"{100 * x:.2f}" if pct else f"{x:.4g}"


def _exported_filter_size(model_dir: Path) -> int | None:
    try:
        return _load(model_dir / "config.json")["score"]["filter_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def leaderboard(out: Path) -> list[dict[str, Any]]:
    rows = []
    for cat in categories(out):
        s = _load(out / cat / "summary.json")
        best = s.get("best_trial") or {}
        fs = s.get("finals_summary") or {}
        params = best.get("overrides") or {}
        rows.append({
            "category": cat, "variant": params.get("model.variant", "paper"), "trial_id": best.get("trial_id"),
            "trials": s.get("n_trials"), "val_score": best.get("best_val_score"),
            # s_f of the exported model (chosen on its own validation maps), else the trial's
            "filter_size": _exported_filter_size(out / cat / "best") or best.get("val_filter_size"),
            "seeds": fs.get("seeds", 0),
            **{f"test_{k}": (fs.get(k) or {}).get("mean") for k in HEADLINE},
            **{f"test_{k}_std": (fs.get(k) or {}).get("std") for k in HEADLINE},
            "model_dir": str(out / cat / "best") if (out / cat / "best" / "model.safetensors").is_file() else None,
            "params": json.dumps({k: v for k, v in params.items() if k != "model.variant"}, sort_keys=True),
        })
    return rows


def trial_records(out: Path) -> list[dict[str, Any]]:
    recs = []
    for path in sorted(out.glob("*/trials/*.json")):
        r = _load(path)
        r["category"] = path.parent.parent.name
        recs.append(r)
    return recs


def backbones(out: Path) -> list[dict[str, Any]]:
    """Per backbone: its best trial per category (by validation) and that trial's test metrics."""
    per: dict[str, dict[str, dict[str, Any]]] = {}
    for r in trial_records(out):
        if r.get("best_val_score") is None:
            continue
        variant = (r.get("overrides") or {}).get("model.variant", "paper")
        cur = per.setdefault(variant, {}).get(r["category"])
        if cur is None or r["best_val_score"] > cur["best_val_score"]:
            per[variant][r["category"]] = r
    rows = []
    for variant, cats in sorted(per.items()):
        row: dict[str, Any] = {"backbone": variant, "categories": len(cats),
                               "val_score": statistics.fmean(r["best_val_score"] for r in cats.values())}
        for k in HEADLINE:
            vals = [(r.get("test") or {}).get(k) for r in cats.values()]
            vals = [v for v in vals if v is not None]
            row[f"test_{k}"] = statistics.fmean(vals) if vals else None
            for c, r in sorted(cats.items()):
                row[f"{c}:{k}"] = (r.get("test") or {}).get(k)
        speeds = [(r.get("test") or {}).get("images_per_s") for r in cats.values()]
        speeds = [v for v in speeds if v]
        row["infer_images_per_s"] = statistics.fmean(speeds) if speeds else None
        row["params"] = next((r.get("params_count") for r in cats.values() if r.get("params_count")), None)
        secs = [r.get("train_seconds") for r in cats.values() if r.get("train_seconds")]
        its = [r.get("iteration") for r in cats.values() if r.get("train_seconds")]
        row["train_seconds"] = statistics.fmean(secs) if secs else None
        row["train_s_per_iteration"] = (sum(secs) / sum(its)) if secs and sum(its) else None
        rows.append(row)
    return rows


def asha_savings(out: Path) -> dict[str, Any]:
    """Iterations the trials ran against every trial running its full budget."""
    recs = trial_records(out)
    ran = sum(r.get("iteration") or 0 for r in recs)
    full = sum(r.get("budget") or 0 for r in recs)
    return {"trials": len(recs), "stopped_early": sum(bool(r.get("stopped_early")) for r in recs),
            "iterations_run": ran, "iterations_full": full, "saved_fraction": (1 - ran / full) if full else None}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def write_tables(out: Path) -> dict[str, Path]:
    """leaderboard.csv/.md, backbones.csv/.md/.png from the JSON records."""
    out = Path(out)
    board = leaderboard(out)
    _write_csv(out / "leaderboard.csv", board)
    lines = ["| category | backbone | val score | s_f | image AUROC | pixel AUROC | pixel AP | AUPRO | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in board:
        cells = [_fmt({"mean": r[f"test_{k}"], "std": r[f"test_{k}_std"] or 0} if r[f"test_{k}"] is not None
                      and r["seeds"] > 1 else r[f"test_{k}"]) for k in HEADLINE]
        lines.append(f"| {r['category']} | {r['variant']} | {_fmt(r['val_score'], False)} | {r['filter_size']} | "
                     + " | ".join(cells) + f" | {r['seeds']} |")
    sv = asha_savings(out)
    lines += ["", "Selection uses the validation score (synthetic anomalies on held-out normal images); "
              "test metrics (%) are reported only. ± is the standard deviation over final seeds.", "",
              f"Search: {sv['trials']} trials, {sv['stopped_early']} stopped early by ASHA; "
              f"{sv['iterations_run']} of {sv['iterations_full']} trial iterations run"
              + (f" ({100 * sv['saved_fraction']:.0f}% of the compute saved)." if sv["saved_fraction"] is not None
                 else ".")]
    (out / "leaderboard.md").write_text("# Leaderboard\n\n" + "\n".join(lines) + "\n")

    bb = backbones(out)
    _write_csv(out / "backbones.csv", bb)
    lines = ["| backbone | categories | val score | image AUROC | pixel AUROC | pixel AP | AUPRO | params (M) | "
             "inference img/s | train s/it |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in bb:
        lines.append(f"| {r['backbone']} | {r['categories']} | {_fmt(r['val_score'], False)} | "
                     + " | ".join(_fmt(r[f"test_{k}"]) for k in HEADLINE)
                     + f" | {_fmt(r['params'] / 1e6 if r['params'] else None, False)} | "
                       f"{_fmt(r['infer_images_per_s'], False)} | {_fmt(r['train_s_per_iteration'], False)} |")
    lines += ["", "Per backbone, its best trial in each category by validation score; test metrics (%) are "
              "averaged over categories (per-category values in backbones.csv)."]
    (out / "backbones.md").write_text("# Backbone comparison\n\n" + "\n".join(lines) + "\n")
    plot_backbones(bb, out / "backbones.png")
    return {n: out / n for n in ("leaderboard.csv", "leaderboard.md", "backbones.csv", "backbones.md",
                                 "backbones.png")}


def plot_backbones(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    use_test = any(r.get("test_image_auroc") is not None for r in rows)
    ylabel = "mean test image AUROC (%)" if use_test else "mean validation score"
    for r in rows:
        y = r.get("test_image_auroc") if use_test else r.get("val_score")
        x = r.get("infer_images_per_s")
        if y is None or not x:
            continue
        y = 100 * y if use_test else y
        ax.scatter([x], [y], s=60)
        ax.annotate(r["backbone"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("inference images / s (test split, measured in the trials)")
    ax.set_ylabel(ylabel)
    ax.set_title("DRAEM backbones: accuracy against speed")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def status_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for cat in status.get("categories", []):
        trials = cat.get("trials", [])
        counts = {st: sum(1 for t in trials if t.get("status") == st) for st in ("RUNNING", "TERMINATED", "ERROR")}
        scores = [t.get("best_val_score") for t in trials if t.get("best_val_score") is not None]
        finals = cat.get("final", [])
        rows.append({"category": cat["category"], "phase": cat.get("phase"), "running": counts["RUNNING"],
                     "done": counts["TERMINATED"], "errors": counts["ERROR"],
                     "of": status.get("trials_per_category"), "best_val": max(scores) if scores else None,
                     "final": ", ".join(f"seed {f['seed']}: {f['status']}" for f in finals) or "-"})
    return rows


def format_status(status: dict[str, Any]) -> str:
    rows = status_rows(status)
    age = time.time() - status.get("updated", time.time())
    head = (f"search {status.get('search_id')}  ({status.get('state', '?')}, updated {age:.0f} s ago)\n"
            f"{'category':16s} {'phase':8s} {'done':>5s} {'run':>4s} {'err':>4s} {'of':>4s} {'best val':>9s}  final")
    lines = [head]
    for r in rows:
        best = "-" if r["best_val"] is None else f"{r['best_val']:.4f}"
        lines.append(f"{r['category']:16s} {r['phase']!s:8s} {r['done']:5d} {r['running']:4d} {r['errors']:4d} "
                     f"{r['of']!s:>4s} {best:>9s}  {r['final']}")
    return "\n".join(lines)


def nan_to_none(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x
