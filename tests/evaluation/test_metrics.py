"""Metrics against scikit-learn and a hand-computed AUPRO case."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from draem_zoo.evaluation.metrics import aupro, image_metrics, pixel_metrics, pro_curve


def test_image_and_pixel_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = rng.random(300) + 0.6 * y
    m = image_metrics(y, s)
    assert abs(m["auroc"] - roc_auc_score(y, s)) < 1e-12
    assert abs(m["ap"] - average_precision_score(y, s)) < 1e-12
    best = max(f1_score(y, s >= t) for t in np.unique(s))
    assert abs(m["f1_max"] - best) < 1e-9
    assert abs(f1_score(y, s >= m["f1_threshold"]) - m["f1_max"]) < 1e-9
    masks = rng.random((4, 16, 16)) < 0.1
    maps = rng.random((4, 16, 16)) + 0.5 * masks
    p = pixel_metrics(masks, maps)
    assert abs(p["auroc"] - roc_auc_score(masks.ravel(), maps.ravel())) < 1e-6
    assert abs(p["ap"] - average_precision_score(masks.ravel(), maps.ravel())) < 1e-6


def test_single_class_gives_none():
    assert image_metrics(np.zeros(5), np.arange(5.0))["auroc"] is None
    assert pixel_metrics(np.zeros((2, 4, 4)), np.ones((2, 4, 4)))["ap"] is None
    assert aupro(np.zeros((1, 4, 4)), np.ones((1, 4, 4))) is None


def test_aupro_hand_computed_case():
    # one 3x4 image: region A = 2 pixels (left), region B = 1 pixel (right, not touching A),
    # 9 normal pixels. Scores: A gets 0.9 and 0.3, B gets 0.8, normals 0.7, 0.2 and seven 0.1s.
    mask = np.array([[1, 0, 0, 0],
                     [1, 0, 0, 1],
                     [0, 0, 0, 0]], dtype=bool)
    score = np.array([[0.9, 0.7, 0.1, 0.1],
                      [0.3, 0.2, 0.1, 0.8],
                      [0.1, 0.1, 0.1, 0.1]])
    fpr, pro = pro_curve(mask[None], score[None])
    # thresholds 0.9, 0.8, 0.7, 0.3, 0.2, 0.1:
    #   0.9: A half covered -> PRO (0.5 + 0)/2 = 0.25, FPR 0
    #   0.8: B covered      -> (0.5 + 1)/2 = 0.75, FPR 0
    #   0.7: one normal     -> 0.75, FPR 1/9
    #   0.3: A complete     -> 1.0, FPR 1/9
    #   0.2: second normal  -> 1.0, FPR 2/9
    #   0.1: all            -> 1.0, FPR 1
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 9, 1 / 9, 2 / 9, 1])
    np.testing.assert_allclose(pro, [0, 0.25, 0.75, 0.75, 1.0, 1.0, 1.0])
    # area up to FPR 0.3: vertical jumps add nothing; 0.75 on [0, 1/9], 1.0 on [1/9, 0.3]
    expected = (0.75 * (1 / 9) + 1.0 * (0.3 - 1 / 9)) / 0.3
    assert abs(aupro(mask[None], score[None]) - expected) < 1e-9


def test_aupro_regions_are_eight_connected_and_perfect_maps_score_one():
    mask = np.zeros((1, 8, 8), dtype=bool)
    mask[0, 1, 1] = mask[0, 2, 2] = True  # diagonal neighbours: one region
    _, pro = pro_curve(mask, np.where(mask, 1.0, 0.0))
    assert pro[1] == pytest.approx(1.0)  # both pixels at the top score belong to the single region
    rng = np.random.default_rng(1)
    masks = rng.random((3, 12, 12)) < 0.05
    assert aupro(masks, masks.astype(float) + 0.01 * rng.random(masks.shape)) == pytest.approx(1.0)
    # a constant map ranks like chance: the curve is the diagonal, area 0.3^2 / 2 / 0.3 = 0.15
    assert aupro(masks, np.zeros(masks.shape)) == pytest.approx(0.15)
    big = rng.random((20, 32, 32)) < 0.05
    assert aupro(big, rng.random(big.shape)) == pytest.approx(0.15, abs=0.03)


def test_fpr_threshold_flags_at_most_the_target_share():
    import torch

    from draem_zoo.evaluation.thresholds import fpr_threshold

    rng = np.random.default_rng(3)
    normals = rng.random(500).astype(np.float32)
    for fpr in (0.01, 0.05, 0.2):
        t = fpr_threshold(normals, fpr)
        assert (normals >= t).mean() <= fpr
        assert (normals >= np.nextafter(np.float32(t), np.float32(-1))).mean() > (normals >= t).mean() - 1e-9
        assert int((torch.from_numpy(normals) >= t).sum()) == int((normals >= t).sum())  # float32 == float64 view
    assert fpr_threshold(normals, 0.001) > normals.max()


@pytest.mark.parametrize("n_normal, expected, noted", [(4, 0.2, True), (299, 0.01, False)])
def test_thresholds_state_the_false_alarm_rate_few_normals_can_deliver(n_normal, expected, noted):
    import torch

    from draem_zoo.evaluation.thresholds import compute_thresholds
    from draem_zoo.evaluation.validation import ValidationSet

    g = torch.Generator().manual_seed(0)
    n = n_normal + 4
    maps = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    masks = torch.zeros(n, 1, 8, 8, dtype=torch.bool)
    masks[n_normal:, :, 2:5, 2:5] = True
    maps[masks] += 0.5
    vset = ValidationSet(torch.zeros(n, 3, 8, 8, dtype=torch.uint8), masks,
                         torch.tensor([0] * n_normal + [1] * 4), ["normal"] * n_normal + ["draem"] * 4)
    thr = compute_thresholds(maps, vset, filter_size=1, target_fpr=0.01)
    assert thr["n_validation_normals"] == n_normal
    assert thr["image_threshold_expected_fpr"] == pytest.approx(expected)  # (floor(0.01 n) + 1) / (n + 1)
    assert ("image_threshold_note" in thr) == noted
    if noted:
        assert "only 4 validation normals" in thr["image_threshold_note"]
