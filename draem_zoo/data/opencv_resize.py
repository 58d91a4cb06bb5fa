"""OpenCV's bilinear resize of 8-bit images, bit for bit, without OpenCV.

The original DRAEM code reads images with ``cv2.imread`` and resizes them with
``cv2.resize(img, (w, h))`` (``INTER_LINEAR``, no antialiasing), and resizes its 0/255 test masks the
same way before dividing by 255 and casting to uint8, so that a mask pixel stays anomalous only
where the resized value is exactly 255. ``draem-zoo reproduce --protocol paper`` preprocesses as it
does; PIL's bilinear filter (this project's default) antialiases when shrinking and gives other
pixels.

OpenCV computes ``INTER_LINEAR`` on uint8 in fixed point: per output column (and row) the source
position ``(d + 0.5) * scale - 0.5``, its two neighbours (replicated at the borders) and weights
``round((1 - f) * 2048)`` and ``round(f * 2048)``; the horizontal pass sums integer products, the
vertical pass (its SIMD path, which OpenCV takes for every pixel) computes
``(((r0 >> 4) * b0 >> 16) + ((r1 >> 4) * b1 >> 16) + 2) >> 2``. ``tests/data/test_opencv_resize.py``
checks equality with ``opencv-python-headless`` on generated images, shrinking and enlarging.
"""

from __future__ import annotations

import numpy as np

COEF_BITS = 11
COEF_SCALE = 1 << COEF_BITS


def _taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    scale = src / dst
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)  # OpenCV keeps the position in float
    s = np.floor(f).astype(np.int64)
    f = (f - s).astype(np.float32)
    w0 = np.rint((np.float32(1) - f) * np.float32(COEF_SCALE)).astype(np.int64)
    w1 = np.rint(f * np.float32(COEF_SCALE)).astype(np.int64)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), w0, w1


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize(image, (width, height))`` for a (H, W) or (H, W, C) uint8 array."""
    if image.dtype != np.uint8:
        raise TypeError(f"resize_linear takes uint8 images, got {image.dtype}")
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image.copy()
    x0, x1, a0, a1 = _taps(w, width)
    y0, y1, b0, b1 = _taps(h, height)
    img = image.astype(np.int64)
    extra = (1,) * (img.ndim - 2)
    rows = img[:, x0] * a0.reshape(1, -1, *extra) + img[:, x1] * a1.reshape(1, -1, *extra)
    r0, r1 = rows[y0], rows[y1]
    b0, b1 = b0.reshape(-1, 1, *extra), b1.reshape(-1, 1, *extra)
    out = ((((r0 >> 4) * b0) >> 16) + (((r1 >> 4) * b1) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def resize_mask_like_draem(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """The original's test masks: bilinear resize of the 0/255 mask, /255, cast to uint8 (truncation):
    a pixel is anomalous only where the resized value is 255."""
    binary = np.where(mask > 0, 255, 0).astype(np.uint8)
    return resize_linear(binary, height, width) == 255
