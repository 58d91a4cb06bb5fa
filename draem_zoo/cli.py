"""The ``draem-zoo`` command line.

Every subcommand is a small function that parses its flags and calls the library; a
:class:`DraemZooError` (bad input the user can fix) is printed as one clear message
with exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .__about__ import __version__
from .errors import DraemZooError

EPILOG = """start here:
  draem-zoo describe DATA_ROOT                      categories and image counts
  draem-zoo train --data DATA_ROOT --category bottle --out runs/bottle \\
      --variant paper-small --anomaly-source dtd/images --iterations 5000
  draem-zoo evaluate --model runs/bottle --data DATA_ROOT --category bottle
  draem-zoo predict --model runs/bottle images/ --out overlays/
  draem-zoo config --variant timm-resnet18          every config key, for --set

Data layout (MVTec AD): ROOT/CATEGORY/train/good/*.png, ROOT/CATEGORY/test/<defect>/*.png,
ROOT/CATEGORY/ground_truth/<defect>/<name>_mask.png.
"""


def _load_model(spec: str, device: str = "cpu"):
    from . import load

    return load(spec, device=device)


def _device(name: str) -> str:
    from .trainer import resolve_device

    return str(resolve_device(name))


def cmd_variants(args: argparse.Namespace) -> int:
    from .variants import ModelConfig, list_variants

    for name in list_variants():
        cfg = ModelConfig.for_variant(name)
        enc = cfg.disc_encoder or "paper U-Net"
        print(f"{name:28s} rec_width={cfg.rec_width:<4d} disc_width={cfg.disc_width:<4d} encoder={enc}")
    print("timm-<name> works for any timm CNN that builds with features_only=True")
    return 0


def cmd_convert_official(args: argparse.Namespace) -> int:
    from .convert import convert_official

    out = convert_official(args.rec, args.seg, args.out_dir, image_size=args.image_size)
    print(json.dumps({"model_dir": str(out), "channel_order": "BGR", "image_size": args.image_size}))
    return 0


def run_config_from_args(args: argparse.Namespace):
    from .runconfig import make_run_config

    flags = {"data.root": args.data, "data.category": args.category, "model.image_size": args.image_size,
             "train.iterations": args.iterations, "train.batch_size": args.batch_size,
             "synthesis.anomaly_source": args.anomaly_source, "train.seed": args.seed, "train.device": args.device}
    items = [f"{k}={v}" for k, v in flags.items() if v is not None]
    return make_run_config(items + list(args.set or []), variant=args.variant)


def cmd_config(args: argparse.Namespace) -> int:
    from .runconfig import make_run_config

    cfg = make_run_config(list(args.set or []), variant=args.variant)
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from .data import describe

    counts = describe(args.root)
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    if not counts:
        raise DraemZooError(f"{args.root}: no category folders with train/good/ found")
    for cat, c in counts.items():
        defects = ", ".join(f"{d} {n}" for d, n in c["test_per_defect"].items())
        print(f"{cat:20s} train {c['train']:5d}  val {c['val']:4d}  test {c['test']:5d}  ({defects})")
    return 0


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
    from .workflow import train_category

    run = run_config_from_args(args)
    result = train_category(run, args.out, resume=args.resume, progress=not args.quiet)
    if args.json:
        print(json.dumps(result))
        return 0
    val = result["validation"]
    if val:
        print(f"validation score {val['val_score']:.4f} at s_f = {val['val_filter_size']} "
              f"(synthetic anomalies on {val['n_normal']} held-out normal images)")
    _print_metrics("test metrics (reported, not used for selection)", result["test"])
    print(f"model written to {result['model_dir']} (model.safetensors + config.json)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import DataConfig, load_category
    from .evaluate import EvalConfig, evaluate_model

    model = _load_model(args.model, _device(args.device))
    data = load_category(DataConfig(args.data, args.category, val_fraction=0.0), model.config.image_size,
                         progress=not args.json, splits=("test",))
    if not len(data.test):
        raise DraemZooError(f"{Path(args.data) / args.category / 'test'}: no test images to evaluate on")
    cfg = EvalConfig()
    sizes = tuple(sorted(set(cfg.filter_sizes) | {model.score_config.filter_size}))
    cfg = EvalConfig(filter_sizes=sizes, batch_size=args.batch_size)
    result = evaluate_model(model, data.test, data.test_labels, data.test_masks, data.test_defects, cfg,
                            filter_size=args.filter_size, progress=not args.json)
    result["model"] = args.model
    result["category"] = args.category
    if args.json:
        print(json.dumps(result))
    else:
        _print_metrics(f"{args.category}: test metrics of {args.model}", result)
    return 0


def _inputs(paths: list[str]) -> list[Path]:
    from .images import is_image_file

    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if is_image_file(q))
        elif p.is_file():
            found.append(p)
        else:
            raise DraemZooError(f"{p}: no such file or folder")
    if not found:
        raise DraemZooError(f"no images found in {', '.join(paths)}")
    return found


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from .images import read_rgb
    from .visualize import save_overlay

    model = _load_model(args.model, _device(args.device))
    paths = _inputs(args.inputs)
    size = model.config.image_size
    sc = model.score_config
    out = Path(args.out) if args.out else None
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start: start + args.batch_size]
        x = torch.stack([read_rgb(p, size) for p in chunk]).float() / 255
        pred = model.predict(x, filter_size=args.filter_size)
        for i, p in enumerate(chunk):
            rec = {"image": str(p), "score": float(pred.score[i]),
                   "anomalous": None if pred.anomalous is None else bool(pred.anomalous[i]),
                   "threshold": sc.image_threshold, "filter_size": pred.filter_size}
            if pred.mask is not None:
                rec["anomalous_pixels"] = round(float(pred.mask[i].float().mean()), 6)
            if out:
                name = f"{start + i:04d}_{p.stem}.png"
                rec["overlay"] = str(save_overlay(out / name, x[i], pred.anomaly_map[i].cpu(),
                                                  None if pred.mask is None else pred.mask[i].cpu(),
                                                  rec["score"], rec["anomalous"], sc.image_threshold, p.name))
            print(json.dumps(rec), flush=True)
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train one model on one category and write its model directory",
        description="Train DRAEM on ROOT/CATEGORY/train/good, choose the mean-filter size and thresholds on a "
        "synthetic validation set made from held-out normal images, report test metrics, and write "
        "OUT/model.safetensors + OUT/config.json. Checkpoints go to OUT/checkpoints; --resume continues.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  draem-zoo train --data mvtec --category bottle --out runs/bottle --variant paper\n"
        "  draem-zoo train --data mvtec --category grid --out runs/grid --set loss.ssim_weight=2 "
        "--set loss.focal_gamma=3\n  (draem-zoo config lists every --set key)")
    p.add_argument("--data", required=True, metavar="ROOT", help="dataset root in MVTec AD layout")
    p.add_argument("--category", required=True, metavar="NAME", help="category folder under ROOT")
    p.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    p.add_argument("--variant", default=None, help="model variant (default paper; see draem-zoo variants)")
    p.add_argument("--iterations", type=int, default=None, help="iteration budget (default: the paper's 700 epochs)")
    p.add_argument("--image-size", type=int, default=None, help="training size (default 256)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 8)")
    p.add_argument("--anomaly-source", default=None, metavar="DIR",
                   help="texture folder, e.g. dtd/images (default: procedural textures)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config key, e.g. loss.ssim_weight=2")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last")
    p.add_argument("--json", action="store_true", help="print the result summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="draem-zoo",
        description="DRAEM surface anomaly detection: train, search, evaluate and share models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"draem-zoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("describe", help="list the categories of a dataset root with image counts")
    p.add_argument("root", metavar="ROOT")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_describe)

    _add_train(sub)

    p = sub.add_parser("evaluate", help="test metrics of a model on a category",
                       description="Image AUROC/AP, pixel AUROC/AP, AUPRO, F1-max and per-defect AUROC on "
                       "ROOT/CATEGORY/test (maps computed once; headline at the model's s_f).")
    p.add_argument("--model", required=True, metavar="DIR_OR_HUB_ID")
    p.add_argument("--data", required=True, metavar="ROOT")
    p.add_argument("--category", required=True, metavar="NAME")
    p.add_argument("--filter-size", type=int, default=None, help="headline s_f (default: the model's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="anomaly scores (JSON lines) and overlay pictures for images",
                       description="One JSON object per image: image, score, anomalous (by the threshold chosen "
                       "on validation data), threshold. With --out, a PNG per image: input, heatmap, mask.")
    p.add_argument("--model", required=True, metavar="DIR_OR_HUB_ID")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--out", default=None, metavar="DIR", help="write overlay PNGs here")
    p.add_argument("--filter-size", type=int, default=None, help="mean-filter size s_f (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("config", help="print the full run config (every key --set accepts)")
    p.add_argument("--variant", default=None)
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("variants", help="list the named model variants")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser(
        "convert-official",
        help="convert the authors' released .pckl checkpoints to safetensors + config.json",
        description="Convert an official DRAEM checkpoint pair (reconstructive REC.pckl and discriminative "
        "SEG.pckl, as released by the authors) into a model directory. The files are read with "
        "torch.load(weights_only=True); the BGR channel order they were trained with is recorded.")
    p.add_argument("rec", metavar="REC.pckl", help="reconstructive sub-network checkpoint")
    p.add_argument("seg", metavar="SEG.pckl", help="discriminative sub-network checkpoint (the _seg file)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="model directory to write")
    p.add_argument("--image-size", type=int, default=256, help="input size the model runs at (default 256)")
    p.set_defaults(func=cmd_convert_official)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except DraemZooError as exc:
        print(f"draem-zoo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"draem-zoo {args.command}: interrupted; with train, --resume continues from the last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
