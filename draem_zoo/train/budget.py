"""Training budgets in one unit: epochs (passes over a category's training images, as the paper
counts) or iterations, resolved per category and per DDP world size.

    parse_budget("100 epochs")   -> Budget(100.0, "epochs")      also "100ep", "100 epoch"
    parse_budget("20000")        -> Budget(20000, "iterations")  also "20000 iterations", "20000it"
    parse_budget(0)              -> the paper's budget, 700 epochs

The paper's budget is a number of *samples*: 700 passes over the N training images. With W DDP
workers each drawing a batch of b per iteration, one iteration consumes b * W samples, so each
rank runs ``round(700 * N / (b * W))`` iterations: DDP buys time, not extra samples. An
iteration budget is per rank as written (W workers then see W times the samples).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

PAPER_EPOCHS = 700.0
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(epochs?|ep|iterations?|its?|iters?)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    value: float
    unit: Literal["epochs", "iterations"]

    def iterations(self, n_train: int, batch_size: int, world_size: int = 1) -> int:
        """Iterations per rank for ``n_train`` training images."""
        if self.unit == "iterations":
            return int(self.value)
        return max(1, round(self.value * n_train / (batch_size * max(1, world_size))))

    def overrides(self) -> dict[str, float | int]:
        """The ``train.*`` config keys that stand for this budget."""
        if self.unit == "iterations":
            return {"train.iterations": int(self.value)}
        return {"train.iterations": 0, "train.paper_epochs": float(self.value)}

    def __str__(self) -> str:
        v = int(self.value) if float(self.value).is_integer() else self.value
        return f"{v} {self.unit}"


def parse_budget(spec: str | int | float | Budget | None, what: str = "--budget") -> Budget | None:
    """A budget from a space file or the command line; None stays None; 0 is the paper's 700 epochs."""
    if spec is None or isinstance(spec, Budget):
        return spec
    if isinstance(spec, bool):
        raise ConfigError(f"{what} {spec!r}: give a number of iterations or epochs, e.g. 20000 or '100 epochs'")
    if isinstance(spec, (int, float)):
        if spec < 0 or (isinstance(spec, float) and not spec.is_integer()):
            raise ConfigError(f"{what} {spec!r}: iterations are a whole number >= 0 (0 = the paper's 700 epochs); "
                              "for epochs write e.g. '100 epochs'")
        return Budget(PAPER_EPOCHS, "epochs") if spec == 0 else Budget(int(spec), "iterations")
    m = _PATTERN.match(str(spec))
    if not m:
        raise ConfigError(f"{what} {spec!r}: write a number of iterations (20000, '20000 iterations') or of epochs "
                          "('100 epochs', '100ep'); 0 = the paper's 700 epochs")
    value, unit = float(m.group(1)), (m.group(2) or "iterations").lower()
    if unit.startswith("ep"):
        if value <= 0:
            raise ConfigError(f"{what} {spec!r}: a number of epochs must be > 0")
        return Budget(value, "epochs")
    if not value.is_integer():
        raise ConfigError(f"{what} {spec!r}: iterations are a whole number")
    return Budget(PAPER_EPOCHS, "epochs") if value == 0 else Budget(int(value), "iterations")


def every(total: int, times: int) -> int:
    """The period that makes ``times`` evenly spaced events over ``total`` iterations (the last at the end)."""
    return max(1, math.ceil(total / max(1, times)))
