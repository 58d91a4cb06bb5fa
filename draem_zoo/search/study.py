"""Where each category's Optuna study is kept, and how to open it (no Ray needed).

A search into a folder storage (a local path or a shared file system) keeps each category's study in
``optuna.storages.JournalStorage`` over a ``JournalFileBackend``:
``<storage>/<search_id>-<category>/optuna.journal``, beside the category's Tune experiment. A journal
file is an append-only log guarded by a lock file made with ``symlink`` (Optuna's
``JournalFileSymlinkLock``), which works on NFS, where SQLite's ``fcntl`` locking does not; it is
Optuna's documented choice for shared file systems, and ``optuna-dashboard <file>`` opens it as it is.
With an object-store ``--storage`` (``s3://...``, ``gs://...``) there is no file to lock: the study
stays where Tune keeps its searcher, in the experiment's searcher checkpoint, as before, and no
dashboard can open it. Searches started before the journal kept their study in SQLite
(``optuna.sqlite3``): it is still found and opened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JOURNAL = "optuna.journal"
LEGACY_SQLITE = "optuna.sqlite3"
DASHBOARD_INSTALL = "pip install optuna-dashboard"


def is_object_store(storage: str) -> bool:
    return "://" in str(storage)


def segment_experiments(experiment: str, segments: int) -> list[str]:
    """The Tune experiments of a category's search: ``experiment``, then ``experiment-more1``, ... one per
    resume that added trials (:mod:`.resume`); all of them ask and tell the one study named ``experiment``."""
    return [experiment] + [f"{experiment}-more{k}" for k in range(1, segments)]


def journal_path(storage: str, experiment: str) -> Path:
    """The journal file of ``experiment`` (``<search_id>-<category>``) under a folder storage."""
    return Path(storage) / experiment / JOURNAL


def journal_storage(storage: str, experiment: str):
    """A ``JournalStorage`` over the experiment's journal file (created with its folder); None for an
    object store, whose study stays in Tune's searcher checkpoints."""
    import optuna

    if is_object_store(storage):
        return None
    path = journal_path(storage, experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def existing_storage(storage: str, experiment: str):
    """The storage that holds the experiment's study now: the journal, or the SQLite file of a search
    started before the journal; None when there is neither (an object store, or no search yet)."""
    import optuna

    if is_object_store(storage):
        return None
    path = journal_path(storage, experiment)
    if path.is_file():
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    legacy = path.with_name(LEGACY_SQLITE)
    if legacy.is_file():
        return optuna.storages.RDBStorage(f"sqlite:///{legacy}")
    return None


def load_category_study(storage: str, experiment: str):
    """The category's Optuna study (``optuna.load_study``), or None when it is not kept in a file."""
    import optuna

    found = existing_storage(storage, experiment)
    if found is None:
        return None
    try:
        return optuna.load_study(study_name=experiment, storage=found)
    except KeyError:  # the file exists, the study does not (yet)
        return None


def where(storage: str, experiment: str) -> dict[str, Any]:
    """Where the study of ``experiment`` is kept: ``kind`` (journal, sqlite, tune-checkpoint, none),
    ``path``, ``study_name`` and, for a file, the ``optuna-dashboard`` command that opens it."""
    info: dict[str, Any] = {"study_name": experiment, "kind": "none", "path": None, "dashboard": None}
    if is_object_store(storage):
        return dict(info, kind="tune-checkpoint", path=f"{str(storage).rstrip('/')}/{experiment}")
    path = journal_path(storage, experiment)
    if path.is_file():
        info.update(kind="journal", path=str(path))
    elif path.with_name(LEGACY_SQLITE).is_file():
        info.update(kind="sqlite", path=f"sqlite:///{path.with_name(LEGACY_SQLITE)}")
    if info["path"]:
        info["dashboard"] = f"optuna-dashboard {info['path']}"
    return info


def search_studies(results: str | Path) -> dict[str, dict[str, Any]]:
    """category -> :func:`where` its study is, from ``RESULTS/search.json``; {} without one."""
    meta_path = Path(results) / "search.json"
    if not meta_path.is_file():
        return {}
    meta = json.loads(meta_path.read_text())
    storage = meta.get("storage")
    if not storage:
        return {}
    return {c: where(storage, f"{meta['search_id']}-{c}") for c in meta.get("categories", [])}


def dashboard_lines(results: str | Path) -> list[str]:
    """What a person types to open each category's study in optuna-dashboard (or why it cannot)."""
    lines, studies = [], search_studies(results)
    for cat, info in studies.items():
        if info["dashboard"]:
            lines.append(f"{cat}: {info['dashboard']}")
        elif info["kind"] == "tune-checkpoint":
            lines.append(f"{cat}: study {info['study_name']} kept in Tune's searcher checkpoint under {info['path']} "
                         "(object-store storage: no journal file, so optuna-dashboard cannot open it)")
        else:
            lines.append(f"{cat}: no study file yet under the search's storage")
    if any(info["dashboard"] for info in studies.values()):
        lines.append(f"(the dashboard: {DASHBOARD_INSTALL}; it serves http://127.0.0.1:8080/)")
    return lines
