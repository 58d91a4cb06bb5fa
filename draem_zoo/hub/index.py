"""The zoo index (``index.json``) as ``pull`` reads it: downloaded data, so trusted for nothing.

Every value of it that becomes a folder name or a revision is checked against what ``publish``
makes, for every entry of the index (pulled or not), before anything is downloaded or written:

* a category: ``ORG/PREFIX-<category>`` passes huggingface_hub's repository-id validator
  (ASCII letters, digits, ``-_.``; no ``--`` or ``..``; at most 96 characters);
* its ``repo``: exactly ``ORG/PREFIX-<category>`` (publish makes no other), the folder name;
* a ``revision``: absent (a local zoo) or a 40-hex commit id (publish pins commits);
* a front member: ``name`` as publish accepts it (:data:`MEMBER`, no ``..``), ``branch`` exactly
  ``front-<name>``, each branch once; its folder is ``<repo name>@<branch>``.

Anything else is one :class:`~draem_zoo.errors.DraemZooError` naming the category, field and value.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..errors import DraemZooError
from .cards import front_revision

MEMBER = re.compile(r"[A-Za-z0-9._-]{1,96}")  # publish's rule for a front member name, with a length limit
COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclasses.dataclass(frozen=True)
class Item:
    """One repository revision a pull downloads into ``<pull folder>/<folder>``."""

    category: str
    repo: str
    revision: str | None  # the commit the index pins; a local zoo's index has none: main, or the member's branch
    folder: str
    branch: str | None = None  # a front member's branch; None: main


def _bad(where: str, cat: Any, field: str, value: Any, want: str) -> DraemZooError:
    what = f"category {cat!r}" + ("" if field == "category" else f", {field} {value!r}")
    return DraemZooError(f"{where}: {what}: {want}; nothing was downloaded or written (publish never writes "
                         "this: the index was altered, or is not a draem-zoo zoo index; tell its owner)")


def _revision(where: str, cat: str, field: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and COMMIT.fullmatch(value)):
        return value
    raise _bad(where, cat, field, value, "expected the 40-hex commit id publish records")


def _members(where: str, cat: str, front: Any) -> list[tuple[str, str | None]]:
    """(branch, pinned commit) of each checked front member of ``cat``."""
    if front is None:
        return []
    if not isinstance(front, list):
        raise _bad(where, cat, "front", front, "expected a list of front members")
    out: list[tuple[str, str | None]] = []
    for m in front:
        if not isinstance(m, dict):
            raise _bad(where, cat, "front member", m, "expected an object with name, branch and revision")
        name, branch = m.get("name"), m.get("branch")
        if not isinstance(name, str) or not MEMBER.fullmatch(name) or ".." in name:
            raise _bad(where, cat, "front member name", name, "expected letters, digits, '.', '_' or '-' (no '..'), "
                       "at most 96")
        if branch != front_revision(name):
            raise _bad(where, cat, "front member branch", branch, f"expected {front_revision(name)!r} for the member "
                       f"named {name!r}")
        if any(b == branch for b, _ in out):
            raise _bad(where, cat, "front member branch", branch, "listed twice")
        out.append((branch, _revision(where, cat, f"front member {name!r} revision", m.get("revision"))))
    return out


def plan_pull(index: Any, org: str, prefix: str, wanted: list[str] | None, front: bool) -> list[Item]:
    """What a pull of ``wanted`` (None: every category) downloads, after checking the whole ``index``."""
    where = f"{org}/{prefix}-index"
    cats = index.get("categories") if isinstance(index, dict) else None
    if not isinstance(cats, dict):
        raise DraemZooError(f"{where}: index.json has no categories object; is it a zoo index published by "
                            "draem-zoo publish? nothing was downloaded")
    plans: dict[str, list[Item]] = {}
    for cat, entry in cats.items():
        repo = f"{org}/{prefix}-{cat}"
        try:
            validate_repo_id(repo)
        except HFValidationError:
            raise _bad(where, cat, "category", cat, f"not a name publish makes ({org}/{prefix}-<category> must be a "
                       "Hub repository id: letters, digits, '-', '_', '.', no '--' or '..', at most 96)") from None
        if not isinstance(entry, dict):
            raise _bad(where, cat, "entry", entry, "expected an object with repo and revision")
        if entry.get("repo") != repo:
            raise _bad(where, cat, "repo", entry.get("repo"), f"expected {repo!r}, the repository publish makes")
        pinned = _revision(where, cat, "revision", entry.get("revision"))
        name = repo.split("/")[1]
        plans[cat] = [Item(cat, repo, pinned, name)]
        plans[cat] += [Item(cat, repo, rev or branch, f"{name}@{branch}", branch)
                       for branch, rev in _members(where, cat, entry.get("front"))]
    wanted = list(dict.fromkeys(wanted or sorted(cats)))
    missing = [c for c in wanted if c not in cats]
    if missing:
        raise DraemZooError(f"{where} lists no {', '.join(missing)} (it has {', '.join(sorted(cats))})")
    return [item for cat in wanted for item in (plans[cat] if front else plans[cat][:1])]
