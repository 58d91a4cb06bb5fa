"""A tiny space for tests and the quickstart: two small backbones, a short budget, CPU-friendly.

Each category's first two trials take one backbone each (POINTS_TO_EVALUATE), so that both
have a trial to compare; TPE draws the rest. Run with --backbones-final (as the quickstart
does) to retrain both backbones' best configurations at the final budget and compare those, or
with --front 2 to retrain and export the two configurations of the accuracy-speed front.
"""

METRIC = "best_val_score"  # validation score of the best checkpoint so far
MODE = "max"
BUDGET = 40          # iterations per search trial (ASHA's max_t): a toy budget for a CPU
FINAL_BUDGET = 600   # iterations of the final retraining (two to three minutes per backbone on one CPU core)
BACKBONES = ["paper-tiny", "timm-mobilenetv3_small_100"]
POINTS_TO_EVALUATE = [{"model.variant": b} for b in BACKBONES]


def space(trial):
    trial.suggest_categorical("model.variant", BACKBONES)
    trial.suggest_float("loss.ssim_weight", 0.3, 3.0, log=True)
    trial.suggest_float("loss.focal_gamma", 0.0, 4.0)
    trial.suggest_float("train.lr", 3e-4, 3e-3, log=True)
    return {
        "model.rec_width": 8,
        "model.disc_width": 8,
        "train.batch_size": 4,
        "synthesis.procedural_textures": 32,
        "eval.filter_sizes": [1, 5, 11, 21],
    }
