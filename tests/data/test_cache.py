"""Decode once per node: the category and the anomaly source come from the local cache after the
first run, keyed by the files' content and the size; stale, damaged or disabled caches decode again."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import draem_zoo.data.loading as mvtec
import draem_zoo.synthesis.textures as textures
from draem_zoo.data import DataConfig, load_category
from draem_zoo.data.cache import cached_stack
from draem_zoo.data.demo import make_demo_dataset
from draem_zoo.synthesis.textures import TextureBank


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """Count every image decode (data and textures) and give the test its own cache folder."""
    monkeypatch.setenv("DRAEM_ZOO_CACHE", str(tmp_path / "cache"))
    calls = {"n": 0}
    real = mvtec.read_rgb

    def reading(path, size=None, *args):
        calls["n"] += 1
        return real(path, size, *args)

    monkeypatch.setattr(mvtec, "read_rgb", reading)
    monkeypatch.setattr(textures, "read_rgb", reading)
    return calls


def test_category_decoded_once_then_loaded(counted, tmp_path):
    root = make_demo_dataset(tmp_path / "data", categories=("weave",), size=32, n_train=10, n_test_good=2,
                             n_test_defect=1)
    cfg = DataConfig(str(root), "weave")
    first = load_category(cfg, 32)
    decoded = counted["n"]
    assert decoded == len(first.train) + len(first.val) + len(first.test) == 9 + 1 + 5
    again = load_category(cfg, 32)
    assert counted["n"] == decoded  # nothing decoded the second time
    for a, b in ((first.train, again.train), (first.val, again.val), (first.test, again.test),
                 (first.test_masks, again.test_masks)):
        assert a.dtype == b.dtype and torch.equal(a, b)
    load_category(cfg, 24)  # another size is another entry
    assert counted["n"] == 2 * decoded
    # an edited image is new content: its split is decoded again, the others still come from the cache
    path = root / "weave" / "test" / "good" / "000.png"
    from PIL import Image
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(path)
    edited = load_category(cfg, 32)
    assert counted["n"] == 2 * decoded + len(first.test)
    assert edited.test[first.files.test.index(path)].eq(7).all()


def test_only_the_splits_asked_for(counted, tmp_path):
    root = make_demo_dataset(tmp_path / "data", categories=("weave",), size=32, n_train=10, n_test_good=2,
                             n_test_defect=1)
    data = load_category(DataConfig(str(root), "weave"), 32, splits=("train",))  # a DDP rank other than 0
    assert counted["n"] == 9 and len(data.val) == 0 and len(data.test) == 0 and len(data.test_masks) == 0


def test_textures_decoded_once(counted, texture_dir):
    a = TextureBank.from_folder(texture_dir, 16)
    assert counted["n"] == 6
    b = TextureBank.from_folder(texture_dir, 16)
    assert counted["n"] == 6 and torch.equal(a.images, b.images)


def test_cache_off_damaged_entries_and_one_decode_for_concurrent_runs(monkeypatch, tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(bytes([i]) * 10)
        paths.append(p)
    made = {"n": 0}
    lock = threading.Lock()

    def decode():
        with lock:
            made["n"] += 1
        return torch.arange(3, dtype=torch.uint8).view(3, 1)

    monkeypatch.setenv("DRAEM_ZOO_CACHE", "off")
    assert cached_stack(paths, "r", decode)[1] == "uncached" and made["n"] == 1
    monkeypatch.setenv("DRAEM_ZOO_CACHE", str(tmp_path / "cache"))
    outs = []
    threads = [threading.Thread(target=lambda: outs.append(cached_stack(paths, "r", decode))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made["n"] == 2 and sorted(o[1] for o in outs) == ["cache", "cache", "cache", "decoded"]
    (entry,) = (tmp_path / "cache").glob("*.safetensors")
    entry.write_bytes(b"not a safetensors file")  # damaged: decoded again, and stored again
    assert cached_stack(paths, "r", decode)[1] == "decoded" and made["n"] == 3
    assert cached_stack(paths, "r", decode)[1] == "cache" and made["n"] == 3
    assert cached_stack(paths, "other recipe", decode)[1] == "decoded"  # how it was decoded is part of the key


def test_cache_entries_follow_the_umask(monkeypatch, tmp_path):
    import os
    import stat

    paths = [tmp_path / "a.bin"]
    paths[0].write_bytes(b"a")
    monkeypatch.setenv("DRAEM_ZOO_CACHE", str(tmp_path / "cache"))
    old = os.umask(0o022)
    try:
        assert cached_stack(paths, "shared", lambda: torch.zeros(1, 2, dtype=torch.uint8))[1] == "decoded"
        os.umask(0o002)
        assert cached_stack(paths, "group", lambda: torch.ones(1, 2, dtype=torch.uint8))[1] == "decoded"
    finally:
        os.umask(old)
    modes = sorted(stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "cache").glob("*.safetensors"))
    assert modes == [0o644, 0o664]  # an ordinary file's modes, not mkstemp's 0600
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary file left behind
    assert cached_stack(paths, "group", lambda: torch.ones(1, 2, dtype=torch.uint8))[1] == "cache"
