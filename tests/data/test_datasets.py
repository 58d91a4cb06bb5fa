"""VisA, MVTec AD 2 and DAGM 2007 as distributed, and defects labelled per image: detection, splits, masks,
and every bad-input case naming its file and the fix (layouts written in miniature by demo_layouts)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from draem_zoo.cli import parser as cli
from draem_zoo.data import DataConfig, describe, detect, list_categories, load_category, scan_category
from draem_zoo.data.demo_layouts import write_layout
from draem_zoo.errors import DataError


@pytest.fixture
def layout(tmp_path):
    def make(kind, **kw):
        return write_layout(kind, tmp_path / kind, **kw)
    return make


def test_each_layout_is_detected_and_split_as_distributed(layout):
    visa, ad2, dagm, mvtec = (layout(k) for k in ("visa", "mvtec_ad2", "dagm", "mvtec"))
    assert [detect(r) for r in (visa, ad2, dagm, mvtec)] == ["visa", "mvtec_ad2", "dagm", "mvtec"]
    assert describe(visa) == {"candle": {"dataset": "visa", "train": 9, "val": 1, "test": 7,
                                         "test_per_defect": {"good": 3, "anomaly": 4}}}
    # MVTec AD 2: all of train/good trains, validation/good is the held-out set, test on test_public
    files = scan_category(ad2, "can")
    assert (len(files.train), len(files.val), len(files.test)) == (8, 2, 7)
    assert all(p.parent.name == "good" and p.parent.parent.name == "validation" for p in files.val)
    assert files.fingerprint()["validation"] == "validation/good" and files.fingerprint()["dataset"] == "mvtec_ad2"
    assert sorted(set(files.test_defects)) == ["bad", "good"]  # ground_truth/ is not a defect type
    assert all(m.name.endswith("_regular_mask.png") for m in files.test_masks if m is not None)
    # DAGM: only the defect-free Train images train; Test's labels and label images from Labels.txt
    files = scan_category(dagm, "Class1")
    assert len(files.train) + len(files.val) == 10 and files.test_labels == [0, 0, 0, 1, 1]
    assert [m.name for m in files.test_masks if m] == ["0003_label.PNG", "0004_label.PNG"]
    assert list_categories(dagm) == ["Class1"]


def test_visa_masks_of_small_values_are_read_as_anomalous(layout):
    data = load_category(DataConfig(str(layout("visa")), "candle"), 32)
    raw = np.asarray(Image.open(data.files.test_masks[-1]))
    assert raw.max() == 1  # as distributed: not 0/255
    assert data.test_masks[data.test_labels == 1].flatten(1).any(1).all()
    assert not data.test_masks[data.test_labels == 0].any()


def test_visa_csv_row_naming_a_missing_file_is_one_line(layout):
    root = layout("visa")
    (root / "candle" / "Data" / "Images" / "Anomaly" / "001.JPG").unlink()
    with pytest.raises(DataError, match=r"split_csv/1cls.csv:16: its image candle/Data/Images/Anomaly/001.JPG is not "
                                        r"there .*restore the file from the VisA archive, or delete the row"):
        scan_category(root, "candle")


def test_visa_csv_problems_name_the_line(layout):
    root = layout("visa")
    path = root / "split_csv" / "1cls.csv"
    rows = list(csv.reader(path.open()))
    rows[15][4] = ""  # one anomalous row without its mask, the others with one: a mistake
    csv.writer(path.open("w", newline="")).writerows(rows)
    with pytest.raises(DataError, match=r"1cls.csv:16: anomalous candle image without a mask"):
        scan_category(root, "candle")
    csv.writer(path.open("w", newline="")).writerows([["object", "split", "image"], *[[r[0], r[1], r[3]] for r in rows[1:]]])
    with pytest.raises(DataError, match=r"1cls.csv: no column label .*object,split,label,image,mask"):
        scan_category(root, "candle")


def test_a_mask_of_the_wrong_size_is_named(layout):
    root = layout("visa")
    mask = root / "candle" / "Data" / "Masks" / "Anomaly" / "002.png"
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(mask)
    with pytest.raises(DataError, match=r"Masks/Anomaly/002.png: mask is 32x20 but its image .*002.JPG is 32x32"):
        scan_category(root, "candle")


def test_mvtec_ad2_without_validation_good_names_the_folder_and_the_fix(layout):
    root = layout("mvtec_ad2")
    shutil.rmtree(root / "can" / "validation")
    with pytest.raises(DataError, match=r"can/validation/good: missing; MVTec AD 2 holds the held-out normal images.*"
                                        r"restore can/validation/good/ from the MVTec AD 2 archive.*data.val_fraction=0"):
        load_category(DataConfig(str(root), "can"), 32)
    files = scan_category(root, "can", val_fraction=0.0)  # without validation: allowed, and recorded
    assert not files.val and files.fingerprint()["validation"].startswith("none")


def test_dagm_labels_file_problems_are_named(layout):
    root = layout("dagm")
    labels = root / "Class1" / "Test" / "Label" / "Labels.txt"
    text = labels.read_text()
    (root / "Class1" / "Test" / "Label" / "0004_label.PNG").unlink()
    with pytest.raises(DataError, match=r"Test/Label/Labels.txt:6: its label image 0004_label.PNG is not there"):
        scan_category(root, "Class1")
    labels.write_text(text.replace("\t1\t0004.PNG\t0\t0004_label.PNG", "\tx\t0004.PNG"))
    with pytest.raises(DataError, match=r"Labels.txt:6: .*a line reads: index, label \(0 or 1\)"):
        scan_category(root, "Class1")
    labels.unlink()
    with pytest.raises(DataError, match=r"Test/Label/Labels.txt: missing; DAGM lists each image's label there"):
        scan_category(root, "Class1")


def test_defects_labelled_per_image_give_image_metrics_only(layout):
    root = layout("mvtec", masks=False)
    files = scan_category(root, "weave")
    assert files.unmasked == ["hole", "scratch"] and all(m is None for m in files.test_masks)
    assert "labelled per image only" in files.pixel_note and files.counts()["image_labels_only"] == ["hole", "scratch"]
    data = load_category(DataConfig(str(root), "weave"), 32)
    assert data.pixel_masks is None and len(data.test) == 7
    # a mask folder with one mask missing stays an error naming that mask
    write_layout("mvtec", root.parent / "half")
    (root.parent / "half" / "weave" / "ground_truth" / "hole" / "001_mask.png").unlink()
    with pytest.raises(DataError, match=r"test/hole/001.png: no mask.*ground_truth/hole/001_mask.png"):
        scan_category(root.parent / "half", "weave")


def test_dataset_flag_overrides_detection_and_errors_are_one_line(layout, capsys):
    root = layout("visa")
    assert cli.main(["describe", str(root)]) == 0
    out = capsys.readouterr().out
    assert "VisA (visa, detected" in out and "candle" in out and "anomaly 4" in out
    assert cli.main(["describe", str(root), "--dataset", "dagm"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no categories" in err
    empty = root.parent / "nothing"
    empty.mkdir()
    assert cli.main(["describe", str(empty)]) == 2
    assert "no dataset found here" in capsys.readouterr().err


def test_the_same_files_read_through_a_visa_csv_decode_exactly_as_the_mvtec_layout(tmp_path):
    """The readers differ in where they find files, not in what they make of them."""
    from draem_zoo.data.demo import make_demo_dataset

    root = make_demo_dataset(tmp_path / "d", categories=("weave",), size=32, n_train=10, n_test_good=3,
                             n_test_defect=2)
    mv = scan_category(root, "weave")
    rel = lambda p: str(p.relative_to(root))  # noqa: E731
    rows = [["object", "split", "label", "image", "mask"]]
    rows += [["weave", "train", "normal", rel(p), ""] for p in sorted(mv.train + mv.val)]
    rows += [["weave", "test", "anomaly" if y else "normal", rel(p), rel(m) if m else ""]
             for p, y, m in zip(mv.test, mv.test_labels, mv.test_masks)]
    (root / "split_csv").mkdir()
    csv.writer((root / "split_csv" / "1cls.csv").open("w", newline="")).writerows(rows)
    a = load_category(DataConfig(str(root), "weave", dataset="mvtec"), 32)
    b = load_category(DataConfig(str(root), "weave"), 32)  # detected: VisA (its split file is there)
    assert b.files.dataset == "visa" and a.files.dataset == "mvtec"
    assert b.files.train == a.files.train and b.files.val == a.files.val  # the same seeded split
    for k in ("train", "val", "test", "test_masks", "test_labels"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k


def test_misnamed_mask_folder_is_an_error_not_image_labels(layout):
    root = layout("mvtec")
    gt = root / "weave" / "ground_truth"
    (gt / "hole").rename(gt / "Hole")
    with pytest.raises(DataError, match=r"ground_truth: mask folders Hole match no test/ defect folder, while hole "
                                        r"have no mask folder; rename"):
        scan_category(root, "weave")
    shutil.rmtree(gt / "Hole")  # removed: hole is labelled per image, scratch keeps its masks
    files = scan_category(root, "weave")
    assert files.unmasked == ["hole"] and sum(m is not None for m in files.test_masks) == 2


def test_mixed_layouts_under_one_root_are_named(layout, tmp_path):
    root = layout("mvtec_ad2")
    write_layout("mvtec", root)  # weave: MVTec AD's layout beside can: MVTec AD 2's
    with pytest.raises(DataError, match=r"can look like MVTec AD 2 .*weave like MVTec AD .*name the layout with "
                                        r"--dataset mvtec_ad2 or --dataset mvtec"):
        detect(root)
    assert list_categories(root, "mvtec_ad2") == ["can"]
    assert scan_category(root, "weave", dataset="mvtec").dataset == "mvtec"


def test_visa_csv_as_spreadsheets_write_it_and_partial_archives(layout, tmp_path):
    root = layout("visa")
    path = root / "split_csv" / "1cls.csv"
    rows = list(csv.reader(path.open()))
    rows[0] = [" Object", "split ", "LABEL", "image", "mask"]
    rows += [["pcb1", "train", "normal", "pcb1/Data/Images/Normal/0000.JPG", ""]]  # a category not extracted
    rows[3][3] = rows[3][3].replace("/", "\\")  # written on Windows
    rows[4][3] = str(root / rows[4][3])  # an absolute path
    with path.open("w", newline="", encoding="utf-8-sig") as f:  # a BOM and CRLF line ends
        csv.writer(f, lineterminator="\r\n").writerows(rows)
    assert list_categories(root) == ["candle"]  # pcb1's folder is not there
    files = scan_category(root, "candle")
    assert len(files.train) + len(files.val) == 10 and files.fingerprint()["files"] == 17
    with pytest.raises(DataError, match=r"visa/pcb1: missing, though 1cls.csv lists pcb1; extract it .*--categories"):
        scan_category(root, "pcb1")


def test_dagm_labels_without_a_header_line_and_describe_per_category_errors(layout, capsys):
    root = layout("dagm")
    labels = root / "Class1" / "Train" / "Label" / "Labels.txt"
    labels.write_text("\n".join(labels.read_text().splitlines()[1:]) + "\n")  # no header line
    assert len(scan_category(root, "Class1").train) + len(scan_category(root, "Class1").val) == 10
    ad2 = layout("mvtec_ad2")
    write_layout("mvtec_ad2", ad2, category="rice")
    shutil.rmtree(ad2 / "rice" / "validation" / "good")
    with pytest.raises(DataError, match="rice/validation/good: missing"):
        describe(ad2)
    counts = describe(ad2, collect=True)
    assert counts["can"]["train"] == 8 and "rice/validation/good: missing" in counts["rice"]["error"]
    assert cli.main(["describe", str(ad2)]) == 2
    cap = capsys.readouterr()
    assert "can " in cap.out and "rice " in cap.out and "not readable" in cap.out
    assert cap.err.count("\n") == 1 and "describe: error: " in cap.err and "rice/validation/good: missing" in cap.err


def test_a_run_saved_before_data_dataset_existed_resumes(tmp_path):
    import json

    from draem_zoo.pipeline.runconfig import make_run_config
    from draem_zoo.pipeline.workflow import RUN_CONFIG, changed_settings

    run = make_run_config(["data.root=/d", "data.category=weave"])
    saved = run.to_dict()
    del saved["data"]["dataset"]
    (tmp_path / RUN_CONFIG).write_text(json.dumps(saved))
    assert changed_settings(tmp_path, run) == []
    assert changed_settings(tmp_path, make_run_config(["data.root=/d", "data.category=weave",
                                                       "data.dataset=visa"])) == ["data.dataset"]
