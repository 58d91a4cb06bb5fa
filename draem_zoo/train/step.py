"""The differentiable part of a training step: both sub-networks and the DRAEM loss, as one module.

The model is asked for the SSPCAB block's input and output too (``with_sspcab=True``: None for a
model without SSPCAB), so that DRAEM+SSPCAB's self-reconstruction loss goes into the same graph;
the terms a model's mode has no sub-network for (``model.mode``) come back as 0 (see
:func:`~draem_zoo.model.losses.draem_loss`). The step returns (total, l2, ssim, focal, sspcab).

``ForwardLoss`` is what ``train.compile=true`` hands to ``torch.compile`` (model and loss in one
graph, so the loss's many small kernels fuse with the model's last ones; ``train.compile_mode``
passes ``reduce-overhead`` (CUDA graphs) or ``max-autotune`` through). A compiled module is
called, never tested for truth. Where compilation cannot work (no C++ compiler, a backend
that does not support the device, ...), :class:`Compiled` says so once, in one warning,
and trains on in eager mode with the same weights: compilation fails before any weight
changes (forward) or before the optimizer steps (backward), so nothing is lost.
"""

from __future__ import annotations

import torch

from ..compiling import Compiled, is_compile_error
from ..model.losses import LossConfig, LossTerms, draem_loss


class ForwardLoss(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, loss_cfg: LossConfig, autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.net = net
        self.loss_cfg = loss_cfg
        self.autocast_dtype = autocast_dtype

    def forward(self, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        amp = self.autocast_dtype is not None
        with torch.autocast(x.device.type, dtype=self.autocast_dtype or torch.bfloat16, enabled=amp):
            rec, logits, sspcab_io = self.net(x, with_sspcab=True)
        t = draem_loss(rec, target, logits, mask, self.loss_cfg, sspcab_io)
        return t.total, t.l2, t.ssim, t.focal, t.sspcab


def run_step(step, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
             optimizer: torch.optim.Optimizer) -> LossTerms:
    """Forward + loss through ``step``, backward, optimizer step. A compile error in the
    backward (compiled lazily at its first call) falls back and redoes the step in eager."""
    total, l2, ss, fl, sp = step(x, target, mask)
    optimizer.zero_grad(set_to_none=True)
    try:
        total.backward()
    except Exception as exc:
        if not (isinstance(step, Compiled) and step.failed is None and is_compile_error(exc)):
            raise
        step.fall_back(exc)
        optimizer.zero_grad(set_to_none=True)
        total, l2, ss, fl, sp = step.eager(x, target, mask)
        total.backward()
    optimizer.step()
    return LossTerms(total, l2, ss, fl, sp)
