#!/usr/bin/env python
"""Everything one accelerator can tell us, in one command and a bounded time; JSON lines.

    python scripts/gpu_check.py [--budget 480] [--device cuda] [--anomaly-source DIR]
    python scripts/gpu_check.py --smoke          # the same code paths at tiny sizes on a CPU, seconds (eager only)

Lines (``check`` names each): ``device`` (name, torch, CUDA, cuDNN, memory); ``train`` for the paper
variant at 256 px, batch 8 and 32, eager and compiled, each synthesis mode (dense and sparse on the
device, CPU worker processes as train.synthesis_workers=auto picks them, else 2):
whole-iteration images/s, the step alone, the synthesis share, peak memory, and the ratio to the
original code's 70 images/s (one H100, fp32, its data loader excluded); ``validation``: seconds of
the metrics for a 270-image 256 px set with the maps on the device, and the inference seconds per
image; ``onnx`` when ONNX Runtime has the CUDA provider. Configurations that would run past
``--budget`` seconds are skipped with a ``skipped`` line, so the run ends in time; a configuration
that fails prints its error in its line and the run goes on. The last line sums it up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ORIGINAL_IMAGES_PER_S = 70.0  # the original DRAEM code's train step on one H100, fp32, batch 8, 256 px


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def device_row(device: torch.device) -> dict:
    row = {"check": "device", "device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        row.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                   cudnn=torch.backends.cudnn.version())
    else:
        row.update(name=f"cpu ({torch.get_num_threads()} threads)")
    return row


def train_row(variant: str, size: int, batch: int, steps: int, device: torch.device, compiled: bool, synthesis: str,
              anomaly_source: str | None) -> dict:
    """One iteration as `draem-zoo train` runs it (the Trainer's batch source + the step), the step alone and
    the share of the iteration spent waiting for the batch: ``bench_train.bench_e2e``."""
    from bench_train import bench_e2e

    row = bench_e2e(variant, size, batch, steps, device, compiled, anomaly_source, synthesis)
    row = {"check": "train", **{k: v for k, v in row.items() if k != "bench"}}
    if "vs_original_h100_70_images_per_s" in row:
        row["vs_original_70_images_per_s"] = row.pop("vs_original_h100_70_images_per_s")
    return row


def validation_row(size: int, n_images: int, device: torch.device, variant: str) -> dict:
    from bench_validation import build, model_like_maps, time_metrics, time_model

    vset = build(n_images, size)
    maps = model_like_maps(vset.masks)
    seconds = time_metrics(maps, vset, str(device), repeats=2)
    model = time_model(variant, size, str(device), n_images=16)
    return {"check": "validation", "images": len(vset), "size": size, "metrics_seconds": round(seconds, 3),
            "inference_s_per_image": model["inference_s_per_image"],
            "validation_seconds": round(seconds + model["inference_s_per_image"] * len(vset), 2)}


def onnx_row(size: int) -> dict | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"check": "onnx", "skipped": "onnxruntime is not installed (pip install 'draem-zoo[onnx]')"}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"check": "onnx", "skipped": f"no CUDA provider in ONNX Runtime ({', '.join(ort.get_available_providers())})"}
    import subprocess

    out = subprocess.run([sys.executable, str(Path(__file__).with_name("bench_onnx.py")), "--variants", "paper",
                          "--size", str(size), "--batches", "8"], capture_output=True, text=True, timeout=300)
    return {"check": "onnx", "lines": [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")],
            "error": out.stderr[-500:] if out.returncode else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the code paths in seconds")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check (default 480: 8 min)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--anomaly-source", default=None, help="texture folder (default procedural)")
    args = ap.parse_args()
    from draem_zoo.train.trainer import resolve_device

    device = torch.device("cpu") if args.smoke else resolve_device(args.device)
    variant, size, batches, steps, n_val = ("paper-tiny", 32, (2, 4), 2, 14) if args.smoke else ("paper", 256, (8, 32), 5, 270)
    started = time.monotonic()
    emit(device_row(device))
    from bench_train import SYNTHESIS_MODES

    # eager rows first (every synthesis mode at both batch sizes), then validation, then the compiled rows
    # (compiling takes a while: the budget may skip some of them), then ONNX. Compiling on a CPU takes minutes
    # (inductor's C++ codegen): --smoke runs eager, and tests/train/test_compile.py covers the compiled paths
    plan: list[tuple[str, dict]] = []
    for compiled in (False,) if args.smoke else (False, True):
        for batch in batches:
            for synthesis in SYNTHESIS_MODES:
                plan.append(("train", {"batch": batch, "compiled": compiled, "synthesis": synthesis}))
        if not compiled:
            plan.append(("validation", {}))
    plan.append(("onnx", {}))
    done, failed, skipped, last = 0, 0, 0, 0.0
    for kind, kw in plan:
        left = args.budget - (time.monotonic() - started)
        if left < 1.5 * last or left <= 0:  # the next one would likely overrun: say so and go on
            emit({"check": kind, **kw, "skipped": f"{left:.0f} s of the budget left"})
            skipped += 1
            continue
        t0 = time.monotonic()
        try:
            if kind == "validation":
                row = validation_row(size, n_val, device, variant)
            elif kind == "train":
                row = train_row(variant, size, kw["batch"], steps, device, kw["compiled"], kw["synthesis"],
                                args.anomaly_source)
            else:
                row = onnx_row(size) if device.type == "cuda" or args.smoke else None
                if row is None:
                    continue
            row["seconds"] = round(time.monotonic() - t0, 1)
            emit(row)
            done += 1
        except Exception as exc:  # one configuration failing must not cost the rest of the device time
            emit({"check": kind, **kw, "error": f"{type(exc).__name__}: {exc}",
                  "where": traceback.format_exc().strip().splitlines()[-3:]})
            failed += 1
        last = time.monotonic() - t0
        if device.type == "cuda":
            torch.cuda.empty_cache()
    emit({"check": "summary", "done": done, "failed": failed, "skipped": skipped,
          "seconds": round(time.monotonic() - started, 1), "measured_on": device_row(device)["name"]})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
