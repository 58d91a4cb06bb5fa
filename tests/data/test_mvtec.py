"""The MVTec-layout reader: modes, splits, counts and every bad-input case."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from draem_zoo.data.demo import make_demo_dataset
from draem_zoo.data.mvtec import DataConfig, describe, list_categories, load_category, scan_category
from draem_zoo.errors import DataError


@pytest.fixture
def root(tmp_path):
    return make_demo_dataset(tmp_path / "data", categories=("weave", "granite"), size=32, n_train=10,
                             n_test_good=3, n_test_defect=2, grayscale=("granite",))


def test_lists_counts_and_loads(root):
    assert list_categories(root) == ["granite", "weave"]
    counts = describe(root)
    assert counts["weave"] == {"train": 9, "val": 1, "test": 9,
                               "test_per_defect": {"good": 3, "hole": 2, "scratch": 2, "stain": 2}}
    data = load_category(DataConfig(str(root), "granite", val_fraction=0.2), 24)
    assert data.train.shape == (8, 3, 24, 24) and data.val.shape == (2, 3, 24, 24)
    assert data.test.shape == (9, 3, 24, 24) and data.test_masks.shape == (9, 1, 24, 24)
    assert data.train.dtype.is_floating_point is False
    assert bool((data.train[:, 0] == data.train[:, 1]).all())  # grayscale category -> 3 equal channels
    assert data.test_labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert not data.test_masks[data.test_labels == 0].any() and data.test_masks[data.test_labels == 1].any()


def test_rgba_and_16bit_images_are_read(root):
    good = root / "weave" / "train" / "good"
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 1] = 180
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(good / "rgba.png")
    Image.fromarray(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).save(good / "deep.png")
    data = load_category(DataConfig(str(root), "weave", val_fraction=0.0), 32)
    assert data.train.shape[0] == 12


def test_validation_split_is_seeded_and_never_touches_test(root):
    a = scan_category(root, "weave", 0.3, split_seed=1)
    b = scan_category(root, "weave", 0.3, split_seed=1)
    c = scan_category(root, "weave", 0.3, split_seed=2)
    assert a.val == b.val and a.val != c.val and len(a.val) == 3
    assert set(a.val).isdisjoint(a.train)
    assert all("train" in p.parts for p in a.val)
    assert set(a.val).isdisjoint(a.test) and all("test" in p.parts for p in a.test)
    assert sorted(a.val + a.train) == sorted(c.val + c.train)


def test_fingerprint_tracks_the_file_list(root):
    f1 = scan_category(root, "weave").fingerprint()
    assert f1["category"] == "weave" and f1["files"] == 19
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "weave" / "train" / "good" / "new.png")
    f2 = scan_category(root, "weave").fingerprint()
    assert f2["files"] == 20 and f2["file_list_sha256"] != f1["file_list_sha256"]


def test_bad_layouts_name_the_path(root, tmp_path):
    with pytest.raises(DataError, match="no category 'bottle'.*granite, weave"):
        scan_category(root, "bottle")
    with pytest.raises(DataError, match="data root does not exist"):
        scan_category(tmp_path / "nowhere", "weave")
    (root / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="empty.*no images.*the category is empty"):
        scan_category(root, "empty")
    (root / "flat").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "flat" / "a.png")
    with pytest.raises(DataError, match=r"flat/train/good: missing"):
        scan_category(root, "flat")


def test_missing_mask_and_wrong_mask_size(root):
    (root / "weave" / "ground_truth" / "hole" / "001_mask.png").unlink()
    with pytest.raises(DataError, match=r"test/hole/001.png: no mask.*expected .*ground_truth/hole/001_mask.png"):
        scan_category(root, "weave")
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(root / "weave" / "ground_truth" / "hole" / "001_mask.png")
    with pytest.raises(DataError, match=r"001_mask.png: mask is 32x20 but its image .*001.png is 32x32"):
        scan_category(root, "weave")


def test_corrupt_image_is_named_before_training(root):
    bad = root / "weave" / "test" / "stain" / "000.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"stain/000.png"):
        load_category(DataConfig(str(root), "weave"), 32)
