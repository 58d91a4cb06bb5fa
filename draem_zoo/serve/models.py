"""The models a prediction run or the service loads: a spec (a model folder or ``hf-hub:ORG/NAME[@REV]``,
optionally named ``NAME=SPEC``) -> a loaded, hash-checked model, and what ``GET /models`` says about it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DraemZooError

HEADLINE = ("image_auroc", "pixel_auroc", "pixel_ap", "aupro")


def load_spec(spec: str, device: str = "cpu"):
    """A model folder or ``hf-hub:ORG/NAME[@REV]``, loaded strictly (as :func:`draem_zoo.load`)."""
    if str(spec).startswith("hf-hub:"):
        from ..hub.download import from_pretrained

        return from_pretrained(str(spec), device=device)
    if not Path(spec).exists() and str(spec).count("/") == 1 and not str(spec).startswith((".", "/")):
        raise DraemZooError(f"{spec}: no such folder; for a model on the Hugging Face Hub write hf-hub:{spec}")
    from ..model.modeldir import load_model_dir

    return load_model_dir(spec, device=device)


def split_named(spec: str) -> tuple[str | None, str]:
    """``NAME=SPEC`` -> (NAME, SPEC); a plain spec -> (None, spec)."""
    name, sep, rest = spec.partition("=")
    if sep and name and "/" not in name and ":" not in name:
        return name, rest
    return None, spec


def default_name(spec: str, metadata: dict[str, Any]) -> str:
    """The category the model was trained on (from its config), else the folder or repository name."""
    category = ((metadata.get("run") or {}).get("data") or {}).get("category")
    if category:
        return str(category)
    return Path(spec.removeprefix("hf-hub:").split("@")[0].rstrip("/")).name or "model"


def name_models(specs: list[str]) -> dict[str, str]:
    """{name: spec} for ``--model`` values, each loaded once here (on the CPU) so that a bad one is one error
    now, not a replica failing to start, and named after its category unless ``NAME=`` says otherwise; names
    are checked to be unique (a clash names both specs)."""
    out: dict[str, str] = {}
    for raw in specs:
        name, spec = split_named(raw)
        meta = getattr(load_spec(spec, "cpu"), "metadata", {}) or {}
        if name is None:
            name = default_name(spec, meta)
        if name in out:
            raise DraemZooError(f"--model {raw}: the name {name!r} is already taken by {out[name]}; name them "
                                f"apart: --model NAME={spec}")
        out[name] = spec
    return out


def headline_metrics(metadata: dict[str, Any]) -> dict[str, Any]:
    """The card's headline test metrics (image AUROC, pixel AUROC, pixel AP, AUPRO) where the model has them."""
    test = (metadata.get("metrics") or {}).get("test") or {}
    return {k: test[k] for k in HEADLINE if isinstance(test.get(k), (int, float))}


def model_info(name: str, spec: str, model) -> dict[str, Any]:
    """What ``GET /models`` says about one loaded model."""
    meta = getattr(model, "metadata", {}) or {}
    sc = model.score_config
    return {"name": name, "source": spec, "category": ((meta.get("run") or {}).get("data") or {}).get("category"),
            "variant": model.config.variant, "image_size": model.config.image_size, "filter_size": sc.filter_size,
            "threshold": sc.image_threshold, "pixel_threshold": sc.pixel_threshold, "precision": sc.precision,
            "metrics": headline_metrics(meta), "weights_sha256": meta.get("weights_sha256")}
