"""An exponential moving average of a model's weights and BatchNorm statistics (``train.ema_decay``).

The average is a second copy of the model on the same device, updated after every optimizer step with
``torch._foreach_lerp_`` (one fused pass over every floating-point tensor) and validated, checkpointed as
``best`` and exported instead of the raw weights. Integer buffers (BatchNorm's ``num_batches_tracked``)
are copied. The decay of update ``k`` (1-based) is ``min(decay, (1 + k) / (10 + k))``: the average
forgets its random start quickly at short budgets. Both depend on the iteration alone, and the average
is saved in ``checkpoints/last``, so a resumed run ends with the same averaged weights as one that was
never stopped.
"""

from __future__ import annotations

import copy

import torch


def decay_at(decay: float, k: int) -> float:
    """The decay of the ``k``-th update (1-based)."""
    return min(decay, (1.0 + k) / (10.0 + k))


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.model = copy.deepcopy(model)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._pairs = self._tensors(model)

    def _tensors(self, model: torch.nn.Module) -> tuple[list, list, list, list]:
        """(averaged, live) floating-point tensors and (averaged, live) others, in state-dict order."""
        mine, live = self.model.state_dict(keep_vars=True), model.state_dict(keep_vars=True)
        floats = [k for k, v in mine.items() if v.is_floating_point()]
        others = [k for k in mine if k not in floats]
        return ([mine[k].data for k in floats], [live[k].data for k in floats],
                [mine[k].data for k in others], [live[k].data for k in others])

    @torch.no_grad()
    def update(self, k: int) -> None:
        """Fold the live weights in after update ``k`` (1-based: the iteration just trained)."""
        avg, live, avg_int, live_int = self._pairs
        torch._foreach_lerp_(avg, live, 1.0 - decay_at(self.decay, k))
        for a, b in zip(avg_int, live_int):
            a.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
