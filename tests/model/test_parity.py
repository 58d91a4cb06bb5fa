"""Numeric parity with the original DRAEM code (fixtures made by running it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import ks_2samp

from draem_zoo import load
from draem_zoo.cli import parser as cli
from draem_zoo.errors import DraemZooError
from draem_zoo.export.convert import convert_state_dicts
from draem_zoo.model.losses import LossConfig, draem_loss, focal_loss, ssim_loss
from draem_zoo.model.scoring import image_scores, mean_filter
from draem_zoo.synthesis.perlin import perlin_masks
from draem_zoo.synthesis.simulator import make_generator

ATOL = 1e-5


@pytest.fixture(scope="module")
def ref(fixtures):
    return load_file(str(fixtures / "parity_bw8_64px.safetensors"))


def split(ref):
    rec = {k[len("reconstructive."):]: v for k, v in ref.items() if k.startswith("reconstructive.")}
    seg = {k[len("discriminative."):]: v for k, v in ref.items() if k.startswith("discriminative.")}
    return rec, seg


def test_parity_conventions_file(fixtures):
    conv = json.loads((fixtures / "parity_bw8_64px.json").read_text())
    assert conv["discriminator_input"] == "cat((reconstruction, input), dim=1)"
    assert conv["anomaly_channel"] == "softmax channel 1"


def test_parity_forward_through_converter(ref):
    rec_sd, seg_sd = split(ref)
    model = convert_state_dicts(rec_sd, seg_sd, image_size=64)
    assert (model.config.rec_width, model.config.disc_width) == (8, 8)
    assert model.config.channel_order == "BGR"
    with torch.no_grad():
        rec, logits = model(ref["input"])  # forward takes the model's own channel order
    torch.testing.assert_close(rec, ref["expected_reconstruction"], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits, ref["expected_seg_logits"], atol=ATOL, rtol=0)
    softmax = torch.softmax(logits, 1)
    torch.testing.assert_close(softmax, ref["expected_seg_softmax"], atol=ATOL, rtol=0)
    filtered = mean_filter(softmax[:, 1:], 21)
    torch.testing.assert_close(filtered, ref["expected_mean_filtered_map_21"], atol=ATOL, rtol=0)
    torch.testing.assert_close(image_scores(softmax[:, 1:], 21), ref["expected_image_score_21"], atol=ATOL, rtol=0)


def test_parity_predict_feeds_bgr_checkpoints(ref):
    model = convert_state_dicts(*split(ref), image_size=64)
    rgb = ref["input"].flip(1)  # the user hands RGB; the BGR weights must see the original order
    pred = model.predict(rgb)
    torch.testing.assert_close(pred.anomaly_map, ref["expected_seg_softmax"][:, 1:], atol=ATOL, rtol=0)
    torch.testing.assert_close(pred.score, ref["expected_image_score_21"], atol=ATOL, rtol=0)
    torch.testing.assert_close(pred.reconstruction, ref["expected_reconstruction"].flip(1), atol=ATOL, rtol=0)


def test_parity_losses(ref):
    rec, clean = ref["expected_reconstruction"], ref["clean"]
    assert abs(float(torch.nn.functional.mse_loss(rec, clean)) - float(ref["expected_l2"])) < ATOL
    assert abs(float(ssim_loss(rec, clean)) - float(ref["expected_ssim_loss"])) < ATOL
    assert abs(float(focal_loss(ref["expected_seg_softmax"], ref["mask"])) - float(ref["expected_focal_loss"])) < ATOL
    terms = draem_loss(rec, clean, ref["expected_seg_logits"], ref["mask"], LossConfig())
    expected = float(ref["expected_l2"] + ref["expected_ssim_loss"] + ref["expected_focal_loss"])
    assert abs(float(terms.total) - expected) < 3 * ATOL


def test_parity_cli_convert_official(ref, tmp_path):
    rec_sd, seg_sd = split(ref)
    torch.save(rec_sd, tmp_path / "DRAEM_bottle_.pckl")
    torch.save(seg_sd, tmp_path / "DRAEM_bottle__seg.pckl")
    out = tmp_path / "converted"
    code = cli.main(["convert-official", str(tmp_path / "DRAEM_bottle_.pckl"), str(tmp_path / "DRAEM_bottle__seg.pckl"),
                     str(out), "--image-size", "64"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["channel_order"] == "BGR" and cfg["model"]["image_size"] == 64
    model = load(str(out))
    with torch.no_grad():
        _, logits = model(ref["input"])
    torch.testing.assert_close(logits, ref["expected_seg_logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(model.predict(ref["input"].flip(1)).score, ref["expected_image_score_21"], atol=ATOL,
                               rtol=0)


def test_parity_official_key_names_cover_full_size_checkpoints(fixtures):
    shapes = json.loads((fixtures / "official_state_dict_keys.json").read_text())
    rec = {k: torch.zeros(s, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32)
           for k, s in shapes["reconstructive"].items()}
    seg = {k: torch.zeros(s, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32)
           for k, s in shapes["discriminative"].items()}
    model = convert_state_dicts(rec, seg)  # strict: every official key maps, every model key is filled
    assert (model.config.variant, model.config.rec_width, model.config.disc_width) == ("paper", 128, 64)
    assert model.config.image_size == 256


class NotAWeight:
    pass


def test_parity_convert_refuses_pickled_objects(ref, tmp_path):
    rec_sd, seg_sd = split(ref)
    torch.save({"payload": NotAWeight(), **rec_sd}, tmp_path / "evil.pckl")
    torch.save(seg_sd, tmp_path / "seg.pckl")
    with pytest.raises(DraemZooError, match="weights-only"):
        cli_convert = __import__("draem_zoo.export.convert", fromlist=["convert_official"]).convert_official
        cli_convert(tmp_path / "evil.pckl", tmp_path / "seg.pckl", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_parity_convert_names_swapped_files(ref, tmp_path):
    rec_sd, seg_sd = split(ref)
    torch.save(rec_sd, tmp_path / "rec.pckl")
    torch.save(seg_sd, tmp_path / "seg.pckl")
    code = cli.main(["convert-official", str(tmp_path / "seg.pckl"), str(tmp_path / "rec.pckl"), str(tmp_path / "o")])
    assert code == 2


def test_parity_perlin_mask_coverage(fixtures):
    ref = json.loads((fixtures / "perlin_mask_coverage_256.json").read_text())
    g = make_generator(1234)
    cov = torch.cat([perlin_masks(250, 256, 256, g).mean((1, 2, 3)) for _ in range(8)]).numpy()
    assert cov.shape == (2000,)
    result = ks_2samp(cov, np.asarray(ref["samples"]))
    assert result.pvalue > 0.01, result
    assert abs(cov.mean() - ref["mean"]) < 0.10 * ref["mean"]
