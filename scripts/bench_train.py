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

``--e2e`` lines (bench train_e2e): images_per_s of the whole iteration, synthesis_share_of_step,
the device name and, on a GPU, the ratio to the original code's 70 images/s on an H100.
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


def bench_e2e(variant: str, size: int, batch: int, steps: int, device: torch.device, compiled: bool,
              anomaly_source: str | None) -> dict:
    """What ``draem-zoo train`` does per iteration: sample a batch from the uint8 cache on the
    device, synthesise anomalies, train step (bf16 on a GPU); and synthesis alone, for its share."""
    from draem_zoo.synthesis.simulator import load_textures
    from draem_zoo.train.trainer import make_step

    torch.manual_seed(0)
    model = build_model(variant, image_size=size).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    amp = torch.bfloat16 if cuda else None
    cfg = SynthesisConfig(anomaly_source=anomaly_source)
    synth = AnomalySynthesizer(cfg, load_textures(cfg, size, device), make_generator(0, 0, device), compile=compiled)
    cache = (torch.rand(64, 3, size, size, device=device) * 255).to(torch.uint8)
    g = make_generator(0, 1000, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = make_step(model, LossConfig(), amp, compiled)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def synthesise():
        return synth(cache[torch.randint(0, len(cache), (batch,), generator=g, device=device)])

    def iteration():
        data = synthesise()
        if cuda:
            data.augmented = data.augmented.contiguous(memory_format=torch.channels_last)
        train_step(model, data, opt, LossConfig(), amp, step=step)

    for _ in range(3 if compiled else 1):  # compilation (and its recompiles) before timing
        iteration()
    it_s = timed(iteration, steps, sync)
    syn_s = timed(synthesise, steps, sync)
    row = {"bench": "train_e2e", "variant": variant, "batch": batch, "size": size,
           "mode": "compiled" if compiled and getattr(step, "failed", None) is None else "eager",
           "precision": "bf16" if amp else "fp32", "images_per_s": round(batch / it_s, 2),
           "s_per_iteration": round(it_s, 4), "synthesis_s": round(syn_s, 4),
           "synthesis_share_of_step": round(syn_s / it_s, 3), "anomaly_source": synth.textures.source}
    if cuda:
        row["vs_original_h100_70_images_per_s"] = round(row["images_per_s"] / ORIGINAL_H100_IMAGES_PER_S, 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(list_variants()))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--e2e", action="store_true",
                    help="time what draem-zoo train does per iteration (sampling + synthesis + step) for each "
                    "--batches size, eager and compiled (--modes); default variant paper")
    ap.add_argument("--batches", default="8,32", help="--e2e: batch sizes (default 8,32)")
    ap.add_argument("--modes", default="eager,compiled", help="--e2e: eager, compiled or both")
    ap.add_argument("--anomaly-source", default=None, help="--e2e: texture folder (default procedural)")
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
                    row = bench_e2e(variant, args.size, batch, args.steps, device, mode == "compiled",
                                    args.anomaly_source)
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
