"""The array functions a synthesis batch runs, by name.

Synthesis is a host-planned sequence of sub-batch operations (:mod:`.plan`); each function here
is one operation. They run eager: compiling each on its own kept making new graphs for the
sub-batch capacities (issue 27), and the step, not the synthesis, is what ``train.compile``
compiles.
"""

from __future__ import annotations

import torch

from . import imageops as ops
from .perlin import masks_from_draws
from .rectangles import rectangle_masks


def blend(clean: torch.Tensor, fill: torch.Tensor, mask: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``(1 - M) I + (1 - beta) M A + beta M I``, computed as ``(A - I) (1 - beta) M + I`` in one
    image-sized temporary (on a CPU, each one more costs as much as the arithmetic)."""
    out = fill - clean  # a plain colour fill (N, 3, 1, 1) broadcasts
    return out.mul_(mask * (1 - beta.view(-1, 1, 1, 1))).add_(clean)


FUNCTIONS = {
    "rotate": ops.rotate, "brightness": ops.brightness, "sharpness": ops.sharpness,
    "hue_saturation": ops.hue_saturation, "apply_lut": ops.apply_lut, "to_uint8": ops.to_uint8,
    "channel_histograms": ops.channel_histograms, "current_histogram": ops.current_histogram,
    "gamma": ops.lut_gamma, "solarize": ops.lut_solarize, "posterize": ops.lut_posterize, "invert": ops.lut_invert,
    "autocontrast": ops.lut_autocontrast, "equalize": ops.lut_equalize,
    "perlin_masks": masks_from_draws, "rectangle_masks": rectangle_masks, "blend": blend,
}


class Kernels:
    """``FUNCTIONS`` by name, as attributes."""

    def __init__(self):
        for name, fn in FUNCTIONS.items():
            setattr(self, name, fn)

    def __getitem__(self, name: str):
        return getattr(self, name)


EAGER = Kernels()
