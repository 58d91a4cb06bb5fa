"""Using published models: ``from_pretrained``, ``hf-hub:`` specs, and ``pull`` for air-gapped sites.

Downloads go through the Hub cache (``HF_HOME``), so a model once fetched loads offline
(``HF_HUB_OFFLINE=1``); a revision (commit, tag or branch) pins what is loaded. Loading
always checks the weights' sha256 against ``config.json`` and the state dict strictly.
``from_pretrained`` fetches only what PyTorch needs; ``pull`` also brings ``model.onnx``
when the repository has one (checked to be made from the same weights). A Hub that cannot be
reached is one error naming the endpoint (``HF_ENDPOINT``) and what to do, never a traceback.

A Hub-cache copy that loading refuses is told apart (:mod:`.cache`): damaged after download, it is
downloaded again once (``force_download``; offline, the error names the cached file and the fix);
exactly as the Hub serves it, the repository itself is at fault, and the error says so.

``pull`` trusts nothing in the downloaded ``index.json`` (:mod:`.index` checks every entry before
anything is written); each repository revision is downloaded into a temporary folder inside the
pull folder, checked there, and only then renamed into place, replacing an earlier pull of it.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download
from huggingface_hub.utils import tqdm as hf_tqdm

from ..errors import DraemZooError
from ..export.onnx import ONNX_FILE, stale_reason
from ..files import OutputLock, atomic_write_text, swap_in, temp_dir
from ..model.modeldir import CONFIG, WEIGHTS, load_model_dir
from .cache import damaged_blobs
from .checks import HubUnreachable, check_names, check_repo_id, endpoint, offline, offline_mode, unreachable_text
from .index import Item, plan_pull

HUB_PREFIX = "hf-hub:"
LEFTOVER = re.compile(r"\..+\.pull\.[A-Za-z0-9_]{8}")  # a temporary folder of pull (tempfile.mkdtemp's names)
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
             local_dir: str | Path | None = None, token: str | None = None, extra: tuple[str, ...] = (),
             force: bool = False) -> Path:
    """The model files of a Hub repository at ``revision`` (and ``extra`` ones it has), from the cache or downloaded
    (``force``: downloaded, replacing the cache's copy)."""
    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=[*REPO_FILES, *extra], cache_dir=cache_dir,
                                 local_dir=str(local_dir) if local_dir else None, token=token, force_download=force)
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
    try:
        model = load_model_dir(path, device=device)
    except DraemZooError as exc:
        path, model = _reload(exc, repo_id, revision, path, device, cache_dir, token)
    model.metadata["hub"] = {"repo_id": repo_id, "revision": revision, "path": str(path)}  # type: ignore[attr-defined]
    return model


def _reload(exc: DraemZooError, repo_id: str, revision: str | None, path: Path, device: str, cache_dir: str | None,
            token: str | None):
    """Loading refused the Hub cache's copy at ``path``: downloaded again once when the cache may be at fault;
    otherwise (or offline) one error saying whose fault it is and what to do."""
    where = repo_id + (f"@{revision}" if revision else "")
    bad = damaged_blobs(path, REPO_FILES)
    if bad == []:
        raise DraemZooError(f"{exc}; this is {where} as published: the Hub cache's copy at {path} matches the "
                            "checksums the Hub gave, so downloading it again will not help: tell the repository's "
                            "owner, or load another revision") from None
    copy = (f"the Hub cache's copy {', '.join(map(str, bad))} (under HF_HOME) no longer matches the checksum the Hub "
            "gave for it" if bad else f"the Hub cache's copy at {path} (under HF_HOME) may be damaged")
    if offline_mode():
        raise DraemZooError(f"{exc}; {copy}, and HF_HUB_OFFLINE is set, so it was not downloaded again: load it "
                            f"once with HF_HUB_OFFLINE unset (draem-zoo then downloads {where} again, replacing the "
                            "damaged copy); where no Hub can be reached, load a folder `draem-zoo pull` made on a "
                            "connected machine instead") from None
    print(f"warning: {copy}: downloading {where} again", file=sys.stderr)
    try:
        path = snapshot(repo_id, revision, cache_dir=cache_dir, token=token, force=True)
    except DraemZooError as err:
        raise type(err)(f"{copy}; downloading it again failed: {err}") from None
    try:
        return path, load_model_dir(path, device=device)
    except DraemZooError as again:
        still = damaged_blobs(path, REPO_FILES)
        why = ("what the Hub serves does not match the checksums it gives: its storage of the repository is damaged"
               if still else "the repository's published files disagree" + ("" if still == [] else
                                                                              ", or the Hub serves damaged copies"))
        raise DraemZooError(f"{again}; {where} was downloaded again from {endpoint()} and is still refused: {why}; "
                            "tell the repository's owner, or load another revision") from None


def read_index(org: str, prefix: str, revision: str | None = None, token: str | None = None) -> dict[str, Any]:
    check_names(org, prefix)
    repo = f"{org}/{prefix}-index"
    try:  # a snapshot, not hf_hub_download: it asks the Hub once instead of retrying for ~20 s when it is down
        path = Path(snapshot_download(repo, revision=revision, allow_patterns=["index.json"], token=token,
                                      tqdm_class=_Quiet))
    except Exception as exc:
        raise _friendly(exc, repo, revision) from None
    if not (path / "index.json").is_file():
        raise DraemZooError(f"{repo}" + (f"@{revision}" if revision else "") + ": has no index.json; is it a zoo "
                            "index published by draem-zoo publish?")
    try:
        return json.loads((path / "index.json").read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DraemZooError(f"{repo}: its index.json is not valid JSON ({exc}); nothing was downloaded") from None


class _Quiet(hf_tqdm):
    """No progress bar for one small file (the index)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "disable": True})


def pull(org: str, out_dir: str | Path, categories: list[str] | None = None, prefix: str = "draem-mvtec",
         token: str | None = None, front: bool = False) -> list[dict[str, Any]]:
    """Download a whole zoo (as its index lists it) into ``out_dir/<repo name>/`` for air-gapped use;
    with ``front``, also each category's accuracy-speed front members, a branch each, into
    ``out_dir/<repo name>@front-<name>/`` (the layout ``publish --local`` writes).

    Every entry of the index is checked before anything is downloaded; every download is checked in a
    temporary folder inside ``out_dir``; only when all are good are they renamed into place (each
    replacing an earlier pull of it) and ``out_dir/index.json`` written. On any error nothing changes."""
    index = read_index(org, prefix, token=token)
    items = plan_pull(index, org, prefix, categories, front)
    out = Path(out_dir)
    with OutputLock(out, "a pull"):
        root = out.resolve()
        dests = [_destination(root, out, item) for item in items]
        for left in root.glob(".*.pull.*"):  # left by a pull that was killed (the lock says none is running)
            if left.is_dir() and not left.is_symlink() and LEFTOVER.fullmatch(left.name):
                shutil.rmtree(left, ignore_errors=True)
        staged: list[Path] = []
        try:
            pulled = []
            for item in items:
                staged.append(temp_dir(root, f".{item.folder}.pull."))
                pulled.append(_fetch(item, staged[-1], out, token))
            for tmp, dest in zip(staged, dests):
                swap_in(tmp, dest)
        finally:
            for tmp in staged:
                shutil.rmtree(tmp, ignore_errors=True)
        atomic_write_text(out / "index.json", json.dumps({**index, "pulled": pulled}, indent=2) + "\n")
    return pulled


def _destination(root: Path, out: Path, item: Item) -> Path:
    """``root/<folder>``, refused unless it is a folder (or nothing) right inside ``root``, not a link."""
    dest = root / item.folder
    if dest.parent != root or dest.resolve().parent != root or dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise DraemZooError(f"{out / item.folder}: a link or not a folder, where pull would put {item.repo}"
                            + (f"@{item.branch}" if item.branch else "") + ": remove it, or pull into another folder; "
                            "nothing was downloaded")
    return dest


def _fetch(item: Item, tmp: Path, out: Path, token: str | None) -> dict[str, Any]:
    """``item`` downloaded into ``tmp`` and checked there: what ``pull`` reports of it (once in place)."""
    where = item.repo + (f"@{item.revision}" if item.revision else "")
    dest = out / item.folder
    snapshot(item.repo, item.revision, local_dir=tmp, token=token, extra=(ONNX_FILE,))
    shutil.rmtree(tmp / ".cache", ignore_errors=True)  # the client's record of this download: of no use after it
    try:
        model = load_model_dir(tmp)  # refuses a damaged or altered download before it is moved into place
    except DraemZooError as exc:
        raise DraemZooError(f"{where} as downloaded from {endpoint()} is refused: "
                            f"{str(exc).replace(str(tmp), where)}; nothing in {out} was changed (pull again; if "
                            "it persists, tell the repository's owner)") from None
    got = {"category": item.category, **({"branch": item.branch} if item.branch else {}), "repo": item.repo,
           "revision": item.revision, "path": str(dest)}
    if (tmp / ONNX_FILE).is_file():
        stale = stale_reason(tmp, model.metadata.get("weights_sha256"), strict=False)
        if stale:  # published with other weights, or altered: never keep a mismatched one
            (tmp / ONNX_FILE).unlink()
            got["onnx_removed"] = stale.replace(str(tmp), str(dest))
        else:
            got["onnx"] = str(dest / ONNX_FILE)
    return got
