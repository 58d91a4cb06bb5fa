"""``draem-zoo predict`` on a Ray cluster: a Ray Data pipeline. Inputs are a path list (a folder every node
sees) or an object-store / filesystem URI (``s3://bucket/prefix``, read with ``read_binary_files``); CPU tasks
decode and resize (a bad image becomes an error row there), actors each holding one model copy
(``concurrency`` of them, ``num_gpus`` each) predict batches, and the driver streams the records to the sink
as they come (JSON lines or Parquet parts), so ``--resume`` and the summary work exactly as on one machine.

The model spec must load on every node: a folder every node sees, or ``hf-hub:ORG/NAME``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DraemZooError
from .local import Summary, progress_bar
from .records import draw_overlays, error_record, prediction_records, safe_decode
from .sink import PredictionSink


def is_uri(path: str) -> bool:
    return "://" in str(path)


def absolute(spec: str) -> str:
    """A local path made absolute (Ray's workers do not run in the driver's folder); URIs and hf-hub: ids as they are."""
    if is_uri(spec) or str(spec).startswith("hf-hub:") or not Path(spec).exists():
        return str(spec)
    return str(Path(spec).absolute())


def _decode_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Ray Data task: path (or bytes + path) -> uint8 pixels (B, 3, S, S) and an error column ("" when read)."""
    names = [str(p) for p in batch["path"]]
    sources = list(batch["bytes"]) if "bytes" in batch else [None] * len(names)
    decoded = [safe_decode(n if s is None else bytes(s), size, n) for s, n in zip(sources, names)]
    return {"image": np.array(names, dtype=object), "pixels": np.stack([d[0].numpy() for d in decoded]),
            "error": np.array([d[1] for d in decoded], dtype=object)}


class _Predictor:
    """Ray Data actor: one model copy, loaded once; a batch of decoded images -> JSON records."""

    def __init__(self, spec: str, device: str, filter_size: int | None, overlays: str, overlay_dir: str | None,
                 threads: int = 1):
        import torch

        from ..train.trainer import resolve_device
        from .models import load_spec

        torch.set_num_threads(threads)  # Ray gives an actor OMP_NUM_THREADS=1; a CPU copy uses the cores it holds
        self.model = load_spec(spec, device=str(resolve_device(device)))
        self.filter_size, self.overlays = filter_size, overlays
        self.overlay_dir = Path(overlay_dir) if overlay_dir else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        names, errors = [str(n) for n in batch["image"]], [str(e) for e in batch["error"]]
        ok = [i for i, e in enumerate(errors) if not e]
        recs = {i: error_record(names[i], errors[i]) for i, e in enumerate(errors) if e}
        if ok:
            device = next(self.model.parameters()).device
            x = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])).to(device).float() / 255
            pred = self.model.predict(x, filter_size=self.filter_size)
            threshold = self.model.score_config.image_threshold
            scored = prediction_records([names[i] for i in ok], pred, threshold)
            if self.overlays != "none" and self.overlay_dir is not None:
                draw_overlays(self.overlay_dir, self.overlays, scored, x.cpu(), pred, threshold)
            recs.update(zip(ok, scored))
        return {"record": np.array([json.dumps(recs[i]) for i in range(len(names))], dtype=object)}


def predict_ray(spec: str, model, paths: list[str], sink: PredictionSink, *, address: str | None = None,
                batch_size: int = 16, concurrency: int = 1, gpus_per_copy: float | None = None, cpus_per_copy: float = 1.0,
                device: str = "auto",
                overlays: str = "none", overlay_dir: Path | None = None, filter_size: int | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Predict ``paths`` (files, or URIs Ray Data reads) with Ray Data; returns the summary as a dict.
    ``model`` (loaded on the driver) gives the input size; the actors load ``spec`` themselves."""
    import ray

    t0 = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    have = ray.cluster_resources()
    if gpus_per_copy is None:
        gpus_per_copy = 1.0 if have.get("GPU", 0) >= 1 and device != "cpu" else 0.0
    # the model copies must leave room for a decoding task, or the pipeline waits for ever
    if concurrency * cpus_per_copy + 0.5 > have.get("CPU", 0) or concurrency * gpus_per_copy > have.get("GPU", 0):
        raise DraemZooError(
            f"--concurrency {concurrency} copies of {cpus_per_copy:g} CPU and {gpus_per_copy:g} GPU each, plus half a "
            f"CPU to decode, do not fit this Ray cluster ({have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs): "
            "lower --concurrency, --cpus-per-copy or --gpus-per-copy")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # one bar, ours, in images
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = True  # records in input order, as on one machine
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    uris = [p for p in paths if is_uri(p)]
    files = [p for p in paths if not is_uri(p) and p not in sink.done]
    parts = []
    if files:
        parts.append(ray.data.from_items([{"path": p} for p in files]))
    if uris:
        # read_binary_files names objects without their scheme: it is put back, so a record names its URI
        scheme = uris[0].split("://", 1)[0] + "://"
        if any(not u.startswith(scheme) for u in uris):
            raise DraemZooError(f"URI inputs of one run share a scheme: {', '.join(uris)}")
        done = sink.done

        def named(row: dict) -> dict:
            return {"path": scheme + str(row["path"]).split("://", 1)[-1], "bytes": row["bytes"]}

        ds_uri = ray.data.read_binary_files(uris, include_paths=True).map(named)
        if done:
            ds_uri = ds_uri.filter(lambda row: row["path"] not in done)
        parts.append(ds_uri)
    skipped = sum(1 for p in paths if not is_uri(p) and p in sink.done)  # URI inputs: skipped unseen, not counted
    summary = Summary(engine="ray-data", skipped=skipped, output=str(sink.path) if sink.path else None)
    if not parts:
        return summary.finish(t0)
    ds = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    size = model.config.image_size
    # decoding: CPU tasks of their own (half a CPU each, so that Ray does not fuse them into the model actors)
    ds = ds.map_batches(_decode_batch, fn_kwargs={"size": size}, batch_size=batch_size, num_cpus=0.5)
    ds = ds.map_batches(_Predictor, fn_constructor_kwargs={
        "spec": spec, "device": "cuda" if gpus_per_copy else "cpu", "filter_size": filter_size,
        "overlays": overlays, "overlay_dir": str(overlay_dir) if overlay_dir else None,
        "threads": max(1, round(cpus_per_copy))},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency), num_gpus=gpus_per_copy,
        num_cpus=cpus_per_copy)
    total = len(files) if not uris else None
    with progress_bar(total, progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            recs = [json.loads(r) for r in batch["record"]]
            sink.write(recs)
            summary.count(recs)
            bar.update(len(recs))
    summary.images = summary.scored + summary.errors
    return summary.finish(t0)
