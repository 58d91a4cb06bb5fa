"""Pictures a person would rather look at: input | anomaly-map overlay | thresholded mask (a PNG file
per image for ``predict``), and the same three pictures as PNG bytes for the service's page."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..files import writing


def _heat(values: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps  # lazily: only pictures need it

    return (colormaps["jet"](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


def overlay_panel(image: torch.Tensor, anomaly_map: torch.Tensor, mask: torch.Tensor | None, score: float,
                  anomalous: bool | None, threshold: float | None, title: str = "") -> Image.Image:
    """One PNG-ready picture for an RGB image (3, H, W) in [0, 1] and its (1, H, W) map."""
    rgb = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    amap = anomaly_map[0].float().cpu().numpy()
    over = (0.55 * rgb + 0.45 * _heat(amap)).astype(np.uint8)
    h = amap.shape[0]
    if mask is not None:
        m = mask[0].cpu().numpy().astype(bool)
        shown = rgb.copy()
        shown[m] = (0.4 * shown[m] + 0.6 * np.array([255, 0, 0])).astype(np.uint8)
        edge = m ^ np.roll(m, 1, 0) | m ^ np.roll(m, 1, 1)
        shown[edge] = (255, 255, 0)
    else:
        shown = np.full_like(rgb, 40)
    gap = np.full((h, 6, 3), 255, np.uint8)
    strip = np.concatenate([rgb, gap, over, gap, shown], axis=1)
    if h < 256:  # small models: enlarge (nearest) so that a person can see the map
        k = -(-256 // h)
        strip = strip.repeat(k, axis=0).repeat(k, axis=1)
        h = strip.shape[0]
    banner = 34
    canvas = Image.new("RGB", (strip.shape[1], h + banner), (255, 255, 255))
    canvas.paste(Image.fromarray(strip), (0, banner))
    draw = ImageDraw.Draw(canvas)
    verdict = "no threshold" if anomalous is None else ("ANOMALOUS" if anomalous else "normal")
    thr = f" (threshold {threshold:.3f})" if threshold is not None else ""
    draw.text((4, 2), f"{title}", fill=(0, 0, 0))
    draw.text((4, 17), f"score {score:.3f}{thr}: {verdict}   |  input  |  anomaly map  |  mask", fill=(0, 0, 0))
    return canvas


def save_overlay(path: str | Path, *args, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path):
        overlay_panel(*args, **kwargs).save(path)
    return path


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def picture_pngs(image: torch.Tensor, anomaly_map: torch.Tensor) -> dict[str, bytes]:
    """``input``, ``anomaly_map`` (the jet colour map) and ``overlay`` (map blended on the input, as in the
    overlay PNGs) as PNG bytes, for an RGB image (3, H, W) in [0, 1] and its (1, H, W) map in [0, 1]."""
    rgb = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    heat = _heat(anomaly_map[0].float().cpu().numpy())
    over = (0.55 * rgb + 0.45 * heat).astype(np.uint8)
    return {"input": _png(rgb), "anomaly_map": _png(heat), "overlay": _png(over)}
