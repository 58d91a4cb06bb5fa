"""draem_zoo: DRAEM surface anomaly detection at cluster scale, shared as a model zoo.

    import draem_zoo
    model = draem_zoo.load("path/to/model_dir")        # safetensors + config.json
    model = draem_zoo.from_pretrained("ORG/draem-mvtec-bottle")   # from the Hugging Face Hub
    pred = model.predict(images)                        # RGB (B, 3, H, W) in [0, 1]
    pred.anomaly_map, pred.score
"""

from __future__ import annotations

from .__about__ import __version__
from .errors import ConfigError, DataError, DraemZooError
from .model import DraemModel, Prediction, build_model
from .variants import ModelConfig, list_variants


def load(spec: str, device: str = "cpu") -> DraemModel:
    """Load a model directory (``model.safetensors`` + ``config.json``) or ``hf-hub:ORG/NAME[@REV]``.

    Keys are checked strictly and the weights' sha256 against config.json.
    """
    from pathlib import Path

    if str(spec).startswith("hf-hub:"):
        return from_pretrained(str(spec), device=device)
    if not Path(spec).exists() and str(spec).count("/") == 1 and not str(spec).startswith((".", "/")):
        raise DraemZooError(f"{spec}: no such folder; for a model on the Hugging Face Hub write hf-hub:{spec}")
    from .export import load_model_dir

    return load_model_dir(spec, device=device)


def from_pretrained(repo_id: str, revision: str | None = None, device: str = "cpu", cache_dir: str | None = None,
                    token: str | None = None) -> DraemModel:
    """A published model from the Hugging Face Hub (or the local Hub cache, offline).

        model = draem_zoo.from_pretrained("acme/draem-mvtec-bottle", revision="v2")
    """
    from .hub.download import from_pretrained as _from_pretrained

    return _from_pretrained(repo_id, revision=revision, device=device, cache_dir=cache_dir, token=token)


__all__ = [
    "__version__", "ConfigError", "DataError", "DraemZooError", "DraemModel", "ModelConfig", "Prediction",
    "build_model", "from_pretrained", "list_variants", "load",
]
