"""Tests of the Hugging Face Hub stand-in (tests/hub_server.py), driven by the real huggingface_hub client."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import huggingface_hub
import pytest
from hub_server import DEFAULT_TOKEN, HubStandIn, hub_client, hub_env  # noqa: F401 - hub_env is a fixture
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

# The client's own basic LFS upload (lfs._upload_single_part) passes a file object as `data=`, which httpx2 flags.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")

REPO = "draem-zoo/test-model"
README = b"---\nlicense: mit\ntags:\n- anomaly-detection\n---\n# A test model\n"
CONFIG = b'{"backbone": "resnet18", "epochs": 1}\n'


def _weights(seed: int = 0, size: int = 1 << 20) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32)  # ~1 MB, deterministic


def _ops(readme: bytes = README, config: bytes = CONFIG, weights: bytes | None = None) -> list[CommitOperationAdd]:
    return [
        CommitOperationAdd("README.md", readme),
        CommitOperationAdd("config.json", config),
        CommitOperationAdd("model.safetensors", _weights() if weights is None else weights),
    ]


def _seed(api: HfApi) -> str:
    api.create_repo(REPO, exist_ok=True)
    return api.create_commit(REPO, operations=_ops(), commit_message="first upload").oid


def entry_blob_id(api: HfApi, path: str) -> str:
    (entry,) = api.get_paths_info(REPO, [path])
    return entry.blob_id


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_hub_server_upload_then_download_roundtrip(hub_env):
    hub, api = hub_env.hub, HfApi()
    url = api.create_repo(REPO, private=False, exist_ok=True)
    assert url.repo_id == REPO and url.startswith(hub.endpoint)

    info = api.create_commit(REPO, operations=_ops(), commit_message="first upload")
    history = hub.commits(REPO)
    assert [c["title"] for c in history] == ["first upload", "initial commit"]  # like huggingface.co
    assert info.oid == history[0]["id"] and len(info.oid) == 40
    files = history[0]["files"]
    assert files["model.safetensors"]["lfs"] and files["model.safetensors"]["sha256"] == hashlib.sha256(
        _weights()).hexdigest()
    assert not files["README.md"]["lfs"] and not files["config.json"]["lfs"]

    # the LFS bytes went through the batch API and a PUT to the signed storage URL (no auth header there)
    puts = [r for r in hub.request_log if r["method"] == "PUT"]
    assert len(puts) == 1 and puts[0]["host"].startswith("localhost:") and puts[0]["authorization"] is None
    assert ("POST", f"/{REPO}.git/info/lfs/objects/batch") in hub.requests

    for name, expected in (("README.md", README), ("config.json", CONFIG), ("model.safetensors", _weights())):
        path = hf_hub_download(REPO, name)
        assert _read(path) == expected
        assert path.startswith(str(hub_env.cache_dir))
        assert f"snapshots/{info.oid}/" in path
    # LFS download: HEAD on the Hub answered 302, bytes fetched from storage without the token
    cdn = [r for r in hub.request_log if r["path"].startswith("/__stand_in/cdn/")]
    assert len(cdn) == 1 and cdn[0]["authorization"] is None
    blob = hub_env.cache_dir / "models--draem-zoo--test-model" / "blobs" / files["model.safetensors"]["sha256"]
    assert blob.is_file()

    mi = api.model_info(REPO, files_metadata=True)
    assert mi.sha == info.oid and mi.card_data.license == "mit" and "anomaly-detection" in mi.tags
    siblings = {s.rfilename: s for s in mi.siblings}
    assert set(siblings) == {".gitattributes", "README.md", "config.json", "model.safetensors"}
    assert siblings["model.safetensors"].lfs.sha256 == files["model.safetensors"]["sha256"]
    assert sorted(api.list_repo_files(REPO)) == sorted(siblings)
    assert hub.files(REPO)["config.json"] == CONFIG
    assert hub.unknown_routes == []


def test_hub_server_identical_commit_creates_no_commit(hub_env, caplog):
    hub, api = hub_env.hub, HfApi()
    first = _seed(api)
    n_requests = len(hub.requests)

    again = api.create_commit(REPO, operations=_ops(), commit_message="same files again")

    # The 2.4.0 client asks /preupload (which reports the remote oids: sha256 for LFS files, git sha1 for regular
    # ones), still runs the LFS batch for the LFS file (the stand-in answers "already stored": no upload action,
    # no PUT), drops every unchanged operation, and with nothing left never calls /commit: it logs a warning and
    # returns the head from GET /api/models/{repo}/revision/main.
    assert again.oid == first
    assert len(hub.commits(REPO)) == 2
    new = hub.requests[n_requests:]
    assert ("POST", f"/api/models/{REPO}/preupload/main") in new
    assert ("POST", f"/api/models/{REPO}/commit/main") not in new
    assert not any(method == "PUT" for method, _ in new)
    assert ("GET", f"/api/models/{REPO}/revision/main") in new

    # Asked directly, the server itself also refuses to create an empty commit and answers with the head.
    from huggingface_hub.utils import get_session

    body = b"".join(json.dumps(line).encode() + b"\n" for line in (
        {"key": "header", "value": {"summary": "no-op", "description": ""}},
        {"key": "file", "value": {"path": "config.json", "encoding": "base64",
                                  "content": base64.b64encode(CONFIG).decode()}},
    ))
    r = get_session().post(f"{hub.endpoint}/api/models/{REPO}/commit/main", content=body,
                           headers={"Authorization": f"Bearer {DEFAULT_TOKEN}",
                                    "Content-Type": "application/x-ndjson"})
    assert r.status_code == 200 and r.json()["commitOid"] == first
    assert len(hub.commits(REPO)) == 2


def test_hub_server_changed_file_makes_new_commit(hub_env):
    hub, api = hub_env.hub, HfApi()
    first = _seed(api)
    new_config = b'{"backbone": "resnet18", "epochs": 2}\n'

    second = api.create_commit(REPO, operations=_ops(config=new_config), commit_message="more epochs")

    history = hub.commits(REPO)
    assert second.oid != first and [c["id"] for c in history[:2]] == [second.oid, first]
    assert history[0]["parents"] == [first]
    assert hub.files(REPO)["config.json"] == new_config
    assert hub.files(REPO, revision=first)["config.json"] == CONFIG
    assert history[0]["files"]["model.safetensors"] == history[1]["files"]["model.safetensors"]
    assert _read(hf_hub_download(REPO, "config.json")) == new_config

    # deletions work too
    third = api.create_commit(REPO, operations=[CommitOperationDelete("config.json")], commit_message="rm")
    assert "config.json" not in hub.files(REPO) and hub.commits(REPO)[0]["id"] == third.oid
    assert [c.commit_id for c in api.list_repo_commits(REPO)] == [c["id"] for c in hub.commits(REPO)]


def test_hub_server_tags_and_refs(hub_env):
    hub, api = hub_env.hub, HfApi()
    first = _seed(api)
    api.create_tag(REPO, tag="v1.0", revision=first, tag_message="first release")
    second = api.create_commit(REPO, operations=_ops(weights=_weights(1)), commit_message="new weights").oid
    api.create_tag(REPO, tag="v2.0")  # default: main

    refs = api.list_repo_refs(REPO)
    assert [(b.name, b.ref, b.target_commit) for b in refs.branches] == [("main", "refs/heads/main", second)]
    assert {t.name: t.target_commit for t in refs.tags} == {"v1.0": first, "v2.0": second}
    assert hub.tags(REPO) == {"v1.0": first, "v2.0": second}

    with pytest.raises(HfHubHTTPError) as exc:
        api.create_tag(REPO, tag="v1.0")
    assert exc.value.response.status_code == 409
    api.create_tag(REPO, tag="v1.0", exist_ok=True)
    with pytest.raises(RevisionNotFoundError):
        api.create_tag(REPO, tag="v3.0", revision="no-such-branch")

    api.delete_tag(REPO, tag="v2.0")
    assert hub.tags(REPO) == {"v1.0": first}
    assert api.model_info(REPO, revision="v1.0").sha == first


def test_hub_server_pinned_revision_returns_old_bytes(hub_env):
    api = HfApi()
    first = _seed(api)
    api.create_tag(REPO, tag="v1", revision=first)
    api.create_commit(REPO, operations=_ops(weights=_weights(1), config=b"{}"), commit_message="retrain")

    assert _read(hf_hub_download(REPO, "model.safetensors")) == _weights(1)
    assert _read(hf_hub_download(REPO, "model.safetensors", revision=first)) == _weights(0)
    assert _read(hf_hub_download(REPO, "model.safetensors", revision="v1")) == _weights(0)
    assert _read(hf_hub_download(REPO, "config.json", revision="v1")) == CONFIG
    assert _read(hf_hub_download(REPO, "config.json")) == b"{}"
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="v9")
    with pytest.raises(huggingface_hub.errors.EntryNotFoundError):
        hf_hub_download(REPO, "missing.bin")


def test_hub_server_snapshot_then_offline_reload(hub_env):
    hub, api = hub_env.hub, HfApi()
    first = _seed(api)
    folder = snapshot_download(REPO)
    assert folder.endswith(first)
    assert sorted(os.listdir(folder)) == [".gitattributes", "README.md", "config.json", "model.safetensors"]

    hub_env.client.set_offline(True)
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"
    n_requests = len(hub.requests)
    assert snapshot_download(REPO) == folder
    assert _read(hf_hub_download(REPO, "model.safetensors")) == _weights()
    assert _read(hf_hub_download(REPO, "README.md", revision=first)) == README
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "never-downloaded.txt")
    assert len(hub.requests) == n_requests  # nothing reached the server while offline

    hub_env.client.set_offline(False)
    assert _read(hf_hub_download(REPO, "config.json")) == CONFIG


def test_hub_server_unknown_route_is_a_loud_404(hub_env):
    from huggingface_hub.utils import get_session

    hub = hub_env.hub
    r = get_session().get(f"{hub.endpoint}/api/xyz")
    assert r.status_code == 404
    assert "hub stand-in: route not implemented: GET /api/xyz" in r.json()["error"]
    assert hub.unknown_routes == [("GET", "/api/xyz")]

    # through the client: a route the stand-in does not serve fails visibly, with the route in the message
    with pytest.raises(HfHubHTTPError, match="route not implemented: GET /api/models"):
        list(HfApi().list_models(limit=1))
    assert ("GET", "/api/models") in hub.unknown_routes


def test_hub_server_write_needs_the_token(hub_env):
    hub = hub_env.hub
    with pytest.raises(HfHubHTTPError) as exc:
        HfApi(token=False).create_repo("draem-zoo/anonymous")
    assert exc.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError, match="Invalid credentials") as exc:
        HfApi(token="hf_wrong_token").create_repo("draem-zoo/wrong-token")
    assert exc.value.response.status_code == 401
    assert not any(key[1].startswith("draem-zoo/") for key in hub._repos)

    # client quirk: create_repo(exist_ok=True) turns a 401 into a repo_info() probe, so without a token it
    # "succeeds" for an existing public repo (nothing is written); a wrong token still fails
    HfApi().create_repo("draem-zoo/public")
    HfApi().upload_file(path_or_fileobj=CONFIG, path_in_repo="config.json", repo_id="draem-zoo/public")
    assert _read(hf_hub_download("draem-zoo/public", "config.json", token=False)) == CONFIG  # public: no token
    assert HfApi(token=False).create_repo("draem-zoo/public", exist_ok=True).repo_id == "draem-zoo/public"
    with pytest.raises(HfHubHTTPError):
        HfApi(token="hf_wrong_token").create_repo("draem-zoo/public", exist_ok=True)

    # private repos are invisible without the token, readable with it
    api = HfApi()
    api.create_repo("draem-zoo/private", private=True)
    api.upload_file(path_or_fileobj=CONFIG, path_in_repo="config.json", repo_id="draem-zoo/private")
    assert api.model_info("draem-zoo/private").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("draem-zoo/private")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("draem-zoo/private", "config.json", token=False)
    assert _read(hf_hub_download("draem-zoo/private", "config.json")) == CONFIG


def test_hub_server_tamper_changes_served_bytes_without_commit(hub_env, tmp_path):
    hub, api = hub_env.hub, HfApi()
    first = _seed(api)
    good = _weights()
    evil = bytes(b ^ 0xFF for b in good[:16]) + good[16:]  # same size, different content
    hub.tamper(REPO, "model.safetensors", evil)

    assert [c["id"] for c in hub.commits(REPO)][0] == first and len(hub.commits(REPO)) == 2
    assert hub.files(REPO)["model.safetensors"] == evil
    (entry,) = api.get_paths_info(REPO, ["model.safetensors"])
    assert entry.lfs.sha256 == hashlib.sha256(good).hexdigest()  # metadata still describes the committed bytes

    # the client trusts the size check only: it caches the corrupted bytes under the committed sha256
    path = hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path / "fresh_cache")
    assert _read(path) == evil
    assert os.path.basename(os.path.realpath(path)) == entry.lfs.sha256 != hashlib.sha256(_read(path)).hexdigest()

    # an LFS object of the wrong size is caught by the client itself (X-Linked-Size comes from the commit)
    hub.tamper(REPO, "model.safetensors", good[:-10])
    with pytest.raises(OSError, match="Consistency check failed"):
        hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path / "other_cache")

    # regular files: the served bytes (and their Content-Length) change, the ETag stays the committed blob id
    hub.tamper(REPO, "config.json", b"{}")
    path = hf_hub_download(REPO, "config.json", cache_dir=tmp_path / "third_cache")
    assert _read(path) == b"{}" and os.path.basename(os.path.realpath(path)) == entry_blob_id(api, "config.json")


def test_hub_server_upload_modes_and_dataset_repos(hub_env):
    from huggingface_hub.utils import get_session

    hub, api = hub_env.hub, HfApi()
    api.create_repo("draem-zoo/data", repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("draem-zoo/data", repo_type="dataset")
    assert exc.value.response.status_code == 409
    api.create_repo("draem-zoo/data", repo_type="dataset", exist_ok=True)

    def preupload(files: list[dict]) -> dict[str, str]:
        r = get_session().post(f"{hub.endpoint}/api/datasets/draem-zoo/data/preupload/main",
                               json={"files": files}, headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"})
        assert r.status_code == 200, r.text
        return {f["path"]: f["uploadMode"] for f in r.json()["files"]}

    text, binary = base64.b64encode(b"hello\n").decode(), base64.b64encode(b"\0\1\2").decode()
    assert preupload([
        {"path": "notes.txt", "sample": text, "size": 6},
        {"path": "big.txt", "sample": text, "size": 11_000_000},
        {"path": "tiny.safetensors", "sample": text, "size": 6},
        {"path": "raw.dat", "sample": binary, "size": 3},
        {"path": "sub/weights.pt", "sample": text, "size": 6},
    ]) == {"notes.txt": "regular", "big.txt": "lfs", "tiny.safetensors": "lfs", "raw.dat": "lfs",
           "sub/weights.pt": "lfs"}

    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="train/part.csv", repo_id="draem-zoo/data",
                    repo_type="dataset")
    api.upload_file(path_or_fileobj=b"\0binary", path_in_repo="train/x.bin", repo_id="draem-zoo/data",
                    repo_type="dataset")
    tree = {e.path: e for e in api.list_repo_tree("draem-zoo/data", repo_type="dataset", recursive=True)}
    assert set(tree) == {".gitattributes", "train", "train/part.csv", "train/x.bin"}
    assert tree["train/x.bin"].lfs is not None and tree["train/part.csv"].lfs is None
    top = [e.path for e in api.list_repo_tree("draem-zoo/data", repo_type="dataset")]
    assert sorted(top) == [".gitattributes", "train"]

    hub.page_size = 1  # the client follows the Link header pagination
    assert sorted(api.list_repo_files("draem-zoo/data", repo_type="dataset")) == [
        ".gitattributes", "train/part.csv", "train/x.bin"]
    path = hf_hub_download("draem-zoo/data", "train/x.bin", repo_type="dataset")
    assert _read(path) == b"\0binary" and "datasets--draem-zoo--data" in path
    assert hub.files("draem-zoo/data", repo_type="dataset")["train/part.csv"] == b"a,b\n1,2\n"


def test_hub_server_client_patch_is_undone(tmp_path):
    import huggingface_hub.constants as c
    from huggingface_hub import hf_api

    before = (c.ENDPOINT, c.HUGGINGFACE_CO_URL_TEMPLATE, c.HF_HUB_CACHE, c.HF_HUB_OFFLINE, c.HF_HUB_DISABLE_XET,
              hf_api.api.endpoint, os.environ.get("HF_ENDPOINT"), os.environ.get("HF_TOKEN"))
    with HubStandIn() as hub, hub_client(hub.endpoint, tmp_path / "hf", offline=True) as client:
        assert c.ENDPOINT == hub.endpoint == hf_api.api.endpoint == os.environ["HF_ENDPOINT"]
        assert c.HUGGINGFACE_CO_URL_TEMPLATE.startswith(hub.endpoint + "/")
        assert huggingface_hub.hf_hub_url("a/b", "c.txt") == f"{hub.endpoint}/a/b/resolve/main/c.txt"
        assert c.HF_HUB_CACHE == str(client.cache_dir) and c.HF_HUB_OFFLINE is True and c.HF_HUB_DISABLE_XET
        assert os.environ["HF_TOKEN"] == DEFAULT_TOKEN
    after = (c.ENDPOINT, c.HUGGINGFACE_CO_URL_TEMPLATE, c.HF_HUB_CACHE, c.HF_HUB_OFFLINE, c.HF_HUB_DISABLE_XET,
             hf_api.api.endpoint, os.environ.get("HF_ENDPOINT"), os.environ.get("HF_TOKEN"))
    assert after == before


def test_hub_server_branches_upload_folder_and_repo_checks(hub_env, tmp_path):
    hub, api = hub_env.hub, HfApi()
    first = _seed(api)
    assert api.repo_exists(REPO) and not api.repo_exists("draem-zoo/nope")
    assert api.file_exists(REPO, "model.safetensors") and not api.file_exists(REPO, "nope.txt")
    assert api.revision_exists(REPO, first) and not api.revision_exists(REPO, "dev")

    api.create_branch(REPO, branch="dev")
    export = tmp_path / "export"
    (export / "sub").mkdir(parents=True)
    (export / "config.json").write_bytes(b'{"dev": true}')
    (export / "sub" / "model.safetensors").write_bytes(_weights(7))
    dev = api.upload_folder(repo_id=REPO, folder_path=export, revision="dev", commit_message="dev export",
                            delete_patterns=["README.md"]).oid
    assert hub.branches(REPO) == {"main": first, "dev": dev}
    assert set(hub.files(REPO, revision="dev")) == {".gitattributes", "config.json", "model.safetensors",
                                                    "sub/model.safetensors"}
    assert _read(hf_hub_download(REPO, "sub/model.safetensors", revision="dev")) == _weights(7)
    assert _read(hf_hub_download(REPO, "config.json")) == CONFIG  # main untouched

    tree = {e.path: e for e in api.list_repo_tree(REPO, revision="dev", recursive=True, expand=True)}
    assert tree["sub/model.safetensors"].last_commit.oid == dev
    assert tree[".gitattributes"].last_commit.title == "initial commit"
    assert tree["sub"].last_commit.oid == dev

    api.delete_branch(REPO, branch="dev")
    assert [b.name for b in api.list_repo_refs(REPO).branches] == ["main"]
    api.delete_repo(REPO)
    assert not api.repo_exists(REPO)
    assert hub.unknown_routes == [] and hub.server_errors == []


def test_hub_server_env_vars_set_before_import(tmp_path):
    """The plain recipe without any patching: env vars set before huggingface_hub is imported (new process)."""
    import subprocess
    import sys

    script = (
        "import huggingface_hub as h\n"
        "api = h.HfApi()\n"
        "api.create_repo('ns/fresh')\n"
        "api.upload_file(path_or_fileobj=b'w' * 4096, path_in_repo='model.safetensors', repo_id='ns/fresh')\n"
        "p = h.hf_hub_download('ns/fresh', 'model.safetensors')\n"
        "assert open(p, 'rb').read() == b'w' * 4096 and p.startswith(h.constants.HF_HUB_CACHE), p\n"
        "print('OK', h.constants.ENDPOINT)\n"
    )
    with HubStandIn() as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN=DEFAULT_TOKEN, HF_HUB_DISABLE_XET="1",
                   HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"OK {hub.endpoint}"
        assert hub.files("ns/fresh")["model.safetensors"] == b"w" * 4096
        assert hub.unknown_routes == []
