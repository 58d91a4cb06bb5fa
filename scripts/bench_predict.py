#!/usr/bin/env python
"""Images/s of ``draem-zoo predict`` and requests/s + latency of ``draem-zoo serve``, on this machine; JSON lines.

    python scripts/bench_predict.py [--images 1000] [--size 256] [--variant paper-tiny] [--batch-size 16]
                                    [--requests 400] [--clients 8] [--paths before,local,ray,serve] [--work DIR]

Generates ``--images`` random RGB PNGs of ``--source-size`` px (default ``--size``; kept in ``--work`` for reruns) and a model with random
weights (throughput does not depend on the values) at that size, then times each path over the same images,
records to a JSON-lines file, no overlays:

- ``before``: the code before the serving stage: each image decoded in the main process, batches predicted
  one after the other;
- ``local``: ``predict`` now: a DataLoader pool of decoding processes (``--workers``, default cores - 1);
- ``ray``: ``predict --engine ray``: the Ray Data pipeline on a local Ray (decode tasks, one model actor; Ray's
  start is timed apart, the actor's start and the model load inside it are in the time);
- ``decode``: the input side alone (no model), in the main process (as ``before``) and with the pool: the
  most images/s each can feed a device;
- ``serve``: the Ray Serve application on 127.0.0.1; ``--clients`` threads post ``--requests`` images in all
  (raw bytes; each client waits for its answer before the next), after a warm-up of ``--clients`` requests.

Each line: bench, path, images (or requests), seconds, images_per_s (or requests_per_s, p50_ms, p99_ms),
plus the setup (variant, size, batch, workers, cores, torch threads, device).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from draem_zoo.data.images import read_rgb  # noqa: E402
from draem_zoo.model.draem import build_model  # noqa: E402
from draem_zoo.model.modeldir import load_model_dir, save_model_dir  # noqa: E402
from draem_zoo.serve.local import predict_local  # noqa: E402
from draem_zoo.serve.records import prediction_records  # noqa: E402
from draem_zoo.serve.sink import PredictionSink  # noqa: E402


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.png"
        if not p.exists():
            Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def before(model, paths: list[str], sink: PredictionSink, batch_size: int) -> None:
    """The predict loop as it was: decode one by one in the main process, then predict the batch."""
    size = model.config.image_size
    for start in range(0, len(paths), batch_size):
        chunk = paths[start: start + batch_size]
        x = torch.stack([read_rgb(p, size) for p in chunk]).float() / 255
        sink.write(prediction_records(chunk, model.predict(x), model.score_config.image_threshold))


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def bench_serve(model_dir: Path, paths: list[Path], requests_n: int, clients: int, batch: int, cpus: float) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from draem_zoo.serve.service import build_app, start

    app = build_app({"bench": str(model_dir)}, device="auto", max_batch_size=batch, cpus_per_replica=cpus)
    import socket

    with socket.socket() as sock:  # a free port on 127.0.0.1
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = start(app, port=port)
    deadline = time.time() + 300
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.time() > deadline:
            raise SystemExit(f"the service at {url} did not come up in 300 s")
        time.sleep(0.5)
    bodies = [p.read_bytes() for p in paths[: max(requests_n, clients)]]

    def client(k: int) -> list[float]:
        lat = []
        with requests.Session() as s:
            for i in range(k, requests_n, clients):
                t = time.perf_counter()
                r = s.post(f"{url}/predict", data=bodies[i % len(bodies)], timeout=120)
                r.raise_for_status()
                lat.append(time.perf_counter() - t)
        return lat

    with ThreadPoolExecutor(clients) as pool:  # warm-up: one request per client
        list(pool.map(lambda i: requests.post(f"{url}/predict", data=bodies[i], timeout=120), range(clients)))
        t0 = time.perf_counter()
        lat = [x for part in pool.map(client, range(clients)) for x in part]
        seconds = time.perf_counter() - t0
    from ray import serve

    serve.shutdown()
    q = statistics.quantiles(lat, n=100)
    return {"requests": len(lat), "clients": clients, "seconds": round(seconds, 3),
            "requests_per_s": round(len(lat) / seconds, 2), "p50_ms": round(1000 * statistics.median(lat), 1),
            "p99_ms": round(1000 * q[98], 1), "max_batch_size": batch}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256, help="the model's input size")
    ap.add_argument("--source-size", type=int, default=None,
                    help="the PNGs' size (default --size; MVTec AD's are 700-1024 px, resized to --size on decode)")
    ap.add_argument("--variant", default="paper-tiny")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model overrides, e.g. rec_width=8")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--cpus-per-copy", type=float, default=1.0,
                    help="the Ray Data model actor's and the Serve replica's CPUs (and torch threads)")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--paths", default="before,local,ray,decode,serve")
    ap.add_argument("--work", default=None, help="keep the generated images and model here")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_predict_"))
    overrides = {k: int(v) if v.isdigit() else v for k, v in (s.split("=", 1) for s in args.set)}
    torch.manual_seed(0)
    model_dir = work / f"model-{args.variant}-{args.size}"
    if not (model_dir / "config.json").exists():
        save_model_dir(build_model(args.variant, image_size=args.size, **overrides), model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model_dir(model_dir, device=device)
    source = args.source_size or args.size
    paths = [str(p) for p in make_images(work / f"images-{source}", args.images, source)]
    setup = {"variant": args.variant, "overrides": overrides, "image_size": args.size, "source_size": source,
             "batch": args.batch_size,
             "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device}
    model.predict(torch.rand(2, 3, args.size, args.size))  # warm-up outside the timings
    for path in args.paths.split(","):
        out = work / f"out-{path}-{time.time_ns()}"
        out.mkdir()
        if path == "decode":  # the input side alone: what it can feed a device that is never the bottleneck
            from torch.utils.data import DataLoader

            from draem_zoo.serve.local import _Images, default_workers

            for workers in (0, args.workers if args.workers is not None else default_workers()):
                loader = DataLoader(_Images(paths, args.size), batch_size=args.batch_size, num_workers=workers)
                t0 = time.perf_counter()
                n = sum(len(names) for names, _, _ in loader)
                seconds = time.perf_counter() - t0
                emit({"bench": "predict", "path": "decode", "workers": workers, "images": n,
                      "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 2), **setup})
            continue
        if path == "serve":
            emit({"bench": "predict", "path": path, **bench_serve(model_dir, [Path(p) for p in paths], args.requests,
                                                               args.clients, args.batch_size, args.cpus_per_copy),
                  "cpus_per_replica": args.cpus_per_copy, **setup})
            continue
        extra = {}
        if path == "ray":  # Ray's own start is not the pipeline's time: started first, timed apart
            import ray

            t = time.perf_counter()
            ray.init(log_to_driver=False, configure_logging=False, include_dashboard=False)
            extra["ray_start_seconds"] = round(time.perf_counter() - t, 2)
        t0 = time.perf_counter()
        with PredictionSink(out, "jsonl") as sink:
            if path == "before":
                before(model, paths, sink, args.batch_size)
                extra = {"workers": 0}
            elif path == "local":
                predict_local(model, paths, sink, batch_size=args.batch_size, workers=args.workers,
                              progress=False)
                extra = {"workers": args.workers if args.workers is not None else "default"}
            elif path == "ray":
                from draem_zoo.serve.batch import predict_ray

                predict_ray(str(model_dir), model, paths, sink, batch_size=args.batch_size, progress=False,
                                device=device)
                extra["concurrency"] = 1
            else:
                raise SystemExit(f"--paths: unknown path {path!r} (before, local, ray, decode, serve)")
        seconds = time.perf_counter() - t0
        n = sum(1 for _ in (out / "predictions.jsonl").open())
        assert n == len(paths), (path, n)
        emit({"bench": "predict", "path": path, "images": n, "seconds": round(seconds, 3),
              "images_per_s": round(n / seconds, 2), **extra, **setup})
    return 0


if __name__ == "__main__":
    sys.exit(main())
