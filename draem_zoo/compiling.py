"""``torch.compile`` with a one-time fall-back to eager mode.

Used by the training step (:mod:`draem_zoo.train.step`) and the dense anomaly synthesis
(:mod:`draem_zoo.synthesis.simulator`). Where compilation cannot work (no C++ compiler, a
backend that does not support the device, ...), :class:`Compiled` says so once, in one
warning, and runs the eager function from then on.
"""

from __future__ import annotations

import warnings

import torch


def is_compile_error(exc: BaseException) -> bool:
    """An error of torch.compile's machinery (dynamo, inductor, a backend), not of the model."""
    names = [type(e).__module__ for e in (exc, exc.__cause__, exc.__context__) if e is not None]
    return any(n.startswith(("torch._dynamo", "torch._inductor", "torch._functorch", "triton")) for n in names)


class Compiled:
    """``fn`` under ``torch.compile``, with a one-time fall-back to eager (one warning)."""

    def __init__(self, fn, mode: str = "default", backend: str = "inductor", what: str = "the training step"):
        self.eager = fn
        self.compiled = torch.compile(fn, mode=None if mode == "default" else mode, backend=backend)
        self.what = what
        self.failed: str | None = None

    def fall_back(self, exc: BaseException) -> None:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        self.failed = f"{type(exc).__name__}: {first}"
        warnings.warn(f"train.compile=true: torch.compile cannot work on this machine for {self.what} "
                      f"({self.failed}); it continues in eager mode (set train.compile=false to skip the attempt)",
                      RuntimeWarning, stacklevel=3)

    def __call__(self, *args):
        if self.failed is None:
            try:
                return self.compiled(*args)
            except Exception as exc:
                if not is_compile_error(exc):
                    raise
                self.fall_back(exc)
        return self.eager(*args)
