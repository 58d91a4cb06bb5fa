"""``draem-zoo predict`` on one machine: a pool of worker processes decodes images (torch ``DataLoader``),
batches run on the device under the model's own precision (``model.predict``: bf16 autocast on CUDA where
the model says so), records stream to the sink as they come, overlay PNGs are drawn by a thread pool for
the records ``--overlays`` asks for, and a progress bar shows images/s.

The ``images`` are paths; ones the sink already holds (``--resume``) are skipped before anything loads."""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .records import draw_overlays, error_record, prediction_records, safe_decode
from .sink import PredictionSink


@dataclass
class Summary:
    """What a predict run did; printed as JSON at the end."""

    images: int = 0  # asked for (after --resume's skip)
    scored: int = 0
    errors: int = 0
    anomalous: int = 0
    skipped: int = 0  # already in the output (--resume)
    seconds: float = 0.0
    images_per_s: float = 0.0
    engine: str = "local"
    output: str | None = None

    def count(self, recs: list[dict[str, Any]]) -> None:
        for r in recs:
            if "error" in r:
                self.errors += 1
            else:
                self.scored += 1
                self.anomalous += r.get("anomalous") is True

    def finish(self, t0: float) -> dict[str, Any]:
        self.seconds = round(time.perf_counter() - t0, 3)
        self.images_per_s = round((self.scored + self.errors) / max(self.seconds, 1e-9), 2)
        return asdict(self)


class _Images(Dataset):
    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor, str]:
        pixels, error = safe_decode(self.paths[i], self.size, self.paths[i])
        return self.paths[i], pixels, error


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", disable=not enabled, dynamic_ncols=True, smoothing=0.1,
                desc="predict")


def predict_local(model, paths: list[str], sink: PredictionSink, *, batch_size: int = 16, workers: int | None = None,
                  overlays: str = "none", overlay_dir: Path | None = None, filter_size: int | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Predict every path not already in ``sink``; returns the :class:`Summary` as a dict."""
    t0 = time.perf_counter()
    todo = [p for p in paths if p not in sink.done]
    summary = Summary(images=len(todo), skipped=len(paths) - len(todo), output=str(sink.path) if sink.path else None)
    workers = default_workers() if workers is None else workers
    threshold = model.score_config.image_threshold
    device = next(model.parameters()).device
    loader = DataLoader(_Images(todo, model.config.image_size), batch_size=batch_size, num_workers=workers,
                        pin_memory=device.type == "cuda",
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    queue: deque[tuple[list[dict[str, Any]], Future | None]] = deque()  # batches in order, their drawing

    def emit(block: bool) -> None:  # write the finished batches in order (a record names its overlay once drawn)
        while queue and (block or queue[0][1] is None or queue[0][1].done() or len(queue) > 4):
            batch, drawing = queue.popleft()
            if drawing is not None:
                drawing.result()
            sink.write(batch)
            summary.count(batch)
            bar.update(len(batch))

    with ThreadPoolExecutor(max_workers=2) as drawers, progress_bar(len(todo), progress) as bar:
        for names, pixels, errors in loader:
            ok = [i for i, e in enumerate(errors) if not e]
            recs: dict[int, dict[str, Any]] = {i: error_record(names[i], errors[i]) for i, e in enumerate(errors) if e}
            drawing = None
            if ok:
                x = pixels[ok].to(device, non_blocking=True).float() / 255
                pred = model.predict(x, filter_size=filter_size)
                scored = prediction_records([names[i] for i in ok], pred, threshold)
                if overlays != "none" and overlay_dir is not None:
                    drawing = drawers.submit(draw_overlays, overlay_dir, overlays, scored, x.cpu(), _to_cpu(pred),
                                             threshold)
                recs.update(zip(ok, scored))
            queue.append(([recs[i] for i in range(len(names))], drawing))
            emit(block=False)
        emit(block=True)
    return summary.finish(t0)


def _to_cpu(pred):
    import dataclasses

    return dataclasses.replace(pred, anomaly_map=pred.anomaly_map.cpu(), reconstruction=None,
                               mask=None if pred.mask is None else pred.mask.cpu())
