#!/usr/bin/env python
"""Training-step time, inference throughput and size of every named variant; JSON lines.

    python scripts/bench_train.py [--variants paper,paper-small,...] [--size 256] [--batch 8]
                                  [--steps 3] [--device auto]
    python scripts/bench_train.py --e2e [--batches 8,32] [--modes eager,compiled] [--anomaly-source DIR]

Each line: bench, variant, device, batch, size, train_s_per_step (forward + backward +
Adam step on a synthesised batch; synthesis excluded), infer_images_per_s (predict at
batch 8), params; on a GPU also fp32 and bf16 figures. The original code needs about
42 s per training step and 0.66 images/s inference for the paper-size model at 256x256,
batch 8, on 2 CPU cores; ``vs_original`` gives the speed ratios for the paper variant.

``--e2e`` lines (bench train_e2e), one per batch size, eager/compiled and synthesis mode (dense or
sparse in the training process, or CPU worker processes): warmed up until no new graph appears,
then at least 20 iterations timed with a sync: images_per_s of the whole iteration, of the step
alone, their ratio, the synthesis share (time waiting for the batch), the compile seconds on their
own, the device name and, on a GPU, peak memory and the ratio to the original code's 70 images/s on
an H100.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from draem_zoo import build_model, list_variants
from draem_zoo.model.losses import LossConfig
from draem_zoo.synthesis.simulator import AnomalySynthesizer, SynthesisConfig, make_generator
from draem_zoo.synthesis.textures import TextureBank
from draem_zoo.train.trainer import resolve_device, train_step

ORIGINAL = {"train_s_per_step": 42.0, "infer_images_per_s": 0.66}  # paper model, 256 px, batch 8, 2 CPU cores
# the original DRAEM code's train step, fp32, batch 8, paper model, 256 px, measured on one H100 (issue 10;
# model only, its CPU data loader excluded)
ORIGINAL_H100_IMAGES_PER_S = 70.0


def timed(fn, steps: int, sync) -> float:
    fn()  # warm-up (cudnn autotune, allocator)
    sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(variant: str, size: int, batch: int, steps: int, device: torch.device, dtype) -> dict:
    torch.manual_seed(0)
    model = build_model(variant, image_size=size).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    synth = AnomalySynthesizer(SynthesisConfig(), TextureBank.procedural(16, size, device), make_generator(0, 0, device))
    images = (torch.rand(batch, 3, size, size, device=device) * 255).to(torch.uint8)
    data = synth(images)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step = timed(lambda: train_step(model, data, opt, LossConfig(), dtype), steps, sync)
    x = images.float() / 255

    def infer():
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            model.predict(x)

    infer_s = timed(infer, steps, sync)
    return {"train_s_per_step": round(step, 4), "infer_images_per_s": round(batch / infer_s, 2),
            "params": model.num_parameters()}


SYNTHESIS_MODES = ("dense", "sparse", "workers")


def graph_count() -> int:
    """Graphs torch.compile has made in this process so far (dynamo's counters)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"].get("unique_graphs", 0))


def warm_up(fn, sync, compiled: bool, budget_s: float = 600.0, settle: int = 3) -> tuple[int, float]:
    """Run ``fn`` until it is warm: eager, twice (allocator, cuDNN's autotuner); compiled, until ``settle``
    calls in a row made no new graph (or ``budget_s`` ran out). Returns (calls, seconds): the seconds are
    the compile's, reported on their own, never inside an images/s figure."""
    t0, calls, quiet = time.perf_counter(), 0, 0
    while True:
        before = graph_count()
        fn()
        sync()
        calls += 1
        quiet = quiet + 1 if graph_count() == before else 0
        if (not compiled and calls >= 2) or (compiled and quiet >= settle) or time.perf_counter() - t0 > budget_s:
            return calls, time.perf_counter() - t0


def rate(fn, steps: int, sync) -> float:
    """Seconds per call over ``steps`` calls, timed as a whole with one sync at the end (what a training
    loop sees: the GPU runs ahead of the host between syncs)."""
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t0) / steps


def bench_e2e(variant: str, size: int, batch: int, steps: int, device: torch.device, compiled: bool,
              anomaly_source: str | None, synthesis: str = "dense", workers: int | None = None,
              backend: str = "inductor", compile_budget_s: float = 600.0) -> dict:
    """What ``draem-zoo train`` does per iteration, through the Trainer's own batch source: batch k drawn
    from the uint8 cache and its anomalies synthesised (``dense`` or ``sparse`` in the training process,
    on its device, or ``workers``: that many CPU worker processes ahead of the step), then the train step
    (bf16 on a GPU; compiled with ``backend``). Warmed up until no new graph appears, then ``steps``
    iterations timed with a sync; also the step alone on a fixed batch, and the share of the iteration
    spent waiting for the batch (the synthesis share). Compile seconds are their own field."""
    from draem_zoo.synthesis.simulator import load_textures
    from draem_zoo.train.batches import resolve_workers
    from draem_zoo.train.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    cuda = device.type == "cuda"
    model = build_model(variant, image_size=size).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(device)
    cfg = SynthesisConfig(anomaly_source=anomaly_source)
    n_workers = 0
    if synthesis == "workers":
        n_workers = workers or resolve_workers("auto", device) or 2
    synth = AnomalySynthesizer(cfg, load_textures(cfg, size, device), make_generator(0, 0, device),
                               dense=synthesis == "dense")
    cache = (torch.rand(64, 3, size, size) * 255).to(torch.uint8)
    t = Trainer(model, cache, synth, TrainConfig(iterations=10**6, batch_size=batch, compile=compiled, report_every=0,
                                                 synthesis_workers=n_workers, compile_backend=backend),
                LossConfig(), "/nonexistent-bench", progress=False)
    source = t.batch_source()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    k, waits = {"i": 0}, []  # waits: the share of a synced iteration spent waiting for its batch

    def get():
        b = source.get(k["i"])
        k["i"] += 1
        if cuda:
            b.augmented = b.augmented.contiguous(memory_format=torch.channels_last)
        return b

    def iteration():
        train_step(t.model, get(), t.optimizer, t.loss_cfg, t.autocast, None, t.step)

    def measured_iteration():  # synced, so the wait for the batch is its own: the synthesis share
        t0 = time.perf_counter()
        b = get()
        sync()
        t1 = time.perf_counter()
        train_step(t.model, b, t.optimizer, t.loss_cfg, t.autocast, None, t.step)
        sync()
        waits.append((t1 - t0) / (time.perf_counter() - t0))

    def step():
        train_step(t.model, fixed, t.optimizer, t.loss_cfg, t.autocast, None, t.step)

    source.start(0, 10**6)
    try:
        fixed = get()
        calls, compile_s = warm_up(iteration, sync, compiled, compile_budget_s)
        it_s = rate(iteration, steps, sync)
        for _ in range(min(10, steps)):
            measured_iteration()
        warm_up(step, sync, compiled, compile_budget_s)
        step_s = rate(step, steps, sync)
    finally:
        source.close()
    really = compiled and getattr(t.step, "failed", None) is None
    row = {"bench": "train_e2e", "variant": variant, "batch": batch, "size": size,
           "mode": "compiled" if really else "eager", "backend": backend if really else None,
           "synthesis": synthesis + (f" ({n_workers} processes)" if n_workers else ""),
           "precision": "bf16" if t.autocast else "fp32", "images_per_s": round(batch / it_s, 2),
           "step_images_per_s": round(batch / step_s, 2), "iteration_vs_step": round(step_s / it_s, 3),
           "s_per_iteration": round(it_s, 4), "timed_iterations": steps,
           "synthesis_share": round(statistics.median(waits), 3) if waits else None,
           "warmup_iterations": calls, "compile_seconds": round(compile_s, 2) if compiled else None,
           "graphs": graph_count() if compiled else None, "anomaly_source": synth.textures.source}
    if cuda:
        row["vs_original_h100_70_images_per_s"] = round(row["images_per_s"] / ORIGINAL_H100_IMAGES_PER_S, 2)
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(list_variants()))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed iterations (--e2e: at least 20)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--e2e", action="store_true",
                    help="time what draem-zoo train does per iteration (sampling + synthesis + step) for each "
                    "--batches size, eager and compiled (--modes); default variant paper")
    ap.add_argument("--batches", default="8,32", help="--e2e: batch sizes (default 8,32)")
    ap.add_argument("--modes", default="eager,compiled", help="--e2e: eager, compiled or both")
    ap.add_argument("--anomaly-source", default=None, help="--e2e: texture folder (default procedural)")
    ap.add_argument("--synthesis", default=",".join(SYNTHESIS_MODES),
                    help="--e2e: synthesis modes (default all: dense and sparse in process, workers)")
    ap.add_argument("--workers", type=int, default=None,
                    help="--e2e: synthesis worker processes (default: what train.synthesis_workers=auto picks on a "
                    "GPU, else 2)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    if args.e2e:
        variants = args.variants if args.variants != ",".join(list_variants()) else "paper"
        for variant in variants.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                for mode in args.modes.split(","):
                    for synthesis in args.synthesis.split(","):
                        row = bench_e2e(variant, args.size, batch, max(20, args.steps), device,
                                        mode == "compiled", args.anomaly_source, synthesis, args.workers)
                        print(json.dumps({**row, "device": name, "torch": torch.__version__}), flush=True)
        return
    for variant in args.variants.split(","):
        row = {"bench": "train", "variant": variant, "device": torch.cuda.get_device_name() if device.type == "cuda"
               else f"cpu ({torch.get_num_threads()} threads)", "batch": args.batch, "size": args.size}
        if device.type == "cuda":
            fp32 = bench(variant, args.size, args.batch, args.steps, device, None)
            bf16 = bench(variant, args.size, args.batch, args.steps, device, torch.bfloat16)
            row.update(bf16, fp32_train_s_per_step=fp32["train_s_per_step"],
                       fp32_infer_images_per_s=fp32["infer_images_per_s"], precision="bf16 (fp32 beside)")
        else:
            row.update(bench(variant, args.size, args.batch, args.steps, device, None), precision="fp32")
        if variant == "paper" and device.type == "cpu" and args.size == 256 and args.batch == 8:
            row["vs_original"] = {"train_speedup": round(ORIGINAL["train_s_per_step"] / row["train_s_per_step"], 2),
                                  "infer_speedup": round(row["infer_images_per_s"] / ORIGINAL["infer_images_per_s"], 2)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
