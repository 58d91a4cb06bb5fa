#!/usr/bin/env python
"""Anomaly-synthesis throughput: one JSON object per line.

    python scripts/bench_synthesis.py [--anomaly-source DTD/images] [--seconds 4] [--rounds 7]

Measures samples/s of the full DRAEM synthesis (base rotation, Perlin masks, 3 texture
augmentations, blending) at 256x256, batch 8, from uint8 images already in memory, on
the CPU with 1 and 2 threads (sparse mode) and, when a GPU is present, on the GPU
(dense mode, no host syncs) together with the time of a paper-size training step, so
that the synthesis share of a step can be read off. Reports the median and the best
of several rounds (shared machines vary by tens of percent between rounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from draem_zoo.synthesis.simulator import AnomalySynthesizer, SynthesisConfig, load_textures, make_generator

ORIGINAL_PER_CORE = 63.0  # samples/s of the original data loader per core on the reference machine


def rate(fn, batch: int, seconds: float, rounds: int, sync=lambda: None) -> list[float]:
    for _ in range(3):
        fn()
    sync()
    out = []
    for _ in range(rounds):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / rounds:
            fn()
            n += batch
        sync()
        out.append(n / (time.perf_counter() - start))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anomaly-source", default=None, help="texture folder (default: procedural textures)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=14.0, help="measuring time per configuration")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    cfg = SynthesisConfig(anomaly_source=args.anomaly_source)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(args.batch, 3, args.size, args.size, generator=g) * 255).to(torch.uint8)

    bank = load_textures(cfg, args.size, "cpu")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        synth = AnomalySynthesizer(cfg, bank, make_generator(0))
        rates = rate(lambda synth=synth: synth(images), args.batch, args.seconds, args.rounds)
        med = statistics.median(rates)
        print(json.dumps({
            "bench": "synthesis", "device": "cpu", "threads": threads, "batch": args.batch, "size": args.size,
            "mode": "sparse", "samples_per_s": round(med, 1), "best_samples_per_s": round(max(rates), 1),
            "rounds": [round(r, 1) for r in rates], "per_core_vs_original": round(med / threads / ORIGINAL_PER_CORE, 2),
            "textures": bank.source,
        }), flush=True)

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
        gbank = load_textures(cfg, args.size, dev)
        gimg = images.to(dev)
        from draem_zoo import build_model
        from draem_zoo.model.losses import LossConfig
        from draem_zoo.train.trainer import train_step

        model = build_model("paper").to(dev).to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        batch = AnomalySynthesizer(cfg, gbank, make_generator(0, device=dev))(gimg)
        step_rates = rate(lambda: train_step(model, batch, opt, LossConfig(), torch.bfloat16), args.batch,
                          args.seconds, args.rounds, torch.cuda.synchronize)
        step_s = args.batch / statistics.median(step_rates)
        for compiled in (False, True):  # dense mode in eager, and compiled as train.compile=true does
            synth = AnomalySynthesizer(cfg, gbank, make_generator(0, device=dev), compile=compiled)
            rates = rate(lambda synth=synth: synth(gimg), args.batch, args.seconds, args.rounds,
                         torch.cuda.synchronize)
            synth_s = args.batch / statistics.median(rates)
            print(json.dumps({
                "bench": "synthesis", "device": torch.cuda.get_device_name(), "threads": torch.get_num_threads(),
                "batch": args.batch, "size": args.size, "mode": "dense, compiled" if compiled else "dense",
                "samples_per_s": round(statistics.median(rates), 1), "best_samples_per_s": round(max(rates), 1),
                "train_step_s_paper_bf16": round(step_s, 4),
                "synthesis_share_of_step": round(synth_s / (synth_s + step_s), 3), "textures": gbank.source,
            }), flush=True)


if __name__ == "__main__":
    main()
