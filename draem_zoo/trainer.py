"""Training DRAEM: one optimisation step, and (issue 3) the loop around it."""

from __future__ import annotations

import torch

from .losses import LossConfig, LossTerms, draem_loss
from .model import DraemModel
from .synthesis import SynthBatch


def train_step(model: DraemModel, batch: SynthBatch, optimizer: torch.optim.Optimizer, loss_cfg: LossConfig,
               autocast_dtype: torch.dtype | None = None) -> LossTerms:
    """Forward both sub-networks on the augmented images, backprop the DRAEM loss, step.

    As the original, the focal loss reaches the reconstructive network through the
    reconstruction (no detach) and both sub-networks share one optimizer.
    """
    model.train()
    x = model.to_model_order(batch.augmented)
    target = model.to_model_order(batch.clean)
    device_type = x.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        rec, logits = model(x)
    terms = draem_loss(rec, target, logits, batch.mask, loss_cfg)
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    optimizer.step()
    return terms
