"""draem_zoo: DRAEM surface anomaly detection at cluster scale, shared as a model zoo.

    import draem_zoo
    model = draem_zoo.load("path/to/model_dir")        # safetensors + config.json
    pred = model.predict(images)                        # RGB (B, 3, H, W) in [0, 1]
    pred.anomaly_map, pred.score
"""

from __future__ import annotations

from .__about__ import __version__
from .errors import ConfigError, DataError, DraemZooError
from .model import DraemModel, Prediction, build_model
from .variants import ModelConfig, list_variants


def load(path: str, device: str = "cpu") -> DraemModel:
    """Load a model directory (``model.safetensors`` + ``config.json``) with strict key checks."""
    from .export import load_model_dir

    return load_model_dir(path, device=device)


__all__ = [
    "__version__", "ConfigError", "DataError", "DraemZooError", "DraemModel", "ModelConfig", "Prediction",
    "build_model", "list_variants", "load",
]
