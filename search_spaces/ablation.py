"""The DRAEM paper's ablation (its Table 3) as a search: one grid point per row, each row retrained at
the final budget and tested, so that `draem-zoo compare` can put the rows beside the paper's numbers in
`results/ablation.md`.

    draem-zoo search --data DATA --space search_spaces/ablation.py --trials 9 --out results

Every row is the paper's DRAEM with one choice changed. Our reading of each row (the paper's
Section 4.3 defines them; where its wording leaves room, this is what the row here does):

* DRAEM: the method as published (both sub-networks, DTD textures augmented with 3 of the 10
  augmentations, Perlin masks, opacity beta ~ U[0, 0.8), the training image rotated with p 0.3).
* Disc.: the discriminative network alone (no reconstructive network): it sees only the augmented
  image and is trained with the focal loss (model.mode=discriminative).
* Recon.-AE: the reconstructive network alone, trained with L2 + SSIM to repaint the simulated
  anomalies; the anomaly map is its reconstruction error (model.mode=reconstructive).
* DRAEM_ImageNet: anomaly textures from ImageNet-like natural images instead of DTD: set
  DRAEM_ZOO_ABLATION_IMAGENET to a folder of such images (the row is left out without it).
* DRAEM_color: each simulated anomaly filled with one uniform random colour instead of a texture
  (synthesis.fill=color; still blended with beta).
* DRAEM_rect: rectangular anomaly masks instead of Perlin-noise masks (synthesis.mask_shape=rectangle).
* DRAEM_no-aug: no augmentation at all: the anomaly textures are used as they are
  (synthesis.num_augmentations=0) and the training image is not rotated (base_rotation_prob=0).
* DRAEM_img-aug: the anomaly textures are not augmented, the training image still is (rotation with
  p 0.3): "image augmentation" only (synthesis.num_augmentations=0).
* DRAEM_beta: no opacity blending: beta fixed at 0, so the texture replaces the masked region
  completely (synthesis.beta=[0, 0]).

The trial phase (BUDGET, a twentieth of the paper's) only checks that every row trains and scores it on
validation; FINAL_PER retrains every row, not only the best, at FINAL_BUDGET (the paper's 700 epochs)
and evaluates it on test. For a CPU, pass smaller budgets: --budget 40 --final-budget 300.
"""

import os

METRIC = "best_val_score"
MODE = "max"
SAMPLER = "grid"
BUDGET = "35 epochs"
FINAL_BUDGET = "700 epochs"
FINAL_PER = "_row"  # retrain each row's trial at the final budget, not only the best row's

ROWS = {
    "DRAEM": {},
    "Disc.": {"model.mode": "discriminative"},
    "Recon.-AE": {"model.mode": "reconstructive"},
    "DRAEM_color": {"synthesis.fill": "color"},
    "DRAEM_rect": {"synthesis.mask_shape": "rectangle"},
    "DRAEM_no-aug": {"synthesis.num_augmentations": 0, "synthesis.base_rotation_prob": 0.0},
    "DRAEM_img-aug": {"synthesis.num_augmentations": 0},
    "DRAEM_beta": {"synthesis.beta": [0.0, 0.0]},
}
if os.environ.get("DRAEM_ZOO_ABLATION_IMAGENET"):
    ROWS["DRAEM_ImageNet"] = {"synthesis.anomaly_source": os.environ["DRAEM_ZOO_ABLATION_IMAGENET"]}

GRID = {"_row": list(ROWS)}


def space(trial):
    row = trial.suggest_categorical("_row", list(ROWS))
    return dict(ROWS[row])
