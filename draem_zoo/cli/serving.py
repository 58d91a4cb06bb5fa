"""``draem-zoo predict`` (one machine, or Ray Data on a cluster) and ``draem-zoo serve`` (Ray Serve HTTP):
their flags and bodies. The libraries are in :mod:`draem_zoo.serve`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DraemZooError

PREDICT_EPILOG = """examples:
  draem-zoo predict --model runs/bottle photos/                    JSON lines on stdout
  draem-zoo predict --model runs/bottle photos/ --out screened/   screened/predictions.jsonl + overlays of
                                                                   the anomalous ones in screened/overlays/
  draem-zoo predict --model runs/bottle photos/ --out screened/ --resume     continue an interrupted run
  draem-zoo predict --model hf-hub:ORG/draem-mvtec-bottle s3://line3/2026-12/ --out /shared/out \\
      --address auto --concurrency 8 --format parquet             Ray Data over a cluster's GPUs
"""


def add_parsers(sub, int_at_least) -> None:
    positive_int, non_negative_int = int_at_least(1), int_at_least(0)
    p = sub.add_parser("predict", help="anomaly scores (JSON lines or Parquet) and overlay pictures for images",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=PREDICT_EPILOG,
                       description="One record per image: image, score, anomalous (by the threshold chosen on "
                       "validation data), threshold, filter_size; a corrupt, missing or oversized image is a record "
                       "with \"error\" and the run goes on. Images are decoded by worker processes and batched on the "
                       "device; with --address or an s3:// input the run is a Ray Data pipeline.")
    p.add_argument("--model", required=True, metavar="DIR_OR_HUB_ID")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_FOLDER_OR_URI")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write DIR/predictions.jsonl (or .parquet) and DIR/overlays/ (default: records on stdout)")
    p.add_argument("--overlays", choices=("all", "anomalous", "none"), default="anomalous",
                   help="which overlay PNGs to draw under --out (default: anomalous, the ones over the threshold)")
    p.add_argument("--format", choices=("jsonl", "parquet", "mvtec_ad2"), default="jsonl",
                   help="output under --out: jsonl, parquet, or mvtec_ad2 (the one input is the MVTec AD 2 folder: "
                   "the maps of the model's object's private test splits as its evaluation server takes them)")
    p.add_argument("--resume", action="store_true", help="skip the images already in --out's output (error rows too)")
    p.add_argument("--filter-size", type=int, default=None, help="mean-filter size s_f (default: the model's)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--workers", type=non_negative_int, default=None, metavar="N",
                   help="decoding processes (default: cores - 1, at most 8; 0 decodes in the main process)")
    p.add_argument("--engine", choices=("auto", "local", "ray"), default="auto",
                   help="local (DataLoader workers) or ray (Ray Data); auto: ray with --address or a URI input")
    p.add_argument("--address", default=None, help="a Ray cluster to run on (auto: the one this node is part of)")
    p.add_argument("--concurrency", type=positive_int, default=1, help="model copies (Ray Data actors)")
    p.add_argument("--gpus-per-copy", type=float, default=None, help="GPUs per model copy (default: 1 where there are GPUs)")
    p.add_argument("--cpus-per-copy", type=float, default=1.0,
                   help="CPUs per model copy (its torch threads; raise it for copies that run on CPUs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("serve", help="serve models over HTTP (Ray Serve): /predict, /models, /healthz and a page at /",
                       description="A Ray Serve application: POST /predict?model=NAME (the image as the body or a form "
                       "file; &pictures=1 adds the input, anomaly map and overlay as base64 PNGs), GET /models, GET "
                       "/healthz, GET / (a page: drop an image, see what the model flags). Requests are batched "
                       "across clients. It runs until Ctrl-C.")
    p.add_argument("--model", required=True, action="append", metavar="[NAME=]DIR_OR_HUB_ID",
                   help="a model to serve (repeat for several categories; the name defaults to its category)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=positive_int, default=8000)
    p.add_argument("--address", default=None, help="a Ray cluster to run on (default: a local Ray)")
    p.add_argument("--replicas", type=positive_int, default=1, help="fixed replicas (without --max-replicas)")
    p.add_argument("--min-replicas", type=non_negative_int, default=1, help="autoscaling: fewest replicas")
    p.add_argument("--max-replicas", type=positive_int, default=None, help="autoscaling: most replicas (turns it on)")
    p.add_argument("--target-ongoing-requests", type=float, default=4.0, help="autoscaling: requests per replica")
    p.add_argument("--replicas-per-gpu", type=positive_int, default=1, help="replicas sharing one GPU (where there are GPUs)")
    p.add_argument("--cpus-per-replica", type=float, default=1.0,
                   help="CPUs per replica (its torch threads; raise it for replicas that run on CPUs)")
    p.add_argument("--max-batch-size", type=positive_int, default=8, help="requests batched together (default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long a batch waits to fill (default 10)")
    p.add_argument("--max-upload-mb", type=float, default=64.0, help="largest upload accepted (413 above)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_serve)


def _inputs(paths: list[str]) -> list[str]:
    from ..data.images import check_link, list_images
    from ..serve.batch import is_uri

    found: list[str] = []
    for raw in paths:
        p = Path(raw)
        if is_uri(raw):
            found.append(raw)
        elif p.is_dir():  # folder links followed once; an empty file or a broken link becomes an error row
            found += map(str, list_images(p, recursive=True, lenient=True))
        elif p.is_file():
            found.append(raw)
        else:
            check_link(p)
            raise DraemZooError(f"{p}: no such file or folder")
    if not found:
        raise DraemZooError(f"no images found in {', '.join(paths)}")
    return list(dict.fromkeys(found))  # an image named twice (a folder and a file in it) is predicted once


def cmd_predict(args: argparse.Namespace) -> int:
    from ..serve.models import load_spec
    from ..serve.sink import PredictionSink
    from ..train.trainer import resolve_device

    if args.format == "mvtec_ad2":
        return _predict_mvtec_ad2(args)
    out = Path(args.out) if args.out else None
    if out is not None:  # before the model loads: a bad --out fails in a second, not after the first batch
        if out.exists() and not out.is_dir():
            raise DraemZooError(f"--out {out}: is a file, not a folder; choose another --out")
        out.mkdir(parents=True, exist_ok=True)
    paths = _inputs(args.inputs)
    engine = args.engine
    if engine == "auto":
        engine = "ray" if args.address or any("://" in p for p in paths) else "local"
    if engine == "local" and any("://" in p for p in paths):
        raise DraemZooError("--engine local reads files only: URI inputs (s3://...) need --engine ray")
    device = str(resolve_device(args.device))
    model = load_spec(args.model, device)
    if args.filter_size is not None:
        from ..model.scoring import check_filter_size

        check_filter_size(args.filter_size, "--filter-size", model.config.image_size)
    if model.score_config.image_threshold is None:  # a model trained without validation normals
        print(f"note: {args.model} has no image threshold (it was trained without validation normals): each line "
              "has its score, and \"anomalous\": null; choose a threshold on your own normal images"
              + ("; --overlays anomalous draws none" if out and args.overlays == "anomalous" else ""), file=sys.stderr)
    overlay_dir = out / "overlays" if out and args.overlays != "none" else None
    common = {"batch_size": args.batch_size, "overlays": args.overlays, "overlay_dir": overlay_dir,
              "filter_size": args.filter_size, "progress": not args.no_progress and sys.stderr.isatty()}
    with PredictionSink(out, args.format, args.resume) as sink:
        if engine == "local":
            from ..serve.local import predict_local

            summary = predict_local(model, paths, sink, workers=args.workers, **common)
        else:
            from ..serve.batch import absolute, predict_ray

            # Ray workers do not share the driver's working directory: every path they see is absolute
            paths = [absolute(p) for p in paths]
            common["overlay_dir"] = overlay_dir.absolute() if overlay_dir else None
            summary = predict_ray(absolute(args.model), model, paths, sink, address=args.address, concurrency=args.concurrency,
                                  gpus_per_copy=args.gpus_per_copy, cpus_per_copy=args.cpus_per_copy,
                                  device=args.device, **common)
    print(json.dumps({"summary": summary}), file=sys.stdout if out else sys.stderr)
    return 0


def _predict_mvtec_ad2(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..serve.models import load_spec
    from ..serve.submission import write_submission
    from ..train.trainer import resolve_device

    if not args.out:
        raise DraemZooError("--format mvtec_ad2 writes a folder for the evaluation server: give --out DIR")
    model = load_spec(args.model, str(resolve_device(args.device)))
    if model.score_config.pixel_threshold is None:
        print(f"note: {args.model} has no pixel threshold (trained without validation normals): only the continuous "
              "maps are written, no anomaly_images_thresholded/", file=sys.stderr)
    bar = tqdm(desc="mvtec_ad2 maps", unit="img", disable=args.no_progress or not sys.stderr.isatty())
    try:
        summary = write_submission(model, args.inputs, args.out, batch_size=args.batch_size, resume=args.resume,
                                   tick=bar.update)
    finally:
        bar.close()
    print(json.dumps({"summary": summary}))
    print(f"check and pack {args.out} for upload with the benchmark's check_and_prepare_data_for_upload.py",
          file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve.batch import absolute
    from ..serve.models import name_models
    from ..serve.service import build_app, serve_forever, start, start_ray

    # each loaded here first: a bad one is one line, not a failed replica; folders absolute for Ray's workers
    models = {name: absolute(spec) for name, spec in name_models(args.model).items()}
    gpus = start_ray(args.address) if args.device != "cpu" else 0.0
    autoscaling = None
    if args.max_replicas and args.min_replicas > args.max_replicas:
        raise DraemZooError(f"--min-replicas {args.min_replicas} is above --max-replicas {args.max_replicas}")
    if args.max_replicas:
        autoscaling = {"min_replicas": args.min_replicas, "max_replicas": args.max_replicas,
                       "target_ongoing_requests": args.target_ongoing_requests}
    per_replica = (1.0 / args.replicas_per_gpu) if gpus else 0.0
    app = build_app(models, device=args.device, replicas=args.replicas, autoscaling=autoscaling,
                    gpus_per_replica=per_replica, cpus_per_replica=args.cpus_per_replica,
                    max_batch_size=args.max_batch_size,
                    batch_wait_s=args.batch_wait_ms / 1000, max_upload_bytes=int(args.max_upload_mb * (1 << 20)))
    url = start(app, host=args.host, port=args.port, address=args.address)
    print(json.dumps({"url": url, "models": sorted(models), "gpus_per_replica": per_replica}), flush=True)
    print(f"serving {', '.join(sorted(models))} at {url}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    serve_forever()
    return 0
