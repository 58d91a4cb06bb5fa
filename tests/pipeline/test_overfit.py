"""A tiny DRAEM learns a handful of synthetic anomalies within seconds."""

from __future__ import annotations

import torch

from draem_zoo import build_model
from draem_zoo.model.losses import LossConfig
from draem_zoo.synthesis.simulator import AnomalySynthesizer, SynthesisConfig, make_generator
from draem_zoo.synthesis.textures import TextureBank
from draem_zoo.train.trainer import train_step


def test_tiny_model_overfits_synthetic_anomalies():
    torch.manual_seed(0)
    size = 32
    model = build_model("paper", rec_width=8, disc_width=8, image_size=size)
    bank = TextureBank.procedural(8, size, seed=1)
    cfg = SynthesisConfig(anomaly_prob=1.0, base_rotation_prob=0.0, perlin_scale=(0, 2))
    synth = AnomalySynthesizer(cfg, bank, make_generator(0))
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    normal = torch.stack([(0.5 + 0.3 * torch.sin(6.28 * (xx * k + yy))).expand(3, -1, -1) for k in (1, 2, 3, 4)])
    fixed = synth((normal * 255).round().to(torch.uint8))  # the same handful of anomalies every step
    assert float(fixed.has_anomaly.sum()) >= 2
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = [train_step(model, fixed, opt, LossConfig()).as_floats() for _ in range(80)]
    first = sum(x["loss"] for x in losses[:5]) / 5
    last = sum(x["loss"] for x in losses[-5:]) / 5
    assert last < 0.4 * first, (first, last)
    assert losses[-1]["focal"] < 0.3 * losses[0]["focal"]
    pred = model.predict(fixed.augmented, filter_size=1)
    inside = pred.anomaly_map[fixed.mask.bool()].mean()
    outside = pred.anomaly_map[~fixed.mask.bool()].mean()
    assert float(inside) > float(outside) + 0.3
