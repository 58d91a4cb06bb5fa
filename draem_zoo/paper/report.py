"""The tables of ``draem-zoo reproduce``: every finished run under OUT, beside the paper's numbers.

One row per category and protocol (mean ± std over seeds; the paper's and the zoo's protocol side
by side when both ran), then the means over textures, objects and all; a list of how each protocol
differs from the paper; and, per run, how selection went: the validation score by s_f and by
checkpoint, the s_f interval, and (analysis only) the Spearman rank correlation of the validation
score with the test image AUROC over every (checkpoint, s_f) pair compared, with the test image
AUROC the choice lost against the best pair in hindsight. Written as ``reproduce.md``, ``.csv``
and ``.json``, atomically.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

from . import tables as paper
from .analysis import selection_analysis
from .protocols import DIFFERENCES, PROTOCOLS, protocol_of

METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "aupro")
NAMES = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pixel_ap": "pixel AP", "aupro": "AUPRO"}


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _run_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    test = (cfg.get("metrics") or {}).get("test") or {}
    val = (cfg.get("metrics") or {}).get("validation") or {}
    run, training, sel = cfg.get("run") or {}, cfg.get("training") or {}, cfg.get("selection") or {}
    history = _read(run_dir / "history.json") or []
    n_train = ((cfg.get("data") or {}).get("counts") or {}).get("train") or 1
    epochs = training.get("iterations", 0) * training.get("effective_batch_size", 8) / n_train
    wall = (_read(run_dir / "wall_seconds.json") or {}).get("seconds")
    filter_size = cfg["score"]["filter_size"]
    chosen_iteration = sel.get("best_iteration") if sel.get("weights") == "best" else training.get("iterations")
    return {
        "category": (cfg.get("data") or {}).get("category") or run_dir.parent.name,
        "dataset": (cfg.get("data") or {}).get("dataset") or "mvtec",
        "protocol": protocol_of(run_dir.name),
        "seed": (run.get("train") or {}).get("seed"), "model_dir": str(run_dir),
        "variant": cfg["model"]["variant"], "image_size": cfg["model"]["image_size"],
        "iterations": training.get("iterations"), "batch_size": training.get("effective_batch_size"),
        "epochs": round(epochs, 2), "paper_budget_fraction": round(epochs / 700.0, 4), "n_train": n_train,
        "anomaly_source": training.get("anomaly_source"), "device": training.get("device"),
        "training_seconds": training.get("seconds"), "wall_seconds": wall,
        "resize": (run.get("data") or {}).get("resize", "pil"),
        "test": {k: test.get(k) for k in METRICS},
        "test_image_auroc_by_filter_size": {k: v.get("image_auroc") for k, v in (test.get("by_filter_size") or {}).items()},
        "filter_size": filter_size, "filter_size_tie": sel.get("filter_size_tie"),
        "filter_size_choice": sel.get("filter_size_choice"),
        "val_score": val.get("val_score"), "val_score_se": val.get("val_score_se"),
        "val_saturation": val.get("val_saturation"), "validation_seconds": val.get("seconds"),
        "val_score_by_filter_size": val.get("val_score_by_filter_size"),
        "family_preferred_filter_size": sel.get("family_preferred_filter_size"),
        "val_score_by_checkpoint": [(h["iteration"], h["val_score"]) for h in history if h.get("val_score") is not None],
        "best_iteration": sel.get("best_iteration"), "weights": sel.get("weights"),
        "validation_fingerprint": sel.get("validation_fingerprint"),
        "selection_analysis": selection_analysis(history, chosen_iteration, filter_size, test.get("image_auroc")),
    }


def collect(out: Path) -> list[dict[str, Any]]:
    recs = [r for p in sorted(out.glob("*/*seed*/config.json")) if (r := _run_record(p.parent))]
    order = {p: i for i, p in enumerate(sorted(PROTOCOLS, key=lambda p: p != "paper"))}  # the paper's first
    return sorted(recs, key=lambda r: (paper.CATEGORIES.index(r["category"]) if r["category"] in paper.CATEGORIES
                                       else len(paper.CATEGORIES), r["category"], order.get(r["protocol"], 9),
                                       r["seed"] or 0))


def _stats(vals: list[float | None]) -> dict[str, float] | None:
    vals = [100 * v for v in vals if v is not None]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per category and protocol (mean ± std over seeds), then the means over textures,
    objects and all, per protocol."""
    rows = []
    for cat, proto in dict.fromkeys((r["category"], r["protocol"]) for r in runs):
        mine = [r for r in runs if r["category"] == cat and r["protocol"] == proto]
        rhos = [r["selection_analysis"]["spearman"] for r in mine
                if r["selection_analysis"] and r["selection_analysis"]["spearman"] is not None]
        ds = mine[0]["dataset"]
        rows.append({"category": cat, "protocol": proto, "group": paper.group_of(cat) if ds == "mvtec" else None,
                     "seeds": [r["seed"] for r in mine], "dataset": ds,
                     **{k: _stats([r["test"][k] for r in mine]) for k in METRICS},
                     "paper": paper.paper_results(cat, ds),
                     "filter_sizes": [r["filter_size"] for r in mine],
                     "ties": sum(bool(r["filter_size_tie"]) for r in mine),
                     "val_score": _stats([r["val_score"] for r in mine]),
                     "spearman": statistics.fmean(rhos) if rhos else None,
                     "epochs": mine[0]["epochs"], "iterations": mine[0]["iterations"]})
    means = []
    for proto in dict.fromkeys(r["protocol"] for r in rows):
        mine = [r for r in rows if r["protocol"] == proto]
        groups = [("mean (textures)", [r for r in mine if r["group"] == "textures"]),
                  ("mean (objects)", [r for r in mine if r["group"] == "objects"]), ("mean (all)", mine)]
        for name, members in groups:
            if len(members) < 2:
                continue
            row: dict[str, Any] = {"category": name, "protocol": proto, "group": "mean", "seeds": None}
            for k in METRICS:
                vals = [m[k]["mean"] for m in members if m[k]]
                row[k] = {"mean": statistics.fmean(vals), "std": None, "n": len(vals)} if vals else None
            papers = [m["paper"] for m in members if m["paper"]]
            row["paper"] = ({k: round(statistics.fmean(p[k] for p in papers), 2) for k in paper.METRICS}
                            if len(papers) == len(members) else None)
            ref = paper.reference(members[0].get("dataset"))
            if name == "mean (all)" and ref["mean"] and {m["category"] for m in members} == set(ref["categories"]):
                row["paper"] = dict(ref["mean"])  # the published headline
            means.append(row)
    return rows + means


def _pm(s: dict[str, float] | None) -> str:
    if not s:
        return "n/a"
    return f"{s['mean']:.1f}" + (f" ± {s['std']:.1f}" if s.get("std") and s.get("n", 1) > 1 else "")


def _setup_line(runs: list[dict[str, Any]]) -> str:
    r = runs[0]
    variants = sorted({x["variant"] for x in runs})
    sizes = sorted({x["image_size"] for x in runs})
    not_paper = [] if variants == ["paper"] else ["not the paper's architecture, widths 128/64"]
    if sizes != [256]:
        not_paper.append("not the paper's 256 px")
    budget = sorted({f"{x['epochs']:.1f} epochs = {100 * x['paper_budget_fraction']:.1f}% of the paper's 700"
                     for x in runs})
    src = sorted({str(x["anomaly_source"]) for x in runs})
    return (f"Setup: {', '.join(variants)} at {', '.join(map(str, sizes))} px"
            + (f" ({' and '.join(not_paper)})" if not_paper else " (the paper's architecture and image size)")
            + f"; batch {r['batch_size']}; budget {'; '.join(budget)}; anomaly source {', '.join(src)}; "
            f"device {', '.join(sorted({str(x['device']) for x in runs}))}.")


def _protocols(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["## Protocols", ""]
    for proto in dict.fromkeys(r["protocol"] for r in runs):
        lines.append(f"- **{proto}**" + (" (the paper's protocol, as the original code runs it): "
                                         if proto == "paper" else " (this project's; differs from the paper): ")
                     + "; ".join(DIFFERENCES.get(proto, ["unknown protocol"])) + ".")
    return lines + [""]


def _selection_rows(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["## Model selection on validation", "",
             "Validation score (± its bootstrap standard error) by s_f, the s_f chosen and its paired gain interval "
             "over 21, the share of saturated (family, s_f) image AUROCs, the validation score at each checkpoint, "
             "and, for analysis only (selection never reads the test split): the test image AUROC by s_f, the "
             "Spearman rank correlation of validation score and test image AUROC over every (checkpoint, s_f) pair "
             "compared, and the test image AUROC the choice lost against the best pair in hindsight.", "",
             "| category | seed | val score by s_f | s_f | saturated | val score by checkpoint (iteration: score) | "
             "test image AUROC by s_f | Spearman | lost |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if r["protocol"] == "paper":
            continue  # no validation set: the paper's s_f = 21 and last weights
        by = ", ".join(f"{k}: {v:.4f}" for k, v in (r["val_score_by_filter_size"] or {}).items())
        if r["val_score_se"] is not None:
            by += f" (± {r['val_score_se']:.4f})"
        curve = ", ".join(f"{it}: {v:.4f}" for it, v in r["val_score_by_checkpoint"])
        tby = ", ".join(f"{k}: {100 * v:.1f}" for k, v in r["test_image_auroc_by_filter_size"].items() if v is not None)
        tie = f" (tie of {', '.join(map(str, r['filter_size_tie']))})" if r["filter_size_tie"] else ""
        ch = r["filter_size_choice"] or {}
        if ch.get("candidate") not in (None, ch.get("baseline")):
            tie += (f"; {ch['candidate']} gains {ch['gain']:+.4f} [{ch['low']:+.4f}, {ch['high']:+.4f}]"
                    + (", moved" if ch.get("moved") else ", kept 21"))
        sat = "n/a" if r["val_saturation"] is None else f"{100 * r['val_saturation']:.0f}%"
        an = r["selection_analysis"] or {}
        rho = "n/a" if an.get("spearman") is None else f"{an['spearman']:.2f}"
        lost = "n/a" if an.get("lost_test_image_auroc") is None else f"{100 * an['lost_test_image_auroc']:.1f}"
        lines.append(f"| {r['category']} | {r['seed']} | {by} | {r['filter_size']}{tie} | {sat} | {curve} | {tby} | "
                     f"{rho} | {lost} |")
    return lines if len(lines) > 6 else []


def _citation(runs: list[dict[str, Any]]) -> str:
    return "; ".join(paper.reference(ds)["citation"] if ds == "mvtec" else f"{ds}: {paper.reference(ds)['citation']}"
                     for ds in dict.fromkeys(r.get("dataset", "mvtec") for r in runs))


def markdown(rows: list[dict[str, Any]], runs: list[dict[str, Any]], command: str) -> str:
    lines = ["# DRAEM reproduction", "", _setup_line(runs), ""]
    if command:
        lines += ["Command:", "", "```bash", command, "```", ""]
    lines += ["Each row says which protocol it ran (listed below): **paper** trains on all of the training normals and "
              "reports the last weights at s_f = 21; **zoo** selects the checkpoint and s_f on validation data only "
              "(held-out normal training images with simulated anomalies). The test split is reported, never used "
              f"for selection. Paper: {_citation(runs)} (the paper reports no AUPRO). Values in %, mean ± std over "
              "seeds.", "",
              "| category | protocol | seeds | image AUROC | paper | pixel AUROC | paper | pixel AP | paper | AUPRO | "
              "s_f | val score |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r.get("paper") or {}
        cells = []
        for k in METRICS:
            cells.append(_pm(r[k]))
            if k in paper.METRICS:
                cells.append(f"{p[k]:.1f}" if k in p else "—")
        seeds = "" if r["seeds"] is None else str(len(r["seeds"]))
        sf = "" if r["group"] == "mean" else ", ".join(map(str, r["filter_sizes"])) + (
            f" ({r['ties']} tie{'s' if r['ties'] != 1 else ''})" if r["ties"] else "")
        val = "" if r["group"] == "mean" else (f"{r['val_score']['mean'] / 100:.4f}" if r["val_score"] else "n/a")
        name = f"**{r['category']}**" if r["group"] == "mean" else r["category"]
        lines.append(f"| {name} | {r['protocol']} | {seeds} | " + " | ".join(cells) + f" | {sf} | {val} |")
    lines += ["", *_protocols(runs), *_selection_rows(runs)]
    return "\n".join(lines).rstrip() + "\n"


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_report(out: Path, command: str = "") -> dict[str, Any]:
    """reproduce.md / .csv / .json from every finished run under ``out`` (written atomically)."""
    runs = collect(out)
    rows = summarise(runs)
    report = {"runs": runs, "rows": rows, "paper": _citation(runs) if runs else paper.CITATION, "command": command}
    if not runs:
        return report
    _atomic(out / "reproduce.json", json.dumps(report, indent=1) + "\n")
    _atomic(out / "reproduce.md", markdown(rows, runs, command))
    tmp = out / "reproduce.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["category", "protocol", "seeds", *(f"{k}_mean" for k in METRICS), *(f"{k}_std" for k in METRICS),
                    *(f"paper_{k}" for k in paper.METRICS), "filter_sizes", "ties", "spearman"])
        for r in rows:
            p = r.get("paper") or {}
            w.writerow([r["category"], r["protocol"], len(r["seeds"]) if r["seeds"] else "",
                        *(round(r[k]["mean"], 3) if r[k] else "" for k in METRICS),
                        *(round(r[k]["std"], 3) if r[k] and r[k]["std"] is not None else "" for k in METRICS),
                        *(p.get(k, "") for k in paper.METRICS),
                        " ".join(map(str, r.get("filter_sizes") or [])), r.get("ties", ""),
                        "" if r.get("spearman") is None else round(r["spearman"], 4)])
    tmp.replace(out / "reproduce.csv")
    return report
