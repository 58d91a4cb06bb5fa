#!/usr/bin/env python
"""ONNX Runtime (CPU) against PyTorch (CPU) inference throughput of exported models; JSON lines.

    python scripts/bench_onnx.py [--variants paper-tiny,paper] [--size 256] [--batches 1,8]
                                 [--steps 3] [--threads N]

Models have random weights (throughput does not depend on the values) and are exported with
``draem_zoo.export.onnx.export_model`` (dynamic batch, default opset, parity-checked as the
command does). Both sides get the same uint8 RGB (B, S, S, 3) batch: PyTorch runs
``DraemModel.predict`` on it (after the conversion to float (B, 3, S, S) in [0, 1], which the
ONNX graph does inside), ONNX Runtime runs the graph with the same number of intra-op threads.
Each line: bench, variant, image_size, batch, threads, onnxruntime_images_per_s,
torch_images_per_s, ratio (ONNX Runtime / PyTorch), opset, parity diffs, onnx_bytes, weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from draem_zoo import build_model
from draem_zoo.export.onnx import INPUT_NAME, export_model, session


def timed(fn, steps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="paper-tiny,paper")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads of both (default: torch's)")
    args = ap.parse_args()
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    for variant in args.variants.split(","):
        torch.manual_seed(0)
        model = build_model(variant, image_size=args.size).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            t0 = time.perf_counter()
            result = export_model(model, path, dynamic_batch=True)
            export_s = time.perf_counter() - t0
            sess = session(path, threads)
            for batch in (int(b) for b in args.batches.split(",")):
                images = rng.integers(0, 256, (batch, args.size, args.size, 3), dtype=np.uint8)
                ort_s = timed(lambda s=sess, x=images: s.run(None, {INPUT_NAME: x}), args.steps)
                torch_s = timed(lambda m=model, x=images: m.predict(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255),
                                args.steps)
                row = {"bench": "onnx", "variant": variant, "image_size": args.size, "batch": batch, "threads": threads,
                       "onnxruntime_images_per_s": round(batch / ort_s, 2), "torch_images_per_s": round(batch / torch_s, 2),
                       "ratio": round(torch_s / ort_s, 2), "opset": result["opset"],
                       "parity_max_abs_diff": {"anomaly_map": result["parity"]["max_abs_diff_anomaly_map"],
                                               "score": result["parity"]["max_abs_diff_score"]},
                       "export_s": round(export_s, 1), "onnx_bytes": result["bytes"], "params": model.num_parameters(),
                       "weights": "random (init)", "device": "cpu", "torch": torch.__version__,
                       "onnxruntime": result["parity"]["runtime"]}
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
