"""How sure a validation score is: a bootstrap over the held-out normals, and the rules that use it.

The validation set is built on a few dozen held-out normal images; each normal carries the
anomalies made on it. Resampling the normals with replacement (a cluster bootstrap: a normal comes
with its anomalies) gives ``N_BOOT`` replicate scores from the same maps, at almost no cost: image
AUROCs are weighted Mann-Whitney counts over a small pairwise matrix, pixel APs weighted sums of
per-image histograms (:mod:`.pixelstats`). The resampling is seeded, so two models (or two
checkpoints) scored on the same validation set see the same replicates: their difference is paired.

* the anomalies are redrawn too: within each resampled normal, each anomaly gets a Poisson(1)
  weight (:func:`anomaly_weights`), so that the error covers the synthetic draw as well as the
  choice of normals (two models of one configuration differ by about this much);
* the score's standard error is the replicates' standard deviation;
* s_f moves away from the paper's 21 only when the gain of the best size over 21 has a one-sided
  ``CONFIDENCE`` lower bound above zero (:func:`choose_filter_size`); otherwise it stays 21;
* a later checkpoint replaces the best one only when it is better by more than one standard error
  of the paired difference (:func:`beats`): differences within the noise go to the earlier one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BOOT = 200
BOOT_SEED = 20240
CONFIDENCE = 0.95
PAPER_FILTER_SIZE = 21


def weights(n: int, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """(n_boot, n) resampling counts of n clusters (each row sums to n); the same for every model."""
    rng = np.random.default_rng([seed, n])
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64) if n else np.zeros((n_boot, 0))


def anomaly_weights(k: int, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """(n_boot, k) Poisson(1) weights of k images: the second level of the bootstrap, which redraws the
    synthetic anomalies within each resampled normal; the same for every model."""
    return np.random.default_rng([seed, 1, k]).poisson(1.0, (n_boot, k)).astype(np.float64)


def pairwise(anomalous: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """(A, N) Mann-Whitney kernel: 1 where an anomaly outscores a normal, 0.5 on a tie, else 0."""
    a, n = np.asarray(anomalous, np.float64)[:, None], np.asarray(normal, np.float64)[None, :]
    return (a > n) + 0.5 * (a == n)


def auroc(kernel: np.ndarray, wa: np.ndarray | None = None, wn: np.ndarray | None = None) -> np.ndarray | float:
    """AUROC from the pairwise kernel, unweighted (a float, equal to scikit-learn's) or per replicate
    with anomaly weights ``wa`` (B, A) and normal weights ``wn`` (B, N)."""
    if wa is None:
        return float(kernel.mean()) if kernel.size else float("nan")
    num = ((wa @ kernel) * wn).sum(1)  # BLAS: (B, A) @ (A, N), then the normals' weights
    den = wa.sum(1) * wn.sum(1)
    return np.divide(num, den, out=np.full(len(num), np.nan), where=den > 0)


def standard_error(replicates: np.ndarray) -> float:
    r = np.asarray(replicates, np.float64)
    r = r[np.isfinite(r)]
    return float(r.std(ddof=1)) if len(r) > 1 else float("nan")


def baseline_size(sizes: Sequence[int]) -> int:
    """The paper's 21, or the listed size nearest it."""
    return min(sizes, key=lambda s: (abs(s - PAPER_FILTER_SIZE), s))


def choose_filter_size(point: dict[int, float], replicates: dict[int, np.ndarray],
                       confidence: float = CONFIDENCE) -> tuple[int, dict]:
    """s_f: the paper's 21 unless the best-scoring size beats it beyond the noise.

    The candidate is the size with the highest score (exact ties: the one nearest 21); it replaces
    21 only when the ``confidence`` one-sided lower bound of its paired bootstrap gain over 21 is
    above zero. Returns the size and what the decision rested on."""
    sizes = sorted(point)
    base = baseline_size(sizes)
    top = max(point.values())
    tied = sorted(s for s, v in point.items() if v == top)
    cand = baseline_size(tied)
    info: dict = {"baseline": base, "candidate": cand, "tied": tied if len(tied) > 1 else None,
                  "rule": f"{base} unless the best size's paired bootstrap gain ({len(next(iter(replicates.values())))}"
                          f" resamples) has a one-sided {confidence:.0%} lower bound above 0"}
    if cand == base:
        info.update(gain=0.0, low=0.0, high=0.0, moved=False)
        return base, info
    diff = np.asarray(replicates[cand]) - np.asarray(replicates[base])
    diff = diff[np.isfinite(diff)]
    low = float(np.quantile(diff, 1 - confidence)) if len(diff) else float("nan")
    high = float(np.quantile(diff, confidence)) if len(diff) else float("nan")
    moved = bool(np.isfinite(low) and low > 0)
    info.update(gain=float(point[cand] - point[base]), low=low, high=high, moved=moved)
    return (cand if moved else base), info


def beats(new: Sequence[float] | None, old: Sequence[float] | None, new_score: float, old_score: float | None) -> bool:
    """Whether a new validation result replaces the best so far: better by more than one standard
    error of the paired difference of their replicates (or, without replicates, simply better)."""
    if old_score is None:
        return True
    if not new or not old or len(new) != len(old):
        return new_score > old_score
    diff = np.asarray(new, np.float64) - np.asarray(old, np.float64)
    diff = diff[np.isfinite(diff)]
    se = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    return new_score - old_score > se
