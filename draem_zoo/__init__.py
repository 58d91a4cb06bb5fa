"""draem_zoo: DRAEM surface anomaly detection at cluster scale, shared as a model zoo.

    import draem_zoo
    model = draem_zoo.load("path/to/model_dir")        # safetensors + config.json
    model = draem_zoo.from_pretrained("ORG/draem-mvtec-bottle")   # from the Hugging Face Hub
    pred = model.predict(images)                        # RGB (B, 3, H, W) in [0, 1]
    pred.anomaly_map, pred.score

The package reads top-down as the data flows (each sub-package's docstring says what it hands
on): ``data`` -> ``synthesis`` -> ``model`` -> ``train`` -> ``evaluation`` -> ``pipeline`` (one
category end to end) -> ``search`` / ``paper`` -> ``export`` -> ``hub`` -> ``cli``. Imports go
down that list only. This module is the public API and stays thin: the model classes load on
first use, and nothing here imports Ray, ONNX or the Hugging Face Hub client.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .__about__ import __version__
from .errors import ConfigError, DataError, DraemZooError

if TYPE_CHECKING:
    from .model.draem import DraemModel, Prediction, build_model
    from .model.variants import ModelConfig, list_variants

# public name -> module that defines it, imported on first use (PEP 562): `import draem_zoo`
# does not import torch, and the CLI starts fast
_LAZY = {"DraemModel": "model.draem", "Prediction": "model.draem", "build_model": "model.draem",
         "ModelConfig": "model.variants", "list_variants": "model.variants"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'draem_zoo' has no attribute {name!r}")


def load(spec: str, device: str = "cpu") -> DraemModel:
    """Load a model directory (``model.safetensors`` + ``config.json``) or ``hf-hub:ORG/NAME[@REV]``.

    Keys are checked strictly, the weights' sha256 against config.json, and config.json against its own
    ``config_sha256`` (a hand-edited threshold or s_f is refused).
    """
    if str(spec).startswith("hf-hub:"):
        return from_pretrained(str(spec), device=device)
    if not Path(spec).exists() and str(spec).count("/") == 1 and not str(spec).startswith((".", "/")):
        raise DraemZooError(f"{spec}: no such folder; for a model on the Hugging Face Hub write hf-hub:{spec}")
    from .model.modeldir import load_model_dir  # the model classes (torch), on first use

    return load_model_dir(spec, device=device)


def from_pretrained(repo_id: str, revision: str | None = None, device: str = "cpu", cache_dir: str | None = None,
                    token: str | None = None) -> DraemModel:
    """A published model from the Hugging Face Hub (or the local Hub cache, offline).

        model = draem_zoo.from_pretrained("acme/draem-mvtec-bottle", revision="v2")
    """
    from .hub.download import from_pretrained as _from_pretrained  # the Hub client, only when asked for

    return _from_pretrained(repo_id, revision=revision, device=device, cache_dir=cache_dir, token=token)


__all__ = [
    "__version__", "ConfigError", "DataError", "DraemZooError", "DraemModel", "ModelConfig", "Prediction",
    "build_model", "from_pretrained", "list_variants", "load",
]
