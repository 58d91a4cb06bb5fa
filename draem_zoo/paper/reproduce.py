"""``draem-zoo reproduce``: the paper's configuration per category, evaluated, beside the paper's numbers.

For each category and seed, one training run (``train_category``: selection of the checkpoint
and s_f on validation only) into ``OUT/<category>/seed<k>/``; then a table of the test metrics
(image AUROC, pixel AUROC, pixel AP, AUPRO; mean ± std over seeds) beside the paper's Tables 1
and 2, as ``OUT/reproduce.md``, ``.csv`` and ``.json``. The table is rebuilt from every run
found under OUT, so several invocations (one per GPU, each with its own ``--categories`` and
``--device``) can fill one folder, and an interrupted run continues from its checkpoint when
the same command is run again (finished runs are kept, not retrained).
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.mvtec import scan_category, select_categories
from ..errors import DraemZooError
from ..pipeline.runconfig import make_run_config
from ..pipeline.workflow import changed_settings, train_category
from . import tables as paper

METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "aupro")
NAMES = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pixel_ap": "pixel AP", "aupro": "AUPRO"}


@dataclass
class ReproduceOptions:
    data: str
    out: str
    anomaly_source: str | None = None
    categories: str = "all"
    seeds: tuple[int, ...] = (0,)
    iterations: int = 0  # 0 = the paper's 700 epochs per category
    variant: str = "paper"
    image_size: int = 256
    device: str = "auto"
    sets: list[str] = field(default_factory=list)
    report_only: bool = False
    progress: bool = True
    command: str = ""


def _say(msg: str) -> None:
    print(f"[reproduce] {msg}", file=sys.stderr, flush=True)


def run_config(opts: ReproduceOptions, category: str, seed: int):
    items = [f"data.root={Path(opts.data).expanduser().resolve()}", f"data.category={category}",
             f"model.image_size={opts.image_size}", f"train.iterations={opts.iterations}", f"train.seed={seed}",
             f"train.device={opts.device}"]
    if opts.anomaly_source:
        items.append(f"synthesis.anomaly_source={Path(opts.anomaly_source).expanduser().resolve()}")
    return make_run_config(items + list(opts.sets), variant=opts.variant)


def plan(opts: ReproduceOptions) -> list[tuple[str, int]]:
    root = Path(opts.data).expanduser()
    wanted = select_categories(root, opts.categories, "reproduce")
    for c in wanted:  # every file checked before any training
        scan_category(str(root), c, 0.1, 0)
    if not opts.seeds:
        raise DraemZooError("--seeds: give at least one seed, e.g. 0 or 0,1,2")
    return [(c, s) for c in wanted for s in opts.seeds]


def run_reproduce(opts: ReproduceOptions) -> dict[str, Any]:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if not opts.report_only:
        runs = plan(opts)
        if not opts.anomaly_source:
            _say("no --anomaly-source: procedural textures stand in for DTD; the paper's numbers use DTD")
        for i, (cat, seed) in enumerate(runs, 1):
            run = run_config(opts, cat, seed)
            run_dir = out / cat / f"seed{seed}"
            differ = changed_settings(run_dir, run)
            if differ:
                raise DraemZooError(f"{run_dir}: holds a run with other settings ({', '.join(differ[:6])}); "
                                    "use the same flags, or another --out")
            if (run_dir / "config.json").is_file():
                _say(f"{cat} seed {seed} ({i}/{len(runs)}): finished earlier, kept")
                continue
            resume = (run_dir / "checkpoints" / "last" / "meta.json").is_file()
            _say(f"{cat} seed {seed} ({i}/{len(runs)}): {'resuming' if resume else 'training'} "
                 f"({run.model.variant}, {run.model.image_size} px) into {run_dir}")
            t0 = time.monotonic()
            train_category(run, run_dir, resume=resume, progress=opts.progress)
            (run_dir / "wall_seconds.json").write_text(json.dumps({"seconds": round(time.monotonic() - t0, 1)}))
            write_report(out, opts.command)  # after every run: nothing lost if the next one fails
    report = write_report(out, opts.command)
    if not report["runs"]:
        raise DraemZooError(f"{out}: no finished runs to report")
    return report


# --- the report -------------------------------------------------------------------------------


def _run_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    test = (cfg.get("metrics") or {}).get("test") or {}
    val = (cfg.get("metrics") or {}).get("validation") or {}
    run, training, sel = cfg.get("run") or {}, cfg.get("training") or {}, cfg.get("selection") or {}
    history = []
    if (run_dir / "history.json").is_file():
        history = [(h["iteration"], h["val_score"]) for h in json.loads((run_dir / "history.json").read_text())
                   if h.get("val_score") is not None]
    n_train = ((cfg.get("data") or {}).get("counts") or {}).get("train") or 1
    epochs = training.get("iterations", 0) * training.get("effective_batch_size", 8) / n_train
    wall = json.loads((run_dir / "wall_seconds.json").read_text())["seconds"] \
        if (run_dir / "wall_seconds.json").is_file() else None
    return {
        "category": (cfg.get("data") or {}).get("category") or run_dir.parent.name,
        "seed": (run.get("train") or {}).get("seed"), "model_dir": str(run_dir),
        "variant": cfg["model"]["variant"], "image_size": cfg["model"]["image_size"],
        "iterations": training.get("iterations"), "batch_size": training.get("effective_batch_size"),
        "epochs": round(epochs, 2), "paper_budget_fraction": round(epochs / 700.0, 4), "n_train": n_train,
        "anomaly_source": training.get("anomaly_source"), "device": training.get("device"),
        "training_seconds": training.get("seconds"), "wall_seconds": wall,
        "test": {k: test.get(k) for k in METRICS},
        "test_image_auroc_by_filter_size": {k: v.get("image_auroc") for k, v in (test.get("by_filter_size") or {}).items()},
        "filter_size": cfg["score"]["filter_size"], "filter_size_tie": sel.get("filter_size_tie"),
        "val_score": val.get("val_score"), "val_saturation": val.get("val_saturation"),
        "val_score_by_filter_size": val.get("val_score_by_filter_size"),
        "val_score_by_checkpoint": history, "best_iteration": sel.get("best_iteration"),
        "weights": sel.get("weights"),
    }


def collect(out: Path) -> list[dict[str, Any]]:
    recs = [r for p in sorted(out.glob("*/seed*/config.json")) if (r := _run_record(p.parent))]
    return sorted(recs, key=lambda r: (paper.CATEGORIES.index(r["category"]) if r["category"] in paper.CATEGORIES
                                       else len(paper.CATEGORIES), r["category"], r["seed"] or 0))


def _stats(vals: list[float | None]) -> dict[str, float] | None:
    vals = [100 * v for v in vals if v is not None]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per category (mean ± std over seeds), then the means over textures, objects and all."""
    rows = []
    for cat in dict.fromkeys(r["category"] for r in runs):
        mine = [r for r in runs if r["category"] == cat]
        rows.append({"category": cat, "group": paper.group_of(cat), "seeds": [r["seed"] for r in mine],
                     **{k: _stats([r["test"][k] for r in mine]) for k in METRICS},
                     "paper": paper.paper_results(cat),
                     "filter_sizes": [r["filter_size"] for r in mine],
                     "ties": sum(bool(r["filter_size_tie"]) for r in mine),
                     "val_score": _stats([r["val_score"] for r in mine]),
                     "epochs": mine[0]["epochs"], "iterations": mine[0]["iterations"]})
    groups = [("mean (textures)", [r for r in rows if r["group"] == "textures"]),
              ("mean (objects)", [r for r in rows if r["group"] == "objects"]), ("mean (all)", rows)]
    means = []
    for name, members in groups:
        if len(members) < 2:
            continue
        row: dict[str, Any] = {"category": name, "group": "mean", "seeds": None}
        for k in METRICS:
            vals = [m[k]["mean"] for m in members if m[k]]
            row[k] = {"mean": statistics.fmean(vals), "std": None, "n": len(vals)} if vals else None
        papers = [m["paper"] for m in members if m["paper"]]
        row["paper"] = ({k: round(statistics.fmean(p[k] for p in papers), 2) for k in paper.METRICS}
                        if len(papers) == len(members) else None)
        if name == "mean (all)" and {m["category"] for m in members} == set(paper.CATEGORIES):
            row["paper"] = dict(paper.HEADLINE_MEAN)  # the published headline
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
            + (f" ({' and '.join(not_paper)})" if not_paper else " (the paper's configuration)")
            + f"; batch {r['batch_size']}; budget {'; '.join(budget)}; anomaly source {', '.join(src)}; "
            f"device {', '.join(sorted({str(x['device']) for x in runs}))}.")


def markdown(rows: list[dict[str, Any]], runs: list[dict[str, Any]], command: str) -> str:
    lines = ["# DRAEM reproduction", "", _setup_line(runs), ""]
    if command:
        lines += ["Command:", "", "```bash", command, "```", ""]
    lines += ["Checkpoint and mean-filter size s_f were selected on validation data only (held-out normal "
              "training images with simulated anomalies); the test split is reported, never used. Paper: "
              f"{paper.CITATION} (the paper reports no AUPRO). Values in %, mean ± std over seeds.", "",
              "| category | seeds | image AUROC | paper | pixel AUROC | paper | pixel AP | paper | AUPRO | s_f | "
              "val score |", "|---|---|---|---|---|---|---|---|---|---|---|"]
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
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {sf} | {val} |")
    lines += ["", "## Model selection on validation", "",
              "Validation score by s_f, the s_f chosen, the share of saturated (family, s_f) image AUROCs, the "
              "validation score at each checkpoint, and, for analysis only, the test image AUROC by s_f.", "",
              "| category | seed | val score by s_f | s_f | saturated | val score by checkpoint (iteration: score) | "
              "test image AUROC by s_f |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        by = ", ".join(f"{k}: {v:.4f}" for k, v in (r["val_score_by_filter_size"] or {}).items())
        curve = ", ".join(f"{it}: {v:.4f}" for it, v in r["val_score_by_checkpoint"])
        tby = ", ".join(f"{k}: {100 * v:.1f}" for k, v in r["test_image_auroc_by_filter_size"].items() if v is not None)
        tie = f" (tie of {', '.join(map(str, r['filter_size_tie']))})" if r["filter_size_tie"] else ""
        sat = "n/a" if r["val_saturation"] is None else f"{100 * r['val_saturation']:.0f}%"
        lines.append(f"| {r['category']} | {r['seed']} | {by} | {r['filter_size']}{tie} | {sat} | {curve} | {tby} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, command: str = "") -> dict[str, Any]:
    """reproduce.md / .csv / .json from every finished run under ``out`` (written atomically)."""
    runs = collect(out)
    rows = summarise(runs)
    report = {"runs": runs, "rows": rows, "paper": paper.CITATION, "command": command}
    if not runs:
        return report
    files = {"reproduce.json": json.dumps(report, indent=1) + "\n", "reproduce.md": markdown(rows, runs, command)}
    for name, text in files.items():
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out / name)
    tmp = out / "reproduce.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["category", "seeds", *(f"{k}_mean" for k in METRICS), *(f"{k}_std" for k in METRICS),
                    *(f"paper_{k}" for k in paper.METRICS), "filter_sizes", "ties"])
        for r in rows:
            p = r.get("paper") or {}
            w.writerow([r["category"], len(r["seeds"]) if r["seeds"] else "",
                        *(round(r[k]["mean"], 3) if r[k] else "" for k in METRICS),
                        *(round(r[k]["std"], 3) if r[k] and r[k]["std"] is not None else "" for k in METRICS),
                        *(p.get(k, "") for k in paper.METRICS),
                        " ".join(map(str, r.get("filter_sizes") or [])), r.get("ties", "")])
    tmp.replace(out / "reproduce.csv")
    return report
