"""Untrusted image files: a decompression bomb is refused by name before decoding, and sizes are the
displayed (EXIF-applied) ones."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from draem_zoo.data import DataConfig, load_category
from draem_zoo.data.demo import make_demo_dataset
from draem_zoo.data.images import image_size_of, list_images, max_pixels, read_mask, read_rgb
from draem_zoo.errors import ConfigError, DataError


def header_only_png(path, width: int, height: int):
    """A PNG whose IHDR says width x height (8-bit gray) with a tiny IDAT: PIL opens it lazily, so only
    decoding it would allocate the pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def with_orientation(path, array: np.ndarray, orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif.tobytes())
    return path


def test_a_decompression_bomb_is_refused_by_name_before_decoding(tmp_path, monkeypatch):
    monkeypatch.delenv("DRAEM_ZOO_MAX_PIXELS", raising=False)
    bomb = header_only_png(tmp_path / "bomb.png", 20000, 20000)
    expected = (r"bomb.png: 20000x20000 = 400,000,000 pixels, above the limit of 268,435,456 pixels; refused before "
                r"decoding .* raise the limit: DRAEM_ZOO_MAX_PIXELS=400000000")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not come first
        for read in (read_rgb, read_mask, image_size_of):
            with pytest.raises(DataError, match=expected):
                read(bomb)


def test_pil_bomb_check_never_fires_below_our_limit(tmp_path, monkeypatch):
    monkeypatch.delenv("DRAEM_ZOO_MAX_PIXELS", raising=False)
    # 225 M pixels: above PIL's own error limit (2 x 89.5 M), below ours (16384 x 16384); header only
    big = header_only_png(tmp_path / "big.png", 15000, 15000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image_size_of(big) == (15000, 15000)
    # decoding too: with PIL's limit far below the image (TIFF checks it again while decoding)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    arr = np.arange(30 * 40 * 3, dtype=np.uint8).reshape(30, 40, 3)
    for name in ("a.png", "a.tif"):
        Image.fromarray(arr).save(tmp_path / name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            x = read_rgb(tmp_path / name)
        assert x.shape == (3, 30, 40) and int(x[0, 0, 1]) == 3
    assert Image.MAX_IMAGE_PIXELS == max_pixels()  # PIL's limit is lifted to ours, never removed


def test_the_pixel_limit_comes_from_the_environment(tmp_path, monkeypatch):
    img = tmp_path / "img.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(img)
    monkeypatch.setenv("DRAEM_ZOO_MAX_PIXELS", "1000")
    assert max_pixels() == 1000
    with pytest.raises(DataError, match=r"img.png: 40x30 = 1,200 pixels, above the limit of 1,000 pixels.*"
                                        r"DRAEM_ZOO_MAX_PIXELS=1200"):
        read_rgb(img)
    monkeypatch.setenv("DRAEM_ZOO_MAX_PIXELS", "40x30")
    assert max_pixels() == 1200 and read_rgb(img).shape == (3, 30, 40)
    monkeypatch.setenv("DRAEM_ZOO_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match=r"DRAEM_ZOO_MAX_PIXELS='lots': not a pixel count"):
        read_rgb(img)


def test_exif_rotated_images_have_their_displayed_size(tmp_path):
    stored = np.zeros((24, 40), np.uint8)  # 40 wide, 24 high as stored
    stored[0:8, 0:10] = 255  # top-left as stored: top-right once turned 90° clockwise (orientation 6)
    path = with_orientation(tmp_path / "rot.png", stored, 6)
    with Image.open(path) as im:
        assert im.size == (40, 24)  # PIL's header size: as stored
    assert image_size_of(path) == (40, 24)  # (height, width) as displayed and decoded
    x = read_rgb(path)
    assert x.shape == (3, 40, 24)
    assert int(x[0, 0:10, 16:24].min()) == 255 and int(x[0].sum()) == 255 * 80
    m = read_mask(with_orientation(tmp_path / "rot_mask.png", stored, 6))  # a mask's own EXIF applies too
    assert m.shape == (1, 40, 24) and bool(m[0, 0:10, 16:24].all()) and int(m.sum()) == 80


def test_listing_refuses_broken_links_and_never_loops(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "sub" / "b.png")
    (folder / "sub" / "up").symlink_to("..")  # a folder loop
    (folder / "self").symlink_to(".")
    assert list_images(folder) == [folder / "a.png"]
    assert list_images(folder, recursive=True) == [folder / "a.png", folder / "sub" / "b.png"]
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DataError, match=r"imgs/gone.png: dangling symbolic link: it points to .*nowhere.png, which "
                                        r"does not exist; remove the link or fix its target"):
        list_images(folder)
    (folder / "gone.png").unlink()
    (folder / "sub" / "x.png").symlink_to("y.png")
    (folder / "sub" / "y.png").symlink_to("x.png")
    with pytest.raises(DataError, match=r"sub/[xy].png: symbolic link loop: it points to [xy].png \(that is .*sub/[xy].png\)"):
        list_images(folder, recursive=True)


def test_a_decompression_bomb_in_train_good_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("DRAEM_ZOO_MAX_PIXELS", raising=False)
    root = make_demo_dataset(tmp_path / "data", categories=("weave",), size=32, n_train=4, n_test_good=1,
                             n_test_defect=1)
    header_only_png(root / "weave" / "train" / "good" / "huge.png", 20000, 20000)
    with pytest.raises(DataError, match=r"train/good/huge.png: 20000x20000 = 400,000,000 pixels, above the limit"):
        load_category(DataConfig(str(root), "weave", val_fraction=0.0), 32)
