"""pull trusts nothing in a downloaded index.json: every name that becomes a path or a revision is checked
against what publish makes, for every entry, before anything is downloaded or written; downloads are checked
in a temporary folder inside the pull folder and only then renamed into place. Tiny random models, the local
Hub stand-in on 127.0.0.1; no network."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from hub_server import hub_env  # noqa: F401  (fixture)
from huggingface_hub import HfApi

from draem_zoo import build_model
from draem_zoo.cli import parser as cli
from draem_zoo.errors import DraemZooError
from draem_zoo.hub.download import pull
from draem_zoo.hub.publish import build_releases, publish
from draem_zoo.model.modeldir import save_model_dir
from draem_zoo.pipeline.runconfig import make_run_config

ORG, PREFIX = "acme", "draem-demo"
INDEX_REPO = f"{ORG}/{PREFIX}-index"


def extra(run, cat: str) -> dict:
    """What train_category records beside the weights (the card reads it)."""
    return {"run": run.to_dict(), "metrics": {"test": {"image_auroc": 0.5}},
            "data": {"category": cat, "counts": {"train": 8, "val": 2}, "files": 12, "file_list_sha256": "0" * 64},
            "training": {"iterations": 4, "world_size": 1, "seconds": 1.0, "device": "cpu"}}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A results folder as `draem-zoo search` leaves it (<category>/best/), two tiny random models."""
    out = tmp_path_factory.mktemp("pull") / "results"
    for seed, cat in enumerate(("granite", "weave")):
        torch.manual_seed(seed)
        model = build_model("paper-tiny", rec_width=4, disc_width=4, image_size=32).eval()
        run = make_run_config([f"data.root={out.parent / 'data'}", f"data.category={cat}", "model.variant=paper-tiny",
                               "model.rec_width=4", "model.disc_width=4", "model.image_size=32"])
        save_model_dir(model, out / cat / "best", extra(run, cat))
    return out


def test_publish_refuses_a_front_member_name_pull_would_refuse(pristine, tmp_path):
    res = tmp_path / "results"
    shutil.copytree(pristine, res)
    name = "m" * 97  # a plain name, but its branch folder would be too long: publish and pull share one rule
    shutil.copytree(res / "weave" / "best", res / "weave" / "front" / name)
    (res / "weave" / "summary.json").write_text(json.dumps({"front": [{"name": name, "model_dir": f"front/{name}"}]}))
    with pytest.raises(DraemZooError, match="cannot name a Hub branch"):
        build_releases(res, ORG, PREFIX, license="mit", warn=lambda m: None)


@pytest.fixture
def zoo(pristine, hub_env, tmp_path):
    """granite and weave published on the stand-in; the index as published."""
    res = tmp_path / "results"
    shutil.copytree(pristine, res)
    publish(build_releases(res, ORG, PREFIX, license="mit", warn=lambda m: None), ORG, PREFIX, log=lambda m: None)
    return json.loads(hub_env.hub.files(INDEX_REPO)["index.json"])


def _upload_index(index: dict) -> None:
    HfApi().upload_file(path_or_fileobj=(json.dumps(index, indent=2) + "\n").encode(), path_in_repo="index.json",
                        repo_id=INDEX_REPO)


def _files(root: Path, skip: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root`` (but not under ``skip``): its sha256 and mtime."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and skip not in p.parents}


def test_pull_front_branch_cannot_write_outside_the_pull_folder(zoo, hub_env, tmp_path, capsys):
    """Issue 26 (1): an index whose front branch is ../../../../victim overwrote files outside the pull folder."""
    site = tmp_path / "site"
    victim = site / "victim"
    victim.mkdir(parents=True)
    (victim / "config.json").write_text('{"mine": true}\n')
    (victim / "README.md").write_text("my own notes\n")
    out = site / "pulls" / "zoo"  # zoo/draem-demo-weave@../../../../victim is site/victim
    weave = zoo["categories"]["weave"]
    weave["front"] = [{"name": "x", "branch": "../../../../victim", "revision": weave["revision"]}]
    _upload_index(zoo)
    before = _files(tmp_path, skip=hub_env.client.hf_home)
    capsys.readouterr()
    assert cli.main(["pull", ORG, str(out), "--prefix", PREFIX, "--front"]) == 2
    assert _files(tmp_path, skip=hub_env.client.hf_home) == before
    assert not (site / "pulls").exists()  # not even the pull folder: nothing was written
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "'weave'" in err[0] and "branch" in err[0] and "'../../../../victim'" in err[0], err[0]


def test_pull_checks_every_entry_before_downloading_any(zoo, hub_env, tmp_path):
    """A bad entry late in the index (weave after granite) refuses the pull before granite is downloaded."""
    out = tmp_path / "zoo"
    cases = [(("repo",), "evil/draem-demo-weave", "repo"),
             (("revision",), "../../../../victim", "revision"),
             (("front",), [{"name": "fast", "branch": "front-fast/../../../x", "revision": None}], "branch")]
    for keys, value, field in cases:
        index = copy.deepcopy(zoo)
        index["categories"]["weave"][keys[0]] = value
        _upload_index(index)
        seen = len(hub_env.hub.requests)
        with pytest.raises(DraemZooError) as err:
            pull(ORG, out, None, PREFIX, front=True)
        msg = str(err.value)
        assert "'weave'" in msg and field in msg and "\n" not in msg, msg
        assert not out.exists(), msg
        assert not [p for _, p in hub_env.hub.requests[seen:] if f"{PREFIX}-granite" in p or f"{PREFIX}-weave" in p]
    index = copy.deepcopy(zoo)  # a category name that is a path
    index["categories"]["zz/../../x"] = index["categories"]["weave"]
    _upload_index(index)
    with pytest.raises(DraemZooError, match=r"category 'zz/\.\./\.\./x'"):
        pull(ORG, out, None, PREFIX)
    assert not out.exists()


def test_pull_replaces_an_earlier_pull_whole_and_keeps_it_when_the_new_one_is_refused(zoo, hub_env, tmp_path):
    out = tmp_path / "zoo"
    folder = out / f"{PREFIX}-weave"
    pull(ORG, out, ["weave"], PREFIX)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    (folder / "notes.txt").write_text("left from before\n")
    (out / f".{PREFIX}-weave.pull.k1ll3d_x").mkdir()  # a temporary folder of a pull that was killed
    pull(ORG, out, ["weave"], PREFIX)
    assert sorted(p.name for p in out.iterdir()) == [f"{PREFIX}-weave", "index.json"]  # no temporary or backup left
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    good = {p.name: p.read_bytes() for p in folder.iterdir()}
    index = (out / "index.json").read_bytes()
    weights = bytearray(hub_env.hub.files(f"{ORG}/{PREFIX}-weave")["model.safetensors"])
    weights[-1] ^= 0xFF
    hub_env.hub.tamper(f"{ORG}/{PREFIX}-weave", "model.safetensors", bytes(weights))
    with pytest.raises(DraemZooError) as err:
        pull(ORG, out, ["weave"], PREFIX)
    msg = str(err.value)
    assert f"{ORG}/{PREFIX}-weave" in msg and "sha256" in msg and ".pull." not in msg and "\n" not in msg, msg
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == good  # the earlier pull is intact
    assert sorted(p.name for p in out.iterdir()) == [f"{PREFIX}-weave", "index.json"]
    assert (out / "index.json").read_bytes() == index


A, B = "a" * 40, "b" * 40
GOOD = {"categories": {"weave": {"repo": f"{ORG}/{PREFIX}-weave", "revision": A, "front": [
    {"name": "fast", "branch": "front-fast", "revision": B}, {"name": "v1.2_x", "branch": "front-v1.2_x"}]}}}
BAD = [  # (where in the weave entry, value, what the message names)
    ("repo", f"{ORG}/{PREFIX}-granite", "repo"), ("repo", f"evil/{PREFIX}-weave", "repo"),
    ("repo", f"{ORG}/../../x", "repo"), ("repo", None, "repo"), ("repo", f"{ORG}/{PREFIX}-weave/x", "repo"),
    ("revision", "../../x", "revision"), ("revision", "main", "revision"), ("revision", 5, "revision"),
    ("revision", "A" * 40, "revision"), ("front", "front-fast", "front"), ("front", ["front-fast"], "front"),
    ("front.branch", "../../../../victim", "branch"), ("front.branch", "front-fast/../../x", "branch"),
    ("front.branch", "/etc", "branch"), ("front.branch", "front-..", "branch"), ("front.branch", "main", "branch"),
    ("front.branch", "front-slow", "branch"), ("front.branch", "front-fast\\..\\x", "branch"),
    ("front.name", "..", "name"), ("front.name", "a/b", "name"), ("front.name", "f" * 200, "name"),
    ("front.revision", "../x", "revision"), ("front.dup", None, "branch"),
]


@pytest.mark.parametrize("where,value,field", BAD, ids=[f"{w}={v!r}"[:40] for w, v, _ in BAD])
def test_index_entries_are_checked_against_what_publish_makes(where, value, field):
    from draem_zoo.hub.index import plan_pull

    index = copy.deepcopy(GOOD)
    entry = index["categories"]["weave"]
    if where == "front.dup":
        entry["front"].append(dict(entry["front"][0]))
    elif where.startswith("front."):
        member = entry["front"][0]
        member[where[6:]] = value
        if where == "front.name":
            member["branch"] = f"front-{value}"
    else:
        entry[where] = value
    with pytest.raises(DraemZooError) as err:
        plan_pull(index, ORG, PREFIX, None, front=False)  # checked even when the front is not pulled
    msg = str(err.value)
    assert "'weave'" in msg and field in msg and "\n" not in msg, msg
    if isinstance(value, str) and where != "front.name":
        assert repr(value) in msg, msg


@pytest.mark.parametrize("cat", ["../x", "a/b", "", "w\u00e9", "-x", "x" * 100, "..", "a--b"])
def test_index_category_names_are_checked(cat):
    from draem_zoo.hub.index import plan_pull

    index = {"categories": {cat: dict(GOOD["categories"]["weave"], repo=f"{ORG}/{PREFIX}-{cat}", front=[])}}
    with pytest.raises(DraemZooError, match="category"):
        plan_pull(index, ORG, PREFIX, None, front=False)


def test_index_plan_of_a_good_index():
    from draem_zoo.hub.index import plan_pull

    items = plan_pull(GOOD, ORG, PREFIX, None, front=True)
    assert [(i.folder, i.revision, i.branch) for i in items] == [
        (f"{PREFIX}-weave", A, None), (f"{PREFIX}-weave@front-fast", B, "front-fast"),
        (f"{PREFIX}-weave@front-v1.2_x", "front-v1.2_x", "front-v1.2_x")]  # a local zoo's member: its branch
    assert [i.folder for i in plan_pull(GOOD, ORG, PREFIX, ["weave"], front=False)] == [f"{PREFIX}-weave"]
    with pytest.raises(DraemZooError, match="lists no granite"):
        plan_pull(GOOD, ORG, PREFIX, ["granite"], front=False)
