"""Using published models: ``from_pretrained``, ``hf-hub:`` specs, and ``pull`` for air-gapped sites.

Downloads go through the Hub cache (``HF_HOME``), so a model once fetched loads offline
(``HF_HUB_OFFLINE=1``); a revision (commit, tag or branch) pins what is loaded. Loading
always checks the weights' sha256 against ``config.json`` and the state dict strictly.
``from_pretrained`` fetches only what PyTorch needs; ``pull`` also brings ``model.onnx``
when the repository has one (checked to be made from the same weights). A Hub that cannot be
reached is one error naming the endpoint (``HF_ENDPOINT``) and what to do, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download

from ..errors import DraemZooError
from ..export.onnx import ONNX_FILE, stale_reason
from ..model.modeldir import CONFIG, WEIGHTS, load_model_dir
from .checks import HubUnreachable, check_names, check_repo_id, endpoint, offline, offline_mode, unreachable_text

HUB_PREFIX = "hf-hub:"
REPO_FILES = [WEIGHTS, CONFIG, "README.md"]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/NAME[@REVISION]`` -> (repo id, revision)."""
    body = spec[len(HUB_PREFIX):] if spec.startswith(HUB_PREFIX) else spec
    repo, _, rev = body.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise DraemZooError(f"{spec!r}: a Hub model is ORG/NAME (optionally @REVISION), e.g. "
                            "hf-hub:acme/draem-mvtec-bottle@v1")
    check_repo_id(repo, repr(spec))
    return repo, rev or None


def _friendly(exc: Exception, repo_id: str, revision: str | None) -> DraemZooError:
    name = type(exc).__name__
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    if "RevisionNotFound" in name:
        return DraemZooError(f"{where}: no such revision (commit, tag or branch) on the Hub")
    if "RepositoryNotFound" in name or "GatedRepo" in name:
        return DraemZooError(f"{where}: no such model repository, or it is private: check the name, or set "
                             "HF_TOKEN / run `hf auth login` for private repositories")
    copy = "for an air-gapped machine, `draem-zoo pull` on a connected one and copy the folder"
    if offline(exc) or ("LocalEntryNotFound" in name and offline_mode()):
        return HubUnreachable(f"{where}: not in the local Hub cache, and HF_HUB_OFFLINE is set, so the Hub at "
                              f"{endpoint()} was not asked: unset HF_HUB_OFFLINE to download it once ({copy})")
    text = unreachable_text(exc)
    if text or "LocalEntryNotFound" in name:
        return HubUnreachable(f"{where}: {text or f'the Hub at {endpoint()} (HF_ENDPOINT) could not be reached'}, "
                              "and it is not in the local Hub cache: check the network connection, proxy and "
                              f"HF_ENDPOINT (models downloaded before load offline with HF_HUB_OFFLINE=1; {copy})")
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return DraemZooError(f"{where}: download from {endpoint()} failed ({name}: {first})")


def snapshot(repo_id: str, revision: str | None = None, cache_dir: str | None = None,
             local_dir: str | Path | None = None, token: str | None = None, extra: tuple[str, ...] = ()) -> Path:
    """The model files of a Hub repository at ``revision`` (and ``extra`` ones it has), from the cache or downloaded."""
    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=[*REPO_FILES, *extra], cache_dir=cache_dir,
                                 local_dir=str(local_dir) if local_dir else None, token=token)
    except Exception as exc:
        raise _friendly(exc, repo_id, revision) from None
    return Path(path)


def from_pretrained(repo_id: str, revision: str | None = None, device: str = "cpu", cache_dir: str | None = None,
                    token: str | None = None):
    """Download (or reuse from the cache) and load a published model; strict and hash-checked."""
    if repo_id.startswith(HUB_PREFIX) or "@" in repo_id:
        repo_id, rev = parse_spec(repo_id)
        revision = revision or rev
    path = snapshot(repo_id, revision, cache_dir=cache_dir, token=token)
    model = load_model_dir(path, device=device)
    model.metadata["hub"] = {"repo_id": repo_id, "revision": revision, "path": str(path)}  # type: ignore[attr-defined]
    return model


def read_index(org: str, prefix: str, revision: str | None = None, token: str | None = None) -> dict[str, Any]:
    check_names(org, prefix)
    repo = f"{org}/{prefix}-index"
    try:  # a snapshot, not hf_hub_download: it asks the Hub once instead of retrying for ~20 s when it is down
        path = Path(snapshot_download(repo, revision=revision, allow_patterns=["index.json"], token=token))
    except Exception as exc:
        raise _friendly(exc, repo, revision) from None
    if not (path / "index.json").is_file():
        raise DraemZooError(f"{repo}" + (f"@{revision}" if revision else "") + ": has no index.json; is it a zoo "
                            "index published by draem-zoo publish?")
    return json.loads((path / "index.json").read_text())


def pull(org: str, out_dir: str | Path, categories: list[str] | None = None, prefix: str = "draem-mvtec",
         token: str | None = None, front: bool = False) -> list[dict[str, Any]]:
    """Download a whole zoo (as its index lists it) into ``out_dir/<repo name>/`` for air-gapped use;
    with ``front``, also each category's accuracy-speed front members, a branch each, into
    ``out_dir/<repo name>@front-<name>/`` (the layout ``publish --local`` writes)."""
    index = read_index(org, prefix, token=token)
    entries = index.get("categories", {})
    wanted = categories or sorted(entries)
    missing = [c for c in wanted if c not in entries]
    if missing:
        raise DraemZooError(f"{org}/{prefix}-index lists no {', '.join(missing)} (it has {', '.join(sorted(entries))})")
    out = Path(out_dir)
    pulled = []
    for cat in wanted:
        entry = entries[cat]
        name = entry["repo"].split("/")[-1]
        pulled.append({"category": cat, **_fetch(entry["repo"], entry["revision"], out / name, token)})
        for m in (entry.get("front") or []) if front else []:
            # pinned by the commit the index recorded; a local zoo has none: its branch then
            item = _fetch(entry["repo"], m.get("revision") or m["branch"], out / f"{name}@{m['branch']}", token)
            pulled.append({"category": cat, "branch": m["branch"], **item})
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").write_text(json.dumps({**index, "pulled": pulled}, indent=2) + "\n")
    return pulled


def _fetch(repo: str, revision: str | None, dest: Path, token: str | None) -> dict[str, Any]:
    """One repository revision into ``dest``, checked: what ``pull`` reports of it."""
    snapshot(repo, revision, local_dir=dest, token=token, extra=(ONNX_FILE,))
    model = load_model_dir(dest)  # refuses a damaged or altered download now, not at use
    item = {"repo": repo, "revision": revision, "path": str(dest)}
    if (dest / ONNX_FILE).is_file():
        stale = stale_reason(dest, model.metadata.get("weights_sha256"), strict=False)
        if stale:  # left from an earlier pull of another revision, or altered: never keep a mismatched one
            (dest / ONNX_FILE).unlink()
            item["onnx_removed"] = stale
        else:
            item["onnx"] = str(dest / ONNX_FILE)
    return item
