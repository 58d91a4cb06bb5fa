"""Scoring models without and with labels: metrics, the synthetic validation set (six graded
anomaly families on held-out normals), decision thresholds, and test-split evaluation.

Hands on the validation score that selects checkpoints, s_f and search trials, the thresholds a
model ships with, and the test metrics that are reported, never used for selection."""

from .evaluate import EvalConfig, compute_maps, evaluate_model, score_maps
from .thresholds import compute_thresholds
from .validation import ValidationSet, make_validation_set, validation_metrics

__all__ = ["EvalConfig", "ValidationSet", "compute_maps", "compute_thresholds", "evaluate_model",
           "make_validation_set", "score_maps", "validation_metrics"]
