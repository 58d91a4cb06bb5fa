"""Reading any image mode into RGB uint8, with errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from draem_zoo.data.images import read_mask, read_rgb
from draem_zoo.errors import DataError


def test_grayscale_rgba_palette_and_16bit_become_rgb(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    x = read_rgb(tmp_path / "gray.png")
    assert x.shape == (3, 8, 8) and x.dtype == torch.uint8
    assert torch.equal(x[0], torch.from_numpy(gray)) and torch.equal(x[0], x[2])

    g16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    y = read_rgb(tmp_path / "g16.png")
    assert y.shape == (3, 8, 8) and int(y.max()) == round(63000 / 65535 * 255) and int(y.min()) == 0

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:4, :, 3] = 0  # transparent top half composites to black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    z = read_rgb(tmp_path / "rgba.png")
    assert int(z[0, 6, 0]) == 200 and int(z[0, 1, 0]) == 0

    Image.fromarray(gray, "L").convert("P").save(tmp_path / "pal.png")
    assert read_rgb(tmp_path / "pal.png").shape == (3, 8, 8)


def test_resize_is_antialiased_and_masks_nearest(tmp_path):
    stripes = np.zeros((64, 64), dtype=np.uint8)
    stripes[:, ::2] = 255
    Image.fromarray(stripes).save(tmp_path / "s.png")
    small = read_rgb(tmp_path / "s.png", 16)
    assert small.shape == (3, 16, 16)
    assert 100 < float(small.float().mean()) < 155 and float(small.float().std()) < 10  # averaged, not aliased
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[10:30, 20:40] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    m = read_mask(tmp_path / "m.png", 32)
    assert m.dtype == torch.bool and m.shape == (1, 32, 32)
    assert int(m.sum()) == 10 * 10


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="bad.png.*re-export it or remove it"):
        read_rgb(tmp_path / "bad.png")
    arr = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.jpg"):
        read_rgb(tmp_path / "cut.jpg")
    with pytest.raises(DataError, match="no such file"):
        read_rgb(tmp_path / "none.png")
