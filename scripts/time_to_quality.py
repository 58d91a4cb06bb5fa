"""Time to quality: training recipes of one category side by side, scored against the samples they used.

Each ``--recipe NAME:key=value,...`` (run-config keys, as ``--set``; the first recipe is the reference,
normally the paper's: ``--recipe paper:``) is trained once per ``--seeds`` seed for the same number of
``--samples`` (iterations = samples / train.batch_size, so batch 32 and batch 8 compare at equal
samples). Every run validates at ``--points`` log-spaced fractions of its budget (1/2^(points-1) ... 1,
``train.validate_at``), and, at the same points and for the analysis only, scores the test split (image
AUROC at the s_f validation chose, pixel AUROC, pixel AP, AUPRO): selection never reads it, and nothing
here may be tuned on it.

Writes to ``--out``:

* ``time_to_quality.csv``: one row per run and point: recipe, seed, iteration, samples, training seconds
  (the steps alone: validation and checkpoints left out), val_score and its standard error, the test metrics;
* ``time_to_quality.md``: per recipe, the final validation score (mean over seeds, ± its standard error:
  the spread between seeds and the validation set's own noise), the final test metrics, the samples at
  which the mean validation score first reaches 95% and 99% of the reference recipe's final one, and
  whether it reaches the reference's final score (within that score's standard error) in at most a
  quarter of the samples;
* ``time_to_quality.png``: validation score and the three test metrics against samples (log scale), mean
  over seeds with the seeds' range.

Resumable: a finished run (its model folder complete) is read back, a killed one continues from its last
checkpoint (one per point), so the same command line after a kill carries on. Prints one JSON object.

    python scripts/time_to_quality.py --data ../shared/data --category magnetic_tile --out runs/ttq \\
        --recipe paper: --recipe ema:train.ema_decay=0.999 --recipe cosine:train.lr_schedule=cosine,train.warmup=0.05 \\
        --seeds 0,1 --samples 24000 --set model.variant=paper-tiny --set model.image_size=64
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from pathlib import Path

from draem_zoo.files import atomic_write_text
from draem_zoo.pipeline.runconfig import make_run_config
from draem_zoo.pipeline.workflow import train_category
from draem_zoo.train.checkpoint import find_checkpoint

TEST_KEYS = ("test_image_auroc", "test_pixel_auroc", "test_pixel_ap", "test_aupro")
COLUMNS = ("recipe", "seed", "iteration", "samples", "seconds", "val_score", "val_score_se", *TEST_KEYS)


def parse_recipe(text: str) -> tuple[str, list[str]]:
    name, _, keys = text.partition(":")
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise SystemExit(f"--recipe {text!r}: NAME:key=value,... with a name of letters, digits, - and _")
    sets = [k.strip() for k in keys.split(",") if k.strip()]
    if any("=" not in k for k in sets):
        raise SystemExit(f"--recipe {text!r}: each setting is key=value (e.g. train.ema_decay=0.999)")
    return name, sets


def fractions(points: int) -> list[float]:
    return [2.0 ** -k for k in range(points - 1, -1, -1)]


def run_one(args, name: str, sets: list[str], seed: int) -> Path:
    """Train (or continue, or read back) one recipe at one seed; its model folder."""
    out = Path(args.out) / "runs" / f"{name}-s{seed}"
    base = [f"data.root={args.data}", f"data.category={args.category}", *args.set, *sets, f"train.seed={seed}"]
    batch = make_run_config(base).train.batch_size
    run = make_run_config([*base, f"train.iterations={max(1, args.samples // batch)}",
                           "train.validate_at=" + ",".join(repr(f) for f in fractions(args.points))])
    if (out / "config.json").is_file() and (out / "history.json").is_file():
        return out
    resume = find_checkpoint(out / "checkpoints" / "last") is not None
    print(f"{name} seed {seed}: {'continuing' if resume else 'training'} ({run.train.iterations} iterations "
          f"at batch {batch})", file=sys.stderr, flush=True)
    train_category(run, out, resume=resume, progress=args.progress, analyze_test="full")
    return out


def rows_of(name: str, seed: int, model_dir: Path) -> list[dict]:
    """The validated points of one run, with the training seconds up to each (the report windows' steps)."""
    history = json.loads((model_dir / "history.json").read_text())
    batch = json.loads((model_dir / "config.json").read_text())["run"]["train"]["batch_size"]
    rows, seconds, before = [], 0.0, 0
    for rec in sorted(history, key=lambda r: r["iteration"]):
        if rec.get("it_per_s"):
            seconds += (rec["iteration"] - before) / rec["it_per_s"]
        before = rec["iteration"]
        if rec.get("val_score") is None:
            continue
        test = rec.get("analysis") or {}
        rows.append({"recipe": name, "seed": seed, "iteration": rec["iteration"], "samples": rec["iteration"] * batch,
                     "seconds": round(seconds, 2), "val_score": rec["val_score"],
                     "val_score_se": rec.get("val_score_se"), **{k: test.get(k) for k in TEST_KEYS}})
    return rows


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summarise(rows: list[dict], recipes: list[str]) -> dict:
    """Per recipe: mean curves over seeds, the final scores ± se, samples to 95%/99% of the reference."""
    by: dict[str, dict[int, list[dict]]] = {}
    for r in rows:
        by.setdefault(r["recipe"], {}).setdefault(r["samples"], []).append(r)
    out: dict[str, dict] = {}
    for name in recipes:
        points = sorted(by.get(name, {}))
        curve = [{"samples": s, "seconds": _mean(r["seconds"] for r in by[name][s]),
                  "val_score": _mean(r["val_score"] for r in by[name][s]),
                  "seeds": len(by[name][s]), **{k: _mean(r[k] for r in by[name][s]) for k in TEST_KEYS},
                  "range": {k: (min(v), max(v)) for k in ("val_score", *TEST_KEYS)
                            if (v := [r[k] for r in by[name][s] if r[k] is not None])}}
                 for s in points]
        final = by[name][points[-1]] if points else []
        scores = [r["val_score"] for r in final]
        n = len(scores)
        # the final score's standard error: the seeds' spread and each validation set's own noise
        spread = statistics.variance(scores) if n > 1 else 0.0
        noise = _mean((r["val_score_se"] or 0.0) ** 2 for r in final) or 0.0
        out[name] = {"curve": curve, "final_val": _mean(scores), "final_se": math.sqrt((spread + noise) / n) if n else None,
                     "seeds": n, "samples": points[-1] if points else None,
                     **{f"final_{k}": _mean(r[k] for r in final) for k in TEST_KEYS}}
    ref = out[recipes[0]]
    for s in out.values():
        for pct in (95, 99):
            goal = None if ref["final_val"] is None else pct / 100 * ref["final_val"]
            s[f"samples_to_{pct}"] = next((c["samples"] for c in s["curve"] if goal is not None
                                           and c["val_score"] is not None and c["val_score"] >= goal), None)
        bar = None if ref["final_val"] is None else ref["final_val"] - (ref["final_se"] or 0.0)
        s["samples_to_reference"] = next((c["samples"] for c in s["curve"] if bar is not None
                                          and c["val_score"] is not None and c["val_score"] >= bar), None)
        s["reference_in_a_quarter"] = bool(s["samples_to_reference"] is not None and ref["samples"]
                                           and s["samples_to_reference"] <= ref["samples"] / 4)
    return out


def _f(v, digits=4):
    return "-" if v is None else f"{v:.{digits}f}"


def write_markdown(path: Path, summary: dict, recipes: dict[str, list[str]], args) -> None:
    ref = next(iter(recipes))
    lines = [f"# Time to quality: {args.category}", "",
             f"{args.samples} samples per run, validated at {args.points} log-spaced points; seeds {args.seeds}; "
             f"reference recipe `{ref}`. Test metrics are reported, never used to choose anything.", "",
             "| recipe | settings | final val ± se | test image AUROC | pixel AP | AUPRO | samples to 95% | "
             "samples to 99% | reference score in <= 1/4 of the samples |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {', '.join(recipes[name]) or 'the paper recipe'} | {_f(s['final_val'])} ± "
                     f"{_f(s['final_se'])} | {_f(s['final_test_image_auroc'])} | {_f(s['final_test_pixel_ap'])} | "
                     f"{_f(s['final_test_aupro'])} | {s['samples_to_95'] or 'not reached'} | "
                     f"{s['samples_to_99'] or 'not reached'} | "
                     f"{'yes (' + str(s['samples_to_reference']) + ')' if s['reference_in_a_quarter'] else 'no'} |")
    lines += ["", "Mean validation score over seeds at each point (samples: score):", ""]
    for name, s in summary.items():
        lines.append(f"- {name}: " + ", ".join(f"{c['samples']}: {_f(c['val_score'])}" for c in s["curve"]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_plot(path: Path, summary: dict) -> None:
    import matplotlib  # lazily: only the picture needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    keys = (("val_score", "validation score"), ("test_image_auroc", "test image AUROC (analysis)"),
            ("test_pixel_ap", "test pixel AP (analysis)"), ("test_aupro", "test AUPRO (analysis)"))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    for ax, (key, title) in zip(axes.flat, keys):
        for name, s in summary.items():
            pts = [c for c in s["curve"] if c.get(key) is not None]
            if not pts:
                continue
            x = [c["samples"] for c in pts]
            (line,) = ax.plot(x, [c[key] for c in pts], marker="o", label=name)
            lo = [c["range"].get(key, (c[key], c[key]))[0] for c in pts]
            hi = [c["range"].get(key, (c[key], c[key]))[1] for c in pts]
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_xscale("log")
        ticks = [c["samples"] for c in next(iter(summary.values()))["curve"]]  # the reference's points
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks], rotation=30)
        ax.set_xlabel("training samples")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ref = next(iter(summary.values()))
    if ref["final_val"] is not None:  # the reference's final score, and 95% of it
        for frac, style in ((1.0, "--"), (0.95, ":")):
            axes.flat[0].axhline(frac * ref["final_val"], color="grey", ls=style, lw=1,
                                 label=f"{frac:.0%} of the reference's final")
    axes.flat[0].legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset root (MVTec layout)")
    ap.add_argument("--category", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--recipe", action="append", required=True, help="NAME:key=value,... (the first: the reference)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--samples", type=int, required=True, help="training samples per run (iterations x batch)")
    ap.add_argument("--points", type=int, default=7, help="log-spaced validation points (7: 1/64 ... 1)")
    ap.add_argument("--set", action="append", default=[], help="run-config key=value for every recipe")
    ap.add_argument("--progress", action="store_true", help="progress bars of each run")
    args = ap.parse_args(argv)
    recipes = dict(parse_recipe(r) for r in args.recipe)
    if len(recipes) != len(args.recipe):
        raise SystemExit("--recipe: two recipes have the same name")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.points < 1 or args.samples < 1 or not seeds:
        raise SystemExit("--points and --samples must be >= 1, --seeds a list of integers")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    for seed in seeds:  # seed-major: after a first pass over the recipes, every recipe has a curve
        for name, sets in recipes.items():
            rows += rows_of(name, seed, run_one(args, name, sets, seed))
    rows.sort(key=lambda r: (list(recipes).index(r["recipe"]), r["seed"], r["samples"]))
    with open(out / "time_to_quality.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows, list(recipes))
    write_markdown(out / "time_to_quality.md", summary, recipes, args)
    write_plot(out / "time_to_quality.png", summary)
    print(json.dumps({"category": args.category, "samples": args.samples, "seeds": seeds,
                      "seconds": round(time.perf_counter() - t0, 1),
                      "recipes": {n: {k: v for k, v in s.items() if k != "curve"} for n, s in summary.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
