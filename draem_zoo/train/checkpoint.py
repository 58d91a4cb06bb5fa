"""Training checkpoints: model + optimizer + RNG states + iteration, with no pickles.

A checkpoint is a folder holding ``state.safetensors`` (every tensor: model weights,
optimizer moments, generator states) and ``meta.json`` (iteration, optimizer
hyperparameters, best validation score, the loss curve so far). The learning-rate schedule is a
function of the iteration, so the iteration restores it.

A save writes a new folder beside the old one, flushes it to disk (fsync), then renames the old
``last`` to ``.last.old``, the new one to ``last``, and deletes ``.last.old``. A crash at any point
leaves at least one complete checkpoint: ``last``, or (between the two renames) ``.last.old``, which
:func:`find_checkpoint` and :func:`load_checkpoint` fall back to, saying so. A damaged checkpoint
(truncated file, broken JSON) is an error naming the file, unless the other copy is intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import DraemZooError
from ..files import backup_of, ordinary_mode, swap_in, temp_dir, writing
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
    tmp = temp_dir(path.parent, f".{path.name}.")
    try:
        with writing(tmp / STATE):
            save_file(tensors, str(tmp / STATE))
        with writing(tmp / META):
            (tmp / META).write_text(json.dumps(full_meta, indent=1))
        ordinary_mode(tmp / STATE)  # safetensors writes 0600 whatever the umask
        swap_in(tmp, path)  # flushed, then renamed: `last` or `.last.old` is complete at every instant
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _complete(path: Path) -> bool:
    return (path / STATE).is_file() and (path / META).is_file()


def find_checkpoint(path: str | Path) -> Path | None:
    """``path`` when it holds a checkpoint, else its backup when a save was cut between its renames."""
    path = Path(path)
    for candidate in (path, backup_of(path)):
        if _complete(candidate):
            return candidate
    return None


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore model (and optimizer) in place; returns (rng states, meta). ``meta["loaded_from"]`` is the
    folder it came from: ``path``, or its backup when ``path`` is missing or damaged."""
    path = Path(path)
    candidates = [c for c in (path, backup_of(path)) if c.exists()]
    if not candidates:
        raise DraemZooError(f"{path}: no checkpoint there ({STATE} + {META}); run without --resume to start afresh")
    errors = []
    for candidate in candidates:
        try:
            rng, meta = _load(candidate, model, optimizer)
        except DraemZooError as exc:
            errors.append(str(exc))
            continue
        meta["loaded_from"] = str(candidate)
        return rng, meta
    raise DraemZooError(" and ".join(errors) + f"; delete {path.parent} (or train into another --out) to start afresh")


def _load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None
          ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not _complete(path):
        raise DraemZooError(f"{path}: an incomplete checkpoint (no {STATE} or {META})")
    try:
        tensors = load_file(str(path / STATE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DraemZooError(f"{path / STATE}: the checkpoint is damaged ({exc})") from None
    try:
        meta = json.loads((path / META).read_text())
        if not isinstance(meta, dict) or "iteration" not in meta:
            raise ValueError("no iteration recorded")
    except (OSError, ValueError) as exc:
        raise DraemZooError(f"{path / META}: the checkpoint's metadata is damaged ({exc})") from None
    device = next(model.parameters()).device
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    load_strict(model, {k: v.to(device) for k, v in weights.items()}, str(path / STATE))
    if optimizer is not None and "optimizer" in meta:
        opt_state = _unflatten_optimizer(tensors, meta["optimizer"])
        optimizer.load_state_dict(opt_state)
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return rng, meta
