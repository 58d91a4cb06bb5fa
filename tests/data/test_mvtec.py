"""The MVTec-layout reader: modes, splits, counts and every bad-input case."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from draem_zoo.data import DataConfig, describe, list_categories, load_category, scan_category
from draem_zoo.data.demo import make_demo_dataset
from draem_zoo.errors import DataError


@pytest.fixture
def root(tmp_path):
    return make_demo_dataset(tmp_path / "data", categories=("weave", "granite"), size=32, n_train=10,
                             n_test_good=3, n_test_defect=2, grayscale=("granite",))


def test_lists_counts_and_loads(root):
    assert list_categories(root) == ["granite", "weave"]
    counts = describe(root)
    assert counts["weave"] == {"dataset": "mvtec", "train": 9, "val": 1, "test": 9,
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


def test_broken_symlinks_are_named_not_skipped(root, tmp_path):
    weave = root / "weave"
    good = weave / "train" / "good" / "link.png"
    good.symlink_to(tmp_path / "moved" / "img.png")
    with pytest.raises(DataError, match=r"train/good/link.png: dangling symbolic link: it points to .*moved/img.png, "
                                        r"which does not exist; remove the link or fix its target"):
        scan_category(root, "weave")
    with pytest.raises(DataError, match=r"link.png: dangling symbolic link"):
        describe(root)  # the counts do not just shrink
    good.unlink()
    (weave / "test" / "hole" / "9.png").symlink_to("9.png")
    with pytest.raises(DataError, match=r"test/hole/9.png: symbolic link loop: it points to 9.png"):
        scan_category(root, "weave")
    (weave / "test" / "hole" / "9.png").unlink()
    mask = weave / "ground_truth" / "hole" / "001_mask.png"
    mask.unlink()
    mask.symlink_to("../../../masks/001_mask.png")
    with pytest.raises(DataError, match=r"ground_truth/hole/001_mask.png: dangling symbolic link: it points to "
                                        r"\.\./\.\./\.\./masks/001_mask.png \(that is .*/masks/001_mask.png\)"):
        scan_category(root, "weave")
    mask.unlink()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(mask)
    (weave / "test" / "crack").symlink_to(tmp_path / "crack-on-another-disk")
    with pytest.raises(DataError, match=r"test/crack: dangling symbolic link"):
        scan_category(root, "weave")


def test_folder_symlink_loops_do_not_hang_the_listing(root):
    weave = root / "weave"
    before = scan_category(root, "weave").counts()
    (weave / "train" / "good" / "again").symlink_to("..")
    (weave / "test" / "good" / "loop").symlink_to(".")
    (weave / "test" / "hole" / "up").symlink_to("../..")
    assert scan_category(root, "weave").counts() == before


def exif_category(tmp_path, mask: np.ndarray, mask_orientation: int | None = None):
    """A category whose one defect image is stored 40x24 with EXIF orientation 6 (shown turned 90° clockwise,
    24x40), bright in its stored top-left corner: shown in the top-right one."""
    base = tmp_path / "exif" / "cat"
    for sub in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
        (base / sub).mkdir(parents=True)
    Image.fromarray(np.full((24, 40, 3), 90, np.uint8)).save(base / "train" / "good" / "000.png")
    Image.fromarray(np.full((24, 40, 3), 90, np.uint8)).save(base / "test" / "good" / "000.png")
    stored = np.zeros((24, 40, 3), np.uint8)
    stored[0:8, 0:10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(base / "test" / "crack" / "000.png", exif=exif.tobytes())
    extra = {}
    if mask_orientation:
        exif = Image.Exif()
        exif[0x0112] = mask_orientation
        extra["exif"] = exif.tobytes()
    Image.fromarray(mask).save(base / "ground_truth" / "crack" / "000_mask.png", **extra)
    return base.parent


def test_masks_are_checked_against_the_displayed_exif_orientation(tmp_path):
    drawn = np.zeros((40, 24), np.uint8)  # drawn on the image as it is displayed: 24 wide, 40 high
    drawn[0:10, 16:24] = 255
    root = exif_category(tmp_path / "a", drawn)
    data = load_category(DataConfig(str(root), "cat", val_fraction=0.0), 32)
    img, m = data.test[data.test_labels == 1][0, 0], data.test_masks[data.test_labels == 1][0, 0]
    assert int(m.sum()) > 0 and float(img[m].float().mean()) > 200 and float(img[~m].float().mean()) < 30

    own = np.zeros((24, 40), np.uint8)  # stored as the image is, with the same EXIF orientation: fine too
    own[0:8, 0:10] = 255
    root = exif_category(tmp_path / "b", own, mask_orientation=6)
    data = load_category(DataConfig(str(root), "cat", val_fraction=0.0), 32)
    img, m = data.test[data.test_labels == 1][0, 0], data.test_masks[data.test_labels == 1][0, 0]
    assert int(m.sum()) > 0 and float(img[m].float().mean()) > 200 and float(img[~m].float().mean()) < 30

    root = exif_category(tmp_path / "c", own)  # stored orientation, no EXIF: it would be misaligned
    with pytest.raises(DataError, match=r"ground_truth/crack/000_mask.png: mask is 40x24, the stored size of its image "
                                        r".*test/crack/000.png, but that image has EXIF orientation 6 \(rotated 90° "
                                        r"clockwise\): it is read, as any viewer shows it, at 24x40.*save the mask in "
                                        r"the image's displayed orientation \(24x40\), or strip the image's EXIF"):
        scan_category(root, "cat")
    root = exif_category(tmp_path / "d", np.zeros((30, 30), np.uint8))
    with pytest.raises(DataError, match=r"000_mask.png: mask is 30x30 but its image .*000.png is 24x40 \(stored 40x24, "
                                        r"EXIF orientation 6: rotated 90° clockwise\); masks must have their image's size"):
        scan_category(root, "cat")



def _mask_with_a_square(n: int = 6, size: int = 32) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[10:10 + n, 12:12 + n] = 255
    return m


def test_a_jpeg_mask_is_refused_by_name_never_read_with_its_noise(root):
    gt = root / "weave" / "ground_truth" / "hole"
    (gt / "000_mask.png").unlink()
    Image.fromarray(_mask_with_a_square()).save(gt / "000.jpg", quality=75)  # the undocumented NAME.* fallback
    with pytest.raises(DataError, match=r"000\.jpg: a mask in a lossy format \(\.jpg\).*\.png, \.bmp"):
        scan_category(root, "weave")
    with pytest.raises(DataError, match="lossy"):
        describe(root)
    (gt / "000.jpg").rename(gt / "000_mask.jpeg")
    with pytest.raises(DataError, match=r"000_mask\.jpeg: a mask in a lossy format"):
        scan_category(root, "weave")


def test_lossless_masks_by_either_name_are_binarised_at_half_their_range(root):
    gt = root / "weave" / "ground_truth" / "hole"
    (gt / "000_mask.png").unlink()
    soft = _mask_with_a_square()
    soft[9, 12:18] = 60  # an antialiased edge below half the range: normal
    soft[16, 12:18] = 200  # above half: anomalous
    Image.fromarray(soft).save(gt / "000.bmp")  # the documented fallback: NAME with a lossless suffix
    (gt / "001_mask.png").unlink()
    Image.fromarray((_mask_with_a_square() // 255).astype(np.uint8)).save(gt / "001_mask.tif")  # a 0/1 label map
    files = scan_category(root, "weave")
    assert gt / "000.bmp" in files.test_masks and gt / "001_mask.tif" in files.test_masks
    data = load_category(DataConfig(str(root), "weave"), 32)
    by = dict(zip(files.test_masks, data.test_masks))
    assert int(by[gt / "000.bmp"].sum()) == 36 + 6  # the square and the 200 row, not the 60 row
    assert int(by[gt / "001_mask.tif"].sum()) == 36  # a 0/1 mask is not all-normal
    deep = (_mask_with_a_square().astype(np.uint16) * 257)  # 16-bit 0/65535
    deep[9, 12:18] = 20000
    Image.fromarray(deep).save(gt / "000.png")
    (gt / "000.bmp").unlink()
    data = load_category(DataConfig(str(root), "weave"), 32)
    assert int(dict(zip(scan_category(root, "weave").test_masks, data.test_masks))[gt / "000.png"].sum()) == 36


def test_a_zero_byte_image_is_named_not_counted(root):
    (root / "weave" / "train" / "good" / "999.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"999\.png: an empty file \(0 bytes\)"):
        describe(root)
    with pytest.raises(DataError, match="empty file"):
        scan_category(root, "weave")
