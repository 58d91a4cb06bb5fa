"""Does the validation score rank trained models the way the test split does? (Analysis only.)

For every model directory given (trained by ``draem-zoo train`` with test metrics in its
config.json), score the model on this tree's validation set of its category (the reference set:
paper simulator settings, ``eval.validation_per_normal`` anomalies per normal, s_f chosen with its
noise) and, with ``--baseline-tree`` (a checkout of an older commit), on that tree's validation
set, in its own interpreter. Then, across the models, the Spearman rank correlation of each
validation score with the test image AUROC (at the s_f that validation chose), pixel AP and AUPRO,
and the spread of the validation score between models that differ only in their seed
(``--seed-groups``, groups separated by ``;``) against the spread across all models and the
reported standard error. Within each model:

* saturation: the share of (family, s_f) image AUROCs at 1.0, and the score per rung of the ladder;
* s_f agreement: Spearman, over the filter sizes, of the validation score with the test image AUROC,
  and whether the validation spread over s_f exceeds its standard error wherever the test spread
  exceeds one point (the validation must see what the test sees);
* checkpoint agreement, for runs trained with ``analyze_test`` (``history.json`` holds test metrics
  beside each validation): the same over the validated checkpoints.

Prints one JSON object. Never use it to choose a model: it reads the test split.

    python scripts/rank_check.py runs/rank/* --baseline-tree /tmp/old --seed-groups "a-s0,a-s1;b-s0,b-s1"
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
import json, sys, time
import draem_zoo
from pathlib import Path
from draem_zoo.data import load_category
from draem_zoo.evaluation.evaluate import compute_maps
from draem_zoo.evaluation.validation import validation_metrics
from draem_zoo.pipeline.workflow import load_run_config, reference_validation_set
from draem_zoo.synthesis.simulator import load_textures
a = json.loads(sys.argv[1])
run = load_run_config(Path(a["model_dir"]))
data = load_category(run.data, a["size"], progress=False, splits=("train", "val"))
tex = load_textures(run.synthesis, a["size"], "cpu", progress=False)
vs = reference_validation_set(run, data, tex)
model = draem_zoo.load(a["model_dir"])
t0 = time.perf_counter()
maps = compute_maps(model, vs.images, 32)
m = validation_metrics(maps, vs, run.eval.filter_sizes)
print(json.dumps({"val_score": m["val_score"], "se": m["val_score_se"], "filter_size": m["val_filter_size"],
                  "saturation": m["val_saturation"], "by_filter_size": m["val_score_by_filter_size"],
                  "images": len(vs), "seconds": time.perf_counter() - t0}))
"""


def new_score(model_dir: Path) -> dict:
    import draem_zoo
    from draem_zoo.data import load_category
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
            "by_filter_size": m["val_score_by_filter_size"], "image_se": m.get("image_se"),
            "levels": {k: round(v["score"], 4) for k, v in (m.get("levels") or {}).items()},
            "family_preferred_filter_size": {f: x["preferred_filter_size"] for f, x in m["families"].items()}}


def agreement(val: dict, test: dict, se: float | None) -> dict:
    """How a validation score over some axis (filter sizes, checkpoints) agrees with the test image AUROC
    over it: Spearman, both spreads, and whether validation sees a test spread of more than one point."""
    keys = [k for k in val if test.get(k) is not None]
    v, t = [val[k] for k in keys], [test[k] for k in keys]
    out = {"points": len(keys), "spearman": rho(v, t), "val_spread": round(max(v) - min(v), 4) if v else None,
           "test_spread": round(max(t) - min(t), 4) if t else None, "se": None if se is None else round(se, 4)}
    if t and se is not None:
        out["sees_test_spread"] = (max(t) - min(t) <= 0.01) or (max(v) - min(v) > se)
    return out


def checkpoint_agreement(model_dir: Path) -> dict | None:
    """Over the validated checkpoints of a run trained with analyze_test (its own tree's validation)."""
    try:
        hist = json.loads((model_dir / "history.json").read_text())
    except (OSError, ValueError):
        return None
    pts = [h for h in hist if h.get("val_score") is not None and (h.get("analysis") or {}).get("test_image_auroc")]
    if len(pts) < 2:
        return None
    val = {str(h["iteration"]): h["val_score"] for h in pts}
    test = {str(h["iteration"]): h["analysis"]["test_image_auroc"] for h in pts}
    return agreement(val, test, pts[-1].get("val_score_se"))


def old_score(model_dir: Path, tree: str, size: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
    arg = json.dumps({"model_dir": str(model_dir), "size": size})
    # here (run configs may name data folders relative to it), with the tree's package: -P keeps `python -c`
    # from putting this directory, and this tree's package, first on sys.path
    out = subprocess.run([sys.executable, "-P", "-c", BASELINE, arg], env=env, capture_output=True, text=True)
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
    ap.add_argument("--seed-groups", default="", help="names of dirs that differ only in the seed, groups "
                    "separated by ';', e.g. 'a0,a1;b0,b1'")
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
        row["filter_size_agreement"] = agreement(row["new"]["by_filter_size"], by, row["new"]["se"])
        row["checkpoint_agreement"] = checkpoint_agreement(d)
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
        groups = [[s for s in g.split(",") if s] for g in args.seed_groups.split(";") if g.strip()]
        pairs = []
        for g in groups:
            sv = [r[which] for r in rows if r["model"] in g]
            if len(sv) > 1:
                gap = max(x["val_score"] for x in sv) - min(x["val_score"] for x in sv)
                se = statistics.fmean(x["se"] for x in sv if x.get("se") is not None) if "se" in sv[0] else None
                pairs.append({"models": g, "gap": round(gap, 4), "se": None if se is None else round(se, 4),
                              "gap_in_se": None if not se else round(gap / se, 2),
                              "test_image_auroc": [r["test"]["image_auroc_by_filter_size"].get(str(r[which]["filter_size"]))
                                                   for r in rows if r["model"] in g]})
        if pairs:
            out[f"seed_to_seed_{which}"] = pairs
        out[f"seconds_per_validation_{which}"] = round(statistics.fmean(r[which]["seconds"] for r in rows), 2)
        out[f"images_per_validation_{which}"] = rows[0][which]["images"]
    out["saturation_new"] = [r["new"]["saturation"] for r in rows]
    out["filter_size_agreement_new"] = {
        "spearman_mean": _mean([r["filter_size_agreement"]["spearman"] for r in rows]),
        "sees_test_spread": sum(bool(r["filter_size_agreement"].get("sees_test_spread")) for r in rows),
        "models": len(rows)}
    ck = [r["checkpoint_agreement"] for r in rows if r.get("checkpoint_agreement")]
    if ck:
        out["checkpoint_agreement"] = {"spearman_mean": _mean([c["spearman"] for c in ck]),
                                       "sees_test_spread": sum(bool(c.get("sees_test_spread")) for c in ck),
                                       "models": len(ck)}
    print(json.dumps(out, indent=1))


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.fmean(xs), 3) if xs else None


if __name__ == "__main__":
    main()
