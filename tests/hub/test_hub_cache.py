"""from_pretrained and a Hub cache copy that no longer matches: a damaged cached file is named and downloaded
again (offline: named, with the fix); a repository whose published files disagree is said to be one, since
downloading again cannot help. Tiny random models, the local Hub stand-in on 127.0.0.1; no network."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hub_server import hub_env  # noqa: F401  (fixture)
from huggingface_hub import HfApi

import draem_zoo
from draem_zoo import build_model
from draem_zoo.errors import DraemZooError
from draem_zoo.hub.publish import build_releases, publish
from draem_zoo.model.modeldir import config_text, save_model_dir
from draem_zoo.pipeline.runconfig import make_run_config

ORG, PREFIX = "acme", "draem-demo"
REPO = f"{ORG}/{PREFIX}-weave"


def extra(run, cat: str) -> dict:
    """What train_category records beside the weights (the card reads it)."""
    return {"run": run.to_dict(), "metrics": {"test": {"image_auroc": 0.5}},
            "data": {"category": cat, "counts": {"train": 8, "val": 2}, "files": 12, "file_list_sha256": "0" * 64},
            "training": {"iterations": 4, "world_size": 1, "seconds": 1.0, "device": "cpu"}}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "results"
    torch.manual_seed(0)
    model = build_model("paper-tiny", rec_width=4, disc_width=4, image_size=32).eval()
    run = make_run_config([f"data.root={out.parent / 'data'}", "data.category=weave", "model.variant=paper-tiny",
                           "model.rec_width=4", "model.disc_width=4", "model.image_size=32"])
    save_model_dir(model, out / "weave" / "best", extra(run, "weave"))
    return out


@pytest.fixture
def published(pristine, hub_env, tmp_path):
    res = tmp_path / "results"
    shutil.copytree(pristine, res)
    publish(build_releases(res, ORG, PREFIX, license="mit", warn=lambda m: None), ORG, PREFIX, log=lambda m: None)
    return res / "weave" / "best"


def _blob(snapshot: Path, name: str) -> Path:
    """The cache's blob behind a snapshot's file (blobs/<sha256 or git sha1>)."""
    link = snapshot / name
    assert link.is_symlink()
    return Path(os.path.normpath(link.parent / os.readlink(link)))


def _damage(blob: Path, name: str) -> None:
    if name == "model.safetensors":
        data = bytearray(blob.read_bytes())
        data[-1] ^= 0xFF  # same size, one flipped byte
        blob.write_bytes(bytes(data))
    else:
        blob.write_text(blob.read_text().replace('"image_threshold"', '"image_threshold": 0.0, "x"', 1))


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_damaged_cache_copy_is_named_and_downloaded_again(published, hub_env, capsys, name):
    """Issue 26 (9a): a stale cache blob said "download it again", which served the same blob, and named no path."""
    first = draem_zoo.from_pretrained(REPO)
    x = torch.rand(2, 3, 32, 32)
    want = first.predict(x).anomaly_map
    snapshot = Path(first.metadata["hub"]["path"])
    blob = _blob(snapshot, name)
    good = blob.read_bytes()
    _damage(blob, name)
    capsys.readouterr()
    hub_env.client.set_offline(True)  # offline: nothing can be downloaded; the message names the file and the fix
    with pytest.raises(DraemZooError) as err:
        draem_zoo.from_pretrained(REPO)
    msg = str(err.value)
    assert str(blob) in msg and "HF_HUB_OFFLINE" in msg and "\n" not in msg, msg
    assert blob.read_bytes() != good
    hub_env.client.set_offline(False)  # following the advice: load once with the Hub reachable
    again = draem_zoo.from_pretrained(REPO)
    warning = capsys.readouterr().err
    assert str(blob) in warning and "downloading" in warning, warning
    assert blob.read_bytes() == good and torch.equal(again.predict(x).anomaly_map, want)
    hub_env.client.set_offline(True)  # the cache is whole again
    assert torch.equal(draem_zoo.from_pretrained(REPO).predict(x).anomaly_map, want)
    assert capsys.readouterr().err == ""


def test_hub_serving_damaged_bytes_is_said_after_one_download_again(published, hub_env, capsys):
    data = bytearray(hub_env.hub.files(REPO)["model.safetensors"])
    data[-1] ^= 0xFF  # the Hub's storage serves bytes that do not match its own sha256
    hub_env.hub.tamper(REPO, "model.safetensors", bytes(data))
    with pytest.raises(DraemZooError) as err:
        draem_zoo.from_pretrained(REPO)
    msg = str(err.value)
    assert "downloaded again" in msg and REPO in msg and "sha256" in msg and "\n" not in msg, msg
    assert "downloading" in capsys.readouterr().err


def test_repository_whose_published_files_disagree_is_not_blamed_on_the_cache(published, hub_env):
    cfg = json.loads((published / "config.json").read_text())
    cfg["weights_sha256"] = "0" * 64  # consistently stamped, committed: the repository itself is wrong
    HfApi().upload_file(path_or_fileobj=config_text(cfg)[1].encode(), path_in_repo="config.json", repo_id=REPO)
    seen = len(hub_env.hub.requests)
    with pytest.raises(DraemZooError) as err:
        draem_zoo.from_pretrained(REPO)
    msg = str(err.value)
    assert "as published" in msg and "will not help" in msg and REPO in msg and "\n" not in msg, msg
    gets = [p for m, p in hub_env.hub.requests[seen:] if m == "GET" and ("/resolve/" in p or "/cdn/" in p)]
    assert len(gets) == len(set(gets)) == 3, gets  # each file downloaded once, not again
