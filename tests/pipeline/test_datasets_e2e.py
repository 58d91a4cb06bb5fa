"""Each dataset layout end to end through the CLI: train, evaluate (image metrics only where the defects
are labelled per image), publish (the dataset's licence, repository names and card), and an MVTec AD 2
submission folder of the private splits."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from draem_zoo.cli import parser as cli
from draem_zoo.data.demo_layouts import write_layout
from draem_zoo.errors import DraemZooError
from draem_zoo.hub.publish import build_releases, zoo_prefix

TINY = ["model.rec_width=4", "model.disc_width=4", "eval.filter_sizes=1,5,11", "eval.batch_size=32",
        "synthesis.procedural_textures=8"]
CASES = {"visa": ("visa", "candle", {}), "mvtec_ad2": ("mvtec_ad2", "can", {}), "dagm": ("dagm", "Class1", {}),
         "labels_only": ("mvtec", "weave", {"masks": False})}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model per layout (6 iterations at 32 px), trained through the CLI."""
    base = tmp_path_factory.mktemp("layouts")
    out = {}
    for name, (kind, cat, kw) in CASES.items():
        root = write_layout(kind, base / ("parts" if name == "labels_only" else name), **kw)
        model = base / "models" / name
        code = cli.main(["train", "--data", str(root), "--category", cat, "--out", str(model), "--iterations", "6",
                         "--image-size", "32", "--batch-size", "4", "--quiet", "--json",
                         *[a for s in TINY for a in ("--set", s)]])
        assert code == 0, name
        out[name] = (root, cat, model)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_train_records_the_dataset_and_evaluate_agrees(trained, name, capsys):
    root, cat, model = trained[name]
    cfg = json.loads((model / "config.json").read_text())
    kind = CASES[name][0]
    assert cfg["data"]["dataset"] == kind and cfg["data"]["category"] == cat
    where = {"mvtec_ad2": "validation/good", "visa": "0.1 of the split file's training rows held out (seed 0)",
             "dagm": "0.1 of the defect-free Train images held out (seed 0)", "mvtec": "0.1 of train/good held out (seed 0)"}
    assert cfg["data"]["validation"] == where[kind] and cfg["data"]["counts"]["val"] >= 1
    test = cfg["metrics"]["test"]
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(model), "--data", str(root), "--category", cat, "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["dataset"] == kind and abs(ev["image_auroc"] - test["image_auroc"]) < 1e-6
    assert 0.0 <= ev["image_auroc"] <= 1.0 and 0.0 <= ev["image_ap"] <= 1.0
    if name == "labels_only":
        for k in ("pixel_auroc", "pixel_ap", "aupro"):
            assert ev[k] is None and test[k] is None
        assert "labelled per image only" in test["pixel_note"]
        assert any("labelled per image only" in n for n in ev["notes"])
        assert cli.main(["evaluate", "--model", str(model), "--data", str(root), "--category", cat]) == 0
        assert "note: pixel AUROC/AP/F1-max/AUPRO: not available" in capsys.readouterr().out
    else:
        assert 0.0 <= ev["pixel_auroc"] <= 1.0 and 0.0 <= ev["aupro"] <= 1.0 and "pixel_note" not in test


def _results(tmp_path, model, cat):
    res = tmp_path / "results"
    shutil.copytree(model, res / cat / "best")
    return res


def test_publish_names_the_dataset_and_its_licence(trained, tmp_path):
    _, cat, model = trained["visa"]
    res = _results(tmp_path, model, cat)
    assert zoo_prefix(res) == "draem-visa"
    (release,) = build_releases(res, "acme", zoo_prefix(res))
    assert release.repo_id == "acme/draem-visa-candle" and release.license == "cc-by-4.0"
    assert "datasets:\n- visa" in release.card and "license: cc-by-4.0" in release.card
    assert "VisA" in release.card and "zou2022spot" in release.card
    _, cat, model = trained["mvtec_ad2"]
    res = _results(tmp_path / "ad2", model, cat)
    (release,) = build_releases(res, "acme", zoo_prefix(res))
    assert release.repo_id == "acme/draem-mvtec-ad2-can" and release.license == "cc-by-nc-sa-4.0"
    assert "validation: validation/good" in release.card
    _, cat, model = trained["dagm"]
    res = _results(tmp_path / "dagm", model, cat)
    with pytest.raises(DraemZooError, match=r"license of the training data \(DAGM 2007\) is unknown.*--license"):
        build_releases(res, "acme", zoo_prefix(res))
    (release,) = build_releases(res, "acme", zoo_prefix(res, license="other"), license="other")
    assert release.repo_id == "acme/draem-dagm-Class1" and "datasets:\n- dagm-2007" in release.card


def test_a_category_labelled_per_image_publishes_a_card_without_pixel_metrics(trained, tmp_path, capsys):
    _, cat, model = trained["labels_only"]
    res = _results(tmp_path, model, cat)
    capsys.readouterr()
    assert cli.main(["publish", str(res), "--org", "acme", "--license", "mit", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)["would_upload"]
    # own data in MVTec AD's layout keep the zoo's default names (--prefix names them otherwise)
    assert plan[0]["repo"] == "acme/draem-mvtec-weave" and plan[0]["metrics"]["pixel_ap"] is None
    (release,) = build_releases(res, "acme", "draem-parts", license="mit")
    assert "**Pixel metrics are not available**" in release.card and "hole, scratch" in release.card
    assert "pixel AP" not in release.card.split("---")[1]  # no pixel metric in the model-index


def test_mvtec_ad2_submission_of_the_private_splits(trained, tmp_path, capsys):
    root, cat, model = trained["mvtec_ad2"]
    out = tmp_path / "submission"
    # a private image of another size than the model's, and not square: its map comes back at its own size
    odd = root / cat / "test_private" / "000_regular.png"
    Image.open(odd).resize((48, 40)).save(odd)
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(model), str(root), "--format", "mvtec_ad2", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["splits"] == {"test_private": 7, "test_private_mixed": 4} and summary["written"] == 11
    for split, n in summary["splits"].items():
        maps = sorted((out / "anomaly_images" / cat / split).glob("*.tiff"))
        assert len(maps) == n
        names = {p.stem for p in (root / cat / split).glob("*.png")}
        assert {p.stem for p in maps} == names
        arr = tifffile.imread(maps[0])
        shape = (40, 48) if split == "test_private" else (32, 32)  # (height, width) of the image
        assert arr.dtype == np.float16 and arr.shape == shape and 0 <= float(arr.min()) <= float(arr.max()) <= 1
        png = np.asarray(Image.open(out / "anomaly_images_thresholded" / cat / split / f"{maps[0].stem}.png"))
        assert png.shape == shape and set(np.unique(png)) <= {0, 255}
        thr = json.loads((model / "config.json").read_text())["score"]["pixel_threshold"]
        differ = (png == 255) != (arr.astype(np.float32) >= thr)  # the PNG is cut from the float32 map
        assert not differ.any() or np.abs(arr[differ].astype(np.float32) - thr).max() < 2e-3  # float16 rounding
    # a second run is refused unless it resumes; resuming writes only what is missing
    assert cli.main(["predict", "--model", str(model), str(root), "--format", "mvtec_ad2", "--out", str(out)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    (out / "anomaly_images" / cat / "test_private" / "000_regular.tiff").unlink()
    assert cli.main(["predict", "--model", str(model), str(root / cat), "--format", "mvtec_ad2", "--out", str(out),
                     "--resume"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["written"] == 1 and summary["kept"] == 10
