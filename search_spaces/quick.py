"""A tiny space for tests and the quickstart: paper-tiny widths, a short budget, CPU-friendly."""

METRIC = "best_val_score"  # validation score of the best checkpoint so far
MODE = "max"
BUDGET = 40          # iterations per search trial (ASHA's max_t)
FINAL_BUDGET = 800   # iterations of the final retraining of the best configuration (about a minute on a CPU)


def space(trial):
    trial.suggest_float("loss.ssim_weight", 0.3, 3.0, log=True)
    trial.suggest_float("loss.focal_gamma", 0.0, 4.0)
    trial.suggest_float("train.lr", 3e-4, 3e-3, log=True)
    return {
        "model.variant": "paper-tiny",
        "model.rec_width": 8,
        "model.disc_width": 8,
        "train.batch_size": 4,
        "synthesis.procedural_textures": 32,
        "eval.filter_sizes": [1, 5, 11, 21],
    }
