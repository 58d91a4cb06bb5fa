"""The ``draem-zoo`` command line.

Every subcommand is a small function that parses its flags and calls the library; a
:class:`DraemZooError` (bad input the user can fix) is printed as one clear message
with exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from .__about__ import __version__
from .errors import DraemZooError

EPILOG = """examples:
  draem-zoo variants
  draem-zoo convert-official DRAEM_test_0.0001_700_bs8_bottle_.pckl \\
      DRAEM_test_0.0001_700_bs8_bottle__seg.pckl models/bottle-official
"""


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="draem-zoo",
        description="DRAEM surface anomaly detection: train, search, evaluate and share models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"draem-zoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("variants", help="list the named model variants")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser(
        "convert-official",
        help="convert the authors' released .pckl checkpoints to safetensors + config.json",
        description="Convert an official DRAEM checkpoint pair (reconstructive REC.pckl and discriminative "
        "SEG.pckl, as released by the authors) into a model directory. The files are read with "
        "torch.load(weights_only=True); the BGR channel order they were trained with is recorded.",
    )
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
        print(f"draem-zoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
