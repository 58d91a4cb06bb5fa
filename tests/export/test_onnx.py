"""ONNX export (draem-zoo export-onnx): ONNX Runtime against DraemModel.predict, conventions, bad input.

Tiny widths, 32-64 px, random weights and generated images; no network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import draem_zoo
from draem_zoo import build_model
from draem_zoo.cli import parser as cli
from draem_zoo.export import onnx as ox
from draem_zoo.model.modeldir import save_model_dir, sha256_file
from draem_zoo.model.scoring import image_scores

TOL = 1e-4


def _model_dir(path: Path, variant: str = "paper-tiny", size: int = 64, filter_size: int = 11, **kw) -> Path:
    """A tiny random model whose BatchNorm statistics are calibrated, so that its map depends on the input
    (right after init the map is ~0.51 everywhere, which would make parity checks say little)."""
    torch.manual_seed(0)
    model = build_model(variant, rec_width=4, disc_width=8, image_size=size, **kw)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(4, 3, size, size))
    model.eval()
    model.score_config.filter_size = filter_size
    model.score_config.image_threshold, model.score_config.pixel_threshold = 0.51, 0.6
    return save_model_dir(model, path)


def _images(n: int, size: int, seed: int = 7) -> np.ndarray:
    """uint8 RGB NHWC: structured images (not the command's own parity images) with a defect-like spot."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        base = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), xx * yy], -1) * 0.4 + 0.5
        base[size // 3: size // 3 + 5, size // 2: size // 2 + 7] = rng.random(3)
        out.append(np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1) * 255)
    return np.stack(out).astype(np.uint8)


def _predict(model, images: np.ndarray):
    pred = model.predict(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    return pred.anomaly_map.numpy(), pred.score.numpy()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".onnx", ".tmp") or p.name.startswith("."))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """paper-tiny exported through the CLI with its defaults: (model dir, the command's JSON)."""
    d = _model_dir(tmp_path_factory.mktemp("onnx") / "tiny", size=32)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(["export-onnx", "--model", str(d)]) == 0
    return d, json.loads(buf.getvalue())


def test_cli_export_paper_tiny_matches_predict(exported):
    d, res = exported
    path = d / "model.onnx"
    assert res["path"] == str(path) and path.is_file() and res["opset"] == ox.DEFAULT_OPSET
    assert res["sha256"] == sha256_file(path) and res["bytes"] == path.stat().st_size
    assert res["input"] == {**res["input"], "name": "image_rgb_uint8_nhwc", "shape": [1, 32, 32, 3], "dtype": "uint8",
                            "layout": "NHWC", "channel_order": "RGB"}
    assert [o["name"] for o in res["outputs"]] == ["anomaly_map", "score"]
    assert res["parity"]["max_abs_diff_anomaly_map"] <= TOL and res["parity"]["max_abs_diff_score"] <= TOL
    assert _leftovers(d) == ["model.onnx"]  # no temporary file beside it

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert (inp.name, inp.type, inp.shape) == ("image_rgb_uint8_nhwc", "tensor(uint8)", [1, 32, 32, 3])
    assert [(o.name, o.type, o.shape) for o in sess.get_outputs()] == [
        ("anomaly_map", "tensor(float)", [1, 1, 32, 32]), ("score", "tensor(float)", [1])]
    model = draem_zoo.load(str(d))
    images = _images(3, 32)
    runs = [sess.run(None, {inp.name: images[i: i + 1]}) for i in range(3)]
    amap, score = np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs])
    ref_map, ref_score = _predict(model, images)
    assert np.abs(amap - ref_map).max() <= TOL and np.abs(score - ref_score).max() <= TOL
    assert amap.min() >= 0 and amap.max() <= 1 and amap.std() > 1e-2  # a real map, not a constant
    # the score is the model's own s_f (11) mean filter, then the max
    torch.testing.assert_close(torch.from_numpy(score), image_scores(torch.from_numpy(amap), 11), atol=1e-6, rtol=0)
    assert not np.allclose(score, amap.reshape(3, -1).max(1), atol=1e-5)
    with pytest.raises(Exception, match="invalid dimensions"):  # batch fixed at 1 without --dynamic-batch
        sess.run(None, {inp.name: images[:2]})


def test_metadata_records_config_weights_and_conventions(exported):
    d, res = exported
    path = d / "model.onnx"
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert ox.read_metadata(path) == meta  # what publish and pull read
    cfg = json.loads((d / "config.json").read_text())
    assert meta["draem_zoo.weights_sha256"] == cfg["weights_sha256"] == res["weights_sha256"]
    assert json.loads(meta["draem_zoo.config"])["model"] == cfg["model"]
    assert json.loads(meta["draem_zoo.config"])["score"] == cfg["score"]
    assert meta["draem_zoo.filter_size"] == "11" and meta["draem_zoo.model_channel_order"] == "RGB"
    assert meta["draem_zoo.input_channel_order"] == "RGB" and float(meta["draem_zoo.image_threshold"]) == 0.51
    assert json.loads(meta["draem_zoo.input"])["name"] == "image_rgb_uint8_nhwc"
    assert meta["draem_zoo.package_version"] == draem_zoo.__version__
    assert [o.version for o in proto.opset_import if o.domain == ""] == [18]
    info = ox.onnx_info(path)
    assert info["input_name"] == "image_rgb_uint8_nhwc" and info["image_size"] == 32 and not info["dynamic_batch"]
    assert ox.stale_reason(d, cfg["weights_sha256"]) is None
    assert "stale" in ox.stale_reason(d, "0" * 64)


@pytest.mark.slow  # ~8-14 s on 2 cores: the timm encoder makes a 60 MB graph
def test_timm_variant_parity_at_another_opset(tmp_path):
    d = _model_dir(tmp_path / "r18", "timm-resnet18", size=32, filter_size=5)
    res = ox.export_onnx(str(d), out=tmp_path / "r18.onnx", opset=20)
    assert res["opset"] == 20 and res["variant"] == "timm-resnet18"
    assert [o.version for o in onnx.load(str(tmp_path / "r18.onnx")).opset_import if o.domain == ""] == [20]
    sess = ort.InferenceSession(str(tmp_path / "r18.onnx"), providers=["CPUExecutionProvider"])
    images = _images(2, 32, seed=3)
    runs = [sess.run(None, {"image_rgb_uint8_nhwc": images[i: i + 1]}) for i in range(2)]
    ref_map, ref_score = _predict(draem_zoo.load(str(d)), images)
    assert np.abs(np.concatenate([r[0] for r in runs]) - ref_map).max() <= TOL
    assert np.abs(np.concatenate([r[1] for r in runs]) - ref_score).max() <= TOL


def test_bgr_model_takes_rgb_and_dynamic_batch_runs_three(tmp_path, capsys):
    d = _model_dir(tmp_path / "bgr", size=32, filter_size=21, channel_order="BGR")
    out = tmp_path / "out" / "bgr.onnx"
    out.parent.mkdir()
    assert cli.main(["export-onnx", "--model", str(d), "--out", str(out), "--dynamic-batch"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["input"]["shape"] == ["batch", 32, 32, 3] and res["input"]["channel_order"] == "RGB"
    assert res["model_channel_order"] == "BGR" and res["parity"]["batch"] == 3
    assert _leftovers(out.parent) == ["bgr.onnx"] and not (d / "model.onnx").exists()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["batch", 32, 32, 3]
    model = draem_zoo.load(str(d))
    rgb = _images(3, 32, seed=11)
    amap, score = sess.run(None, {"image_rgb_uint8_nhwc": rgb})
    assert amap.shape == (3, 1, 32, 32) and score.shape == (3,)
    ref_map, ref_score = _predict(model, rgb)  # predict takes RGB too and flips for the BGR weights
    assert np.abs(amap - ref_map).max() <= TOL and np.abs(score - ref_score).max() <= TOL
    flipped_map, _ = sess.run(None, {"image_rgb_uint8_nhwc": np.ascontiguousarray(rgb[..., ::-1])})
    assert np.abs(flipped_map - amap).max() > 10 * TOL  # the channel order matters: the flip is really in the graph
    one_map, one_score = sess.run(None, {"image_rgb_uint8_nhwc": rgb[1:2]})
    assert np.abs(one_map - amap[1:2]).max() <= TOL and abs(float(one_score[0] - score[1])) <= TOL


def _fails(argv: list[str], capsys) -> str:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_tampered_and_missing_weights_are_refused(tmp_path, capsys):
    d = _model_dir(tmp_path / "m", size=32, filter_size=5)
    weights = d / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    err = _fails(["export-onnx", "--model", str(d)], capsys)
    assert str(weights) in err and "sha256" in err
    weights.unlink()
    err = _fails(["export-onnx", "--model", str(d)], capsys)
    assert str(d) in err and "model.safetensors is missing" in err
    assert _leftovers(d) == []


def test_bad_opset_and_unwritable_out_fail_before_exporting(tmp_path, capsys, monkeypatch):
    d = _model_dir(tmp_path / "m", size=32, filter_size=5)
    monkeypatch.setattr(ox, "build_proto", lambda *a, **k: pytest.fail("exported despite bad input"))
    for opset in ("99", "3"):
        err = _fails(["export-onnx", "--model", str(d), "--opset", opset], capsys)
        assert f"--opset {opset}" in err and "18 to 23" in err
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    err = _fails(["export-onnx", "--model", str(d), "--out", str(blocker / "model.onnx")], capsys)
    assert f"--out {blocker / 'model.onnx'}" in err and "is a file, not a folder" in err
    err = _fails(["export-onnx", "--model", str(d), "--out", str(tmp_path / "nowhere" / "m.onnx")], capsys)
    assert str(tmp_path / "nowhere") in err and "does not exist" in err
    err = _fails(["export-onnx", "--model", str(d), "--out", str(tmp_path)], capsys)
    assert f"--out {tmp_path}" in err and "is a folder" in err
    assert _leftovers(d) == [] and _leftovers(tmp_path) == []
    assert ox.default_output("hf-hub:acme/draem-mvtec-bottle@v1") == Path("model.onnx")
    assert ox.default_output(str(d)) == d / "model.onnx"


def test_missing_onnx_packages_say_how_to_install(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    err = _fails(["export-onnx", "--model", str(tmp_path / "anything")], capsys)
    assert "onnxruntime" in err and 'pip install "draem-zoo[onnx]"' in err


def test_failed_parity_leaves_the_old_file_and_no_temporary(tmp_path, capsys, monkeypatch):
    d = _model_dir(tmp_path / "m", size=32, filter_size=5)
    (d / "model.onnx").write_bytes(b"previous export")
    (d / "model.onnx.json").write_text("previous record")
    seen = []

    def small_graph(*a, **k):  # any graph will do: the check after writing is what fails here
        node = onnx.helper.make_node("Identity", ["x"], ["y"])
        vi = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UINT8, [1]) for n in ("x", "y")]
        return onnx.helper.make_model(onnx.helper.make_graph([node], "g", vi[:1], vi[1:]))

    def disagree(path, *a, **k):
        seen.append((Path(path).parent, Path(path).name, Path(path).stat().st_size))
        raise draem_zoo.DraemZooError(f"{path}: ONNX Runtime and PyTorch disagree; nothing was written")

    monkeypatch.setattr(ox, "build_proto", small_graph)
    monkeypatch.setattr(ox, "check_parity", disagree)
    err = _fails(["export-onnx", "--model", str(d)], capsys)
    assert "disagree" in err
    (parent, name, size), = seen
    assert parent == d and name.startswith(".model.onnx.") and name.endswith(".tmp") and size > 0
    assert (d / "model.onnx").read_bytes() == b"previous export" and _leftovers(d) == ["model.onnx"]
    assert (d / "model.onnx.json").read_text() == "previous record"


def test_export_records_the_file_and_the_weights_it_was_made_from(exported):
    d, res = exported
    record = json.loads((d / "model.onnx.json").read_text())
    cfg = json.loads((d / "config.json").read_text())
    assert res["record"] == str(d / "model.onnx.json") and record["file"] == "model.onnx"
    assert record["sha256"] == sha256_file(d / "model.onnx") == res["sha256"]
    assert record["bytes"] == (d / "model.onnx").stat().st_size
    assert record["weights_sha256"] == cfg["weights_sha256"] and record["config_sha256"] == cfg["config_sha256"]
    assert ox.read_record(d / "model.onnx") == record


def test_exported_files_follow_the_umask(tmp_path):
    import os

    d = _model_dir(tmp_path / "m", size=32, filter_size=5)
    old = os.umask(0o002)
    try:
        ox.export_onnx(str(d))
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in d.iterdir() if p.name.startswith("model.onnx")} == {
        "model.onnx": 0o664, "model.onnx.json": 0o664}
    assert _leftovers(d) == ["model.onnx"]


@pytest.mark.parametrize("kw", [
    {"sspcab": True},  # DRAEM+SSPCAB, the original's k' = 1, d = 1
    {"sspcab": True, "sspcab_kernel": 2, "sspcab_dilation": 0, "mode": "reconstructive"},
    {"mode": "discriminative"},
    {"mode": "reconstructive"},
], ids=["sspcab", "recon-sspcab-k2-d0", "discriminative", "reconstructive"])
def test_sspcab_and_ablation_modes_export_with_parity(tmp_path, kw):
    """DRAEM+SSPCAB and the paper's Table 3 ablations (model.mode) export and match predict."""
    d = _model_dir(tmp_path / "m", size=64, filter_size=5, **kw)
    res = ox.export_onnx(str(d), dynamic_batch=True)
    assert res["parity"]["max_abs_diff_anomaly_map"] <= TOL and res["parity"]["max_abs_diff_score"] <= TOL
    meta = ox.read_metadata(d / "model.onnx")
    assert meta["draem_zoo.mode"] == kw.get("mode", "draem")
    assert meta["draem_zoo.sspcab"] == ("true" if kw.get("sspcab") else "false")
    meaning = json.loads(meta["draem_zoo.outputs"])[0]["meaning"]
    assert ("1 - SSIM" in meaning) is (kw.get("mode") == "reconstructive")
    model = draem_zoo.load(str(d))
    images = _images(3, 64, seed=5)
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    amap, score = sess.run(None, {"image_rgb_uint8_nhwc": images})
    ref_map, ref_score = _predict(model, images)
    assert amap.shape == (3, 1, 64, 64) and score.shape == (3,)
    assert np.abs(amap - ref_map).max() <= TOL and np.abs(score - ref_score).max() <= TOL
    assert amap.min() >= 0 and amap.max() <= 1 and amap.std() > 1e-2  # a real map, not a constant
