"""Reading images from disk into uint8 RGB tensors, with errors that name the file.

Any mode PIL reads becomes RGB: grayscale (L, I;16, I, F) is scaled to 8 bits and
repeated over three channels, palette and CMYK images are converted, alpha is dropped
(composited over black). EXIF orientation is applied (to masks too), and sizes are the displayed
(EXIF-applied) ones. Resizing uses PIL's bilinear filter, which antialiases when shrinking; masks
use nearest-neighbour.

Every file is opened through :func:`open_header`, which refuses an image above the pixel limit
(``DRAEM_ZOO_MAX_PIXELS``, default 16384 x 16384) by name from its header, before anything is
decoded; PIL's own decompression-bomb check is lifted to that limit, so it never fires first.
Folders are listed by :func:`list_images`: a dangling or looping symbolic link with an image
suffix is an error naming it, never a file that silently goes missing.
"""

from __future__ import annotations

import errno
import io
import os
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, PngImagePlugin, UnidentifiedImageError

from ..errors import ConfigError, DataError
from .opencv_resize import resize_linear, resize_mask_like_draem

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")  # lossless: a mask's pixels must be exactly what was drawn
# how images and masks are resized, per data.resize (part of the decode cache's key)
# (masks: binarised at half their range before resizing, "-half"; older cache entries used "non-zero")
RESIZE_RECIPES = {"pil": ("pil-bilinear-antialiased", "nearest-half"), "opencv": ("opencv-linear", "opencv-linear-255-half")}
RGB_RESIZE, MASK_RESIZE = RESIZE_RECIPES["pil"]


MAX_PIXELS_ENV = "DRAEM_ZOO_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 16384 * 16384
ORIENTATION = 0x0112  # the EXIF orientation tag
_TURNS = {2: "mirrored", 3: "rotated 180°", 4: "flipped upside down", 5: "mirrored and rotated 90°",
          6: "rotated 90° clockwise", 7: "mirrored and rotated 90°", 8: "rotated 90° counter-clockwise"}
_PIL_LIMIT = threading.Lock()  # guards the moments PIL's global bomb limit is lifted for a header read


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def max_pixels() -> int:
    """The pixel limit: ``DRAEM_ZOO_MAX_PIXELS`` (a count, or WIDTHxHEIGHT), default 16384 x 16384."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    m = re.fullmatch(r"(\d+)(?:\s*[x*]\s*(\d+))?", raw.replace("_", "").replace(",", "").lower())
    value = int(m[1]) * int(m[2] or 1) if m else 0
    if value < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV}={raw!r}: not a pixel count; set it to a positive number of pixels "
                          f"(e.g. {DEFAULT_MAX_PIXELS}) or WIDTHxHEIGHT (e.g. 16384x16384), or unset it")
    return value


def broken_link(path: Path) -> str | None:
    """Why the symbolic link ``path`` cannot be followed ("dangling", "loop" or the OS's reason);
    None when ``path`` is not a symbolic link or its target is there."""
    try:
        if not path.is_symlink():
            return None
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "loop"
        return "dangling" if exc.errno in (errno.ENOENT, errno.ENOTDIR) else (exc.strerror or str(exc))
    return None


def check_link(path: Path) -> None:
    """A DataError naming a dangling or looping symbolic link, where it points and the fix."""
    why = broken_link(path)
    if why is None:
        return
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    where = target if os.path.isabs(target) else f"{target} (that is {os.path.normpath(path.parent / target)})"
    if why == "loop":
        raise DataError(f"{path}: symbolic link loop: it points to {where}, which leads back to itself and never to "
                        "a file; remove the link or point it at the real file")
    if why == "dangling":
        raise DataError(f"{path}: dangling symbolic link: it points to {where}, which does not exist; remove the "
                        "link or fix its target")
    raise DataError(f"{path}: symbolic link to {where} cannot be followed ({why}); remove the link or fix its target")


def list_images(folder: str | Path, recursive: bool = False, lenient: bool = False) -> list[Path]:
    """Image files in ``folder`` (none if it is not a folder), sorted; hidden names are skipped.

    A dangling or looping symbolic link with an image suffix (or ``folder`` itself as one) is a
    DataError naming it, and so is an empty (0-byte) image file. ``recursive`` descends into sub-folders, following folder links, each real
    folder once: a link back to a folder above cannot make the listing go on forever. ``lenient`` lists
    such files instead (``predict`` turns each into an error row and goes on)."""
    folder = Path(folder)
    check_link(folder)
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    todo = [folder] if folder.is_dir() else []
    while todo:
        here = todo.pop()
        try:
            st = here.stat()
            entries = list(here.iterdir())
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        for p in entries:
            if p.name.startswith("."):
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES:
                if lenient and (broken_link(p) or (p.is_file() and p.stat().st_size == 0)):
                    found.append(p)
                    continue
                check_link(p)
                if p.is_file():
                    if p.stat().st_size == 0:  # an interrupted copy: never counted as an image
                        raise DataError(f"{p}: an empty file (0 bytes), not an image; copy it again or remove it")
                    found.append(p)
                    continue
            if recursive and p.is_dir():
                todo.append(p)
    return sorted(found)


class ImageTooLarge(DataError):
    """An image above the pixel limit (a service answers it with 413, not 400)."""


def _too_big(path: Path | str, w: int, h: int, limit: int) -> DataError:
    return ImageTooLarge(
        f"{path}: {w}x{h} = {w * h:,} pixels, above the limit of {limit:,} pixels; refused before decoding (it "
        f"could be a decompression bomb). Shrink the image, or if it is genuine raise the limit: "
        f"{MAX_PIXELS_ENV}={w * h} (pixels, or WIDTHxHEIGHT)")


def open_header(path: str | Path | bytes, limit: int | None = None, name: str = "upload") -> ImageFile.ImageFile:
    """Open an image lazily (its header only: nothing is decoded) and refuse it, as a DataError
    naming it, when it has more than ``limit`` (default :func:`max_pixels`) pixels.

    PIL's own decompression-bomb check is lifted while the header is read, so the refusal is ours
    and names the file, and PIL's limit is raised to ours, so that decoding an image we accept
    never trips it. PIL's errors (missing, unidentified file) pass through to the caller.
    ``path`` may be the file's bytes (an upload, an object-store read), named ``name`` in errors."""
    source = io.BytesIO(path) if isinstance(path, (bytes, bytearray, memoryview)) else Path(path)
    path = name if isinstance(source, io.BytesIO) else source
    limit = max_pixels() if limit is None else limit
    with _PIL_LIMIT:
        pil_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(source)
        finally:
            Image.MAX_IMAGE_PIXELS = None if pil_limit is None else max(pil_limit, limit)
    w, h = im.size
    if w * h > limit:
        im.close()
        raise _too_big(path, w, h, limit)
    return im


def open_image(path: str | Path | bytes, name: str = "upload") -> Image.Image:
    """Open and fully decode an image (EXIF orientation applied); a corrupt or truncated file, or
    one above the pixel limit, raises DataError. ``path`` may be the file's bytes, named ``name``."""
    data = path if isinstance(path, (bytes, bytearray, memoryview)) else None
    path = name if data is not None else Path(path)
    limit = max_pixels()
    try:
        with open_header(path if data is None else data, limit, name) as im:
            im.load()
            return ImageOps.exif_transpose(im) or im
    except FileNotFoundError:
        check_link(Path(path))
        raise DataError(f"{path}: no such file") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: {exc}; refused (limit: {limit:,} pixels): shrink the image, or raise the "
                        f"limit with {MAX_PIXELS_ENV}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if data is not None:  # an upload: PIL's message would name a BytesIO object
            raise DataError(f"{path}: cannot decode this image ({type(exc).__name__}); it is corrupt, truncated "
                            f"or not an image: send a PNG, JPEG, BMP, TIFF or WebP file") from None
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


def read_rgb(path: str | Path | bytes, size: int | tuple[int, int] | None = None, resize: str = "pil",
             name: str = "upload") -> torch.Tensor:
    """(3, H, W) uint8 RGB; resized to ``size`` when given: PIL's bilinear filter (antialiased when
    shrinking; ``resize="pil"``) or exactly as OpenCV's ``cv2.resize`` (``"opencv"``, the original code's).
    ``path`` may be the file's bytes (named ``name`` in errors)."""
    im = open_image(path, name)
    arr = to_rgb_array(im)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        if arr.shape[:2] != (h, w):
            arr = (resize_linear(arr, h, w) if resize == "opencv"
                   else np.asarray(Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR)))
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).contiguous()


def check_mask_format(path: str | Path) -> None:
    """A DataError for a mask in a lossy format: JPEG's (or lossy WebP's) compression noise around a
    defect would be read as more anomalous pixels (a 36-pixel mask saved as JPEG read as 80-152)."""
    path = Path(path)
    if path.suffix.lower() not in MASK_SUFFIXES:
        raise DataError(f"{path}: a mask in a lossy format ({path.suffix}): its compression noise would mark normal "
                        f"pixels around the defect as anomalous; save masks losslessly ({', '.join(MASK_SUFFIXES)}), "
                        f"e.g. as {path.with_suffix('.png').name}")


def binary_mask(im: Image.Image) -> np.ndarray:
    """(H, W) bool from a mask of any mode: anomalous where a pixel is at least half its type's range
    (128 of 255, 32768 of 65535; any colour channel), as MVTec's 0/255 masks need; a mask whose values
    all stay below half the range (a label map of 0/1 or instance ids) is anomalous wherever non-zero."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr, half = np.asarray(im).astype(np.int64), 32768
    elif im.mode == "F":
        arr = np.asarray(im)
        half = 0.5 if arr.size and float(arr.max()) <= 1.0 else 128
    elif im.mode in ("L", "1"):
        arr, half = np.asarray(im.convert("L")), 128
    else:  # palette, RGB(A), CMYK, LA: the brightest colour channel
        arr, half = np.asarray(im.convert("RGB")).max(axis=2), 128
    top = arr.max() if arr.size else 0
    return arr > 0 if 0 < top < half else arr >= half


def read_mask(path: str | Path, size: int | tuple[int, int] | None = None, resize: str = "pil") -> torch.Tensor:
    """(1, H, W) bool mask, binarised by :func:`binary_mask`; nearest-neighbour resize, or (``resize=
    "opencv"``) the original code's: bilinear, then only pixels that stay at 255 are anomalous. Only
    lossless formats are read (:func:`check_mask_format`)."""
    check_mask_format(path)
    arr = binary_mask(open_image(path))
    if resize == "opencv" and size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        return torch.from_numpy(resize_mask_like_draem(arr, h, w)).unsqueeze(0)
    binary = Image.fromarray(arr.astype(np.uint8) * 255)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        if binary.size != (w, h):
            binary = binary.resize((w, h), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(binary) > 127).unsqueeze(0)


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says: its stored size and its EXIF orientation (1 = as stored)."""

    height: int
    width: int
    orientation: int = 1

    @property
    def swapped(self) -> bool:
        """EXIF orientations 5-8 turn the image by 90°: displayed width and height are swapped."""
        return self.orientation in (5, 6, 7, 8)

    @property
    def displayed(self) -> tuple[int, int]:
        """(height, width) as decoded (and as any viewer shows it): the EXIF orientation applied."""
        return (self.width, self.height) if self.swapped else (self.height, self.width)

    def turn(self) -> str:
        return _TURNS.get(self.orientation, "as stored")


def _orientation(im: Image.Image) -> int:
    """The EXIF (or XMP) orientation in the header, without decoding the pixels."""
    try:
        if isinstance(im, PngImagePlugin.PngImageFile) and "exif" not in im.info:
            exif = Image.Image.getexif(im)  # PNG's getexif would decode the image to find an eXIf chunk after IDAT
        else:
            exif = im.getexif()
        value = int(exif.get(ORIENTATION, 1))
    except Exception:  # an unreadable EXIF block: exif_transpose leaves such images as stored too
        return 1
    return value if 1 <= value <= 8 else 1


def image_header(path: str | Path) -> ImageHeader:
    """Stored size and EXIF orientation from the header only (pixel limit checked)."""
    path = Path(path)
    limit = max_pixels()
    try:
        with open_header(path, limit) as im:
            return ImageHeader(im.size[1], im.size[0], _orientation(im))
    except FileNotFoundError:
        check_link(Path(path))
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read this image ({exc}); re-export it or remove it") from None


def image_size_of(path: str | Path) -> tuple[int, int]:
    """(height, width) as decoded, EXIF orientation applied, from the header only."""
    return image_header(path).displayed


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
