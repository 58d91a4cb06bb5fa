"""The paper's ablation options: rectangular masks (DRAEM_rect) and plain-colour fills (DRAEM_color)."""

from __future__ import annotations

import pytest
import torch

from draem_zoo.config import from_dict
from draem_zoo.errors import ConfigError
from draem_zoo.synthesis.rectangles import rectangle_masks
from draem_zoo.synthesis.simulator import AnomalySynthesizer, SynthesisConfig, make_generator
from draem_zoo.synthesis.textures import TextureBank


def run(n=50, size=64, seed=0, rounds=1, dense=False, **cfg):
    cfg.setdefault("base_rotation_prob", 0.0)
    s = AnomalySynthesizer(SynthesisConfig(procedural_textures=4, **cfg), TextureBank.procedural(4, size, seed=1),
                           make_generator(seed), dense=dense)
    x = (torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)
    return [s(x) for _ in range(rounds)]


def test_rectangle_masks_on_known_rectangles():
    one = torch.ones(1, dtype=torch.long)
    box = rectangle_masks(one, torch.tensor([[[0.5, 0.5]]]), torch.tensor([[[0.5, 0.25]]]), torch.zeros(1, 1), 16, 16)
    want = torch.zeros(1, 1, 16, 16)
    want[..., 4:12, 6:10] = 1  # 8 rows x 4 columns about the centre
    assert torch.equal(box, want)
    turned = rectangle_masks(one, torch.tensor([[[0.5, 0.5]]]), torch.tensor([[[0.5, 0.25]]]), torch.full((1, 1), 90.0),
                             16, 16)
    assert torch.equal(turned, want.transpose(-1, -2))
    # two rectangles drawn, the count uses only the first; with both, the union
    centre = torch.tensor([[[0.25, 0.25], [0.75, 0.75]]])
    size = torch.full((1, 2, 2), 0.25)
    first = rectangle_masks(one, centre, size, torch.zeros(1, 2), 16, 16)
    both = rectangle_masks(2 * one, centre, size, torch.zeros(1, 2), 16, 16)
    assert float(first.sum()) == 16 and float(both.sum()) == 32 and float(first[..., 2:6, 2:6].sum()) == 16


def test_rectangular_masks_are_clipped_rectangles_of_the_documented_sizes():
    """One axis-aligned rectangle a sample: the mask fills its bounding box, sides within the range
    (less where the border clips), and the mean coverage is the expected clipped area: with side
    fractions s ~ U(0.1, 0.5) and a uniform centre, E[clipped side] = E[s - s^2/4] per axis."""
    outs = run(n=100, rounds=8, mask_shape="rectangle", rect_count=(1, 1), mask_rotation=0.0, anomaly_prob=1.0)
    masks = torch.cat([o.mask for o in outs])[:, 0]
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    for m in masks[:100]:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert float(m.sum()) == h * w  # a filled box
        assert h <= 0.5 * 64 + 1 and w <= 0.5 * 64 + 1
        if 0 < rows[0] and rows[-1] < 63:
            assert h >= 0.1 * 64 - 1
        if 0 < cols[0] and cols[-1] < 63:
            assert w >= 0.1 * 64 - 1
    side = 0.3 - ((0.4**2) / 12 + 0.3**2) / 4
    assert abs(float(masks.mean()) - side**2) < 0.008  # 0.0752; the standard error is about 0.0016


@pytest.mark.parametrize("dense", [False, True])
def test_rectangle_mode_keeps_the_anomaly_probability_and_coverage_range(dense):
    outs = run(n=64, rounds=4, mask_shape="rectangle", dense=dense)
    has = torch.cat([o.has_anomaly for o in outs])
    cov = torch.cat([o.mask.mean((1, 2, 3)) for o in outs])
    assert 0.4 < float(has.mean()) < 0.6  # p = 0.5: rectangle masks are never empty
    assert torch.equal(has, (cov > 0).float())
    assert 0.001 < float(cov[has > 0].min()) and float(cov.max()) <= 0.75  # at most 3 rectangles of 1/4
    assert 0.09 < float(cov[has > 0].mean()) < 0.2  # 0.137 with 1 to 3 rotated rectangles
    rotated = outs[0].mask[outs[0].has_anomaly > 0, 0]
    fill = [float(m.sum()) / float(m.any(1).sum() * m.any(0).sum()) for m in rotated]
    assert min(fill) < 0.9  # rotated or overlapping: not all masks fill their bounding boxes


@pytest.mark.parametrize("mask_shape", ["perlin", "rectangle"])
def test_color_fill_is_one_plain_colour_per_anomaly_blended_with_beta(mask_shape):
    (opaque,) = run(n=32, fill="color", beta=(0.0, 0.0), anomaly_prob=1.0, mask_shape=mask_shape)
    (half,) = run(n=32, fill="color", beta=(0.5, 0.5), anomaly_prob=1.0, mask_shape=mask_shape)
    colours = []
    for i in range(32):
        m = opaque.mask[i, 0] > 0
        if not m.any():
            continue
        inside = opaque.augmented[i][:, m]  # (3, pixels)
        assert float((inside - inside[:, :1]).abs().max()) < 1e-6  # one colour (to float rounding)
        level = inside[:, 0] * 255
        torch.testing.assert_close(level, level.round(), atol=1e-4, rtol=0)  # on 8-bit levels
        colours.append(inside[:, 0])
        torch.testing.assert_close(opaque.augmented[i][:, ~m], opaque.clean[i][:, ~m])  # untouched outside
        # beta = 0.5: half the colour, half the image
        torch.testing.assert_close(half.augmented[i][:, m], 0.5 * inside + 0.5 * half.clean[i][:, m],
                                   atol=1e-6, rtol=0)
    colours = torch.stack(colours)
    assert len(colours) >= 20 and len({tuple(c.tolist()) for c in colours}) == len(colours)
    assert 0.3 < float(colours.mean()) < 0.7 and float(colours.std()) > 0.2  # spread over the RGB cube


def test_the_options_leave_the_default_stream_alone():
    """Their draws come after the default ones: every default draw is the same with them."""
    def draws(**cfg):
        bank = TextureBank.procedural(4, 16, seed=1)
        return AnomalySynthesizer(SynthesisConfig(procedural_textures=4, **cfg), bank, make_generator(3)).draw(16)

    base = draws()
    rect = {"rect_count", "rect_centre", "rect_size", "rect_angle"}
    for cfg, extra in (({"mask_shape": "rectangle"}, rect), ({"fill": "color"}, {"fill_color"})):
        d = draws(**cfg)
        assert set(d) - set(base) == extra and set(base) <= set(d)
        for key, value in base.items():
            assert torch.equal(d[key], value), key
    d = draws(mask_shape="rectangle", rect_count=(2, 3))
    assert d["rect_centre"].shape == (16, 3, 2) and set(d["rect_count"].tolist()) == {2, 3}
    assert 0.1 <= float(d["rect_size"].min()) and float(d["rect_size"].max()) < 0.5


def test_options_are_validated_with_clear_messages():
    with pytest.raises(ConfigError, match=r"synthesis.mask_shape='circle': choose 'perlin'.*'rectangle'"):
        SynthesisConfig(mask_shape="circle").validate()
    with pytest.raises(ConfigError, match=r"synthesis.fill='noise': choose 'texture'.*'color'"):
        SynthesisConfig(fill="noise").validate()
    with pytest.raises(ConfigError, match="synthesis.rect_count"):
        SynthesisConfig(rect_count=(0, 2)).validate()
    with pytest.raises(ConfigError, match="synthesis.rect_count=\\(3, 2\\): low is above high"):
        SynthesisConfig(rect_count=(3, 2)).validate()
    with pytest.raises(ConfigError, match="synthesis.rect_size"):
        SynthesisConfig(rect_size=(0.2, 1.5)).validate()
    with pytest.raises(ConfigError, match="synthesis.rect_size"):
        SynthesisConfig(rect_size=(0.0, 0.5)).validate()
    cfg = from_dict(SynthesisConfig, {"mask_shape": "rectangle", "fill": "color", "rect_count": [2, 4]})
    assert (cfg.mask_shape, cfg.fill, cfg.rect_count) == ("rectangle", "color", (2, 4))
    with pytest.raises(ConfigError, match="mask_shape"):
        from_dict(SynthesisConfig, {"mask_shape": "circle"}, "synthesis")
