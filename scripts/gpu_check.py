#!/usr/bin/env python
"""Everything one accelerator can tell us, in one command and a bounded time; JSON lines.

    python scripts/gpu_check.py [--budget 360] [--device cuda] [--anomaly-source DIR] [--out FILE]
    python scripts/gpu_check.py --smoke          # every path at tiny sizes on a CPU, in about a minute

GPU time comes rarely and briefly: the whole check, compiles included, fits in ``--budget`` seconds
(default 360), and every line is also appended to ``--out`` as it is measured, so a call killed at
its limit still returns what it measured. Lines (``check`` names each), in this order:

* ``device``: name, torch, CUDA, cuDNN, memory.
* ``train``: the paper variant at 256 px, bf16, through the Trainer's own batch source, warmed up
  until no new graph appears, then at least 20 iterations timed with a sync: eager with synthesis
  worker processes at batch 8 and 32, compiled with workers at 8 and 32, then dense and sparse
  on-device synthesis; images/s of the whole iteration and of the step alone, the synthesis share,
  compile seconds on their own (never inside an images/s figure), peak memory.
* ``profile``: the top 10 CUDA kernels (on a CPU: operators) of one compiled step, by time, with their
  share.
* ``inference``: validation-size and test-size inference as ``draem-zoo train`` runs it (the real
  ``compute_maps`` path, the training's autocast, one warm-up at the batch shape, synchronised):
  images/s; and the metrics seconds of a 270-image validation set.
* ``cli_train``: a 300-iteration ``draem-zoo train`` of a generated 256 px category, with the CLI's own
  steady-state images/s (its history), its validation, checkpoint and first-step seconds and its test
  inference images/s.
* ``onnx`` when ONNX Runtime has the CUDA provider.

A configuration that would run past the budget is skipped with a ``skipped`` line; one that fails prints
its error in its line and the run goes on. The last line (``summary``) sums it up. ``--smoke`` runs the
same paths at 32 px with a few iterations; its compiled rows use the ``aot_eager`` backend (dynamo and
AOTAutograd, the graph machinery inductor uses, without its minutes of C++ code generation on a CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ORIGINAL_IMAGES_PER_S = 80.8  # the original DRAEM code's train step on one H200, fp32, cudnn.benchmark, batch 8
OUT: Path | None = None


def emit(row: dict) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if OUT is not None:
        with open(OUT, "a") as f:
            f.write(line + "\n")


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
              anomaly_source: str | None, backend: str) -> dict:
    from bench_train import bench_e2e

    row = bench_e2e(variant, size, batch, steps, device, compiled, anomaly_source, synthesis, backend=backend)
    row = {"check": "train", **{k: v for k, v in row.items() if k != "bench"}}
    if "vs_original_h100_70_images_per_s" in row:
        row.pop("vs_original_h100_70_images_per_s")
        row["vs_original_step"] = round(row["images_per_s"] / ORIGINAL_IMAGES_PER_S, 2)
    return row


def profile_row(variant: str, size: int, batch: int, device: torch.device, backend: str) -> dict:
    """The top 10 kernels (CUDA) or operators (CPU) of one compiled step, by their time."""
    from torch.profiler import ProfilerActivity, profile

    from draem_zoo import build_model
    from draem_zoo.model.losses import LossConfig
    from draem_zoo.synthesis.simulator import AnomalySynthesizer, SynthesisConfig, make_generator
    from draem_zoo.synthesis.textures import TextureBank
    from draem_zoo.train.trainer import make_step, run_step

    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(variant, image_size=size).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    synth = AnomalySynthesizer(SynthesisConfig(), TextureBank.procedural(8, size, device), make_generator(0))
    b = synth((torch.rand(batch, 3, size, size, device=device) * 255).to(torch.uint8))
    x = b.augmented.contiguous(memory_format=torch.channels_last) if cuda else b.augmented
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = make_step(model.train(), LossConfig(), torch.bfloat16 if cuda else None, True, backend=backend)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3):  # compile and warm up
        run_step(step, x, b.clean, b.mask, opt)
    sync()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        run_step(step, x, b.clean, b.mask, opt)
        sync()
    key = "device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    total = sum(getattr(e, key) for e in events) or 1
    top = sorted(events, key=lambda e: -getattr(e, key))[:10]
    return {"check": "profile", "variant": variant, "batch": batch, "size": size, "backend": backend,
            "what": "CUDA kernels" if cuda else "CPU operators", "total_ms": round(total / 1000, 3),
            "top": [{"name": e.key[:120], "share": round(getattr(e, key) / total, 3)} for e in top]}


def inference_row(variant: str, size: int, n_val: int, n_test: int, device: torch.device) -> dict:
    """Validation and test inference as `draem-zoo train` runs them: compute_maps at eval.batch_size under the
    training's autocast, warmed up at the batch shape, synchronised; and the validation metrics' seconds."""
    from bench_validation import build, model_like_maps, time_metrics

    from draem_zoo import build_model
    from draem_zoo.evaluation.evaluate import EvalConfig, compute_maps

    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(variant, image_size=size).to(device).eval()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    autocast = torch.bfloat16 if cuda else None
    batch = EvalConfig().batch_size
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    row = {"check": "inference", "variant": variant, "size": size, "batch": batch,
           "precision": "bf16" if autocast else "fp32"}
    for name, n in (("validation", n_val), ("test", n_test)):
        images = (torch.rand(n, 3, size, size) * 255).to(torch.uint8)
        compute_maps(model, images[:batch], batch, on_device=True, autocast=autocast)  # the shape, once
        sync()
        t0 = time.perf_counter()
        compute_maps(model, images, batch, on_device=True, autocast=autocast)
        sync()
        row[f"{name}_images_per_s"] = round(n / (time.perf_counter() - t0), 1)
    vset = build(n_val, size)
    row["validation_metrics_seconds"] = round(time_metrics(model_like_maps(vset.masks), vset, str(device), 2), 3)
    row["validation_images"] = len(vset)
    return row


def cli_train_row(size: int, iterations: int, device: torch.device, variant: str) -> dict:
    """``draem-zoo train`` itself on a generated category: its own steady-state images/s and where else its
    time went (from its result: training.timing), and its test inference images/s."""
    from draem_zoo.data.demo import make_demo_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = make_demo_dataset(Path(tmp) / "data", categories=("weave",), size=size, n_train=40, n_test_good=16,
                                 n_test_defect=8)
        cmd = [sys.executable, "-m", "draem_zoo.cli", "train", "--data", str(data), "--category", "weave", "--out",
               str(Path(tmp) / "m"), "--iterations", str(iterations), "--image-size", str(size), "--variant", variant,
               "--device", str(device), "--json", "--quiet"]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                             cwd=str(Path(__file__).resolve().parents[1]))
        wall = time.perf_counter() - t0
    if res.returncode:
        raise RuntimeError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    training = out["training"]
    timing = training.get("timing") or {}
    batch = training["batch_size"]
    row = {"check": "cli_train", "variant": variant, "size": size, "iterations": out["iterations"], "batch": batch,
           "compiled": training.get("compiled"), "precision": training.get("precision"),
           "images_per_s": round((timing.get("steady_it_per_s") or 0) * batch, 2),
           "training_seconds": training["seconds"], "wall_seconds": round(wall, 1),
           **{k: timing.get(k) for k in ("first_step_seconds", "validation_seconds", "checkpoint_seconds")},
           "test_inference_images_per_s": (out.get("test") or {}).get("inference_images_per_s")}
    return row


def onnx_row(size: int) -> dict | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"check": "onnx", "skipped": "onnxruntime is not installed (pip install 'draem-zoo[onnx]')"}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"check": "onnx", "skipped": f"no CUDA provider in ONNX Runtime ({', '.join(ort.get_available_providers())})"}
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("bench_onnx.py")), "--variants", "paper",
                          "--size", str(size), "--batches", "8"], capture_output=True, text=True, timeout=300)
    return {"check": "onnx", "lines": [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")],
            "error": out.stderr[-500:] if out.returncode else None}


def plan_of(smoke: bool) -> list[tuple[str, dict]]:
    """What is measured, in order of what matters most (the budget may skip the tail)."""
    batches = (2, 4) if smoke else (8, 32)
    plan: list[tuple[str, dict]] = [("train", {"batch": b, "compiled": False, "synthesis": "workers"}) for b in batches]
    plan += [("train", {"batch": b, "compiled": True, "synthesis": "workers"}) for b in batches]
    plan += [("train", {"batch": b, "compiled": False, "synthesis": m}) for m in ("dense", "sparse") for b in batches]
    plan += [("profile", {"batch": batches[0]}), ("inference", {}), ("cli_train", {}), ("onnx", {})]
    return plan


def main() -> int:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks every path in about a minute")
    ap.add_argument("--budget", type=float, default=360.0, help="seconds for the whole check (default 360: 6 min)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--anomaly-source", default=None, help="texture folder (default procedural)")
    ap.add_argument("--out", default=None, metavar="FILE", help="also append every line here, as it is measured")
    args = ap.parse_args()
    OUT = Path(args.out) if args.out else None
    from draem_zoo.train.trainer import resolve_device

    device = torch.device("cpu") if args.smoke else resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    variant, size = ("paper-tiny", 32) if args.smoke else ("paper", 256)
    steps, n_val, n_test = (20, 14, 10) if args.smoke else (20, 270, 200)
    cli_iterations = 20 if args.smoke else 300
    backend = "aot_eager" if args.smoke else "inductor"
    started = time.monotonic()
    emit(device_row(device))
    done, failed, skipped, last = 0, 0, 0, 0.0
    for kind, kw in plan_of(args.smoke):
        left = args.budget - (time.monotonic() - started)
        if left < 1.2 * last or left <= 0:  # the next one would likely overrun: say so and go on
            emit({"check": kind, **kw, "skipped": f"{left:.0f} s of the budget left"})
            skipped += 1
            continue
        t0 = time.monotonic()
        try:
            if kind == "train":
                row = train_row(variant, size, kw["batch"], steps, device, kw["compiled"], kw["synthesis"],
                                args.anomaly_source, backend)
            elif kind == "profile":
                row = profile_row(variant, size, kw["batch"], device, backend)
            elif kind == "inference":
                row = inference_row(variant, size, n_val, n_test, device)
            elif kind == "cli_train":
                row = cli_train_row(size, cli_iterations, device, variant)
            else:
                row = onnx_row(size) if device.type == "cuda" or args.smoke else None
                if row is None:
                    continue
            row["seconds"] = round(time.monotonic() - t0, 1)
            emit(row)
            done += 1
        except Exception as exc:  # one configuration failing must not cost the rest of the device time
            emit({"check": kind, **kw, "error": f"{type(exc).__name__}: {exc}"[:1000],
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
