"""evaluate_model: the headline s_f must fit the model's maps, and metrics that cannot be computed say why."""

from __future__ import annotations

import pytest
import torch

from draem_zoo import build_model
from draem_zoo.errors import ConfigError
from draem_zoo.evaluation.evaluate import EvalConfig, evaluate_model, metric_notes
from draem_zoo.model.scoring import ScoreConfig, check_filter_size, largest_filter


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("paper", rec_width=4, disc_width=4, image_size=32).eval()


def split(n_good: int, n_bad: int, mask_pixels: int = 4):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_good + n_bad, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.tensor([0] * n_good + [1] * n_bad)
    masks = torch.zeros(n_good + n_bad, 1, 32, 32, dtype=torch.bool)
    if mask_pixels:
        masks[n_good:, :, :2, :mask_pixels // 2] = True
    return images, labels, masks, ["good"] * n_good + ["crack"] * n_bad


def test_filter_size_range_follows_the_map_size():
    assert largest_filter(32) == 31 and largest_filter(33) == 33 and largest_filter((24, 40)) == 23
    assert check_filter_size(31, "--filter-size", 32) == 31 and check_filter_size(999, "--filter-size") == 999
    with pytest.raises(ConfigError, match=r"^--filter-size=999: larger than the model's 256x256 anomaly maps .*; s_f must "
                                          r"be an odd integer from 1 to 255 \(1 = no filter; the paper's is 21\)$"):
        check_filter_size(999, "--filter-size", 256)
    with pytest.raises(ConfigError, match=r"^score.filter_size=4: not an odd integer \(the model's anomaly maps are 40x24\); "
                                          r"s_f must be an odd integer from 1 to 23"):
        check_filter_size(4, "score.filter_size", (24, 40))


def test_a_filter_larger_than_the_image_is_refused(model):
    images, labels, masks, defects = split(3, 3)
    with pytest.raises(ConfigError, match=r"^--filter-size=999: larger than the model's 32x32 anomaly maps.*from 1 to 31"):
        evaluate_model(model, images, labels, masks, defects, EvalConfig(), filter_size=999)
    too_big = build_model("paper", rec_width=4, disc_width=4, image_size=32, score=ScoreConfig(filter_size=41))
    with pytest.raises(ConfigError, match=r"^score.filter_size=41: larger .*the model's own s_f .*--filter-size N"):
        evaluate_model(too_big, images, labels, masks, defects, EvalConfig())
    result = evaluate_model(model, images, labels, masks, defects, EvalConfig(), filter_size=31)
    assert result["filter_size"] == 31 and set(result["by_filter_size"]) == {"1", "5", "11", "21", "31"}  # 41 left out
    assert result["notes"] == [] and result["image_auroc"] is not None and result["aupro"] is not None


def test_notes_say_why_metrics_are_missing(model):
    result = evaluate_model(model, *split(12, 0), EvalConfig())
    assert result["image_auroc"] is None and result["pixel_auroc"] is None
    assert result["notes"] == [
        "image AUROC/AP/F1-max: the test split has no anomalous images (all 12 are under test/good); add anomalous "
        "test images (MVTec AD layout: test/<defect>/ folders, with ground_truth/<defect>/ masks for the pixel "
        "metrics)",
        "pixel AUROC/AP/F1-max/AUPRO: no ground-truth masks (there are no anomalous test images)"]
    result = evaluate_model(model, *split(3, 2, mask_pixels=0), EvalConfig())
    assert result["image_auroc"] is not None and result["pixel_auroc"] is None and result["aupro"] is None
    assert result["notes"] == [
        "pixel AUROC/AP/F1-max/AUPRO: every ground-truth mask is empty (no anomalous pixel in the 2 masks of the "
        "anomalous images at the 32x32 evaluation size); masks are non-zero where the defect is"]
    notes = metric_notes(*split(0, 4)[1:3])
    assert notes == ["image AUROC/AP/F1-max and per-defect AUROC: the test split has no normal images (all 4 are "
                     "anomalous; test/good/ is empty or missing)"]
    full = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    assert metric_notes(torch.tensor([1, 1]), full)[-1].startswith("pixel AUROC/AP/F1-max/AUPRO: every pixel")
