"""The model directory: file modes under the user's umask, flushed before the renames, and config.json
tied to its content by config_sha256 (thresholds and s_f are checked like the weights). Tiny models."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import draem_zoo
from draem_zoo import build_model
from draem_zoo.cli import parser as cli
from draem_zoo.errors import DraemZooError
from draem_zoo.export.convert import convert_official
from draem_zoo.model import modeldir
from draem_zoo.model.modeldir import CONFIG_HASH, config_digest, load_model_dir, read_config, save_model_dir, write_config


def _tiny(path: Path, **extra) -> Path:
    torch.manual_seed(0)
    model = build_model("paper-tiny", rec_width=4, disc_width=4, image_size=32)
    model.score_config.filter_size = 5
    model.score_config.image_threshold, model.score_config.pixel_threshold = 0.25, 0.5
    return save_model_dir(model.eval(), path, extra or None)


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_saved_files_get_the_umask_modes(tmp_path, mask, mode):
    with _umask(mask):
        d = _tiny(tmp_path / "m")
    modes = {p.name: p.stat().st_mode & 0o777 for p in d.iterdir()}
    assert modes == {"model.safetensors": mode, "config.json": mode}  # no 0600 weights, no temporary folder left


def test_files_are_flushed_before_they_are_renamed_into_place(tmp_path, monkeypatch):
    events: list[tuple[str, list[str]]] = []
    real_fsync, real_replace = modeldir.fsync_tree, os.replace
    monkeypatch.setattr(modeldir, "fsync_tree",
                        lambda p: (events.append(("fsync", sorted(q.name for q in Path(p).iterdir()))),
                                   real_fsync(p))[1])
    monkeypatch.setattr(modeldir.os, "replace",
                        lambda a, b: (events.append(("replace", [Path(b).name])), real_replace(a, b))[1])
    _tiny(tmp_path / "m")
    assert events == [("fsync", ["config.json", "model.safetensors"]), ("replace", ["model.safetensors"]),
                      ("replace", ["config.json"])]


def test_config_hash_is_the_canonical_json_of_the_rest(tmp_path):
    d = _tiny(tmp_path / "m", metrics={"by_filter_size": {5: 0.5, 11: 0.25}}, shape=(1, 2))
    cfg = json.loads((d / "config.json").read_text())
    body = {k: v for k, v in cfg.items() if k != CONFIG_HASH}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert cfg[CONFIG_HASH] == hashlib.sha256(canonical.encode()).hexdigest() == config_digest(cfg)
    assert cfg["metrics"]["by_filter_size"] == {"5": 0.5, "11": 0.25} and cfg["shape"] == [1, 2]
    assert read_config(d) == cfg


@pytest.mark.parametrize("edit", ["image_threshold", "filter_size", "weights_sha256"])
def test_hand_edited_config_is_refused_on_load_and_predict(tmp_path, capsys, edit):
    d = _tiny(tmp_path / "m")
    path = d / "config.json"
    cfg = json.loads(path.read_text())
    if edit == "weights_sha256":  # other weights, and config.json edited to match them: still caught
        torch.manual_seed(1)
        other = build_model("paper-tiny", rec_width=4, disc_width=4, image_size=32)
        save_model_dir(other, tmp_path / "other")
        (d / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
        cfg["weights_sha256"] = json.loads((tmp_path / "other" / "config.json").read_text())["weights_sha256"]
    else:
        cfg["score"][edit] = 0.01 if edit == "image_threshold" else 21
    path.write_text(json.dumps(cfg, indent=2))
    for load in (load_model_dir, draem_zoo.load):
        with pytest.raises(DraemZooError, match="edited after it was written") as info:
            load(str(d))
        assert str(path) in str(info.value) and "retrain/re-export" in str(info.value)
    (tmp_path / "x.png").write_bytes(b"")  # never read: the model is refused first
    assert cli.main(["predict", "--model", str(d), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(path) in err and "edited after it was written" in err


def test_write_config_keeps_an_update_loadable(tmp_path):
    d = _tiny(tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["score"]["image_threshold"] = 0.75
    stamped = write_config(d, cfg)
    assert stamped[CONFIG_HASH] == config_digest(stamped) != cfg.get(CONFIG_HASH)
    assert load_model_dir(d).score_config.image_threshold == 0.75
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize("removed", [[CONFIG_HASH], ["weights_sha256"], [CONFIG_HASH, "weights_sha256"]])
def test_a_directory_without_its_hashes_is_refused_everywhere(tmp_path, capsys, removed):
    """Deleting the hash keys does not switch the checks off: load, predict, evaluate, export-onnx and
    publish refuse the directory with one line, exit 2, and say how to re-create the hashes."""
    d = _tiny(tmp_path / "res" / "weave" / "best")
    path = d / "config.json"
    cfg = json.loads(path.read_text())
    for key in removed:
        del cfg[key]
    cfg["score"]["image_threshold"] = 0.0  # with no hash, an edit like this would flag every image
    if CONFIG_HASH in removed:
        path.write_text(json.dumps(cfg, indent=2))
    else:  # a config.json consistent with its own hash, but with no weights hash to check the weights by
        write_config(d, cfg)
    for load in (load_model_dir, draem_zoo.load):
        with pytest.raises(DraemZooError, match=f"records no {removed[0]}") as info:
            load(str(d))
        assert "draem-zoo rehash" in str(info.value)
    image = tmp_path / "x.png"
    image.write_bytes(b"")  # never read: the model is refused first
    for argv in (["predict", "--model", str(d), str(image)],
                 ["evaluate", "--model", str(d), "--data", str(tmp_path), "--category", "weave"],
                 ["export-onnx", "--model", str(d)],
                 ["publish", str(tmp_path / "res"), "--org", "acme", "--license", "mit", "--dry-run"]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"records no {removed[0]}" in err and "rehash" in err, (argv, err)
    assert not (d / "model.onnx").exists()


def test_rehash_records_what_it_trusts_and_refuses_edits_unless_accepted(tmp_path, capsys, fixtures):
    d = _tiny(tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    del cfg[CONFIG_HASH], cfg["weights_sha256"]
    cfg["score"]["image_threshold"] = 0.125
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    assert cli.main(["rehash", str(d)]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["missing_before"] == ["weights_sha256", CONFIG_HASH] and result["recorded"]
    assert "image threshold 0.125" in err and "trusting model.safetensors" in err
    assert load_model_dir(d).score_config.image_threshold == 0.125
    assert cli.main(["rehash", str(d)]) == 0 and "nothing to do" in capsys.readouterr().err
    cfg = json.loads((d / "config.json").read_text())
    cfg["score"]["image_threshold"] = 0.5  # an edit after the hash was recorded: not rehashed silently
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    assert cli.main(["rehash", str(d)]) == 2 and "--accept-changes" in capsys.readouterr().err
    assert cli.main(["rehash", str(d), "--accept-changes"]) == 0
    assert load_model_dir(d).score_config.image_threshold == 0.5
    other = tmp_path / "other"  # weights of another architecture are never stamped as trusted
    _tiny(other)
    build = build_model("paper-tiny", rec_width=8, disc_width=8, image_size=32)
    save_model_dir(build, tmp_path / "wide")
    (other / "model.safetensors").write_bytes((tmp_path / "wide" / "model.safetensors").read_bytes())
    assert cli.main(["rehash", str(other), "--accept-changes"]) == 2
    assert "do not fit the architecture" in capsys.readouterr().err

    ref = load_file(str(fixtures / "parity_bw8_64px.safetensors"))  # a converted official checkpoint
    for part in ("reconstructive", "discriminative"):
        torch.save({k[len(part) + 1:]: v for k, v in ref.items() if k.startswith(part + ".")}, tmp_path / f"{part}.pckl")
    out = convert_official(tmp_path / "reconstructive.pckl", tmp_path / "discriminative.pckl", tmp_path / "conv", 64)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg[CONFIG_HASH] == config_digest(cfg)
    expected = load_model_dir(out).predict(ref["input"].flip(1)).score
    del cfg[CONFIG_HASH]  # as converted before config_sha256 existed: refused until rehashed
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    with pytest.raises(DraemZooError, match="records no config_sha256"):
        draem_zoo.load(str(out))
    modeldir.rehash(out)
    torch.testing.assert_close(draem_zoo.load(str(out)).predict(ref["input"].flip(1)).score, expected, atol=0, rtol=0)


def test_a_recorded_hash_that_is_not_a_hash_is_refused(tmp_path):
    d = _tiny(tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg[CONFIG_HASH] = None  # a null is "no hash": refused like a missing one ...
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DraemZooError, match="records no config_sha256"):
        load_model_dir(d)
    cfg[CONFIG_HASH] = 12345  # ... and anything else must match
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DraemZooError, match="edited after it was written"):
        load_model_dir(d)
