"""Training's configuration: the optimisation settings and the device they run on.

``TrainConfig`` is the ``train`` section of a run config (CLI ``--set train.*``, search suggestions and
replayed trials go through it); :func:`resolve_device` turns ``train.device`` into a torch device, or a
clear error where that device is not there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import ConfigError
from .budget import Budget, every
from .schedule import SCHEDULES, lr_at

PAPER_BATCH = 8


@dataclass
class TrainConfig:
    """Optimisation (defaults: the original's Adam 1e-4, batch 8, LR x0.2 at 80% and 90%).

    iterations: per rank; 0 = ``paper_epochs`` passes over the training images (700: the paper's
    budget), shared by the DDP workers. validations: how many times a run validates and
    checkpoints, evenly spaced (``val_every`` / ``checkpoint_every`` override the period).
    lr_scaling: scale ``lr`` with the batch size against the paper's 8 (``linear``: x batch/8,
    ``sqrt``: x sqrt(batch/8)), for large single-GPU batches; DDP's ``--lr-scaling`` multiplies in
    the number of workers on top. compile: ``torch.compile`` the model and the loss together
    (``compile_mode`` default / reduce-overhead / max-autotune, ``compile_backend`` inductor or any
    torch.compile backend); eager, after one warning, where it cannot work. ``auto`` (default):
    compiled on CUDA where Triton and a C compiler are there (:meth:`compiles`), eager on a CPU. synthesis_workers: ``auto`` |
    0 | N: N > 0 synthesises the batches in N CPU worker processes, ahead of the step (:mod:`.batches`);
    ``auto`` does so on CUDA when the process has at least two spare cores, and synthesises in process
    otherwise (on the device, or on the CPU when training on it); 0 always in process.

    The recipe (each off by default: the paper's): lr_schedule ``multistep`` (the paper's steps at
    ``lr_milestones``), ``cosine`` or ``onecycle``, with a linear ``warmup`` over a fraction of the budget
    (:mod:`.schedule`); ema_decay > 0 validates, checkpoints as best and exports an exponential moving
    average of the weights (:mod:`.ema`). validate_at: fractions of the budget to validate (and
    checkpoint) at instead of ``validations`` evenly spaced ones (``scripts/time_to_quality.py``'s
    log-spaced points); the end of the budget is always one.
    """

    iterations: int = 0
    paper_epochs: float = 700.0
    batch_size: int = 8
    lr: float = 1e-4
    lr_milestones: tuple[float, float] = (0.8, 0.9)
    lr_gamma: float = 0.2
    lr_schedule: Literal["multistep", "cosine", "onecycle"] = "multistep"
    warmup: float = 0.0
    ema_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    channels_last: bool = True
    compile: bool | Literal["auto"] = "auto"
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    compile_backend: str = "inductor"
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    report_every: int = 25
    validations: int = 5
    validate_at: tuple[float, ...] = ()
    val_every: int = 0
    checkpoint_every: int = 0
    export: Literal["best", "last"] = "best"
    synthesis_workers: int | Literal["auto"] = "auto"

    def validate(self) -> None:
        if self.iterations < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("train.iterations must be >= 0 (0 = paper budget), train.batch_size >= 1, train.lr > 0")
        if any(not 0 < m <= 1 for m in self.lr_milestones):
            raise ConfigError(f"train.lr_milestones={self.lr_milestones}: fractions of the budget in (0, 1]")
        if self.compile is True or self.compile_backend != "inductor":
            import torch._dynamo  # lazily: only when compiling

            if self.compile_backend not in torch._dynamo.list_backends(exclude_tags=()):
                raise ConfigError(f"train.compile_backend={self.compile_backend!r}: not a torch.compile backend "
                                  f"here; choose one of {', '.join(torch._dynamo.list_backends(exclude_tags=()))}")
        if self.report_every < 0 or self.val_every < 0 or self.checkpoint_every < 0 or self.validations < 1:
            raise ConfigError("train.report_every, train.val_every, train.checkpoint_every must be >= 0 and "
                              "train.validations >= 1")
        if self.synthesis_workers != "auto" and not 0 <= self.synthesis_workers <= 64:
            raise ConfigError(f"train.synthesis_workers={self.synthesis_workers}: auto, 0 (synthesis in the training "
                              "process) or the number of worker processes, 1 to 64")
        if not 0 <= self.warmup < 1 or not 0 <= self.ema_decay < 1:
            raise ConfigError(f"train.warmup={self.warmup}, train.ema_decay={self.ema_decay}: both in [0, 1) "
                              "(warmup: a fraction of the budget; ema_decay: 0 = off, e.g. 0.999)")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"train.lr_schedule={self.lr_schedule!r}: one of {', '.join(SCHEDULES)}")
        if any(not 0 < f <= 1 for f in self.validate_at):
            raise ConfigError(f"train.validate_at={list(self.validate_at)}: fractions of the budget in (0, 1]")
        if self.paper_epochs <= 0:
            raise ConfigError(f"train.paper_epochs={self.paper_epochs}: the epoch budget must be > 0")

    def compiles(self, device: torch.device) -> tuple[bool, str | None]:
        """Whether the step is compiled on ``device``, and, for ``auto`` where it cannot be, why not."""
        if self.compile != "auto":
            return bool(self.compile), None
        if device.type != "cuda":
            return False, None  # inductor's C++ code for a CPU: minutes of compiling for little gain
        missing = compile_prerequisites()
        return (False, missing) if missing else (True, None)

    def as_budget(self) -> Budget:
        return Budget(self.iterations, "iterations") if self.iterations else Budget(self.paper_epochs, "epochs")

    def budget(self, n_train: int, world_size: int = 1) -> int:
        """Iterations per rank: ``iterations``, or ``paper_epochs`` passes over ``n_train`` images
        shared by ``world_size`` DDP workers."""
        return self.as_budget().iterations(n_train, self.batch_size, world_size)

    def val_period(self, total: int) -> int:
        return self.val_every or every(total, self.validations)

    def val_points(self, total: int) -> list[int] | None:
        """The iterations ``validate_at`` names (each at least 1, the budget's end included), or None."""
        if not self.validate_at:
            return None
        return sorted({max(1, min(total, round(f * total))) for f in self.validate_at} | {total})

    def batch_lr_scale(self) -> float:
        """``lr_scaling`` against the paper's batch of 8: linear (batch / 8), sqrt, or none."""
        ratio = self.batch_size / PAPER_BATCH
        return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[self.lr_scaling]

    def lr_at(self, it: int, total: int) -> float:
        """The learning rate of step ``it`` (0-based) of ``total`` (:func:`.schedule.lr_at`), before scaling."""
        return lr_at(it, total, self.lr, self.lr_schedule, self.warmup, self.lr_milestones, self.lr_gamma)


def compile_prerequisites() -> str | None:
    """What torch.compile's inductor lacks on a CUDA machine (Triton, a C compiler for its launchers), or None."""
    import importlib.util
    import os
    import shutil

    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    if not any(shutil.which(c) for c in (os.environ.get("CC") or "cc", "gcc", "clang")):
        return "no C compiler (cc, gcc or clang) on PATH"
    return None


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is a GPU), or the device named; a CUDA device that is not there is an error
    here, before any data is read, rather than a traceback from the first tensor moved to it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device / train.device={name!r}: not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {name}: no CUDA GPU is available here (torch.cuda.is_available() is False; "
                              f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use --device cpu "
                              "or auto, or check the GPU with nvidia-smi")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name}: this machine has {count} CUDA GPU(s), numbered 0 to {count - 1}")
    elif device.type not in ("cpu", "mps", "xpu", "meta"):
        if not getattr(torch, device.type, None) or not getattr(getattr(torch, device.type), "is_available",
                                                                  lambda: False)():
            raise ConfigError(f"--device {name}: no {device.type} device is available here; use --device cpu or auto")
    return device
