"""The paper protocol's preprocessing equals the original code's OpenCV calls, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from draem_zoo.data.opencv_resize import resize_linear, resize_mask_like_draem

cv2 = pytest.importorskip("cv2")  # opencv-python-headless: a test-only dependency


@pytest.mark.parametrize("src,dst", [((1024, 1024), (256, 256)), ((900, 900), (256, 256)), ((700, 700), (256, 256)),
                                     ((257, 333), (256, 256)), ((300, 517), (128, 128)), ((64, 64), (100, 100)),
                                     ((50, 70), (256, 192))])
def test_bilinear_resize_matches_opencv_exactly(src, dst):
    rng = np.random.default_rng(sum(src) + sum(dst))
    yy, xx = np.mgrid[0:src[0], 0:src[1]]
    smooth = (127 + 100 * np.sin(xx / 7.0) * np.cos(yy / 11.0)).astype(np.uint8)  # photo-like and noise
    for img in (rng.integers(0, 256, (*src, 3), dtype=np.uint8), np.stack([smooth] * 3, -1), smooth):
        ref = cv2.resize(img, (dst[1], dst[0]))
        ours = resize_linear(img, *dst)
        assert ours.shape == ref.shape and np.array_equal(ours, ref)


def test_masks_resized_and_truncated_as_the_original():
    rng = np.random.default_rng(3)
    mask = np.zeros((900, 900), np.uint8)
    for _ in range(12):
        y, x = rng.integers(0, 850, 2)
        mask[y: y + rng.integers(3, 60), x: x + rng.integers(3, 60)] = 255
    ref = (cv2.resize(mask, (256, 256)).astype(np.float32) / 255.0).astype(np.uint8).astype(bool)
    ours = resize_mask_like_draem(mask, 256, 256)
    assert np.array_equal(ours, ref) and ours.sum() > 0
    # nearest-neighbour (this project's default) labels more pixels: the edges the original drops
    assert ours.sum() < (cv2.resize(mask, (256, 256), interpolation=cv2.INTER_NEAREST) > 0).sum()
