"""The DRAEM model: reconstructive and discriminative sub-networks (the paper's or timm encoders),
the losses, the image score (s_f mean filter + thresholds) and the model directory format.

Hands on a :class:`~.draem.DraemModel` (``forward`` for training, ``predict`` for maps and scores)
and :func:`~.modeldir.save_model_dir` / :func:`~.modeldir.load_model_dir` (safetensors + config.json)."""

from .draem import DraemModel, Prediction, build_model
from .losses import LossConfig
from .modeldir import load_model_dir, save_model_dir
from .scoring import ScoreConfig
from .variants import ModelConfig, list_variants

__all__ = ["DraemModel", "LossConfig", "ModelConfig", "Prediction", "ScoreConfig", "build_model", "list_variants",
           "load_model_dir", "save_model_dir"]
