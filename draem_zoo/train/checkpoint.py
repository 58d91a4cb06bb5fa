"""Training checkpoints: model + optimizer + RNG states + iteration, with no pickles.

A checkpoint is a folder holding ``state.safetensors`` (every tensor: model weights,
optimizer moments, generator states) and ``meta.json`` (iteration, optimizer
hyperparameters, best validation score, the loss curve so far). The learning-rate schedule is a
function of the iteration, so the iteration restores it.

A save takes host copies of the state (into pinned buffers from a GPU) and writes them in a
background thread (:class:`CheckpointWriter`), so training goes on during the write. It writes a
new folder beside the old one, flushes it to disk (fsync), then renames the old
``last`` to ``.last.old``, the new one to ``last``, and deletes ``.last.old``. A crash at any point
leaves at least one complete checkpoint: ``last``, or (between the two renames) ``.last.old``, which
:func:`find_checkpoint` and :func:`load_checkpoint` fall back to, saying so. A damaged checkpoint
(truncated file, broken JSON) is an error naming the file, unless the other copy is intact.
"""

from __future__ import annotations

import json
import shutil
import threading
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
    """The optimizer's tensors (live references: :func:`host_copies` copies them) and its scalars."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value.detach()
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


def host_copies(live: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor] | None = None
                ) -> dict[str, torch.Tensor]:
    """One host copy of each tensor, taken now (training goes on changing the live ones in place).

    From a GPU: into pinned ``buffers`` (kept by the caller and reused from save to save), every copy
    queued without blocking, then one wait for them all; from the CPU: a clone (the old code copied GPU
    tensors twice, ``.cpu()`` then ``.clone()``)."""
    out: dict[str, torch.Tensor] = {}
    cuda = False
    for k, v in live.items():
        if v.device.type != "cuda":
            out[k] = v.detach().contiguous().clone()
            continue
        cuda = True
        buf = None if buffers is None else buffers.get(k)
        if buf is None or buf.shape != v.shape or buf.dtype != v.dtype:
            buf = torch.empty(v.shape, dtype=v.dtype, pin_memory=True)
            if buffers is not None:
                buffers[k] = buf
        out[k] = buf.copy_(v.detach(), non_blocking=True)
    if cuda:
        torch.cuda.synchronize()
    return out


def checkpoint_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, rng: dict[str, torch.Tensor],
                     meta: dict[str, Any], buffers: dict[str, torch.Tensor] | None = None,
                     average: torch.nn.Module | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The host copies of everything a checkpoint holds, and its metadata: what :func:`write_checkpoint` writes.
    ``average``: the weight average (``train.ema_decay``), kept beside the weights as ``average.*``."""
    live = {f"model.{k}": v for k, v in model.state_dict().items()}
    if average is not None:
        live.update({f"average.{k}": v for k, v in average.state_dict().items()})
    full_meta = dict(meta)
    if optimizer is not None:
        opt_tensors, opt_meta = _flatten_optimizer(optimizer)
        live.update(opt_tensors)
        full_meta["optimizer"] = opt_meta
    live.update({f"rng.{k}": v for k, v in rng.items()})
    return host_copies(live, buffers), full_meta


def write_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write a checkpoint folder: a new folder beside ``path``, flushed, then swapped in (the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(path.parent, f".{path.name}.")
    try:
        with writing(tmp / STATE):
            save_file(tensors, str(tmp / STATE))
        with writing(tmp / META):
            (tmp / META).write_text(json.dumps(meta, indent=1))
        ordinary_mode(tmp / STATE)  # safetensors writes 0600 whatever the umask
        swap_in(tmp, path)  # flushed, then renamed: `last` or `.last.old` is complete at every instant
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    rng: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """A checkpoint of the state now, written before returning."""
    return write_checkpoint(path, *checkpoint_state(model, optimizer, rng, meta))


class CheckpointWriter:
    """Checkpoints written in a background thread, so that the next iterations run during the write and
    its fsync: :meth:`save` takes the host copies now (the state of this iteration) and returns; the
    folder is renamed into place last, as always, so a crash still leaves the previous checkpoint
    whole. A slot (``last``, ``best``) waits for its previous write before it reuses its pinned
    buffers; a write's error is raised in the training thread at the next :meth:`save` or :meth:`wait`."""

    def __init__(self, background: bool = True):
        self.background = background
        self._threads: dict[str, threading.Thread] = {}
        self._errors: list[BaseException] = []
        self._buffers: dict[str, dict[str, torch.Tensor]] = {}

    def save(self, path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
             rng: dict[str, torch.Tensor], meta: dict[str, Any], average: torch.nn.Module | None = None) -> None:
        slot = Path(path).name
        self.wait(slot)
        tensors, full_meta = checkpoint_state(model, optimizer, rng, meta, self._buffers.setdefault(slot, {}),
                                              average)
        if not self.background:
            write_checkpoint(path, tensors, full_meta)
            return

        def run() -> None:
            try:
                write_checkpoint(path, tensors, full_meta)
            except BaseException as exc:  # raised in the training thread (wait)
                self._errors.append(exc)

        thread = threading.Thread(target=run, name=f"checkpoint-{slot}", daemon=True)
        self._threads[slot] = thread
        thread.start()

    def wait(self, slot: str | None = None, raise_errors: bool = True) -> None:
        """Until ``slot``'s write (every slot's, None) is on disk; then its error, if one failed."""
        for name in [slot] if slot else list(self._threads):
            thread = self._threads.pop(name, None) if name else None
            if thread is not None:
                thread.join()
        if self._errors and raise_errors:
            raise self._errors.pop(0)


def _complete(path: Path) -> bool:
    return (path / STATE).is_file() and (path / META).is_file()


def find_checkpoint(path: str | Path) -> Path | None:
    """``path`` when it holds a checkpoint, else its backup when a save was cut between its renames."""
    path = Path(path)
    for candidate in (path, backup_of(path)):
        if _complete(candidate):
            return candidate
    return None


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    average: torch.nn.Module | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore model (and optimizer, and the weight ``average``) in place; returns (rng states, meta).
    ``meta["loaded_from"]`` is the folder it came from: ``path``, or its backup when ``path`` is missing or
    damaged."""
    path = Path(path)
    candidates = [c for c in (path, backup_of(path)) if c.exists()]
    if not candidates:
        raise DraemZooError(f"{path}: no checkpoint there ({STATE} + {META}); run without --resume to start afresh")
    errors = []
    for candidate in candidates:
        try:
            rng, meta = _load(candidate, model, optimizer, average)
        except DraemZooError as exc:
            errors.append(str(exc))
            continue
        meta["loaded_from"] = str(candidate)
        return rng, meta
    raise DraemZooError(" and ".join(errors) + f"; delete {path.parent} (or train into another --out) to start afresh")


def _load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
          average: torch.nn.Module | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
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
    if average is not None:
        averaged = {k[len("average."):]: v.to(device) for k, v in tensors.items() if k.startswith("average.")}
        if not averaged:
            raise DraemZooError(f"{path / STATE}: holds no weight average (train.ema_decay was 0 when it was saved)")
        load_strict(average, averaged, str(path / STATE))
    if optimizer is not None and "optimizer" in meta:
        opt_state = _unflatten_optimizer(tensors, meta["optimizer"])
        optimizer.load_state_dict(opt_state)
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return rng, meta
