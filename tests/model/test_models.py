"""Networks, variants, timm backbones and prediction."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import save_file

from draem_zoo import build_model, list_variants
from draem_zoo.errors import ConfigError, DraemZooError
from draem_zoo.model.backbones import TimmEncoder
from draem_zoo.model.draem import DraemModel
from draem_zoo.model.scoring import image_scores, mean_filter
from draem_zoo.model.variants import ModelConfig


@pytest.mark.parametrize("variant", list_variants())
def test_every_named_variant_shapes(variant):
    torch.manual_seed(0)
    model = build_model(variant, rec_width=8, disc_width=8, image_size=64)
    x = torch.rand(2, 3, 64, 64)
    rec, logits = model(x)
    assert rec.shape == (2, 3, 64, 64) and logits.shape == (2, 2, 64, 64)
    pred = model.predict(x)
    assert pred.anomaly_map.shape == (2, 1, 64, 64) and pred.score.shape == (2,)
    assert float(pred.anomaly_map.min()) >= 0 and float(pred.anomaly_map.max()) <= 1
    torch.testing.assert_close(pred.score, image_scores(pred.anomaly_map, 21))


def test_reconstructive_timm_encoder_option():
    model = build_model("paper", rec_width=8, disc_width=8, rec_encoder="resnet18", image_size=64)
    rec, logits = model(torch.rand(1, 3, 64, 64))
    assert rec.shape == (1, 3, 64, 64) and logits.shape == (1, 2, 64, 64)
    assert any(k.startswith("reconstructive.encoder.model.") for k in model.state_dict())


@pytest.mark.parametrize("hw", [(70, 50), (33, 97)])
def test_any_input_size_is_padded_and_cropped(hw):
    model = build_model("paper", rec_width=4, disc_width=4, image_size=hw[0])
    rec, logits = model(torch.rand(1, 3, *hw))
    assert rec.shape[-2:] == hw and logits.shape[-2:] == hw


def test_paper_widths_and_init():
    torch.manual_seed(0)
    model = build_model("paper")
    enc = model.reconstructive.encoder.stages
    assert [s[0].out_channels for s in enc] == [128, 256, 512, 1024, 1024]
    assert [s[0].out_channels for s in model.discriminative.encoder.stages] == [64, 128, 256, 512, 512, 512]
    conv_w = torch.cat([m.weight.detach().flatten() for m in model.modules() if isinstance(m, torch.nn.Conv2d)])
    bn_w = torch.cat([m.weight.detach().flatten() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    bn_b = torch.cat([m.bias.detach().flatten() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(float(conv_w.std()) - 0.02) < 1e-3 and abs(float(conv_w.mean())) < 1e-4
    assert abs(float(bn_w.mean()) - 1.0) < 2e-3 and abs(float(bn_w.std()) - 0.02) < 2e-3
    assert float(bn_b.abs().max()) == 0.0
    half = build_model("paper-small")
    assert half.num_parameters() < model.num_parameters() / 3.5


def test_predict_resizes_and_scores_at_model_size():
    torch.manual_seed(0)
    model = build_model("paper", rec_width=4, disc_width=4, image_size=64)
    pred = model.predict(torch.rand(2, 3, 96, 80))
    assert pred.anomaly_map.shape == (2, 1, 96, 80) and pred.reconstruction.shape == (2, 3, 96, 80)
    x = torch.rand(2, 3, 64, 64)
    p1, p21 = model.predict(x, filter_size=1), model.predict(x)
    torch.testing.assert_close(p1.score, p1.anomaly_map.amax((1, 2, 3)))
    torch.testing.assert_close(p21.score, mean_filter(p21.anomaly_map, 21).amax((1, 2, 3)))
    assert bool((p21.score <= p1.score + 1e-5).all())  # a mean never exceeds the max
    assert p1.anomalous is None
    model.score_config.image_threshold = float(p21.score.min())
    assert bool(model.predict(x).anomalous.all())
    with pytest.raises(ConfigError, match="odd"):
        model.predict(x, filter_size=4)


def test_predict_restores_training_mode():
    model = build_model("paper", rec_width=4, disc_width=4, image_size=32)
    model.train()
    model.predict(torch.rand(1, 3, 32, 32))
    assert model.training


def test_bgr_models_get_flipped_inputs():
    torch.manual_seed(0)
    model = DraemModel(ModelConfig(rec_width=4, disc_width=4, image_size=32, channel_order="BGR")).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        _, logits = model(x.flip(1))
    torch.testing.assert_close(model.predict(x).anomaly_map, torch.softmax(logits, 1)[:, 1:])


@pytest.mark.parametrize("field,value", [("rec_width", 0), ("disc_width", -3)])
def test_bad_widths_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"model.{field}"):
        build_model("paper", **{field: value})


def test_unknown_variant_and_timm_names():
    with pytest.raises(ConfigError, match="unknown variant 'papr'"):
        build_model("papr")
    with pytest.raises(ConfigError, match="model.disc_encoder='resnet1800'"):
        build_model("timm-resnet1800")


def test_encoder_without_cnn_strides_is_refused():
    with pytest.raises(ConfigError, match="model.disc_encoder='vit_tiny_patch16_224'"):
        build_model("timm-vit_tiny_patch16_224", rec_width=4, disc_width=4)


def test_pretrained_from_local_file(tmp_path):
    import timm

    torch.manual_seed(1)
    donor = timm.create_model("resnet18", pretrained=False)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    enc3 = TimmEncoder("resnet18", 3, pretrained_file=str(tmp_path / "r18.safetensors"))
    torch.testing.assert_close(enc3.model.layer4[1].conv2.weight, donor.layer4[1].conv2.weight)
    torch.testing.assert_close(enc3.model.conv1.weight, donor.conv1.weight)
    enc6 = TimmEncoder("resnet18", 6, pretrained_file=str(tmp_path / "r18.safetensors"))
    w6 = enc6.model.conv1.weight
    assert w6.shape[1] == 6
    torch.testing.assert_close(w6[:, :3], donor.conv1.weight * 0.5)  # timm spreads 3 channels over 6
    model = build_model("timm-resnet18", rec_width=4, disc_width=8, pretrained=True,
                        pretrained_file=str(tmp_path / "r18.safetensors"))
    torch.testing.assert_close(model.discriminative.encoder.model.layer1[0].conv1.weight,
                               donor.layer1[0].conv1.weight)


def test_pretrained_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        TimmEncoder("resnet18", 3, pretrained_file=str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="bad.safetensors"):
        TimmEncoder("resnet18", 3, pretrained_file=str(bad))
    wrong = tmp_path / "wrong.safetensors"
    save_file({"fc.weight": torch.zeros(3, 3)}, str(wrong))
    with pytest.raises(ConfigError, match="do not fit"):
        TimmEncoder("resnet18", 3, pretrained_file=str(wrong))


def test_pretrained_unreachable_fails_fast_with_advice(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    start = time.monotonic()
    with pytest.raises(DraemZooError, match="pretrained_file"):
        TimmEncoder("resnet18", 6, pretrained=True)
    assert time.monotonic() - start < 30


def test_pretrained_from_hub_cache_works_offline(tmp_path, monkeypatch):
    import timm

    torch.manual_seed(2)
    donor = timm.create_model("resnet18", pretrained=False)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(snap / "model.safetensors"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    start = time.monotonic()
    with pytest.raises(DraemZooError, match="HF_HUB_OFFLINE=1"):  # unreachable: says how to use the cache
        TimmEncoder("resnet18", 3, pretrained=True)
    assert time.monotonic() - start < 30
    # Hugging Face's own offline switch (huggingface_hub reads the variable when it is imported)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    enc = TimmEncoder("resnet18", 3, pretrained=True)
    torch.testing.assert_close(enc.model.layer2[0].conv1.weight, donor.layer2[0].conv1.weight)
