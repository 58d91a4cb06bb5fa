#!/usr/bin/env python
"""Training-step time, inference throughput and size of every named variant; JSON lines.

    python scripts/bench_train.py [--variants paper,paper-small,...] [--size 256] [--batch 8]
                                  [--steps 3] [--device auto]

Each line: bench, variant, device, batch, size, train_s_per_step (forward + backward +
Adam step on a synthesised batch; synthesis excluded), infer_images_per_s (predict at
batch 8), params; on a GPU also fp32 and bf16 figures. The original code needs about
42 s per training step and 0.66 images/s inference for the paper-size model at 256x256,
batch 8, on 2 CPU cores; ``vs_original`` gives the speed ratios for the paper variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from draem_zoo import build_model, list_variants
from draem_zoo.losses import LossConfig
from draem_zoo.synthesis import AnomalySynthesizer, SynthesisConfig, make_generator
from draem_zoo.textures import TextureBank
from draem_zoo.trainer import resolve_device, train_step

ORIGINAL = {"train_s_per_step": 42.0, "infer_images_per_s": 0.66}  # paper model, 256 px, batch 8, 2 CPU cores


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(list_variants()))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
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
