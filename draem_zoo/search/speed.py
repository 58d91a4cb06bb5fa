"""Inference speed of a run's model, measured in the run: the speed axis of the accuracy-speed front.

Every trial (and final) measures it once, on its rank 0, before training: ``model.predict`` (float32,
inference mode, the model's own scoring) on a fixed batch of :data:`BATCH` random images at the run's
image size, on the run's device and with its threads; one warm-up pass (allocation, cuDNN autotuning),
then timed passes (the device synchronised after each) until :data:`MIN_SECONDS` have passed or
:data:`MAX_PASSES` passes ran. Speed depends on the architecture, not on the weights, so a freshly
built model (no pretrained weights loaded) is timed, and a trial ASHA stops at its first rung has its
speed as well as one that ran to the budget. Trials that share a node share its CPUs or GPU: on a busy
node the numbers are lower than alone, so the front takes each architecture's median over its trials.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and the model classes load with the first measurement: the tables need only HOW
    import torch

    from ..model.variants import ModelConfig

BATCH = 8
MIN_SECONDS = 0.5
MAX_PASSES = 20
HOW = (f"model.predict, float32, batch {BATCH} at the run's image size, on the trial's device, median over the "
       "architecture's trials")


def _sync(device: "torch.device") -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_inference(cfg: "ModelConfig", device: "torch.device | str" = "cpu", batch: int = BATCH,
                      min_seconds: float = MIN_SECONDS, max_passes: int = MAX_PASSES) -> dict[str, Any]:
    """Images per second of ``model.predict`` for the architecture ``cfg`` on ``device``, its parameter
    count and how it was measured (``infer_*`` keys, reported with the run's metrics)."""
    import torch

    from ..model.draem import build_model

    device = torch.device(device)
    cfg = dataclasses.replace(cfg, pretrained=False, pretrained_file=None, rec_pretrained_file=None)
    model = build_model(cfg).to(device).eval()
    size = cfg.image_size
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        model.predict(x)  # warm-up
        _sync(device)
        passes, start = 0, time.perf_counter()
        while True:
            model.predict(x)
            _sync(device)
            passes += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds or passes >= max_passes:
                break
        params = model.num_parameters()
    finally:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"infer_images_per_s": round(batch * passes / max(elapsed, 1e-9), 3), "infer_batch": batch,
            "infer_image_size": size, "infer_device": str(device), "infer_threads": torch.get_num_threads(),
            "params": int(params)}


def trial_speed(cfg: "ModelConfig", device: "torch.device | str" = "cpu") -> dict[str, Any]:
    """:func:`measure_inference` for a run; {} (no speed, so no place on the front) if it fails, which
    must not fail the run: the training that follows says what is wrong, if anything is."""
    try:
        return measure_inference(cfg, device)
    except Exception:
        return {}

