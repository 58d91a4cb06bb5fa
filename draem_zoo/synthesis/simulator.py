"""DRAEM's anomaly simulator, batched in torch on the training device.

For every sample of a batch of normal images (defaults are the original's values):

1. with probability ``base_rotation_prob`` (0.3) the image is rotated by U(-90, 90)
   degrees (black corners, as the original); the result is the reconstruction target;
2. with probability ``anomaly_prob`` (0.5) an anomaly is made, else the sample stays
   clean with an empty mask:
   * a Perlin mask (lattice 2^a x 2^b, a, b uniform in 0..5; rotated by U(-90, 90);
     thresholded at 0.5),
   * a texture from the bank given ``num_augmentations`` (3) distinct augmentations out
     of the original's 10, applied in the drawn order,
   * the blend ``I_a = (1 - M) I + (1 - beta) M A + beta M I`` with beta ~ U[0, 0.8).

All random numbers of a batch are drawn up front from one ``torch.Generator``, so the
result depends only on the seed (and the DDP rank, through :func:`make_generator`). Training
reseeds it for every batch from (seed, rank, batch index) alone (:func:`batch_seed`), so batch k is
the same whoever draws it and whenever: a resumed run, or a worker process, needs no state.
"Dense" mode (default on accelerators) applies every operation to the whole batch and
selects with ``torch.where``: no host syncs, so the GPU never waits. "Sparse" mode
(default on CPU) runs each operation only on the samples that drew it. Both give the
same result for the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..compiling import Compiled
from . import imageops as ops
from .augment import augment, draw_params
from .config import SynthesisConfig
from .perlin import gradient_angles, masks_from_draws
from .textures import TextureBank


@dataclass
class SynthBatch:
    clean: torch.Tensor  # (B, 3, H, W) float in [0, 1]: reconstruction target
    augmented: torch.Tensor  # (B, 3, H, W) float: network input, with simulated anomalies
    mask: torch.Tensor  # (B, 1, H, W) float 0/1
    has_anomaly: torch.Tensor  # (B,) float 0/1


def make_generator(seed: int, rank: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose stream is a well-mixed function of (seed, rank)."""
    state = int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device=torch.device(device)).manual_seed(state & ((1 << 63) - 1))


# which stream of a batch a seed is for: the images drawn from the cache, and the synthesis
STREAMS = {"sampler": 0, "synthesis": 1}


def batch_seed(seed: int, rank: int, batch: int, stream: str) -> int:
    """The seed of ``stream`` for batch ``batch`` of DDP rank ``rank``: a well-mixed function of the
    four alone (counter-based), so any batch can be regenerated without replaying the ones before."""
    state = np.random.SeedSequence([int(seed), int(rank), int(batch), STREAMS[stream]]).generate_state(
        1, dtype=np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def load_textures(cfg: SynthesisConfig, size: int | tuple[int, int], device: torch.device | str = "cpu",
                  progress: bool = False) -> TextureBank:
    """The texture bank a synthesis config names (a folder, or procedural textures)."""
    if cfg.anomaly_source:
        return TextureBank.from_folder(cfg.anomaly_source, size, device, cfg.max_textures, cfg.procedural_seed,
                                       progress=progress)
    return TextureBank.procedural(cfg.procedural_textures, size, device, cfg.procedural_seed)


class AnomalySynthesizer:
    """Turns batches of normal images into (clean, augmented, mask, has_anomaly)."""

    def __init__(self, cfg: SynthesisConfig, textures: TextureBank, generator: torch.Generator,
                 dense: bool | None = None, compile: bool = False):
        cfg.validate()
        self.cfg = cfg
        self.textures = textures
        self.generator = generator
        self.device = textures.images.device
        self.dense = self.device.type != "cpu" if dense is None else dense
        # dense mode is one fixed-shape function of the draws: torch.compile fuses its many small
        # kernels (falling back to eager, with one warning, where compilation cannot work)
        self._dense_fn = dense_synthesis
        if compile and self.dense:
            self._dense_fn = Compiled(dense_synthesis, what="anomaly synthesis")

    def draw(self, b: int) -> dict[str, torch.Tensor]:
        """Every random number one batch of ``b`` samples needs."""
        c, g, dev = self.cfg, self.generator, self.device

        def u(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=g, device=dev)

        def span(rng: tuple[float, float], *shape: int) -> torch.Tensor:
            return rng[0] + u(*shape) * (rng[1] - rng[0])

        lo, hi = c.perlin_scale
        return {
            "base_rot": u(b) < c.base_rotation_prob,
            "base_angle": (u(b) * 2 - 1) * c.base_rotation,
            "anomaly": u(b) < c.anomaly_prob,
            "res_y": 2 ** torch.randint(lo, hi + 1, (b,), generator=g, device=dev),
            "res_x": 2 ** torch.randint(lo, hi + 1, (b,), generator=g, device=dev),
            "mask_angle": (u(b) * 2 - 1) * c.mask_rotation,
            "grad_angles": gradient_angles(b, 2**hi, g, dev),
            "texture": torch.randint(0, len(self.textures), (b,), generator=g, device=dev),
            **draw_params(c, b, g, dev),
            "beta": span(c.beta, b),
        }

    def __call__(self, images: torch.Tensor) -> SynthBatch:
        """Synthesize from (B, 3, H, W) normal images (uint8, or float in [0, 1])."""
        if images.dtype == torch.uint8:
            x = torch.mul(images.to(self.device), 1.0 / 255.0)
        else:  # a private copy: the ops below update it in place
            x = images.to(self.device, torch.float32, copy=True)
        b, _, h, w = x.shape
        if (h, w) != self.textures.size:
            raise ValueError(f"images are {h}x{w} but the texture bank is {self.textures.size[0]}x"
                             f"{self.textures.size[1]}; build the bank at the training size")
        d = self.draw(b)
        if self.dense:  # whole batch; samples without an anomaly get a zero mask
            return SynthBatch(*self._dense_fn(x, d, self.textures.images, self.cfg.augmentations,
                                              self.cfg.perlin_threshold))
        # sparse: only the samples that drew an anomaly
        clean = self._apply(x, d["base_rot"], lambda t, i: ops.rotate(t, d["base_angle"][i]))
        idx = d["anomaly"].nonzero().flatten()
        if idx.numel() == 0:
            zeros = torch.zeros(b, 1, h, w, device=self.device)
            return SynthBatch(clean, clean.clone(), zeros, torch.zeros(b, device=self.device))
        mask = masks_from_draws(d["res_y"][idx], d["res_x"][idx], d["mask_angle"][idx], d["grad_angles"][idx],
                                h, w, self.cfg.perlin_threshold)
        tex = augment(self.textures.images[d["texture"][idx]], {k: v[idx] for k, v in d.items()},
                      self.cfg.augmentations, False)
        weight = mask * (1 - d["beta"][idx].view(-1, 1, 1, 1))
        augmented = clean.clone().index_add_(0, idx, tex.sub_(clean[idx]).mul_(weight))
        mask = torch.zeros(b, 1, h, w, device=self.device).index_copy_(0, idx, mask)
        has = (mask.flatten(1).amax(1) > 0).float()
        return SynthBatch(clean, augmented, mask, has)

    def _apply(self, x: torch.Tensor, sel: torch.Tensor, fn) -> torch.Tensor:
        """``fn`` on the samples where ``sel``, updating ``x`` in place (sparse mode; ``x`` is
        always this object's own tensor)."""
        idx = sel.nonzero().flatten()
        if idx.numel():
            x[idx] = fn(x[idx], idx)
        return x


def dense_synthesis(x: torch.Tensor, d: dict[str, torch.Tensor], textures: torch.Tensor,
                    augmentations: tuple[str, ...], threshold: float):
    """Dense mode: every operation on the whole batch, each sample keeping what it drew.

    A pure function of the images and the draws, with fixed shapes and no host syncs:
    returns (clean, augmented, mask, has_anomaly)."""
    h, w = x.shape[-2:]
    rotated = ops.rotate(x, d["base_angle"])
    clean = torch.where(d["base_rot"].view(-1, 1, 1, 1), rotated, x)
    keep = d["anomaly"].to(clean.dtype).view(-1, 1, 1, 1)
    mask = masks_from_draws(d["res_y"], d["res_x"], d["mask_angle"], d["grad_angles"], h, w, threshold) * keep
    tex = augment(textures[d["texture"]], d, augmentations, True)
    # (1 - M) I + (1 - beta) M A + beta M I  ==  I + (1 - beta) M (A - I)
    weight = mask * (1 - d["beta"].view(-1, 1, 1, 1))
    augmented = clean + (tex - clean) * weight
    has = (mask.flatten(1).amax(1) > 0).to(clean.dtype)
    return clean, augmented, mask, has
