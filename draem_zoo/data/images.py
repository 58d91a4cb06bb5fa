"""Reading images from disk into uint8 RGB tensors, with errors that name the file.

Any mode PIL reads becomes RGB: grayscale (L, I;16, I, F) is scaled to 8 bits and
repeated over three channels, palette and CMYK images are converted, alpha is dropped
(composited over black). EXIF orientation is applied. Resizing uses PIL's bilinear
filter, which antialiases when shrinking; masks use nearest-neighbour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError
from .opencv_resize import resize_linear, resize_mask_like_draem

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# how images and masks are resized, per data.resize (part of the decode cache's key)
RESIZE_RECIPES = {"pil": ("pil-bilinear-antialiased", "nearest"), "opencv": ("opencv-linear", "opencv-linear-255")}
RGB_RESIZE, MASK_RESIZE = RESIZE_RECIPES["pil"]


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image; a corrupt or truncated file raises DataError."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im) or im
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot decode this image ({type(exc).__name__}: {exc}); the file is corrupt, "
            "truncated or not an image: re-export it or remove it from the folder"
        ) from None


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 from any PIL mode."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if im.mode == "F" and arr.max() <= 1.0:
            top = 1.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, rgba)
    return np.asarray(im.convert("RGB"))


def read_rgb(path: str | Path, size: int | tuple[int, int] | None = None, resize: str = "pil") -> torch.Tensor:
    """(3, H, W) uint8 RGB; resized to ``size`` when given: PIL's bilinear filter (antialiased when
    shrinking; ``resize="pil"``) or exactly as OpenCV's ``cv2.resize`` (``"opencv"``, the original code's)."""
    im = open_image(path)
    arr = to_rgb_array(im)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        if arr.shape[:2] != (h, w):
            arr = (resize_linear(arr, h, w) if resize == "opencv"
                   else np.asarray(Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR)))
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).contiguous()


def read_mask(path: str | Path, size: int | tuple[int, int] | None = None, resize: str = "pil") -> torch.Tensor:
    """(1, H, W) bool mask: any non-zero pixel is anomalous; nearest-neighbour resize, or (``resize=
    "opencv"``) the original code's: bilinear, then only pixels that stay at 255 are anomalous."""
    im = open_image(path)
    arr = np.asarray(im.convert("L") if im.mode not in ("I;16", "I", "F", "1") else im)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    if resize == "opencv" and size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        return torch.from_numpy(resize_mask_like_draem(np.asarray(arr > 0), h, w)).unsqueeze(0)
    binary = Image.fromarray((arr > 0).astype(np.uint8) * 255)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        if binary.size != (w, h):
            binary = binary.resize((w, h), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(binary) > 127).unsqueeze(0)


def image_size_of(path: str | Path) -> tuple[int, int]:
    """(height, width) from the header only."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read this image ({exc}); re-export it or remove it") from None


def read_many(paths: Iterable[Path], reader: Callable[[Path], torch.Tensor], threads: int = 4,
              progress: Callable[[int], None] | None = None) -> list[torch.Tensor]:
    """Decode many files with a thread pool (PIL releases the GIL while decoding)."""
    paths = list(paths)
    out: list[torch.Tensor] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for tensor in pool.map(reader, paths):
            out.append(tensor)
            if progress is not None:
                progress(1)
    return out
