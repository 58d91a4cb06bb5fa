"""The bootstrap over held-out normals: exact AUROCs, honest spreads, and the rules that use them."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from draem_zoo.evaluation import bootstrap as bs


def test_auroc_is_scikit_learns_and_replicates_are_resampled_aurocs():
    rng = np.random.default_rng(0)
    normal, anomalous = rng.normal(0, 1, 20), rng.normal(1, 1, 30)
    kernel = bs.pairwise(anomalous, normal)
    ref = roc_auc_score(np.r_[np.zeros(20), np.ones(30)], np.r_[normal, anomalous])
    assert abs(bs.auroc(kernel) - ref) < 1e-12
    wn = bs.weights(20, 5)
    assert wn.shape == (5, 20) and (wn.sum(1) == 20).all()
    owner = np.arange(30) % 20  # anomaly j was made on normal owner[j]: it comes with it
    reps = bs.auroc(kernel, wn[:, owner], wn)
    for b in range(5):
        idx_n = np.repeat(np.arange(20), wn[b].astype(int))
        idx_a = np.concatenate([np.flatnonzero(owner == i).repeat(int(wn[b, i])) for i in range(20)])
        y = np.r_[np.zeros(len(idx_n)), np.ones(len(idx_a))]
        assert abs(reps[b] - roc_auc_score(y, np.r_[normal[idx_n], anomalous[idx_a]])) < 1e-12
    assert np.array_equal(bs.weights(20, 5), wn)  # seeded: every model sees the same resamples


def test_filter_size_moves_from_21_only_beyond_the_noise():
    rng = np.random.default_rng(1)
    base = rng.normal(0.8, 0.02, bs.N_BOOT)
    # a small gain that the paired noise swamps: s_f stays 21
    noisy = {5: base + 0.004 + rng.normal(0, 0.02, bs.N_BOOT), 21: base}
    size, info = bs.choose_filter_size({5: 0.804, 21: 0.8}, noisy)
    assert size == 21 and info["candidate"] == 5 and not info["moved"] and info["low"] < 0 < info["high"]
    # a clear paired gain moves it, and the record holds the interval
    clear = {5: base + 0.03 + rng.normal(0, 0.005, bs.N_BOOT), 21: base}
    size, info = bs.choose_filter_size({5: 0.83, 21: 0.8}, clear)
    assert size == 5 and info["moved"] and 0 < info["low"] < 0.03 < info["high"] and info["gain"] == 0.83 - 0.8
    # exact ties go to 21 (or the listed size nearest it) without a test
    flat = {s: base for s in (1, 5, 11)}
    assert bs.choose_filter_size({1: 0.9, 5: 0.9, 11: 0.9}, flat)[0] == 11
    size, info = bs.choose_filter_size({1: 0.9, 21: 0.9, 41: 0.9}, {s: base for s in (1, 21, 41)})
    assert size == 21 and info["tied"] == [1, 21, 41]


def test_a_later_checkpoint_wins_only_by_more_than_the_paired_noise():
    rng = np.random.default_rng(2)
    old = rng.normal(0.8, 0.03, bs.N_BOOT)
    jitter = rng.normal(0, 0.01, bs.N_BOOT)
    assert not bs.beats(list(old + 0.002 + jitter), list(old), 0.802, 0.8)  # within the noise: keep the earlier
    assert bs.beats(list(old + 0.05 + jitter), list(old), 0.85, 0.8)
    assert bs.beats(None, None, 0.81, 0.8) and not bs.beats(None, None, 0.8, 0.8)  # no replicates: plainly better
    assert bs.beats(list(old), None, 0.1, None)  # the first result is the best so far
