"""The ``draem-zoo`` command line.

Every subcommand is a small function that parses its flags and calls the library. An error the
user can act on (bad input, a full disk, a read-only folder, a damaged file, no GPU, no network) is
printed as one line with exit status 2, without a traceback (:mod:`.errors`); ``--debug`` or
``DRAEM_ZOO_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..__about__ import __version__
from .commands import (
    cmd_compare,
    cmd_config,
    cmd_convert_official,
    cmd_describe,
    cmd_evaluate,
    cmd_export_onnx,
    cmd_publish,
    cmd_pull,
    cmd_quickstart,
    cmd_rehash,
    cmd_reproduce,
    cmd_search,
    cmd_status,
    cmd_train,
    cmd_variants,
)
from .datasetflag import add_dataset_flag
from .errors import debug_enabled, explain
from .serving import add_parsers as add_serving_parsers


def int_at_least(low: int, note: str = ""):
    """argparse type: an integer >= ``low`` (argparse prints the flag with the message); ``note`` says
    what a special value means, e.g. that 0 is not "nothing"."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: give {low} or more{note}")
        return value

    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)
# 0 iterations is not "none": it is the paper's 700 epochs, so train refuses it and reproduce says so
train_iterations = int_at_least(1, " (leave --iterations out for the paper's 700 epochs)")
reproduce_iterations = int_at_least(0, " (0: the paper's 700 epochs)")


EPILOG = """start here:
  draem-zoo quickstart                              the whole chain on demo data, a few minutes
  draem-zoo describe DATA_ROOT                      categories and image counts
  draem-zoo train --data DATA_ROOT --category bottle --out runs/bottle \\
      --variant paper-small --anomaly-source dtd/images --iterations 5000
  draem-zoo evaluate --model runs/bottle --data DATA_ROOT --category bottle
  draem-zoo predict --model runs/bottle images/ --out screened/   predictions.jsonl + overlays
  draem-zoo serve --model runs/bottle               HTTP API and a page at http://127.0.0.1:8000/
  draem-zoo export-onnx --model runs/bottle         runs/bottle/model.onnx, checked against PyTorch
  draem-zoo config --variant timm-resnet18          every config key, for --set
  draem-zoo reproduce --data mvtec --anomaly-source dtd/images --out runs/repro   the paper's table

Data: MVTec AD's layout (ROOT/CATEGORY/train/good, test/<defect>, ground_truth/<defect>/<name>_mask.png;
a defect without ground_truth/ is labelled per image: image metrics only), VisA, MVTec AD 2 and DAGM 2007 as
distributed: detected (--dataset overrides). See README, "Datasets".
"""


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
    p.add_argument("--data", required=True, metavar="ROOT", help="dataset root (see --dataset)")
    add_dataset_flag(p)
    p.add_argument("--category", required=True, metavar="NAME", help="category folder under ROOT")
    p.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    p.add_argument("--variant", default=None, help="model variant (default paper; see draem-zoo variants)")
    p.add_argument("--iterations", type=train_iterations, default=None,
                   help="iteration budget (default: the paper's 700 epochs)")
    p.add_argument("--image-size", type=positive_int, default=None, help="training size (default 256)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default 8)")
    p.add_argument("--anomaly-source", default=None, metavar="DIR",
                   help="texture folder, e.g. dtd/images (default: procedural textures)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config key, e.g. loss.ssim_weight=2")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last")
    p.add_argument("--json", action="store_true", help="print the result summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)


def _add_search(sub) -> None:
    p = sub.add_parser(
        "search", help="hyperparameter search per category on a Ray cluster, then export the best models",
        description="For every category: an Optuna study driven by Ray Tune (ASHA early stopping), each trial "
        "a Ray Train run (DDP over --workers-per-trial), selecting on the validation score (no test images); "
        "then the best configuration is retrained at the full budget, evaluated on test and exported to "
        "RESULTS/<category>/best/. Without --address Ray starts on this machine.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  draem-zoo search --data mvtec --out results/mvtec --space search_spaces/default.py "
        "--trials 32 --workers-per-trial 4 --gpus-per-trial 4 --plan --throughput 150   # the cost first\n"
        "  draem-zoo search --data mvtec --out results/mvtec --space search_spaces/default.py "
        "--trials 32 --gpus-per-trial 1\n  draem-zoo search --data mvtec --out results/mvtec --address auto "
        "--storage /shared/draem --resume\n  draem-zoo status results/mvtec")
    p.add_argument("--data", required=True, metavar="ROOT", help="dataset root (see --dataset), seen by all nodes")
    add_dataset_flag(p)
    p.add_argument("--out", required=True, metavar="RESULTS", help="results folder")
    p.add_argument("--categories", default="all", help="a,b,c or all (default)")
    p.add_argument("--space", default="search_spaces/default.py", help="search-space file")
    p.add_argument("--trials", type=positive_int, default=16, help="trials per category (default 16)")
    p.add_argument("--budget", default=None, metavar="BUDGET",
                   help="per trial (ASHA's max_t): iterations per rank (20000) or epochs of the category's training "
                   "images (100ep, '100 epochs'); default: the space's BUDGET")
    p.add_argument("--final-budget", default=None, metavar="BUDGET",
                   help="of the final retraining, as --budget; 0 = the paper's 700 epochs (700 x N images, shared "
                   "by the DDP workers)")
    p.add_argument("--validations", type=positive_int, default=5,
                   help="validations (and checkpoints) per run, trial or final, whatever its budget (default 5)")
    p.add_argument("--rungs", type=int, default=0, metavar="N",
                   help="trials validate at N geometrically spaced points (1/3^(N-1) ... 1/3, 1 of the trial budget) "
                   "and ASHA (reduction factor 3) cuts there; see rungs.md after a search for whether early rank "
                   "predicts final rank (default 0: --validations evenly spaced, ASHA at 2/5 and 4/5)")
    p.add_argument("--trial-image-size", type=int, default=None, metavar="PX",
                   help="trials train and validate at this image size, finals at the run's model.image_size (e.g. "
                   "128 for 256): about (PX/final)^2 of a trial's cost; default: the space's TRIAL_IMAGE_SIZE; 0: the "
                   "final's. Use it where scripts/rank_fidelity.py shows the low-resolution ranking agrees")
    p.add_argument("--warm-start", default=None, metavar="RESULTS",
                   help="an earlier search's results folder: each category first evaluates its own best configurations "
                   "there, then the other categories' winners, and reuses (does not retrain) its finished trials that "
                   "are the same configuration at the same budget")
    p.add_argument("--plan", action="store_true",
                   help="print what the search would cost (iterations, validations, checkpoint bytes, decoding, "
                   "accelerator-hours) and stop: no Ray, no training, seconds")
    p.add_argument("--throughput", type=float, default=None, metavar="IMAGES_PER_S",
                   help="with --plan: one accelerator's training images/s (scripts/bench_train.py --e2e), for the "
                   "accelerator-hours")
    p.add_argument("--throughput-from", default=None, metavar="FILE",
                   help="with --plan: read the throughput from the JSON lines of scripts/gpu_check.py or "
                   "scripts/bench_train.py --e2e (the space's paper variant at the plan's batch, synthesis workers)")
    p.add_argument("--final-seeds", type=positive_int, default=1, help="retrain the best config with N seeds (mean ± std)")
    p.add_argument("--final-workers", type=positive_int, default=None, help="DDP workers of the final retraining")
    p.add_argument("--backbones-final", action="store_true",
                   help="retrain every backbone's best configuration at the final budget (not only the winner's), "
                   "so that the backbone comparison compares final models; export the best of them on validation")
    p.add_argument("--front", type=non_negative_int, default=0, metavar="N",
                   help="also retrain N configurations of each category's accuracy-speed front (validation score "
                   "against measured inference images/s), test them and export them to RESULTS/<category>/front/"
                   "<name>/ (default 0: the best model only)")
    p.add_argument("--address", default=None, help="ray://host:10001 or auto (default: start Ray here)")
    p.add_argument("--storage", default=None, metavar="PATH_OR_URI",
                   help="Ray storage all nodes see: a shared folder or s3://..., gs://... (default RESULTS/ray)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial; fractions pack small trials")
    p.add_argument("--workers-per-trial", type=positive_int, default=1, help="DDP workers per trial")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="CPUs per training worker; on a GPU, train.synthesis_workers=auto synthesises anomalies in "
                        "(CPUs - 1) worker processes when that is 2 or more (default: 1)")
    p.add_argument("--max-concurrent", type=positive_int, default=None, help="trials at once per category (default: fits)")
    p.add_argument("--lr-scaling", default="none", choices=["none", "linear", "sqrt"],
                   help="scale the learning rate with the number of DDP workers")
    p.add_argument("--sampler", default=None, choices=["tpe", "random", "grid"], help="Optuna sampler override")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retries", type=non_negative_int, default=2, help="restarts of a crashed trial from its checkpoint")
    p.add_argument("--num-cpus", type=float, default=None, help="CPUs of the embedded Ray (default: all)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="fixed config for every trial")
    p.add_argument("--resume", action="store_true", help="continue the search in RESULTS")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("status", help="progress table of a search, and the optuna-dashboard command of its studies")
    p.add_argument("results", metavar="RESULTS")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("compare", help="rebuild leaderboard, backbone comparison, accuracy-speed front and "
                       "hyperparameter importance of a search")
    p.add_argument("results", metavar="RESULTS")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare)


def _add_zoo(sub) -> None:
    p = sub.add_parser("publish", help="publish a search's best models to the Hugging Face Hub",
                       description="One model repository per category (ORG/PREFIX-CATEGORY) with model.safetensors, "
                       "config.json, a model card and model.onnx when export-onnx made one from these weights; one commit "
                       "and a tag per release, none when nothing changed; "
                       "and a zoo index (ORG/PREFIX-index). The token comes from HF_TOKEN or `hf auth login`.")
    p.add_argument("results", metavar="RESULTS")
    p.add_argument("--org", required=True, help="Hub user or organisation")
    p.add_argument("--prefix", default=None, help="repository name prefix (default: after the dataset: draem-mvtec, "
                   "draem-visa, draem-mvtec-ad2, draem-dagm; your own data: draem-mvtec)")
    p.add_argument("--categories", default=None, help="a,b (default: every exported category)")
    p.add_argument("--dataset", default=None, help="training data name for the card (default: from the data root)")
    p.add_argument("--license", default=None,
                   help="license of the training data, inherited by the model (detected for MVTec AD, MVTec AD 2, VisA)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="show what would be uploaded; upload nothing")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("pull", help="download a whole zoo into a folder (for air-gapped sites)")
    p.add_argument("org", metavar="ORG")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--categories", default=None)
    p.add_argument("--prefix", default="draem-mvtec")
    p.add_argument("--front", action="store_true",
                   help="also each category's accuracy-speed front members (a branch each), into DIR/<repo>@front-<name>/")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser(
        "export-onnx", help="export a model to ONNX, checked against PyTorch with ONNX Runtime",
        description="Write one ONNX graph from uint8 RGB images (input image_rgb_uint8_nhwc, shape (B, S, S, 3), "
        "S = the model's image size) to the anomaly map (B, 1, S, S) and the image score (B,) after the model's "
        "own s_f mean filter. Scaling, the channel order of BGR models and normalisation are inside the graph; "
        "config.json, s_f and the weights' sha256 go into its metadata. The file is checked with ONNX Runtime "
        "(CPU) against PyTorch (max abs difference <= 1e-4) before it is moved into place. Needs the onnx extra: "
        'pip install "draem-zoo[onnx]".',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  draem-zoo export-onnx --model runs/bottle\n"
        "  draem-zoo export-onnx --model hf-hub:acme/draem-mvtec-bottle@v1 --out bottle.onnx --dynamic-batch")
    p.add_argument("--model", required=True, metavar="DIR_OR_HUB_ID", help="model directory or hf-hub:ORG/NAME[@REV]")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="ONNX file to write (default: MODEL_DIR/model.onnx, or ./model.onnx for a Hub model)")
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset, 18 to 23 (default 18)")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: batch fixed at 1)")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("quickstart", help="the whole chain on this machine in a few minutes, no internet",
                       description="Make a demo dataset, run a short search on embedded Ray, export the best model "
                       "per category, render model cards, write a local zoo, predict and draw overlays.")
    p.add_argument("--out", default=None, metavar="DIR", help="where to put everything (default: a temp folder)")
    p.add_argument("--trials", type=positive_int, default=4, help="search trials per category (default 4)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_quickstart)


def _add_reproduce(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="train the paper's configuration per category and compare with the paper's tables",
        description="For every category (and seed, and --protocol): train DRAEM (zoo: checkpoint and s_f selected "
        "on validation only; paper: the paper's protocol), "
        "evaluate on test, and write OUT/reproduce.md/.csv/.json: image AUROC, pixel AUROC, pixel AP and AUPRO "
        "beside the paper's Tables 1 and 2. Running the same command again keeps finished runs and resumes an "
        "interrupted one; several invocations (e.g. one per GPU with --device and --categories) can share OUT.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  draem-zoo reproduce --data mvtec --anomaly-source dtd/images --out runs/repro\n"
        "  draem-zoo reproduce --data mvtec --anomaly-source dtd/images --out runs/repro --categories bottle,grid "
        "--seeds 0,1,2 --device cuda:1 --protocol both\n  draem-zoo reproduce --data data --categories magnetic_tile --anomaly-source "
        "dtd --out runs/mt --variant paper-tiny --image-size 128 --iterations 1800   # a CPU budget")
    p.add_argument("--data", required=True, metavar="ROOT", help="dataset root (see --dataset)")
    add_dataset_flag(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (one model directory per run)")
    p.add_argument("--anomaly-source", default=None, metavar="DIR", help="DTD's images/ folder (the paper's source)")
    p.add_argument("--categories", default="all", help="a,b,c or all (default)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0); mean ± std over them")
    p.add_argument("--iterations", type=reproduce_iterations, default=0,
                   help="iterations per run (default 0: the paper's 700 epochs)")
    p.add_argument("--variant", default="paper", help="model variant (default paper)")
    p.add_argument("--image-size", type=positive_int, default=256, help="image size (default 256, the paper's)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other config key")
    p.add_argument("--protocol", default="zoo", choices=("zoo", "paper", "both"),
                   help="zoo (default): checkpoint and s_f selected on validation; paper: the paper's protocol as the "
                   "original code runs it (all of train/good, the last weights, s_f = 21, OpenCV resize); both: each "
                   "category both ways, side by side")
    p.add_argument("--report-only", action="store_true", help="rebuild the tables from OUT; train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="draem-zoo",
        description="DRAEM surface anomaly detection: train, search, evaluate and share models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"draem-zoo {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also DRAEM_ZOO_DEBUG=1); anywhere on the line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("describe", help="list the categories of a dataset root with image counts")
    p.add_argument("root", metavar="ROOT")
    add_dataset_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_describe)

    _add_train(sub)
    _add_search(sub)
    _add_zoo(sub)
    _add_reproduce(sub)

    p = sub.add_parser("evaluate", help="test metrics of a model on a category",
                       description="Image AUROC/AP, pixel AUROC/AP, AUPRO, F1-max and per-defect AUROC on "
                       "ROOT/CATEGORY/test (maps computed once; headline at the model's s_f).")
    p.add_argument("--model", required=True, metavar="DIR_OR_HUB_ID")
    p.add_argument("--data", required=True, metavar="ROOT")
    add_dataset_flag(p)
    p.add_argument("--category", required=True, metavar="NAME")
    p.add_argument("--filter-size", type=int, default=None, help="headline s_f (default: the model's)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_evaluate)

    add_serving_parsers(sub, int_at_least)

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
    p.add_argument("--image-size", type=positive_int, default=256, help="input size the model runs at (default 256)")
    p.set_defaults(func=cmd_convert_official)

    p = sub.add_parser(
        "rehash", help="record the hashes of a model directory you trust (one written before they existed)",
        description="Loading refuses a model directory whose config.json records no config_sha256 or "
        "weights_sha256 (written before they existed, or with the keys removed). rehash records them for the "
        "files as they are now: it trusts model.safetensors (after checking its keys and shapes fit the "
        "architecture) and every value in config.json (thresholds, s_f). Run it only on a directory you made or "
        "got from a source you trust. A recorded hash that no longer matches (an edited file) is replaced only "
        "with --accept-changes.")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--accept-changes", action="store_true",
                   help="also trust files edited after their hashes were recorded (replace those hashes)")
    p.set_defaults(func=cmd_rehash)
    return parser


def typed_flags(parser: argparse.ArgumentParser, command: str, argv: list[str]) -> set[str]:
    """The ``dest`` of every flag of ``command`` typed in ``argv`` (``--trials 4``, ``--trials=4``, or an
    abbreviation argparse accepted): a resumed search tells a flag given at its default from one left out."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    typed = {t.split("=", 1)[0] for t in argv if t.startswith("--")}
    names = {o for a in sub._actions for o in a.option_strings if o.startswith("--")}
    # a flag typed in full is that flag (--data is not --dataset); an abbreviation matches what it begins
    hits = {o for t in typed for o in ([t] if t in names else [o for o in names if len(t) > 2 and o.startswith(t)])}
    return {a.dest for a in sub._actions if hits.intersection(a.option_strings)}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled("--debug" in argv)
    args = parser.parse_args([a for a in argv if a != "--debug"])
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    args.given_flags = typed_flags(parser, args.command, argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        again = {"train": "run the same command with --resume: it continues from the last checkpoint",
                 "search": "search --resume with the same --out continues it: finished trials are kept, unfinished "
                           "ones go on from their last checkpoint, and trials left RUNNING in the Optuna studies are "
                           "settled",
                 "reproduce": "run the same command again: finished runs are kept",
                 "predict": "with --out, the same command with --resume goes on: images already written are "
                            "skipped"}.get(args.command)
        if args.command == "serve":  # Ctrl-C is how a service stops
            print("draem-zoo serve: stopped", file=sys.stderr)
            return 0
        print(f"draem-zoo {args.command}: interrupted" + (f"; {again}" if again else ""), file=sys.stderr)
        return 130
    except Exception as exc:
        message = explain(exc, args.command)
        if message is None or debug:
            raise
        print(f"draem-zoo {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
