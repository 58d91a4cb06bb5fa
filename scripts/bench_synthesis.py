#!/usr/bin/env python
"""Anomaly-synthesis throughput: one JSON object per line.

    python scripts/bench_synthesis.py [--anomaly-source DTD/images] [--batch 8,32] [--modes dense,sparse]
        [--threads 1,2] [--seconds 14] [--rounds 7] [--baseline PACKAGE]

Measures the full DRAEM synthesis (base rotation, Perlin masks, 3 texture augmentations,
blending) at 256x256 from uint8 images already in memory: milliseconds per batch (wall
time, and the process's CPU time, which a shared machine disturbs least) and samples/s,
on the CPU for each batch size, mode (dense: fixed-capacity sub-batches, the accelerator
default; sparse: exact sub-batches, the CPU default) and thread count and, when a GPU is
present, on the GPU (dense and sparse) together with the time of a
paper-size training step, so that the synthesis share of a step can be read off. Reports
the median and the best of several rounds (shared machines vary by tens of percent
between rounds).

``--baseline PACKAGE`` also measures an older copy of the package, importable under
another name, round by round alternating with the current one (so that both see the
same machine load), e.g.

    git archive <rev> draem_zoo | tar -x -C /tmp/base && mv /tmp/base/draem_zoo /tmp/base/draem_zoo_base
    PYTHONPATH=/tmp/base python scripts/bench_synthesis.py --baseline draem_zoo_base
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time

import torch

ORIGINAL_PER_CORE = 63.0  # samples/s of the original data loader per core on the reference machine


def measure(configs: dict[str, object], seconds: float, rounds: int, sync=lambda: None):
    """Per function, the wall and the CPU seconds (all of this process's threads) per call, per round
    (``seconds`` in all for each function, at least one call a round). Within a round the functions
    take turns, so that all see the same machine load; CPU time is what a shared machine moves least."""
    for fn in configs.values():
        for _ in range(2):
            fn()
    sync()
    per_round = seconds / rounds
    wall: dict[str, list[float]] = {name: [] for name in configs}
    cpu: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, fn in configs.items():
            calls, start, start_cpu = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - start < per_round or not calls:
                fn()
                sync()
                calls += 1
            wall[name].append((time.perf_counter() - start) / calls)
            cpu[name].append((time.process_time() - start_cpu) / calls)
    return wall, cpu


def report(wall: list[float], cpu: list[float], batch: int, **fields) -> dict:
    med = statistics.median(wall)
    return {"bench": "synthesis", **fields, "batch": batch, "ms_per_batch": round(med * 1e3, 2),
            "best_ms_per_batch": round(min(wall) * 1e3, 2), "cpu_ms_per_batch": round(statistics.median(cpu) * 1e3, 2),
            "best_cpu_ms_per_batch": round(min(cpu) * 1e3, 2), "samples_per_s": round(batch / med, 1),
            "rounds_ms": [round(t * 1e3, 2) for t in wall], "rounds_cpu_ms": [round(t * 1e3, 2) for t in cpu]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anomaly-source", default=None, help="texture folder (default: procedural textures)")
    ap.add_argument("--batch", default="8", help="batch sizes, comma-separated")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--modes", default="dense,sparse", help="CPU modes, comma-separated")
    ap.add_argument("--threads", default="1,2", help="CPU thread counts, comma-separated")
    ap.add_argument("--seconds", type=float, default=14.0, help="measuring time per configuration")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--baseline", default=None, help="an older copy of draem_zoo, importable under this name")
    ap.add_argument("--no-gpu", action="store_true", help="CPU measurements only")
    args = ap.parse_args()
    impls = {"current": importlib.import_module("draem_zoo.synthesis.simulator")}
    if args.baseline:
        impls[args.baseline] = importlib.import_module(f"{args.baseline}.synthesis.simulator")
    sim = impls["current"]
    cfg = sim.SynthesisConfig(anomaly_source=args.anomaly_source)
    bank = sim.load_textures(cfg, args.size, "cpu")
    modes = args.modes.split(",")
    g = torch.Generator().manual_seed(0)
    for batch in (int(b) for b in args.batch.split(",")):
        images = (torch.rand(batch, 3, args.size, args.size, generator=g) * 255).to(torch.uint8)
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            configs = {}
            for impl, mod in impls.items():
                for mode in modes:
                    synth = mod.AnomalySynthesizer(mod.SynthesisConfig(anomaly_source=args.anomaly_source),
                                                   mod.TextureBank(bank.images, bank.source), mod.make_generator(0),
                                                   dense=mode == "dense")
                    configs[f"{impl}/{mode}"] = lambda synth=synth, x=images: synth(x)
            wall, cpu = measure(configs, args.seconds, args.rounds)
            for name in configs:
                impl, mode = name.split("/")
                row = report(wall[name], cpu[name], batch, impl=impl, device="cpu", threads=threads, size=args.size,
                             mode=mode, textures=bank.source)
                row["per_core_vs_original"] = round(row["samples_per_s"] / threads / ORIGINAL_PER_CORE, 2)
                print(json.dumps(row), flush=True)

    if torch.cuda.is_available() and not args.no_gpu:
        gpu(args, sim, cfg)


def gpu(args, sim, cfg) -> None:
    from draem_zoo import build_model
    from draem_zoo.model.losses import LossConfig
    from draem_zoo.train.trainer import train_step

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    gbank = sim.load_textures(cfg, args.size, dev)
    model = build_model("paper").to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for batch in (int(b) for b in args.batch.split(",")):
        gimg = (torch.rand(batch, 3, args.size, args.size) * 255).to(torch.uint8).to(dev)
        step_batch = sim.AnomalySynthesizer(cfg, gbank, sim.make_generator(0))(gimg)
        step = measure({"step": lambda b=step_batch: train_step(model, b, opt, LossConfig(), torch.bfloat16)},
                       args.seconds, args.rounds, torch.cuda.synchronize)[0]["step"]
        step_s = statistics.median(step)
        for mode in ("dense", "sparse"):
            synth = sim.AnomalySynthesizer(cfg, gbank, sim.make_generator(0), dense=mode == "dense")
            wall, cpu = measure({mode: lambda synth=synth, x=gimg: synth(x)}, args.seconds, args.rounds,
                                torch.cuda.synchronize)
            times = wall[mode]
            row = report(times, cpu[mode], batch, impl="current", device=torch.cuda.get_device_name(),
                         threads=torch.get_num_threads(), size=args.size, mode=mode,
                         train_step_s_paper_bf16=round(step_s, 4), textures=gbank.source)
            row["synthesis_share_of_step"] = round(statistics.median(times) / (statistics.median(times) + step_s), 3)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
