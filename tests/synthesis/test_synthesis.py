"""Anomaly synthesis: masks, blending, randomness, textures, image operations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from draem_zoo.errors import ConfigError, DataError
from draem_zoo.synthesis import imageops as ops
from draem_zoo.synthesis.perlin import perlin_masks
from draem_zoo.synthesis.simulator import AnomalySynthesizer, SynthesisConfig, load_textures, make_generator
from draem_zoo.synthesis.textures import TextureBank


def images(n=8, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, h, w, generator=g) * 255).to(torch.uint8)


def synth(cfg=None, size=(64, 64), seed=0, rank=0, dense=None, bank=None):
    cfg = cfg or SynthesisConfig(procedural_textures=10)
    bank = bank or TextureBank.procedural(10, size, seed=3)
    return AnomalySynthesizer(cfg, bank, make_generator(seed, rank), dense=dense)


def test_masks_are_binary_and_sized():
    m = perlin_masks(16, 100, 70, make_generator(0))
    assert m.shape == (16, 1, 100, 70)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert 0.0 < float(m.mean()) < 0.2


def test_blend_formula_on_known_inputs():
    # constant texture 200, constant image 100, beta fixed to 0.25, no augmentation, no rotation
    bank = TextureBank(torch.full((1, 3, 32, 32), 200, dtype=torch.uint8), "test")
    cfg = SynthesisConfig(anomaly_prob=1.0, base_rotation_prob=0.0, num_augmentations=0, beta=(0.25, 0.25),
                          perlin_scale=(1, 1))
    s = AnomalySynthesizer(cfg, bank, make_generator(5))
    out = s(torch.full((4, 3, 32, 32), 100, dtype=torch.uint8))
    m = out.mask
    assert float(m.sum()) > 0
    img, tex, beta = 100 / 255, 200 / 255, 0.25
    expected = (1 - m) * img + (1 - beta) * m * tex + beta * m * img
    torch.testing.assert_close(out.augmented, expected.expand(-1, 3, -1, -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.clean, torch.full((4, 3, 32, 32), img))
    assert out.has_anomaly.tolist() == [float(x) for x in (m.flatten(1).amax(1) > 0).tolist()]


def test_determinism_under_a_seed_and_streams_per_rank():
    x = images()
    a, b = synth(seed=7)(x), synth(seed=7)(x)
    for f in ("clean", "augmented", "mask", "has_anomaly"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    c = synth(seed=8)(x)
    r1 = synth(seed=7, rank=1)(x)
    assert not torch.equal(a.augmented, c.augmented)
    assert not torch.equal(a.augmented, r1.augmented)
    assert not torch.equal(a.mask, r1.mask)


def test_no_anomaly_means_empty_mask_and_clean_input():
    cfg = SynthesisConfig(anomaly_prob=0.0, procedural_textures=4)
    out = synth(cfg)(images())
    assert float(out.mask.abs().sum()) == 0 and float(out.has_anomaly.sum()) == 0
    assert torch.equal(out.augmented, out.clean)


def test_anomaly_probability_is_respected():
    s = synth(SynthesisConfig(procedural_textures=4), size=(32, 32))
    has = torch.cat([s(images(16, 32, 32)).has_anomaly for _ in range(25)])
    assert 0.35 < float(has.mean()) < 0.6  # p = 0.5 minus the few empty Perlin masks


def test_any_image_size_and_float_input():
    s = synth(size=(50, 70))
    out = s(images(4, 50, 70).float() / 255)
    assert out.augmented.shape == (4, 3, 50, 70) and out.mask.shape == (4, 1, 50, 70)
    with pytest.raises(ValueError, match="texture bank"):
        s(images(2, 64, 64))


def test_base_rotation_leaves_black_corners():
    cfg = SynthesisConfig(base_rotation_prob=1.0, anomaly_prob=0.0, procedural_textures=2)
    out = synth(cfg)(torch.full((6, 3, 64, 64), 255, dtype=torch.uint8))
    corner = out.clean[:, :, :3, :3].amin((1, 2, 3))
    centre = out.clean[:, :, 30:34, 30:34].amin((1, 2, 3))
    assert float(centre.min()) > 0.99 and float((corner < 0.5).float().mean()) > 0.5


def test_texture_folder_layouts_and_errors(texture_dir, tmp_path):
    bank = TextureBank.from_folder(texture_dir, (32, 40))
    assert bank.images.shape == (6, 3, 32, 40) and bank.images.dtype == torch.uint8
    assert "6 images" in bank.source
    flat = TextureBank.from_folder(texture_dir / "banded", 16)
    assert len(flat) == 3
    assert len(TextureBank.from_folder(texture_dir, 16, max_textures=4)) == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images found"):
        TextureBank.from_folder(tmp_path / "empty", 16)
    with pytest.raises(DataError, match="does not exist"):
        TextureBank.from_folder(tmp_path / "nope", 16)
    bad = texture_dir / "dotted" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(DataError, match="broken.jpg"):
        TextureBank.from_folder(texture_dir, 16)


def test_procedural_source_is_deterministic_and_recorded():
    a = TextureBank.procedural(12, 32, seed=1)
    b = TextureBank.procedural(12, 32, seed=1)
    assert torch.equal(a.images, b.images) and a.source == "procedural:12:seed=1"
    assert float(a.images.float().std()) > 10  # not blank
    cfg = SynthesisConfig(procedural_textures=12, procedural_seed=1)
    assert torch.equal(load_textures(cfg, 32).images, a.images)


def test_config_validation_names_keys():
    with pytest.raises(ConfigError, match="synthesis.anomaly_prob"):
        SynthesisConfig(anomaly_prob=1.5).validate()
    with pytest.raises(ConfigError, match="synthesis.augmentations"):
        SynthesisConfig(augmentations=("gamma", "blur")).validate()
    with pytest.raises(ConfigError, match="synthesis.num_augmentations"):
        SynthesisConfig(num_augmentations=4, augmentations=("gamma", "invert")).validate()
    with pytest.raises(ConfigError, match="synthesis.beta"):
        SynthesisConfig(beta=(0.5, 0.1)).validate()
    with pytest.raises(ConfigError, match=r"synthesis.beta=\(0.2, 1.5\): opacity range"):
        SynthesisConfig(beta=(0.2, 1.5)).validate()
    with pytest.raises(ConfigError, match="synthesis.perlin_scale"):
        SynthesisConfig(perlin_scale=(2, 9)).validate()
    with pytest.raises(ConfigError, match="synthesis.posterize_bits"):
        SynthesisConfig(posterize_bits=(0, 4)).validate()


def test_augmentations_are_drawn_distinct():
    s = synth()
    chosen = s.draw(200)["ops"]
    assert chosen.shape == (200, 3)
    assert all(len(set(r)) == 3 for r in chosen.tolist())
    assert set(chosen.flatten().tolist()) == set(range(10))


# --- single operations against PIL -------------------------------------------------------


def pil(u8: torch.Tensor) -> Image.Image:
    return Image.fromarray(u8.permute(1, 2, 0).numpy())


def from_pil(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(im)).permute(2, 0, 1)


@pytest.fixture
def u8():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(2, 3, 40, 48, generator=g) ** 2 * 255).round().to(torch.uint8)


@pytest.mark.parametrize("cutoff", [0, 5, 20])
def test_autocontrast_matches_pil(u8, cutoff):
    ours = ops.to_uint8(ops.autocontrast(u8.float() / 255, torch.tensor([cutoff, cutoff])))
    for i in range(2):
        ref = from_pil(ImageOps.autocontrast(pil(u8[i]), cutoff=cutoff))
        assert int((ours[i].int() - ref.int()).abs().max()) <= 1


@pytest.mark.parametrize("factor", [0.0, 0.5, 2.0])
def test_sharpness_matches_pil(u8, factor):
    ours = ops.to_uint8(ops.sharpness(u8.float() / 255, torch.tensor([factor, factor])))
    ref = from_pil(ImageEnhance.Sharpness(pil(u8[0])).enhance(factor))
    assert int((ours[0].int() - ref.int()).abs().max()) <= 1


def test_posterize_equalize_invert_solarize_match_pil(u8):
    x = u8.float() / 255
    for bits in (1, 4, 8):
        ours = ops.to_uint8(ops.posterize(x, torch.tensor([bits, bits])))
        assert torch.equal(ours[1], from_pil(ImageOps.posterize(pil(u8[1]), bits)))
    assert torch.equal(ops.to_uint8(ops.equalize(x))[0], from_pil(ImageOps.equalize(pil(u8[0]))))
    assert torch.equal(ops.to_uint8(ops.invert(x))[0], from_pil(ImageOps.invert(pil(u8[0]))))
    sol = ops.to_uint8(ops.solarize(x, torch.tensor([100 / 255, 100 / 255]), torch.tensor([True, False])))
    assert int((sol[0].int() - from_pil(ImageOps.solarize(pil(u8[0]), 100)).int()).abs().max()) <= 1
    assert torch.equal(sol[1], u8[1])


def test_hue_shift_matches_colorsys(u8):
    import colorsys

    x = u8.float() / 255
    out = ops.hue_saturation(x, torch.tensor([0.1, -0.3]), torch.tensor([0.0, 0.2]))
    for (i, yy, xx) in [(0, 3, 4), (1, 10, 20)]:
        h, s, v = colorsys.rgb_to_hsv(*x[i, :, yy, xx].tolist())
        shift, sat = (0.1, 0.0) if i == 0 else (-0.3, 0.2)
        ref = colorsys.hsv_to_rgb((h + shift) % 1.0, min(1.0, s + sat), v)
        torch.testing.assert_close(out[i, :, yy, xx], torch.tensor(ref, dtype=torch.float32), atol=1e-5, rtol=0)


def test_gamma_brightness_rotation():
    x = torch.rand(2, 3, 16, 16)
    q = ops.to_uint8(x).float() / 255  # point operations act on 8-bit levels, as imgaug's
    g = torch.tensor([[0.5, 1.0, 2.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(ops.gamma_contrast(x, g)[0, 2], (q[0, 2] ** 2 * 255).round() / 255)
    torch.testing.assert_close(ops.gamma_contrast(x, g)[1], q[1])
    same = ops.brightness(x, torch.ones(2), torch.zeros(2), torch.tensor([True, False]))
    torch.testing.assert_close(same, x)
    gray = torch.full((1, 3, 4, 4), 0.5)
    torch.testing.assert_close(ops.brightness(gray, torch.tensor([1.2]), torch.tensor([0.1]), torch.tensor([False])),
                               torch.full((1, 3, 4, 4), 0.7))
    ones = torch.ones(1, 1, 9, 9)
    torch.testing.assert_close(ops.rotate(ones, torch.tensor([90.0])), ones, atol=1e-5, rtol=0)
    ramp = torch.arange(16.0).view(1, 1, 4, 4)
    torch.testing.assert_close(ops.rotate(ramp, torch.tensor([180.0])), ramp.flip(-1).flip(-2), atol=1e-4, rtol=0)
