"""What a prediction says about one image, as one JSON-ready record, the same for ``predict`` (local or on
Ray Data) and the HTTP service: ``image``, ``score``, ``anomalous`` (by the model's threshold, or null),
``threshold``, ``filter_size`` (s_f), ``anomalous_pixels`` (the share over the pixel threshold, when the
model has one), ``overlay`` (its PNG, when one was drawn); or ``image`` and ``error`` for an image that could
not be read (corrupt, missing, above the pixel limit), so a run goes on and counts it.

Decoding is here too (one function for a path or for bytes), so that every path resizes exactly alike.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ..data.images import read_rgb
from ..errors import DataError

OVERLAY_MODES = ("all", "anomalous", "none")


def decode(source: str | Path | bytes, size: int, name: str = "upload") -> torch.Tensor:
    """(3, size, size) uint8 RGB from a file path or the file's bytes (named ``name`` in errors); raises
    DataError (ImageTooLarge above the pixel limit) naming the image."""
    try:
        return read_rgb(source, size, name=name)
    except DataError:
        raise
    except OSError as exc:  # a folder in place of a file, no permission, a read error on the disk
        raise DataError(f"{name if isinstance(source, (bytes, bytearray)) else source}: cannot read it "
                        f"({type(exc).__name__}: {exc})") from None


def safe_decode(source: str | Path | bytes, size: int, name: str) -> tuple[torch.Tensor, str]:
    """(pixels, "") or (zeros, the error in one line): a bad image becomes a row, never a stopped run."""
    try:
        return decode(source, size, name), ""
    except DataError as exc:
        return torch.zeros(3, size, size, dtype=torch.uint8), str(exc)


def error_record(image: str, message: str) -> dict[str, Any]:
    return {"image": image, "error": message}


def prediction_records(images: list[str], pred, threshold: float | None) -> list[dict[str, Any]]:
    """One record per image of a batch :class:`~draem_zoo.model.draem.Prediction`."""
    out = []
    # one transfer per batch, not one device sync per image
    scores = pred.score.float().cpu().tolist()
    flags = None if pred.anomalous is None else pred.anomalous.cpu().tolist()
    shares = None if pred.mask is None else pred.mask.flatten(1).float().mean(1).cpu().tolist()
    for i, image in enumerate(images):
        rec: dict[str, Any] = {"image": image, "score": scores[i], "anomalous": None if flags is None else bool(flags[i]),
                               "threshold": threshold, "filter_size": int(pred.filter_size)}
        if shares is not None:
            rec["anomalous_pixels"] = round(shares[i], 6)
        out.append(rec)
    return out


def wants_overlay(mode: str, rec: dict[str, Any]) -> bool:
    """Whether ``--overlays mode`` draws this record's picture (never for an error row)."""
    if mode not in OVERLAY_MODES:
        raise ValueError(f"--overlays {mode!r}: choose one of {', '.join(OVERLAY_MODES)}")
    return "error" not in rec and (mode == "all" or (mode == "anomalous" and rec.get("anomalous") is True))


def overlay_name(image: str) -> str:
    """A file name for an image's overlay, stable across runs and unique per input path (two ``good/000.png``
    from different folders do not overwrite each other)."""
    stem = Path(image.split("?")[0]).stem or "image"
    return f"{stem}-{hashlib.sha1(image.encode()).hexdigest()[:8]}.png"


def draw_overlays(out_dir: Path, mode: str, recs: list[dict[str, Any]], x: torch.Tensor, pred,
                  threshold: float | None) -> None:
    """The overlay PNG (input | anomaly map | mask) of each record ``mode`` asks for, named in the record."""
    from .pictures import save_overlay

    for i, rec in enumerate(recs):
        if wants_overlay(mode, rec):
            path = out_dir / overlay_name(rec["image"])
            save_overlay(path, x[i], pred.anomaly_map[i].cpu(), None if pred.mask is None else pred.mask[i].cpu(),
                         rec["score"], rec["anomalous"], threshold, Path(rec["image"]).name)
            rec["overlay"] = str(path)
