"""Does a trial's early rank predict its final rank, and does a smaller image size rank alike? (Measured.)

``--configs`` configurations are drawn (seeded) from a search space, each on the small ``--variant``
(so that it fits a CPU; the space's own variant and widths are set aside), and each is trained to the whole trial budget
without early stopping, validating at ``--rungs`` geometric points (1/3^(N-1) ... 1/3, 1: where
``search --rungs`` puts ASHA's cuts), once at ``--size`` and once at ``--low-size`` (``TRIAL_IMAGE_SIZE``'s
question). No Ray: the runs train one after the other with the training loop, and a killed run
continues from its checkpoint when the same command is run again (finished ones are read back).

Writes to ``--out``: ``runs/<size>/<config>/`` (model folders), ``fidelity.csv`` (one row per config,
size and rung: iteration, val_score), ``rungs.csv``/``rungs.md`` (search.rungs' tables, each size a
"category", and the low size against the full one at every rung), and prints one JSON object: the
Spearman of every rung with the last, per size, and of the low size's scores with the full size's.

    python scripts/rank_fidelity.py --data ../shared/data --category magnetic_tile --out runs/fidelity \\
        --space search_spaces/default.py --variant paper-tiny --configs 12 --budget 270 --rungs 4 \\
        --size 48 --low-size 24 --set synthesis.anomaly_source=../shared/data/dtd
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import optuna

from draem_zoo.files import atomic_write_text
from draem_zoo.pipeline.runconfig import make_run_config
from draem_zoo.pipeline.workflow import train_category
from draem_zoo.search.plan import geometric_rungs
from draem_zoo.search.records import write_json
from draem_zoo.search.rungs import pair_agreement, write_rungs
from draem_zoo.search.space import load_space, overrides_of, suggest
from draem_zoo.train.checkpoint import find_checkpoint

WIDTHS = ("model.variant", "model.disc_width", "model.rec_width")  # the variant's own, not the draw's


SSPCAB_MIN_SIZE = 48  # below it the SSPCAB block sees 2x2 feature maps (model.variants refuses it)


def draw_configs(space_path: str, variant: str, n: int, seed: int, sspcab: bool = True) -> list[dict]:
    """``n`` distinct suggestions of the space (seeded), each with its variant (and that variant's widths)
    replaced by ``variant``: the space's hyperparameters on a model small enough for the budget. Without
    ``sspcab`` (image sizes below 48) every draw has SSPCAB off."""
    space = load_space(space_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out: list[dict] = []
    for _ in range(50 * n):
        trial = study.ask()
        d = {k: v for k, v in suggest(space, trial).items() if k not in WIDTHS}
        study.tell(trial, 0.0)
        if not sspcab and "model.sspcab" in d:
            d = {k: v for k, v in d.items() if not k.startswith("model.sspcab_")} | {"model.sspcab": False}
        d["model.variant"] = variant
        if d not in out:
            out.append(d)
        if len(out) == n:
            return out
    raise SystemExit(f"{space_path}: fewer than {n} distinct suggestions")


def run_one(args, name: str, params: dict, size: int, points: list[int]) -> Path:
    out = Path(args.out) / "runs" / str(size) / name
    sets = [f"data.root={args.data}", f"data.category={args.category}", *args.set, f"model.image_size={size}",
            f"train.iterations={args.budget}",
            "train.validate_at=" + ",".join(repr(p / args.budget) for p in points)]
    run = make_run_config(overrides_of(params), base=make_run_config(sets))
    if (out / "config.json").is_file() and (out / "history.json").is_file():
        return out
    resume = find_checkpoint(out / "checkpoints" / "last") is not None
    print(f"[rank_fidelity] {name} at {size} px: {'continuing' if resume else 'training'}", file=sys.stderr, flush=True)
    train_category(run, out, resume=resume, progress=False, evaluate_test=False)
    return out


def scores_of(model_dir: Path) -> dict[int, float]:
    history = json.loads((model_dir / "history.json").read_text())
    return {int(r["iteration"]): float(r["val_score"]) for r in history if r.get("val_score") is not None}


def report(out: Path, args, points: list[int], sizes: list[int], scores: dict, records: list[dict]) -> dict:
    """fidelity.csv, the rung tables and fidelity.json over the configurations finished so far."""
    with open(out / "fidelity.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["config", "size", "iteration", "val_score"])
        w.writeheader()
        w.writerows({"config": name, "size": size, "iteration": it, "val_score": round(v, 6)}
                    for size in sizes for name, got in scores[size].items() for it, v in sorted(got.items()))
    # the rung tables, each size as a category, through the search's own code
    for r in records:
        write_json(out / "tables" / r["category"] / "trials" / f"{r['trial_id']}.json", r)
    write_json(out / "tables" / "search.json", {"options": {"reduction_factor": 3}})
    write_rungs(out / "tables")
    summary: dict = {"points": points, "configs": len(scores[sizes[0]]), "sizes": sizes, "to_last": {}}
    for size in sizes:
        best = {t: {it: max(x for j, x in s.items() if j <= it) for it in s} for t, s in scores[size].items()}
        pairs = pair_agreement(best) if len(best) >= 2 else []
        summary["to_last"][str(size)] = {str(r["rung"]): r["spearman"] for r in pairs if r["later_rung"] == points[-1]}
    if len(sizes) > 1:  # the low size's scores against the full size's, rung by rung
        low, full = scores[sizes[1]], scores[sizes[0]]
        summary["low_vs_full"] = {}
        for p in points:
            both = {t: {0: low[t][p], 1: full[t][p]} for t in full if p in full[t] and p in low.get(t, {})}
            summary["low_vs_full"][str(p)] = pair_agreement(both)[0]["spearman"] if len(both) >= 3 else None
    atomic_write_text(out / "fidelity.json", json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--space", default="search_spaces/default.py")
    ap.add_argument("--variant", default="paper-tiny", help="the model every drawn configuration trains")
    ap.add_argument("--configs", type=int, default=12)
    ap.add_argument("--budget", type=int, default=270, help="iterations of every run (the trial budget)")
    ap.add_argument("--rungs", type=int, default=4)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--low-size", type=int, default=24, help="0: only --size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="run-config key=value for every run")
    args = ap.parse_args(argv)
    _, points = geometric_rungs(args.budget, args.rungs)
    sizes = [args.size] + ([args.low_size] if args.low_size else [])
    configs = draw_configs(args.space, args.variant, args.configs, args.seed, sspcab=min(sizes) >= SSPCAB_MIN_SIZE)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "configs.json", json.dumps(configs, indent=1))
    scores: dict[int, dict[str, dict[int, float]]] = {s: {} for s in sizes}
    records: list[dict] = []
    summary: dict = {}
    for i, params in enumerate(configs):  # both sizes of a configuration before the next: a stopped run still pairs
        name = f"c{i:02d}"
        for size in sizes:
            got = scores_of(run_one(args, name, params, size, points))
            scores[size][name] = got
            records.append({"trial_id": name, "category": f"{args.category}@{size}px", "status": "TERMINATED",
                            "budget": args.budget, "params": params,
                            "curve": [{"iteration": it, "best_val_score": max(x for j, x in got.items() if j <= it)}
                                      for it in sorted(got)]})
        summary = report(out, args, points, sizes, scores, records)  # after every configuration: partial tables
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
