"""``predict --format mvtec_ad2``: a zoo model's anomaly maps of MVTec AD 2's private test splits, in
the form the benchmark's evaluation server (benchmark.mvtec.com) takes:

    OUT/anomaly_images/<object>/test_private/000_regular.tiff          float16, one channel, the image's size
    OUT/anomaly_images/<object>/test_private_mixed/000_mixed.tiff
    OUT/anomaly_images_thresholded/<object>/<split>/<name>.png         0 or 255 (the model's pixel threshold)

The maps are the model's per-pixel anomaly probability, resized (bilinear) from the model's size to each
image's own. The thresholded maps (for the benchmark's segmentation F1) use the pixel threshold chosen on
validation normals; a model without one writes none (the server then scores the continuous maps only).
The benchmark's ``check_and_prepare_data_for_upload.py`` checks the folder and packs it for upload.
One model per object: run once per object into the same OUT.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.images import image_size_of, read_many, read_rgb
from ..data.mvtec_ad2 import PRIVATE_SPLITS, private_images
from ..errors import DataError, DraemZooError

MAPS, THRESHOLDED = "anomaly_images", "anomaly_images_thresholded"


def scenario_folder(inputs: list[str], category: str) -> tuple[Path, str]:
    """(dataset root, object) from the one input: the MVTec AD 2 root or the object's own folder."""
    if len(inputs) != 1:
        raise DraemZooError(f"--format mvtec_ad2 takes one input, the MVTec AD 2 folder (or its {category}/ folder); "
                            f"got {len(inputs)}")
    given = Path(inputs[0]).expanduser()
    if (given / category).is_dir():
        return given, category
    if given.name == category and given.is_dir():
        return given.parent, category
    raise DataError(f"{given}: no {category}/ here, the object the model was trained on (its config says "
                    f"{category}); give the MVTec AD 2 folder that holds {category}/test_private/")


def _write_tiff(path: Path, amap: np.ndarray) -> None:
    import tifffile  # only this format needs it

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tifffile.imwrite(tmp, amap.astype(np.float16))
    tmp.replace(path)


def _write_png(path: Path, binary: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(binary.astype(np.uint8) * 255).save(tmp, format="PNG")
    tmp.replace(path)


def write_submission(model, inputs: list[str], out: str | Path, batch_size: int = 8, resume: bool = False,
                     tick: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Maps of every private split of the model's object under ``out`` (see the module); returns a summary.
    ``resume`` keeps the maps already written (an interrupted run goes on); without it, an object already
    under ``out`` is refused."""
    meta = getattr(model, "metadata", {}) or {}
    category = ((meta.get("run") or {}).get("data") or {}).get("category")
    if not category:
        raise DraemZooError("the model's config records no category: --format mvtec_ad2 needs the object it was "
                            "trained on")
    root, category = scenario_folder(inputs, category)
    splits = private_images(root, category)
    if not splits:
        raise DataError(f"{root / category}: no {' or '.join(PRIVATE_SPLITS)} folder; they come with the MVTec AD 2 "
                        "archive (the test images without labels)")
    out = Path(out)
    if (out / MAPS / category).exists() and not resume:
        raise DraemZooError(f"{out / MAPS / category}: maps of {category} are there already; pass --resume to go on "
                            "with them, or choose another --out")
    for left in [*(out / MAPS / category).glob("*/.*.tmp"), *(out / THRESHOLDED / category).glob("*/.*.tmp")]:
        left.unlink()  # an interrupted write: the server's checker would count it
    threshold = model.score_config.pixel_threshold
    size = model.config.image_size
    device = next(model.parameters()).device
    written = kept = 0
    t0 = time.perf_counter()
    for split, images in splits.items():
        todo = [p for p in images if not (resume and (out / MAPS / category / split / f"{p.stem}.tiff").is_file())]
        kept += len(images) - len(todo)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start: start + batch_size]
            x = torch.stack(read_many(chunk, lambda p: read_rgb(p, size), min(8, len(chunk))))
            with torch.inference_mode():
                maps = model.predict(x.to(device).float().div_(255.0), filter_size=1).anomaly_map.float()
            for p, amap in zip(chunk, maps):
                h, w = image_size_of(p)
                full = F.interpolate(amap[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
                full = full.clamp_(0, 1).cpu().numpy()
                if threshold is not None:
                    _write_png(out / THRESHOLDED / category / split / f"{p.stem}.png", full >= threshold)
                _write_tiff(out / MAPS / category / split / f"{p.stem}.tiff", full)  # last: it marks the image done
                written += 1
            if tick:
                tick(len(chunk))
    seconds = time.perf_counter() - t0
    return {"object": category, "splits": {s: len(v) for s, v in splits.items()}, "written": written, "kept": kept,
            "thresholded": threshold is not None, "pixel_threshold": threshold, "out": str(out),
            "images_per_s": round(written / seconds, 3) if seconds > 0 and written else None}
