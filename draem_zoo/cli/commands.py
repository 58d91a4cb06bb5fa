"""The bodies of the ``draem-zoo`` subcommands (argument parsing lives in :mod:`draem_zoo.cli.parser`).

Each command imports what it needs inside its function: ``draem-zoo --help`` and the light commands
start in a fraction of a second instead of loading torch, Ray, ONNX and the Hub client every time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DraemZooError


def _load_model(spec: str, device: str = "cpu"):
    from .. import load

    return load(spec, device=device)


def _device(name: str) -> str:
    from ..train.trainer import resolve_device

    return str(resolve_device(name))


def cmd_variants(args: argparse.Namespace) -> int:
    from ..model.variants import ModelConfig, list_variants

    for name in list_variants():
        cfg = ModelConfig.for_variant(name)
        enc = cfg.disc_encoder or "paper U-Net"
        print(f"{name:28s} rec_width={cfg.rec_width:<4d} disc_width={cfg.disc_width:<4d} encoder={enc}")
    print("timm-<name> works for any timm CNN that builds with features_only=True")
    return 0


def cmd_convert_official(args: argparse.Namespace) -> int:
    from ..export.convert import convert_official

    out = convert_official(args.rec, args.seg, args.out_dir, image_size=args.image_size)
    print(json.dumps({"model_dir": str(out), "channel_order": "BGR", "image_size": args.image_size}))
    return 0


def run_config_from_args(args: argparse.Namespace):
    from ..pipeline.runconfig import make_run_config

    flags = {"data.root": args.data, "data.category": args.category, "model.image_size": args.image_size,
             "train.iterations": args.iterations, "train.batch_size": args.batch_size,
             "synthesis.anomaly_source": args.anomaly_source, "train.seed": args.seed, "train.device": args.device,
             "data.dataset": None if getattr(args, "dataset", "auto") == "auto" else args.dataset}
    items = [f"{k}={v}" for k, v in flags.items() if v is not None]
    return make_run_config(items + list(args.set or []), variant=args.variant)


def cmd_config(args: argparse.Namespace) -> int:
    from ..pipeline.runconfig import make_run_config

    cfg = make_run_config(list(args.set or []), variant=args.variant)
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from ..data import DATASETS, describe

    counts = describe(args.root, args.dataset, collect=True)
    broken = [c for c, v in counts.items() if "error" in v]
    for c in broken:  # each its one line; the other categories are still listed
        print(f"draem-zoo describe: error: {counts[c]['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps(counts, indent=2))
        return 2 if broken else 0
    if not counts:
        ds = DATASETS.get(args.dataset)
        raise DraemZooError(f"{args.root}: no categories found (read as --dataset {args.dataset}"
                            + (f": {ds.layout})" if ds else ")"))
    ds = DATASETS[next(iter(counts.values()))["dataset"]]
    title = f"{ds.title} layout" if ds.name == "mvtec" else ds.title  # users' own data take MVTec AD's layout
    print(f"{args.root}: {title} ({ds.name}{', detected' if args.dataset == 'auto' else ''}; {ds.layout})")
    for cat, c in counts.items():
        if "error" in c:
            print(f"{cat:20s} (not readable: see the error above)")
            continue
        defects = ", ".join(f"{d} {n}" for d, n in c["test_per_defect"].items())
        only = f"  image labels only: {', '.join(c['image_labels_only'])}" if c.get("image_labels_only") else ""
        print(f"{cat:20s} train {c['train']:5d}  val {c['val']:4d}  test {c['test']:5d}  ({defects}){only}")
    return 2 if broken else 0


def _print_metrics(title: str, m: dict | None) -> None:
    if not m:
        return
    keys = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro", "image_f1_max", "pixel_f1_max")
    print(f"{title} (s_f = {m.get('filter_size')}, {m.get('n_images')} images, {m.get('n_anomalous')} anomalous)")
    for k in keys:
        if m.get(k) is not None:
            print(f"  {k:14s} {100 * m[k]:6.2f}")
    for d, v in (m.get("per_defect") or {}).items():
        auc = "n/a" if v["image_auroc"] is None else f"{100 * v['image_auroc']:6.2f}"
        print(f"  {'AUROC ' + d:14s} {auc}  ({v['n']} images)")


def cmd_train(args: argparse.Namespace) -> int:
    from ..pipeline.workflow import train_category

    run = run_config_from_args(args)
    result = train_category(run, args.out, resume=args.resume, progress=not args.quiet)
    if args.json:
        print(json.dumps(result))
        return 0
    val = result["validation"]
    if val:
        print(f"validation score {val['val_score']:.4f} at s_f = {val['val_filter_size']} "
              f"(synthetic anomalies on {val['n_normal']} held-out normal images)")
    if (result.get("thresholds") or {}).get("image_threshold_note"):
        print(f"note: {result['thresholds']['image_threshold_note']}")
    _print_metrics("test metrics (reported, not used for selection)", result["test"])
    print(f"model written to {result['model_dir']} (model.safetensors + config.json)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..data import DATASETS, DataConfig, load_category
    from ..evaluation.evaluate import EvalConfig, evaluate_model

    model = _load_model(args.model, _device(args.device))
    data = load_category(DataConfig(args.data, args.category, val_fraction=0.0, dataset=args.dataset),
                         model.config.image_size, progress=not args.json, splits=("test",))
    if not len(data.test):
        raise DraemZooError(f"{Path(args.data) / args.category}: no test images to evaluate on (read as "
                            f"{data.files.dataset}: they come from {DATASETS[data.files.dataset].test_from})")
    cfg = EvalConfig()
    sizes = tuple(sorted(set(cfg.filter_sizes) | {model.score_config.filter_size}))
    cfg = EvalConfig(filter_sizes=sizes, batch_size=args.batch_size)
    result = evaluate_model(model, data.test, data.test_labels, data.pixel_masks, data.test_defects, cfg,
                            filter_size=args.filter_size, progress=not args.json, pixel_note=data.files.pixel_note)
    result["dataset"] = data.files.dataset
    result["model"] = args.model
    result["category"] = args.category
    if args.json:
        print(json.dumps(result))
    else:
        _print_metrics(f"{args.category}: test metrics of {args.model}", result)
        for note in result.get("notes") or []:
            print(f"note: {note}")
    return 0


def _dataset_set(args: argparse.Namespace) -> list[str]:
    """``--dataset`` as the setting it is (none for auto: each run detects it, its fingerprint records it)."""
    return [] if getattr(args, "dataset", "auto") == "auto" else [f"data.dataset={args.dataset}"]


def cmd_search(args: argparse.Namespace) -> int:
    from ..search.driver import SearchOptions, run_search

    opts = SearchOptions(
        data=args.data, out=args.out, categories=args.categories, space=args.space, trials=args.trials,
        budget=args.budget, final_budget=args.final_budget, address=args.address, storage=args.storage,
        gpus_per_trial=args.gpus_per_trial, workers_per_trial=args.workers_per_trial,
        cpus_per_worker=args.cpus_per_worker, final_workers=args.final_workers, final_seeds=args.final_seeds,
        backbones_final=args.backbones_final, front=args.front,
        resume=args.resume, sets=_dataset_set(args) + list(args.set or []), sampler=args.sampler, seed=args.seed, retries=args.retries,
        max_concurrent=args.max_concurrent, lr_scaling=args.lr_scaling, num_cpus=args.num_cpus,
        progress=not args.quiet, validations=args.validations, rungs=args.rungs, trial_image_size=args.trial_image_size,
        warm_start=args.warm_start, plan=args.plan, throughput=args.throughput,
        throughput_from=args.throughput_from,
        given=tuple(sorted(args.given_flags)) if hasattr(args, "given_flags") else None)
    result = run_search(opts)
    if args.plan and not args.json:
        from ..search.plan import format_plan

        print(format_plan(result))
        return 0
    print(json.dumps(result, indent=None if args.json else 2))
    if not args.plan and result.get("dashboard"):  # stderr: stdout stays one JSON document
        print("Optuna studies (open them in optuna-dashboard):\n  " + "\n  ".join(result["dashboard"]),
              file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ..search.status import format_status, study_notes
    from ..search.study import dashboard_lines, search_studies

    path = Path(args.results) / "status.json"
    if not path.is_file():
        raise DraemZooError(f"{args.results}: no status.json; is it the --out folder of draem-zoo search?")
    status = json.loads(path.read_text())
    notes = study_notes(args.results, status)  # trials a killed driver left RUNNING in the Optuna studies
    if args.json:
        print(json.dumps(dict(status, studies=search_studies(args.results), study_notes=notes)))
        return 0
    print(format_status(status))
    if notes:
        print("\nOptuna studies out of step with the search:\n  " + "\n  ".join(notes))
    lines = dashboard_lines(args.results)
    if lines:
        print("\nOptuna studies:\n  " + "\n  ".join(lines))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..search.results import categories, write_tables

    if not categories(Path(args.results)):
        raise DraemZooError(f"{args.results}: no finished categories (no <category>/summary.json) to compare")
    for path in write_tables(Path(args.results)).values():
        print(path)
    if not args.quiet:
        for name in ("leaderboard.md", "backbones.md", "front.md", "importance.md", "ablation.md"):
            if (Path(args.results) / name).is_file():  # ablation.md: only for an ablation search
                print((Path(args.results) / name).read_text())
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from ..hub.publish import build_releases, plan, publish, zoo_prefix

    cats = [c for c in (args.categories or "").split(",") if c] or None
    args.prefix = args.prefix or zoo_prefix(args.results, cats, args.dataset, args.license)
    releases = build_releases(args.results, args.org, args.prefix, args.dataset, args.license, cats,
                              warn=lambda m: print(m, file=sys.stderr))
    if args.dry_run:
        print(json.dumps({"dry_run": True, "would_upload": plan(releases)}, indent=2))
        return 0
    done = publish(releases, args.org, args.prefix, private=args.private, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps({"published": done}))
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from .. import load
    from ..export.onnx import export_onnx

    print(json.dumps(export_onnx(args.model, out=args.out, opset=args.opset, dynamic_batch=args.dynamic_batch,
                                 load=load)))
    return 0


def cmd_rehash(args: argparse.Namespace) -> int:
    from ..model.modeldir import rehash

    result = rehash(args.model_dir, accept_changes=args.accept_changes)
    if not result["recorded"]:
        print(f"{args.model_dir}: both hashes are recorded and match; nothing to do", file=sys.stderr)
    else:
        t = result["trusted"]["config"]
        print(f"{args.model_dir}: recorded the hashes of the files as they are now, trusting model.safetensors (its keys and shapes "
              "fit the architecture in config.json) and "
              f"config.json's values (s_f {t['filter_size']}, image threshold {t['image_threshold']}, pixel threshold "
              f"{t['pixel_threshold']}); loading checks against these from now on", file=sys.stderr)
    print(json.dumps(result))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from ..hub.download import pull

    cats = [c for c in (args.categories or "").split(",") if c] or None
    for entry in pull(args.org, args.dir, cats, args.prefix, front=args.front):
        print(json.dumps(entry))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import run_quickstart

    run_quickstart(args.out, trials=args.trials, progress=not args.quiet)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    import shlex

    from ..paper.reproduce import ReproduceOptions, run_reproduce

    try:
        seeds = tuple(int(x) for x in args.seeds.split(",") if x.strip())
    except ValueError:
        raise DraemZooError(f"--seeds {args.seeds!r}: give integers separated by commas, e.g. 0,1,2") from None
    opts = ReproduceOptions(data=args.data, out=args.out, anomaly_source=args.anomaly_source,
                            categories=args.categories, seeds=seeds, iterations=args.iterations, variant=args.variant,
                            image_size=args.image_size, device=args.device, sets=list(args.set or []),
                            protocol=args.protocol, report_only=args.report_only, progress=not args.quiet,
                            dataset=args.dataset,
                            command=shlex.join(["draem-zoo", *sys.argv[1:]]) if sys.argv[1:2] == ["reproduce"]
                            else "")
    report = run_reproduce(opts)
    print((Path(args.out) / "reproduce.md").read_text())
    print(f"tables: {Path(args.out) / 'reproduce.md'}, .csv, .json ({len(report['runs'])} runs)", file=sys.stderr)
    return 0
