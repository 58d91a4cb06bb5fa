"""Training one model on one category's cached images: the step (model + loss, optionally
compiled), the loop (budget, LR schedule, callbacks, validation hook) and crash-safe checkpoints.

Hands on trained weights, the best-on-validation checkpoint and the loss curve; plain PyTorch, no Ray."""

from .trainer import TrainConfig, Trainer, resolve_device

__all__ = ["TrainConfig", "Trainer", "resolve_device"]
