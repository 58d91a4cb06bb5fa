"""Publishing a search's best models as a zoo: one Hub repository per category.

Each repository holds ``model.safetensors``, ``config.json`` (the model-directory format),
``README.md`` (the model card) and, when the model directory has one made from these
weights, ``model.onnx`` (``draem-zoo export-onnx``; a stale one, whose recorded weights
sha256 differs from config.json's, or one without export-onnx's record of its sha256, is
skipped with a warning and removed from the repository if an earlier release had it).

Nothing is published that does not match what was recorded when it was written, ``--dry-run``
included: config.json against its ``config_sha256``, the weights against its ``weights_sha256``,
``model.onnx`` against the sha256 in the ``model.onnx.json`` export-onnx wrote beside it; a
mismatch is an error naming the file. The files are hashed again just before they are uploaded.
The repository ids are checked with huggingface_hub's validator before anything else, and a
Hub that cannot be reached is one error naming the endpoint. Every card is rendered and
checked, locally and by the Hub's own validation, before anything is uploaded. A release is one commit with
all its files and a tag (``v1``, ``v2``, ...); files whose content the repository
already has are detected by hash (LFS sha256 / git blob sha1), so re-publishing an
unchanged model makes no commit. A zoo index (``<org>/<prefix>-index``: ``index.json``
+ README) maps categories to repository, revision and headline metrics.

A search run with ``--front N`` also exported members of each category's accuracy-speed front
(``<category>/front/<name>/``): each is published as a branch ``front-<name>`` of the category's
repository, one commit per change (no tag: the index pins the commit), with its own card; ``main``
keeps the best model, and every card and the index list the front (revision, speed, size, scores).

The token comes from the usual places (``HF_TOKEN``, the ``hf auth login`` cache) and is
never printed or written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, get_token

from ..__about__ import __version__
from ..errors import DraemZooError
from ..export.onnx import ONNX_FILE, onnx_info, read_record, record_path, stale_reason
from ..model.modeldir import CONFIG, WEIGHTS, check_weights, read_config, sha256_file
from ..search.speed import HOW
from .cards import check_card, dataset_info, front_info, front_revision, render_card, search_info
from .checks import HubUnreachable, check_names, hub_failure, network_cause
from .download import read_index
from .index import MEMBER

INDEX_FILE = "index.json"


@dataclasses.dataclass
class Release:
    category: str
    repo_id: str
    files: dict[str, bytes | Path]  # path in repo -> content or local file
    card: str
    metrics: dict[str, Any]
    variant: str
    license: str
    sha256: dict[str, str] = dataclasses.field(default_factory=dict)  # path in repo -> content as checked
    revision: str = "main"  # main: the category's best model; front-<name>: a front member, on its branch
    front: dict[str, Any] | None = None  # this member's entry of the front (None for main)

    @property
    def where(self) -> str:
        return self.repo_id if self.revision == "main" else f"{self.repo_id}@{self.revision}"

    def digest(self, name: str) -> str:
        if name not in self.sha256:
            self.sha256[name] = hashlib.sha256(_bytes(self.files[name])).hexdigest()
        return self.sha256[name]

    def recheck(self) -> None:
        """Hash the local files again: refuse one that changed after it was checked."""
        for name, content in self.files.items():
            if isinstance(content, Path) and name in self.sha256 and sha256_file(content) != self.sha256[name]:
                raise DraemZooError(f"{content}: changed after publish checked it (a training or export still "
                                    "writing there?); wait for it to finish and publish again")


def _bytes(content: bytes | Path) -> bytes:
    return content if isinstance(content, bytes) else Path(content).read_bytes()


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def onnx_check(model_dir: str | Path, weights_sha256: str | None) -> tuple[str | None, str | None]:
    """(sha256 of ``model_dir/model.onnx`` as export-onnx recorded it and the file still is, None) when it may be
    published with these weights; (None, why not) when it is stale or unrecorded; (None, None) when there is
    none. A file whose bytes differ from its record for these weights is refused (DraemZooError)."""
    path = Path(model_dir) / ONNX_FILE
    if not path.is_file():
        return None, None
    record = read_record(path)
    redo = f"re-export it with draem-zoo export-onnx --model {model_dir}"
    if record is None:
        return None, stale_reason(model_dir, weights_sha256) or (
            f"{path}: no record of its sha256 ({record_path(path).name} is missing or unreadable; exported by an "
            f"older draem-zoo?): {redo}")
    if not weights_sha256 or record.get("weights_sha256") != weights_sha256:
        return None, stale_reason(model_dir, weights_sha256) or (
            f"{path}: {record_path(path).name} says it was made from weights sha256 "
            f"{str(record.get('weights_sha256'))[:12]}..., but config.json has {(weights_sha256 or '?')[:12]}...: "
            f"stale; {redo}")
    digest = sha256_file(path)
    if digest != record.get("sha256"):
        raise DraemZooError(f"{path}: sha256 {digest[:12]}... does not match the {str(record.get('sha256'))[:12]}... "
                            f"export-onnx recorded in {record_path(path).name}: the file is corrupt or was altered: "
                            f"{redo} (or delete it to publish without ONNX); nothing was uploaded")
    reason = stale_reason(model_dir, weights_sha256)  # the graph's own metadata must agree too
    return (None, reason) if reason else (digest, None)


def _onnx_file(model_dir: Path, cfg: dict[str, Any], warn: Callable[[str], None]) -> tuple[dict | None, str | None]:
    """What the card says about ``model_dir/model.onnx`` and its checked sha256; (None, None), with a warning
    when there is a file, unless it may be published."""
    digest, reason = onnx_check(model_dir, cfg.get("weights_sha256"))
    if reason:
        warn(f"warning: {reason}; {ONNX_FILE} not published")
    return (onnx_info(model_dir / ONNX_FILE), digest) if digest else (None, None)


def _checked_model_dir(model_dir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """config.json (checked against its config_sha256) and the sha256 of it and of the weights (checked
    against its weights_sha256), or a DraemZooError naming the file that does not match."""
    try:
        cfg = read_config(model_dir)
        weights = check_weights(model_dir, cfg)
    except DraemZooError as exc:
        raise DraemZooError(f"{exc}; nothing was uploaded") from None
    return cfg, {WEIGHTS: weights, CONFIG: sha256_file(model_dir / CONFIG)}


def zoo_prefix(results: str | Path, categories: list[str] | None = None, dataset: str | None = None,
               license: str | None = None) -> str:
    """The repository name prefix after the dataset the models were trained on (``draem-mvtec``,
    ``draem-visa``, ``draem-mvtec-ad2``, ``draem-dagm``; users' own data in MVTec AD's layout keep
    ``draem-mvtec``)."""
    results = Path(results)
    found = sorted(p.parent.parent.name for p in results.glob(f"*/best/{CONFIG}"))
    first = next((c for c in (categories or found) if c in found), None)
    if first is None:
        return "draem-mvtec"  # build_releases names what is missing
    try:
        cfg = json.loads((results / first / "best" / CONFIG).read_text())
    except (OSError, ValueError):
        return "draem-mvtec"  # build_releases names the damaged file
    root = ((cfg.get("run") or {}).get("data") or {}).get("root")
    return dataset_info(root, dataset, license, (cfg.get("data") or {}).get("dataset"))["prefix"]


def build_releases(results: str | Path, org: str, prefix: str = "draem-mvtec", dataset: str | None = None,
                   license: str | None = None, categories: list[str] | None = None,
                   warn: Callable[[str], None] = print) -> list[Release]:
    """Check the files and render and check the card of every category's best model; nothing leaves the machine."""
    check_names(org, prefix, categories or ())
    results = Path(results)
    found = sorted(p.parent.parent.name for p in results.glob(f"*/best/{CONFIG}"))
    wanted = categories or found
    missing = [c for c in wanted if c not in found]
    if missing or not wanted:
        raise DraemZooError(f"{results}: no exported model for {', '.join(missing) or 'any category'} "
                            "(expected <category>/best/model.safetensors + config.json from draem-zoo search)")
    check_names(org, prefix, wanted)
    releases = []
    for cat in wanted:
        repo_id = f"{org}/{prefix}-{cat}"
        members, best_trial = front_info(results, cat)
        for m in members:
            if not isinstance(m["name"], str) or not MEMBER.fullmatch(m["name"]) or ".." in m["name"]:  # as pull checks
                raise DraemZooError(f"{results / cat / m['model_dir']}: {m['name']!r} cannot name a Hub branch; "
                                    "nothing was uploaded")
        front = {"members": members, "how": HOW, "best_trial": best_trial,
                 "device": next((m.get("infer_device") for m in members if m.get("infer_device")), None)}
        releases.append(_release(results, cat, results / cat / "best", repo_id, dataset, license, warn,
                                 front=dict(front, this=None) if members else None))
        for m in members:
            releases.append(_release(results, cat, results / cat / m["model_dir"], repo_id, dataset, license, warn,
                                     front=dict(front, this=m["name"]), member=m))
    return releases


def _release(results: Path, cat: str, model_dir: Path, repo_id: str, dataset: str | None, license: str | None,
             warn: Callable[[str], None], front: dict[str, Any] | None = None,
             member: dict[str, Any] | None = None) -> Release:
    """One checked release: the category's best model (``main``) or a front ``member`` (its branch)."""
    cfg, digests = _checked_model_dir(model_dir)
    root = ((cfg.get("run") or {}).get("data") or {}).get("root")
    info = dataset_info(root, dataset, license, (cfg.get("data") or {}).get("dataset"))
    onnx, onnx_sha256 = _onnx_file(model_dir, cfg, warn)
    search = search_info(results, cat)
    if member and search:  # the search paragraph of a member's card is about the member
        search = dict(search, backbones_final=False, best_val_score=round(member.get("val_score") or 0, 4))
    card = render_card(model_dir, repo_id, info, search, onnx=onnx, front=front)
    check_card(card)
    test = (cfg.get("metrics") or {}).get("test") or {}
    files: dict[str, bytes | Path] = {WEIGHTS: model_dir / WEIGHTS, CONFIG: model_dir / CONFIG}
    if onnx and onnx_sha256:
        files[ONNX_FILE] = model_dir / ONNX_FILE
        digests[ONNX_FILE] = onnx_sha256
    files["README.md"] = card.encode()
    return Release(cat, repo_id, files, card, {k: test.get(k) for k in ("image_auroc", "pixel_auroc", "pixel_ap", "aupro")},
                   cfg["model"]["variant"], info["license"], digests,
                   revision=front_revision(member["name"]) if member else "main", front=member)


def write_local_zoo(releases: list[Release], zoo_dir: str | Path, org: str, prefix: str) -> Path:
    """The zoo as folders laid out exactly like the Hub repositories (plus the index); a front member's
    branch as the folder ``<repository>@front-<name>``."""
    zoo = Path(zoo_dir)
    for r in releases:
        dest = zoo / r.where.split("/")[-1]
        dest.mkdir(parents=True, exist_ok=True)
        for name, content in r.files.items():
            if isinstance(content, bytes):
                (dest / name).write_bytes(content)
            else:
                shutil.copy2(content, dest / name)
    index = _index(releases, {r.where: {"revision": None, "tag": None} for r in releases}, org, prefix)
    (zoo / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return zoo


def _index(releases: list[Release], refs: dict[str, dict], org: str, prefix: str) -> dict[str, Any]:
    """The zoo index; ``refs``: :attr:`Release.where` -> its published revision (commit) and tag."""
    cats = {r.category: {"repo": r.repo_id, "revision": refs[r.where]["revision"], "tag": refs[r.where]["tag"],
                         "variant": r.variant, "license": r.license, "weights_sha256": r.digest(WEIGHTS),
                         "onnx": ONNX_FILE in r.files, "metrics": r.metrics}
            for r in releases if r.revision == "main"}
    for r in releases:
        if r.revision != "main" and r.category in cats:
            m = r.front or {}
            cats[r.category].setdefault("front", []).append(
                {"name": m.get("name"), "branch": r.revision, "revision": refs[r.where]["revision"],
                 "variant": r.variant, "images_per_s": m.get("images_per_s"), "params": m.get("params"),
                 "val_score": m.get("val_score"), "weights_sha256": r.digest(WEIGHTS), "metrics": r.metrics})
    return {"zoo": f"{org}/{prefix}", "format": "draem-zoo-index", "version": 1, "package_version": __version__,
            "categories": cats}


def plan(releases: list[Release]) -> list[dict[str, Any]]:
    """What a publish would upload (``--dry-run``)."""
    return [{"repo": r.repo_id, "revision": r.revision, "category": r.category, "license": r.license,
             "files": {n: {"bytes": len(_bytes(c)), "sha256": r.digest(n)} for n, c in r.files.items()},
             "metrics": r.metrics} for r in releases]


def _token_or_fail() -> None:
    if not get_token():
        raise DraemZooError("no Hugging Face token: set HF_TOKEN, or run `hf auth login`, then publish again")


def _changed_files(api, repo_id: str, release: Release) -> list[str]:
    """Files whose content the release's branch (main, or a front member's) does not have yet."""
    try:
        remote = {f.path: f for f in api.get_paths_info(repo_id, list(release.files), revision=release.revision)}
    except Exception as exc:
        if network_cause(exc):
            raise
        return list(release.files)  # a new or empty repository
    changed = []
    for name, content in release.files.items():
        have = remote.get(name)
        lfs = getattr(have, "lfs", None) if have is not None else None
        if have is None:
            changed.append(name)
        elif lfs is not None:
            if (lfs.sha256 if hasattr(lfs, "sha256") else lfs.get("sha256")) != release.digest(name):
                changed.append(name)
        elif getattr(have, "blob_id", None) != git_blob_sha1(_bytes(content)):
            changed.append(name)
    return changed


def _dropped_files(api, repo_id: str, release: Release) -> list[str]:
    """Optional files (model.onnx) the repository has but this release does not: a stale one must go."""
    wanted = [n for n in (ONNX_FILE,) if n not in release.files]
    if not wanted:
        return []
    try:
        return [f.path for f in api.get_paths_info(repo_id, wanted, revision=release.revision)]
    except Exception as exc:
        if network_cause(exc):
            raise
        return []  # a new or empty repository


def _next_tag(api, repo_id: str) -> str:
    tags = [t.name for t in api.list_repo_refs(repo_id).tags]
    numbers = [int(t[1:]) for t in tags if t.startswith("v") and t[1:].isdigit()]
    return f"v{max(numbers, default=0) + 1}"


def publish(releases: list[Release], org: str, prefix: str = "draem-mvtec", private: bool = False,
            log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Upload every release (validated first) and the zoo index; returns what happened per repository.

    The Hub unreachable (or refusing a request) midway is one DraemZooError that names the endpoint and
    says which repositories were published before; publishing again finishes the job (unchanged
    repositories make no new commit)."""
    _token_or_fail()
    done: list[dict[str, Any]] = []
    current = [f"{org}/{prefix}-* (the Hub's check of the model cards)"]
    try:
        _publish(releases, org, prefix, private, log, done, current)
    except Exception as exc:
        ok = [d["repo"] for d in done]
        after = (f"published before the failure: {', '.join(ok)}; publish again to finish" if ok
                 else "nothing was uploaded")
        err = hub_failure(exc, f"publishing {current[-1]}", after)
        if err is None or err is exc:
            raise
        raise err from None
    return done


def _publish(releases: list[Release], org: str, prefix: str, private: bool, log: Callable[[str], None],
             done: list[dict[str, Any]], current: list[str]) -> None:
    api = HfApi()
    for r in releases:  # every card passes the Hub's validation before anything is uploaded
        try:
            ModelCard(r.card).validate()
        except ValueError as exc:
            raise DraemZooError(f"{r.repo_id}: the model card fails the Hub's validation ({exc}); "
                                "nothing was uploaded") from None
    refs: dict[str, dict] = {}
    for r in releases:  # a category's main comes before its front members' branches
        current.append(r.where)
        r.recheck()
        api.create_repo(r.repo_id, private=private, exist_ok=True)
        main = r.revision == "main"
        if not main:  # a front member's branch starts from main, then gets its own files
            api.create_branch(r.repo_id, branch=r.revision, exist_ok=True)
        changed = _changed_files(api, r.repo_id, r)
        dropped = _dropped_files(api, r.repo_id, r)
        changed += [f"{n} (removed)" for n in dropped]
        head = api.model_info(r.repo_id, revision=r.revision).sha if not changed else None
        if not changed:
            tags = api.list_repo_refs(r.repo_id).tags if main else []
            tag = next((t.name for t in tags if t.target_commit == head), None)
            log(f"{r.where}: unchanged (revision {head[:10] if head else '?'}), no new commit")
            refs[r.where] = {"revision": head, "tag": tag}
            done.append({"repo": r.repo_id, "branch": r.revision, "changed": False, "revision": head, "tag": tag})
            continue
        ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=c if isinstance(c, bytes) else str(c))
               for name, c in r.files.items()]
        ops += [CommitOperationDelete(path_in_repo=name) for name in dropped]
        m = r.metrics
        title = f"draem-zoo {__version__}: {r.category}" + ("" if main else f" front member {r.front['name']}") + (
            f" (image AUROC {100 * m['image_auroc']:.2f})" if m.get("image_auroc") is not None else "")
        info = api.create_commit(r.repo_id, operations=ops, commit_message=title, revision=r.revision,
                                 commit_description="files changed: " + ", ".join(changed))
        tag = None
        if main:  # releases of main are tagged; a branch is pinned by its commit (the index has it)
            tag = _next_tag(api, r.repo_id)
            api.create_tag(r.repo_id, tag=tag, revision=info.oid, tag_message=title)
        log(f"{r.where}: committed {info.oid[:10]} ({', '.join(changed)})" + (f", tagged {tag}" if tag else ""))
        refs[r.where] = {"revision": info.oid, "tag": tag}
        done.append({"repo": r.repo_id, "branch": r.revision, "changed": True, "revision": info.oid, "tag": tag,
                     "files": changed})
    current.append(f"{org}/{prefix}-index")
    _publish_index(api, releases, refs, org, prefix, private, log)


def _publish_index(api, releases, refs, org, prefix, private, log) -> None:
    repo = f"{org}/{prefix}-index"
    index = _index(releases, refs, org, prefix)
    try:  # keep categories published earlier that this run did not touch
        old = read_index(org, prefix)
        index["categories"] = {**old.get("categories", {}), **index["categories"]}
    except HubUnreachable:
        raise
    except DraemZooError:  # no index yet
        pass
    rows = "\n".join(f"| {c} | [{e['repo']}](https://huggingface.co/{e['repo']}) | {e.get('tag') or '-'} | "
                     f"{'n/a' if (e.get('metrics') or {}).get('image_auroc') is None else round(100 * e['metrics']['image_auroc'], 2)} | "
                     + (", ".join(f"`{f['branch']}`" for f in e.get("front") or []) or "-") + " |"
                     for c, e in sorted(index["categories"].items()))
    readme = (f"---\nlibrary_name: draem-zoo\ntags:\n- anomaly-detection\n- draem\n---\n\n# {org}/{prefix} zoo index\n\n"
              f"`index.json` lists every category's model repository, pinned revision and headline metrics. "
              f"`draem-zoo pull {org} DIR --prefix {prefix}` downloads them all.\n\n"
              "Front members (accuracy-speed front, `draem-zoo search --front N`) are branches of their category's "
              "repository; `index.json` lists their speed, size and pinned commit.\n\n"
              f"| category | repository | tag | test image AUROC | front branches |\n|---|---|---|---|---|\n{rows}\n")
    payload = {INDEX_FILE: (json.dumps(index, indent=2) + "\n").encode(), "README.md": readme.encode()}
    api.create_repo(repo, private=private, exist_ok=True)
    fake = Release("index", repo, payload, readme, {}, "", "")
    changed = _changed_files(api, repo, fake)
    if changed:
        api.create_commit(repo, operations=[CommitOperationAdd(path_in_repo=n, path_or_fileobj=payload[n])
                                            for n in payload], commit_message=f"zoo index ({time.strftime('%Y-%m-%d')})")
        log(f"{repo}: index updated")
    else:
        log(f"{repo}: index unchanged")
