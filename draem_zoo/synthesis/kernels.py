"""The array functions a synthesis batch runs, eager or each under ``torch.compile``.

Synthesis is a host-planned sequence of sub-batch operations (:mod:`.plan`), so the unit
of compilation is one operation, not the whole batch: each function here sees only the
few capacities of dense mode (:func:`.plan.capacity`) as batch sizes, whatever the draws. Where compiling
cannot work, the first failure says so in one warning and every function runs eager from
then on.
"""

from __future__ import annotations

import torch

from ..compiling import Compiled, is_compile_error
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
    """``FUNCTIONS`` by name, as attributes: eager, or compiled (``failed`` names why not, if so)."""

    def __init__(self, compile: bool = False):
        self.failed: str | None = None
        for name, fn in FUNCTIONS.items():
            setattr(self, name, self._compiled(fn) if compile else fn)

    def __getitem__(self, name: str):
        return getattr(self, name)

    def _compiled(self, fn):
        c = Compiled(fn, what="anomaly synthesis")

        def call(*args):
            if self.failed is None:
                try:
                    return c.compiled(*args)
                except Exception as exc:
                    if not is_compile_error(exc):
                        raise
                    c.fall_back(exc)  # the one warning; every function goes eager
                    self.failed = c.failed
            return c.eager(*args)

        return call


EAGER = Kernels()
