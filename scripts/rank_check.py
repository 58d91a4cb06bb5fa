"""Does the validation score rank trained models the way the test split does? (Analysis only.)

For every model directory given (trained by ``draem-zoo train`` with test metrics in its
config.json), score the model on this tree's validation set of its category (the reference set:
paper simulator settings, ``eval.validation_per_normal`` anomalies per normal, s_f chosen with its
noise) and, with ``--baseline-tree`` (a checkout of an older commit), on that tree's validation
set, in its own interpreter. Then the Spearman rank correlation, across the models, of each
validation score with the test image AUROC (at the s_f that validation chose), pixel AP and
AUPRO, and the spread of the validation score between models that differ only in their seed
(``--seed-groups``) against the spread across all models.

Prints one JSON object. Never use it to choose a model: it reads the test split.

    python scripts/rank_check.py runs/rank/* --baseline-tree /tmp/old
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from scipy.stats import spearmanr

BASELINE = """
import json, sys, time, torch
import draem_zoo
from draem_zoo.data.mvtec import DataConfig, load_category
from draem_zoo.evaluation.evaluate import compute_maps
from draem_zoo.evaluation.validation import make_validation_set, validation_metrics
from draem_zoo.synthesis.config import SynthesisConfig
from draem_zoo.synthesis.simulator import load_textures
a = json.loads(sys.argv[1])
run = json.loads(open(a["model_dir"] + "/config.json").read())["run"]
d = {k: run["data"][k] for k in ("root", "category", "val_fraction", "split_seed")}
data = load_category(DataConfig(**d), a["size"], progress=False, splits=("train", "val"))
known = SynthesisConfig.__dataclass_fields__
synth = SynthesisConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in run["synthesis"].items() if k in known})
tex = load_textures(synth, a["size"], "cpu", progress=False)
vs = make_validation_set(data.val, synth, tex, run["eval"]["validation_seed"], tuple(run["eval"]["validation_families"]))
model = draem_zoo.load(a["model_dir"])
t0 = time.perf_counter()
maps = compute_maps(model, vs.images, 32)
m = validation_metrics(maps, vs, tuple(run["eval"]["filter_sizes"]))
print(json.dumps({"val_score": m["val_score"], "filter_size": m["val_filter_size"], "images": len(vs),
                  "seconds": time.perf_counter() - t0}))
"""


def new_score(model_dir: Path) -> dict:
    import draem_zoo
    from draem_zoo.data.mvtec import load_category
    from draem_zoo.evaluation.evaluate import compute_maps
    from draem_zoo.evaluation.validation import validation_metrics
    from draem_zoo.pipeline.workflow import load_run_config, reference_validation_set
    from draem_zoo.synthesis.simulator import load_textures

    run = load_run_config(model_dir)
    size = run.model.image_size
    data = load_category(run.data, size, progress=False, splits=("train", "val"))
    tex = load_textures(run.synthesis, size, "cpu", progress=False)
    vs = reference_validation_set(run, data, tex)
    model = draem_zoo.load(str(model_dir))
    t0 = time.perf_counter()
    maps = compute_maps(model, vs.images, 32, on_device=True)
    m = validation_metrics(maps, vs, run.eval.filter_sizes)
    return {"val_score": m["val_score"], "se": m["val_score_se"], "filter_size": m["val_filter_size"],
            "saturation": m["val_saturation"], "images": len(vs), "seconds": time.perf_counter() - t0,
            "family_preferred_filter_size": {f: x["preferred_filter_size"] for f, x in m["families"].items()}}


def old_score(model_dir: Path, tree: str, size: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
    arg = json.dumps({"model_dir": str(model_dir), "size": size})
    out = subprocess.run([sys.executable, "-c", BASELINE, arg], env=env, capture_output=True, text=True,
                         cwd=tree)  # `python -c` puts the working directory first on sys.path
    if out.returncode:
        raise SystemExit(f"baseline failed for {model_dir}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def rho(xs, ys) -> float | None:
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return round(float(spearmanr(xs, ys).statistic), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model directories")
    ap.add_argument("--baseline-tree", default=None)
    ap.add_argument("--seed-groups", default="", help="names of dirs that differ only in the seed, e.g. a0,a1")
    ap.add_argument("--cache", default=None, help="JSON file keeping each model's scores between invocations")
    args = ap.parse_args()
    cache = json.loads(Path(args.cache).read_text()) if args.cache and Path(args.cache).is_file() else {}
    rows = []
    for d in map(Path, args.models):
        if str(d.resolve()) in cache and ("old" in cache[str(d.resolve())] or not args.baseline_tree):
            rows.append(cache[str(d.resolve())])
            continue
        cfg = json.loads((d / "config.json").read_text())
        test = cfg["metrics"]["test"]
        by = {str(k): v["image_auroc"] for k, v in test["by_filter_size"].items()}
        row = {"model": d.name, "run": {k: cfg["run"][s][k] for s, k in (("loss", "ssim_weight"),
               ("loss", "focal_gamma"), ("train", "lr"), ("train", "iterations"), ("train", "seed"))},
               "test": {"image_auroc_by_filter_size": by, "pixel_ap": test["pixel_ap"], "aupro": test["aupro"]}}
        row["new"] = new_score(d)
        if args.baseline_tree:
            row["old"] = old_score(d, args.baseline_tree, cfg["model"]["image_size"])
        rows.append(row)
        if args.cache:
            cache[str(d.resolve())] = row
            Path(args.cache).write_text(json.dumps(cache))
        print(f"[rank_check] {d.name}: " + json.dumps({k: row[k]["val_score"] for k in ("new", "old") if k in row}),
              file=sys.stderr)
    out: dict = {"models": rows}
    for which in ("new", "old"):
        if which not in rows[0]:
            continue
        val = [r[which]["val_score"] for r in rows]
        img = [r["test"]["image_auroc_by_filter_size"].get(str(r[which]["filter_size"])) for r in rows]
        out[f"spearman_{which}"] = {"image_auroc": rho(val, img), "pixel_ap": rho(val, [r["test"]["pixel_ap"] for r in rows]),
                                    "aupro": rho(val, [r["test"]["aupro"] for r in rows])}
        out[f"spread_{which}"] = {"across_models": round(max(val) - min(val), 4)}
        seeds = [s for s in args.seed_groups.split(",") if s]
        if seeds:
            sv = [r[which]["val_score"] for r in rows if r["model"] in seeds]
            out[f"spread_{which}"]["seed_to_seed"] = round(max(sv) - min(sv), 4)
        out[f"seconds_per_validation_{which}"] = round(statistics.fmean(r[which]["seconds"] for r in rows), 2)
        out[f"images_per_validation_{which}"] = rows[0][which]["images"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
