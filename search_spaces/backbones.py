"""Backbone comparison: every variant once per seed, other hyperparameters at the paper's values."""

METRIC = "best_val_score"  # validation score of the best checkpoint so far
MODE = "max"
SAMPLER = "grid"
BACKBONES = ["paper", "paper-small", "paper-tiny", "timm-resnet18", "timm-efficientnet_b0",
             "timm-mobilenetv3_large_100", "timm-convnext_nano"]
GRID = {"model.variant": BACKBONES}
# the paper's model is trial 0 of every category (the grid sampler runs the points first, each once)
POINTS_TO_EVALUATE = [{"model.variant": "paper"}]
BUDGET = "700 epochs"       # the paper's budget, per category, for trials and finals alike
FINAL_BUDGET = "700 epochs"


def space(trial):
    trial.suggest_categorical("model.variant", BACKBONES)
    return {"loss.ssim_weight": 1.0, "loss.focal_gamma": 2.0, "train.lr": 1e-4, "train.batch_size": 8}
