"""Training checkpoints: model + optimizer + RNG states + iteration, with no pickles.

A checkpoint is a folder holding ``state.safetensors`` (every tensor: model weights,
optimizer moments, generator states) and ``meta.json`` (iteration, optimizer
hyperparameters, best validation score, the loss curve so far). It is written to a
temporary folder and renamed into place, so a crash leaves either the old or the new
checkpoint, never half of one. The learning-rate schedule is a function of the
iteration, so the iteration restores it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import DraemZooError
from ..model.modeldir import load_strict

STATE = "state.safetensors"
META = "meta.json"


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{pid}.{name}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    rng: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    full_meta = dict(meta)
    if optimizer is not None:
        opt_tensors, opt_meta = _flatten_optimizer(optimizer)
        tensors.update(opt_tensors)
        full_meta["optimizer"] = opt_meta
    tensors.update({f"rng.{k}": v.cpu().contiguous() for k, v in rng.items()})
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(tensors, str(tmp / STATE))
        (tmp / META).write_text(json.dumps(full_meta, indent=1))
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore model (and optimizer) in place; returns (rng states, meta)."""
    path = Path(path)
    if not (path / STATE).is_file() or not (path / META).is_file():
        raise DraemZooError(f"{path}: no checkpoint there ({STATE} + {META}); run without --resume to start afresh")
    tensors = load_file(str(path / STATE))
    meta = json.loads((path / META).read_text())
    device = next(model.parameters()).device
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    load_strict(model, {k: v.to(device) for k, v in weights.items()}, str(path / STATE))
    if optimizer is not None and "optimizer" in meta:
        opt_state = _unflatten_optimizer(tensors, meta["optimizer"])
        optimizer.load_state_dict(opt_state)
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return rng, meta
