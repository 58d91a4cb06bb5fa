"""What one validation costs: the metrics over a validation set's maps, and the inference before them.

Builds a validation set of about ``--images`` images at ``--size`` px from generated normals (one
anomaly per normal and family, as the old set had, so old and new score the same images), makes
model-like anomaly maps for it (the true masks, blurred, plus noise, through a sigmoid) and times

* ``metrics_s``: this tree's ``validation_metrics`` on ``--device`` (mean filters for every s_f,
  pixel histograms, the bootstrap over the normals), the maps already where the model left them;
* ``baseline_metrics_s`` (with ``--baseline-tree``, e.g. a ``git worktree`` of an older commit): that
  tree's ``validation_metrics`` on the same maps, run in a subprocess (the old code copied maps to
  the CPU and ran scikit-learn's curves there);
* ``inference_s_per_image``: validation's own inference (``compute_maps``, batch 16, bf16 and
  channels-last on a GPU, warmed up at that shape, synchronised) of ``--variant`` at ``--size`` px on
  ``--device`` (``--infer-images`` images), and ``train_s_per_iteration`` (batch 8, forward and backward),
  so that the share of training time spent validating at a budget can be worked out:
  ``--category-train N`` (train/good images of the category) gives it for the paper budget
  (700 epochs, 5 validations, ``validation_per_normal`` anomalies per normal and family).

Prints one JSON object. Speed on a GPU is unmeasured until this runs on one.

    python scripts/bench_validation.py --baseline-tree /tmp/old --category-train 209   # bottle
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

SIZES = (1, 5, 11, 21, 31, 41)


def model_like_maps(masks: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    blurred = F.avg_pool2d(masks.float(), 5, 1, 2)
    logit = -5 + 8 * blurred + 1.5 * torch.randn(masks.shape, generator=g)
    return torch.sigmoid(logit)


def build(n_images: int, size: int):
    from draem_zoo.evaluation.anomalies import FAMILIES
    from draem_zoo.evaluation.validation import make_validation_set
    from draem_zoo.synthesis.config import SynthesisConfig
    from draem_zoo.synthesis.textures import TextureBank

    n = max(2, round(n_images / (1 + len(FAMILIES))))
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = 0.5 + 0.2 * torch.sin(6.28 * 9 * xx) * torch.sin(6.28 * 7 * yy)
    normals = ((base.expand(n, 3, size, size) + 0.04 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
               * 255).round().to(torch.uint8)
    return make_validation_set(normals, SynthesisConfig(), TextureBank.procedural(16, size, seed=0), seed=1)


def time_metrics(maps, vset, device: str, repeats: int) -> float:
    from draem_zoo.evaluation.validation import validation_metrics

    maps = maps.to(device)
    validation_metrics(maps, vset, SIZES)  # warm-up
    best = math.inf
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        validation_metrics(maps, vset, SIZES)
        best = min(best, time.perf_counter() - t0)
    return best


def baseline(tree: str, tensors: str, repeats: int) -> dict:
    """The other tree's validation_metrics on the same maps, in its own interpreter."""
    code = f"""
import json, math, time, torch
from safetensors.torch import load_file
from draem_zoo.evaluation.validation import ValidationSet, validation_metrics
t = load_file({tensors!r})
fam = json.loads(open({tensors!r} + '.json').read())
vs = ValidationSet(t['images'], t['masks'], t['labels'], fam)
validation_metrics(t['maps'], vs, {SIZES!r})
best = math.inf
for _ in range({repeats}):
    t0 = time.perf_counter(); m = validation_metrics(t['maps'], vs, {SIZES!r}); best = min(best, time.perf_counter() - t0)
print(json.dumps({{"seconds": best, "val_score": m["val_score"]}}))
"""
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
    # cwd=tree: `python -c` puts the working directory first on sys.path, before PYTHONPATH
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=tree)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_model(variant: str, size: int, device: str, n_images: int, batch: int = 16) -> dict:
    """Inference as validation runs it (``compute_maps`` at ``batch``, channels-last and bf16 on a GPU),
    warmed up at that batch shape (cuDNN's autotuner times kernels at every new shape) and synchronised;
    and one training iteration (batch 8)."""
    from draem_zoo.evaluation.evaluate import compute_maps
    from draem_zoo.model.draem import build_model

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    model = build_model(variant, image_size=size).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    autocast = torch.bfloat16 if cuda else None
    images = (torch.rand(max(n_images, batch), 3, size, size) * 255).to(torch.uint8)
    model.eval()
    compute_maps(model, images[:batch], batch, on_device=True, autocast=autocast)  # the batch shape, once
    sync()
    t0 = time.perf_counter()
    compute_maps(model, images, batch, on_device=True, autocast=autocast)
    sync()
    infer = (time.perf_counter() - t0) / len(images)
    model.train()
    x = torch.rand(8, 3, size, size, device=device)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cuda):
            rec, seg = model(x)
        loss = (rec.float() - x).pow(2).mean() + seg.float().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t0)
    return {"inference_s_per_image": round(infer, 5), "inference_images_per_s": round(1 / infer, 1),
            "inference_batch": batch, "precision": "bf16" if cuda else "fp32",
            "train_s_per_iteration": round(min(times[1:]), 3), "params": model.num_parameters()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=270)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-tree", default=None, help="another checkout (e.g. a git worktree of an older commit)")
    ap.add_argument("--variant", default="paper")
    ap.add_argument("--infer-images", type=int, default=64)
    ap.add_argument("--category-train", type=int, default=None, help="train/good images (bottle: 209)")
    ap.add_argument("--per-normal", type=int, default=3, help="eval.validation_per_normal for the budget share")
    args = ap.parse_args()
    from draem_zoo.evaluation.anomalies import FAMILIES

    vset = build(args.images, args.size)
    maps = model_like_maps(vset.masks)
    res: dict = {"images": len(vset), "size": args.size, "device": args.device, "filter_sizes": list(SIZES),
                 "torch_threads": torch.get_num_threads(), "gpu_measured": args.device.startswith("cuda")}
    res["metrics_s"] = round(time_metrics(maps, vset, args.device, args.repeats), 3)
    if args.baseline_tree:
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "vset.safetensors")
            save_file({"images": vset.images, "masks": vset.masks, "labels": vset.labels, "maps": maps}, path)
            Path(path + ".json").write_text(json.dumps(vset.family))
            old = baseline(args.baseline_tree, path, args.repeats)
        res["baseline_metrics_s"] = round(old["seconds"], 3)
        res["metrics_speedup"] = round(old["seconds"] / max(res["metrics_s"], 1e-9), 1)
    if args.infer_images:
        res.update(variant=args.variant, **time_model(args.variant, args.size, args.device, args.infer_images))
    if args.category_train and args.infer_images:
        n_train = args.category_train - round(0.1 * args.category_train)
        n_val = args.category_train - n_train
        k = n_val * (1 + len(FAMILIES) * args.per_normal)
        iterations = math.ceil(700 * n_train / 8)
        per_validation = k * res["inference_s_per_image"] + res["metrics_s"] * k / len(vset)
        train_s = iterations * res["train_s_per_iteration"]
        res["paper_budget"] = {"n_train": n_train, "validation_images": k, "iterations": iterations,
                               "validations": 5, "seconds_per_validation": round(per_validation, 1),
                               "validation_share": round(5 * per_validation / (train_s + 5 * per_validation), 4),
                               "note": "metrics time scaled linearly with the set's size; measured on " + args.device}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
