"""publish checks every file against what was recorded when it was written, refuses repository ids the Hub
refuses, and an unreachable Hub is one line naming it (publish, pull, hf-hub: models). Tiny random models,
the local Hub stand-in or a closed port on 127.0.0.1; no network."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import onnx
import pytest
import torch
from hub_server import DEFAULT_TOKEN, hub_client, hub_env  # noqa: F401  (fixture)

import draem_zoo
from draem_zoo import build_model
from draem_zoo.cli import parser as cli
from draem_zoo.errors import DraemZooError
from draem_zoo.hub.publish import build_releases, publish
from draem_zoo.model.modeldir import CONFIG_HASH, save_model_dir, sha256_file
from draem_zoo.pipeline.runconfig import make_run_config

ORG, PREFIX = "acme", "draem-demo"
DRY = ["--org", ORG, "--prefix", PREFIX, "--license", "mit", "--dry-run"]


def _model(seed: int):
    torch.manual_seed(seed)
    model = build_model("paper-tiny", rec_width=4, disc_width=4, image_size=32)
    model.score_config.filter_size = 5
    model.score_config.image_threshold, model.score_config.pixel_threshold = 0.25, 0.5
    return model.eval()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A results folder as `draem-zoo search` leaves it (<category>/best/), weave with an exported model.onnx."""
    out = tmp_path_factory.mktemp("checks") / "results"
    for seed, cat in enumerate(("granite", "weave")):
        run = make_run_config([f"data.root={out.parent / 'data'}", f"data.category={cat}", "model.variant=paper-tiny",
                               "model.rec_width=4", "model.disc_width=4", "model.image_size=32"])
        data = {"category": cat, "counts": {"train": 8, "val": 2}, "files": 12, "file_list_sha256": "0" * 64}
        training = {"iterations": 4, "world_size": 1, "seconds": 1.0, "device": "cpu"}
        save_model_dir(_model(seed), out / cat / "best", {"run": run.to_dict(), "data": data, "training": training,
                                                          "metrics": {"test": {"image_auroc": 0.5 + seed / 10}}})
    assert cli.main(["export-onnx", "--model", str(out / "weave" / "best")]) == 0
    return out


@pytest.fixture
def res(pristine, tmp_path, capsys):
    dest = tmp_path / "results"
    shutil.copytree(pristine, dest)
    capsys.readouterr()
    return dest


def _fails(argv: list[str], capsys) -> str:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err


def _flip(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF  # same size, one byte
    path.write_bytes(bytes(data))


def test_dry_run_lists_intact_files_with_their_recorded_hashes(res, capsys):
    assert cli.main(["publish", str(res), *DRY]) == 0
    plan = {p["category"]: p for p in json.loads(capsys.readouterr().out)["would_upload"]}
    weave = res / "weave" / "best"
    assert set(plan["weave"]["files"]) == {"model.safetensors", "config.json", "model.onnx", "README.md"}
    assert plan["weave"]["files"]["model.onnx"]["sha256"] == sha256_file(weave / "model.onnx") == \
        json.loads((weave / "model.onnx.json").read_text())["sha256"]
    assert plan["weave"]["files"]["model.safetensors"]["sha256"] == \
        json.loads((weave / "config.json").read_text())["weights_sha256"]


def test_dry_run_refuses_flipped_weights(res, capsys):
    weights = res / "granite" / "best" / "model.safetensors"
    _flip(weights)
    err = _fails(["publish", str(res), *DRY], capsys)
    assert str(weights) in err and "sha256" in err and "does not match config.json" in err
    assert "re-run the export" in err and "nothing was uploaded" in err


def test_dry_run_refuses_a_flipped_model_onnx_that_still_parses(res, capsys):
    path = res / "weave" / "best" / "model.onnx"
    proto = onnx.load(str(path))
    raw = max((t.raw_data for t in proto.graph.initializer), key=len)
    data = path.read_bytes()
    _flip(path, data.index(raw) + len(raw) // 2)  # a weight of the graph: the file and its metadata still read
    assert onnx.load(str(path)).metadata_props == proto.metadata_props
    err = _fails(["publish", str(res), *DRY], capsys)
    assert str(path) in err and "model.onnx.json" in err and "corrupt or was altered" in err
    assert f"draem-zoo export-onnx --model {path.parent}" in err


def test_dry_run_refuses_edited_thresholds(res, capsys):
    path = res / "granite" / "best" / "config.json"
    cfg = json.loads(path.read_text())
    cfg["score"]["image_threshold"] = 0.01
    path.write_text(json.dumps(cfg, indent=2))
    err = _fails(["publish", str(res), *DRY], capsys)
    assert str(path) in err and "edited after it was written" in err and "retrain/re-export" in err


def test_stale_or_unrecorded_onnx_is_left_out_with_a_warning(res, capsys):
    weave, granite = res / "weave" / "best", res / "granite" / "best"
    shutil.copy(weave / "model.onnx", granite / "model.onnx")  # made from weave's weights, with its record
    shutil.copy(weave / "model.onnx.json", granite / "model.onnx.json")
    (weave / "model.onnx.json").unlink()  # exported before export-onnx wrote records
    warnings: list[str] = []
    rel = {r.category: r for r in build_releases(res, ORG, PREFIX, license="mit", warn=warnings.append)}
    assert "model.onnx" not in rel["weave"].files and "model.onnx" not in rel["granite"].files
    assert sorted(w.split(":")[1].strip() for w in warnings) == [str(granite / "model.onnx"),
                                                                 str(weave / "model.onnx")]
    assert any("stale" in w and str(granite) in w for w in warnings)
    assert any("no record of its sha256" in w and str(weave) in w for w in warnings)


def test_model_dirs_without_config_hash_are_not_published_until_rehashed(res, capsys):
    path = res / "granite" / "best" / "config.json"
    cfg = json.loads(path.read_text())
    del cfg[CONFIG_HASH]
    path.write_text(json.dumps(cfg, indent=2))
    assert cli.main(["publish", str(res), *DRY]) == 2
    err = capsys.readouterr().err
    assert "records no config_sha256" in err and "nothing was uploaded" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["rehash", str(path.parent)]) == 0
    assert cli.main(["publish", str(res), *DRY]) == 0
    assert "granite" in capsys.readouterr().out


@pytest.mark.parametrize("flags,named", [
    (["--org", "bad org!"], "--org 'bad org!'"),
    (["--org", "acme/x"], "--org 'acme/x'"),
    (["--org", ORG, "--prefix", "x/../y"], "--prefix 'x/../y'"),
    (["--org", ORG, "--prefix", "draem--demo"], "--prefix 'draem--demo'"),
    (["--org", ORG, "--prefix", "d" * 95], "--prefix 'ddd"),  # a name over 96 characters with "-index"
])
def test_repo_ids_the_hub_refuses_are_refused_first(tmp_path, capsys, flags, named):
    # the results folder does not even exist: the names are checked before anything else
    err = _fails(["publish", str(tmp_path / "nowhere"), *flags, "--license", "mit", "--dry-run"], capsys)
    assert named in err and ("the Hub refuses the repository id" in err or "give the Hub user" in err)
    assert "nowhere" not in err


def test_pull_refuses_bad_names_before_asking_the_hub(tmp_path, capsys):
    err = _fails(["pull", "bad org!", str(tmp_path / "zoo")], capsys)
    assert "--org 'bad org!'" in err and not (tmp_path / "zoo").exists()


def test_files_changed_after_the_check_are_not_uploaded(res, hub_env):
    releases = build_releases(res, ORG, PREFIX, license="mit", categories=["granite"])
    _flip(res / "granite" / "best" / "model.safetensors")
    with pytest.raises(DraemZooError, match="changed after publish checked it"):
        publish(releases, ORG, PREFIX, log=lambda m: None)
    assert not any(m == "POST" and "/commit/" in p for m, p in hub_env.hub.requests)


@pytest.fixture
def closed_port(tmp_path):
    """The client pointed at a port of 127.0.0.1 where nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    with hub_client(endpoint, tmp_path / "hf_home", token=DEFAULT_TOKEN):
        yield endpoint


def test_publish_with_the_hub_unreachable_is_one_line(res, closed_port, capsys):
    t0 = time.monotonic()
    err = _fails(["publish", str(res), "--org", ORG, "--prefix", PREFIX, "--license", "mit"], capsys)
    assert time.monotonic() - t0 < 20
    assert f"cannot reach the Hugging Face Hub at {closed_port} (HF_ENDPOINT)" in err
    assert "check the network" in err and "nothing was uploaded" in err and "Traceback" not in err


def test_pull_and_hub_models_with_the_hub_unreachable_are_one_line(closed_port, tmp_path, capsys):
    t0 = time.monotonic()
    err = _fails(["pull", ORG, str(tmp_path / "zoo"), "--prefix", PREFIX], capsys)
    assert f"{ORG}/{PREFIX}-index: cannot reach the Hugging Face Hub at {closed_port} (HF_ENDPOINT)" in err
    assert "check the network" in err and "HF_HUB_OFFLINE=1" in err
    (tmp_path / "x.png").write_bytes(b"")
    err = _fails(["predict", "--model", f"hf-hub:{ORG}/{PREFIX}-weave@v1", str(tmp_path / "x.png")], capsys)
    assert f"{ORG}/{PREFIX}-weave@v1: cannot reach the Hugging Face Hub at {closed_port}" in err
    assert "not in the local Hub cache" in err and "HF_HUB_OFFLINE=1" in err
    with pytest.raises(DraemZooError, match=f"at {closed_port} "):
        draem_zoo.from_pretrained(f"{ORG}/{PREFIX}-weave")
    assert time.monotonic() - t0 < 20  # no retries with back-off


def test_publish_in_offline_mode_says_so(res, hub_env, capsys):
    hub_env.client.set_offline(True)
    err = _fails(["publish", str(res), "--org", ORG, "--prefix", PREFIX, "--license", "mit"], capsys)
    assert "HF_HUB_OFFLINE is set" in err and hub_env.endpoint in err and "nothing was uploaded" in err
    assert not hub_env.hub.requests
