"""DRAEM's anomaly simulator, batched in torch on the training device.

For every sample of a batch of normal images (defaults are the original's values):

1. with probability ``base_rotation_prob`` (0.3) the image is rotated by U(-90, 90)
   degrees (black corners, as the original); the result is the reconstruction target;
2. with probability ``anomaly_prob`` (0.5) an anomaly is made, else the sample stays
   clean with an empty mask:
   * a Perlin mask (lattice 2^a x 2^b, a, b uniform in 0..5; rotated by U(-90, 90);
     thresholded at 0.5), or rectangles (``mask_shape``, :mod:`.rectangles`),
   * a texture from the bank given ``num_augmentations`` (3) distinct augmentations out
     of the original's 10, applied in the drawn order, or one plain colour (``fill``),
   * the blend ``I_a = (1 - M) I + (1 - beta) M A + beta M I`` with beta ~ U[0, 0.8).

All random numbers of a batch are drawn up front, on the host, from one CPU
``torch.Generator``, so the result depends only on the seed (and the DDP rank, through
:func:`make_generator`), on any device: batch k is the same on a CPU, a GPU or in a data
loader worker, up to float rounding. Training reseeds the generator for every batch from
(seed, rank, batch index) alone (:func:`batch_seed`), so batch k is the same whoever draws
it and whenever: a resumed run, or a worker process, needs no state.

Drawing on the host (the device gets about 1,100 numbers per anomalous sample, mostly its
Perlin gradient lattice, in one non-blocking copy per dtype) is what lets the work be only
the needed work without host syncs: the host knows which samples are rotated, which get
an anomaly and which augmentation each drew where, without reading anything back from the
device. So every operation runs only on the samples that need it (:mod:`.plan`); the
~half of a batch that stays clean gets no mask and no texture work. "Dense" mode (default
on accelerators) runs each operation once per batch (per position, for the texture
augmentations), on the sub-batch of the samples that drew it, padded with repeats of a
member to one of a few fixed capacities (powers of two and multiples of B / 4): each
operation sees only a few shapes. (It used to be compiled too, each operation on its own: its
sub-batch capacities kept making new graphs for minutes of training, and with CPU synthesis
workers it is off the step's critical path anyway; ``train.compile`` compiles the step only.)
"Sparse" mode (default on CPU) uses exact sub-batches and runs
each texture's augmentation chain on its own, which a CPU's cache favours
(:mod:`.augment`). Both give the same batch for the same seed. (Dense mode used to run
every operation on the whole batch and keep, per sample, the one it drew with
``torch.where``: no host syncs either, but about ten times the image work.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .augment import augment_rows, draw_params, plan_augment, run_augment, upload_params
from .config import SynthesisConfig
from .kernels import EAGER
from .perlin import gradient_angles
from .plan import Upload, pad_rows, put_rows, take_rows
from .rectangles import draw_rectangles
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


# the draws each mask shape and each fill reads, for the samples with an anomaly
MASK_KEYS = {"perlin": ("res_y", "res_x", "mask_angle", "grad_angles"),
             "rectangle": ("rect_count", "rect_centre", "rect_size", "rect_angle")}
FILL_KEYS = {"texture": ("texture",), "color": ("fill_color",)}


class AnomalySynthesizer:
    """Turns batches of normal images into (clean, augmented, mask, has_anomaly).

    ``generator`` draws every random number on the host; a generator made for another device
    (``make_generator(seed, rank, device)``) is replaced by a CPU one with the same seed, which
    is what ``make_generator(seed, rank)`` gives."""

    def __init__(self, cfg: SynthesisConfig, textures: TextureBank, generator: torch.Generator,
                 dense: bool | None = None):
        cfg.validate()
        self.cfg = cfg
        self.textures = textures
        if generator.device.type != "cpu":
            generator = torch.Generator().manual_seed(generator.initial_seed())
        self.generator = generator
        self.device = textures.images.device
        self.dense = self.device.type != "cpu" if dense is None else dense
        self.kernels = EAGER

    def draw(self, b: int) -> dict[str, torch.Tensor]:
        """Every random number one batch of ``b`` samples needs, as CPU tensors."""
        c, g = self.cfg, self.generator

        def u(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=g)

        def span(rng: tuple[float, float], *shape: int) -> torch.Tensor:
            return rng[0] + u(*shape) * (rng[1] - rng[0])

        lo, hi = c.perlin_scale
        d = {
            "base_rot": u(b) < c.base_rotation_prob,
            "base_angle": (u(b) * 2 - 1) * c.base_rotation,
            "anomaly": u(b) < c.anomaly_prob,
            "res_y": 2 ** torch.randint(lo, hi + 1, (b,), generator=g),
            "res_x": 2 ** torch.randint(lo, hi + 1, (b,), generator=g),
            "mask_angle": (u(b) * 2 - 1) * c.mask_rotation,
            "grad_angles": gradient_angles(b, 2**hi, g),
            "texture": torch.randint(0, len(self.textures), (b,), generator=g),
            **draw_params(c, b, g, "cpu"),
            "beta": span(c.beta, b),
        }
        # the options' draws come last: the default stream is the same with or without them
        if c.mask_shape == "rectangle":
            d.update(draw_rectangles(c, b, g))
        if c.fill == "color":
            d["fill_color"] = torch.randint(0, 256, (b, 3), generator=g).float() / 255.0
        return d

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
        c, k = self.cfg, self.kernels
        d = self.draw(b)
        # the plan, on the host: which rows each operation runs on, and its parameters
        most = b if self.dense else None  # dense: sub-batches padded to fixed capacities
        upload = Upload()
        rotated = d["base_rot"].nonzero().flatten().tolist()
        if rotated:
            rows = torch.tensor(pad_rows(rotated, most))
            upload.add("base", rows)
            upload.add("base_angle", d["base_angle"][rows])
        anomalous = d["anomaly"].nonzero().flatten().tolist()
        plan = None
        if anomalous:
            rows = torch.tensor(pad_rows(anomalous, most))
            sub = {key: v[rows] for key, v in d.items()}
            upload.add("anomaly", rows)
            for key in (*MASK_KEYS[c.mask_shape], *FILL_KEYS[c.fill], "beta"):
                upload.add(key, sub[key])
            if c.fill == "texture" and self.dense:
                plan = plan_augment(sub, c.augmentations, b, upload)
            elif c.fill == "texture":
                upload_params(sub, upload)
        dev = upload.send(self.device)

        # the work, on the device: queued without reading anything back
        if rotated:
            put_rows(x, dev["base"], k.rotate(take_rows(x, dev["base"]), dev["base_angle"]))
        clean, augmented = x, x.clone()
        mask = torch.zeros(b, 1, h, w, device=self.device)
        if anomalous:
            rows = dev["anomaly"]
            if c.mask_shape == "perlin":
                m = k.perlin_masks(dev["res_y"], dev["res_x"], dev["mask_angle"], dev["grad_angles"], h, w,
                                   c.perlin_threshold)
            else:
                m = k.rectangle_masks(dev["rect_count"], dev["rect_centre"], dev["rect_size"], dev["rect_angle"], h, w)
            if c.fill == "color":
                fill = dev["fill_color"].view(-1, 3, 1, 1)
            elif plan is not None:
                fill = run_augment(take_rows(self.textures.images, dev["texture"]), plan, dev, k)
            else:
                fill = augment_rows(take_rows(self.textures.images, dev["texture"]), sub["ops"].tolist(), dev,
                                    c.augmentations)
            put_rows(augmented, rows, k.blend(take_rows(clean, rows), fill, m, dev["beta"]))
            put_rows(mask, rows, m)
        has = (mask.flatten(1).amax(1) > 0).to(clean.dtype)
        return SynthBatch(clean, augmented, mask, has)
