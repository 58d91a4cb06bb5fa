"""Pixel metrics from per-image histograms agree with scikit-learn's exact curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve

from draem_zoo.evaluation import pixelstats as px


def maps_and_masks(n: int = 12, size: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 1, size, size, dtype=torch.bool)
    for i in range(n):
        y, x = (int(v) for v in torch.randint(4, size - 12, (2,), generator=g))
        masks[i, 0, y: y + 8, x: x + 6] = i % 3 != 0
    # a sigmoid of a noisy logit: scores pile up near 0 and 1, as a trained model's do
    logit = -4 + 7 * masks.float() + 2.5 * torch.randn(n, 1, size, size, generator=g)
    return torch.sigmoid(logit), masks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_and_f1_agree_with_scikit_learn(seed):
    maps, masks = maps_and_masks(seed=seed)
    hist = px.histograms(maps, masks)
    assert hist.shape == (12, 2, px.BINS) and int(hist.sum()) == maps.numel()
    assert int(hist[:, 1].sum()) == int(masks.sum())
    y, s = masks.flatten().numpy(), maps.flatten().double().numpy()
    ref = average_precision_score(y, s)
    ap = px.average_precision(hist.sum(0).numpy())
    assert abs(ap - ref) < 1e-3, (ap, ref)
    p, r, _ = precision_recall_curve(y, s)
    ref_f1 = float(np.max(2 * p * r / np.maximum(p + r, 1e-12)))
    f1, thr = px.f1_max(hist.sum(0).numpy())
    assert abs(f1 - ref_f1) < 1e-3 and 0 < thr < 1
    # the threshold reproduces (within a bin) the F1 it was chosen for
    pred = s >= thr
    tp = (pred & y).sum()
    assert abs(2 * tp / (pred.sum() + y.sum()) - f1) < 2e-3


def test_sets_are_sums_and_bootstrap_replicates_are_weighted_sums():
    maps, masks = maps_and_masks()
    hist = px.histograms(maps, masks).numpy()
    w = np.array([[2.0] + [1.0] * 10 + [0.0], [1.0] * 12])
    reps = px.average_precision(np.einsum("bn,nkc->bkc", w, hist))
    sub = np.r_[0, 0, np.arange(1, 11)]  # image 0 twice, image 11 left out
    y, s = masks[sub].flatten().numpy(), maps[sub].flatten().double().numpy()
    assert abs(reps[0] - average_precision_score(y, s)) < 1e-3
    assert abs(reps[1] - px.average_precision(hist.sum(0))) < 1e-12
    assert px.average_precision(hist[[0, 3]].sum(0)) is None  # images 0 and 3 have no anomalous pixel


def test_fpr_threshold_bounds_the_normal_pixels_above_it():
    maps, masks = maps_and_masks()
    hist = px.histograms(maps, masks).sum(0).numpy()
    t = px.fpr_threshold(hist[0], 0.01)
    normal = maps[~masks].double().numpy()
    assert (normal >= t).mean() <= 0.01 + 1e-9
    assert (normal >= t).mean() > 0.007  # not far above: within a bin of the exact quantile


def test_scores_for_every_filter_size_from_one_summed_area_table_equal_avg_pool():
    from draem_zoo.model.scoring import image_scores, image_scores_by_size

    g = torch.Generator().manual_seed(0)
    maps = torch.rand(70, 1, 40, 56, generator=g) ** 4
    maps[3] = 0
    maps[5] = 0
    maps[5, 0, 0, 0] = 1  # corners: the zero padding counts, as in avg_pool2d(count_include_pad=True)
    maps[6, 0, -1, -1] = 1
    by = image_scores_by_size(maps, (1, 3, 11, 21, 41), chunk=16)  # several chunks; 41 wider than the map
    for s, v in by.items():
        assert v.shape == (70,) and v.dtype == torch.float32
        assert torch.allclose(v, image_scores(maps, s), atol=1e-6, rtol=0), s
    assert float(by[41][5]) == pytest.approx(1 / 41 ** 2, rel=1e-6)
    assert image_scores_by_size(maps[:0], (5,))[5].shape == (0,)
