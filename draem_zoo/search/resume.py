"""``search --resume``: what a resumed search may change, and which folders it may trust.

A search resumes with the settings it started with (``search.json``: ``options`` holds the first run's
:class:`~draem_zoo.search.driver.SearchOptions`, beside the effective ``budget``, ``final_budget``,
``categories``, ``storage`` and ``space_sha256``). Every setting that shapes the search is compared
(:data:`SHAPING`); a change that cannot be honoured is refused in one line naming the flag and both
values. The one change honoured is more ``--trials``: they run after the earlier trials, in another Tune
experiment over the same Optuna study (:func:`extend_trials`; Tune cannot raise a restored experiment's
``num_samples``), and ``search.json`` records the new count (``trials``, ``trial_segments``).

"Not given": the CLI records which flags were typed (``SearchOptions.given``), and a flag not typed takes
the recorded value (said on stderr when that differs from the default), so ``--trials 16`` over a 32-trial
search is refused like any other change. Without that record (a caller of the API), a value that is None
or the :class:`SearchOptions` default counts as not given.

A resumed search lets Ray unpickle what its storage holds (``tuner.pkl``, the searcher's state):
:func:`check_trusted` refuses a results or storage folder that someone else owns or can write.
"""

from __future__ import annotations

import dataclasses
import grp
import hashlib
import os
import pwd
import stat
from pathlib import Path
from typing import Any

from ..errors import DraemZooError
from ..train.budget import parse_budget
from .study import is_object_store

# SearchOptions field -> the flag a person types (reduction_factor and grace_validations have no flag)
SHAPING = {"trials": "--trials", "budget": "--budget", "final_budget": "--final-budget",
           "validations": "--validations", "rungs": "--rungs",
           "trial_image_size": "--trial-image-size", "warm_start": "--warm-start", "reduction_factor": "reduction_factor",
           "grace_validations": "grace_validations", "space": "--space", "categories": "--categories",
           "seed": "--seed", "final_seeds": "--final-seeds", "workers_per_trial": "--workers-per-trial",
           "final_workers": "--final-workers", "gpus_per_trial": "--gpus-per-trial",
           "cpus_per_worker": "--cpus-per-worker", "sets": "--set", "sampler": "--sampler",
           "lr_scaling": "--lr-scaling", "backbones_final": "--backbones-final", "front": "--front",
           "storage": "--storage"}


def _defaults(opts) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(opts):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _shown(flag: str, value: Any) -> str:
    """``with --budget 4``, ``with --set a=1 --set b=2``, ``without --sampler``."""
    if value is None or value is False or value == []:
        return f"without {flag}"
    if value is True:
        return f"with {flag}"
    if isinstance(value, list):
        return "with " + " ".join(f"{flag} {v}" for v in value)
    return f"with {flag} {value}"


def _same(name: str, now: Any, then: Any, meta: dict[str, Any]) -> bool:
    if name in ("budget", "final_budget"):  # 4, "4" and "4 iterations" are one budget
        return str(parse_budget(now, SHAPING[name])) == str(meta.get(name, parse_budget(then, SHAPING[name])))
    if name == "storage":
        return _storage_of(now) == meta.get("storage", _storage_of(then))
    if name == "warm_start":  # recorded resolved
        return _storage_of(now) == _storage_of(then)
    return now == then


def _storage_of(value: str | None) -> str | None:
    if value is None or is_object_store(value):
        return value
    return str(Path(value).expanduser().resolve())


def recorded_trials(meta: dict[str, Any]) -> int:
    """Trials per category the search runs now (more after a resume with a larger ``--trials``)."""
    return int(meta.get("trials") or meta["options"]["trials"])


def trial_segments(meta: dict[str, Any]) -> list[int]:
    """Trials of each Tune experiment of a category: the first, then one per resume that added trials."""
    return list(meta.get("trial_segments") or [recorded_trials(meta)])


def resume_options(opts, meta: dict[str, Any], out: Path):
    """``opts`` with every setting that shapes the search taken from ``meta`` (the search's
    ``search.json``), and the lines to say on stderr; a change that cannot be honoured is a
    :class:`DraemZooError`."""
    recorded, defaults = dict(meta.get("options") or {}), _defaults(opts)
    recorded["trials"] = recorded_trials(meta)
    if meta.get("storage"):
        recorded["storage"] = meta["storage"]  # where it is, resolved (the default: RESULTS/ray)
        if not is_object_store(meta["storage"]) and not Path(meta["storage"]).is_dir():
            raise DraemZooError(f"{meta['storage']}: this search's storage (its trials and studies) is gone; a moved "
                                "storage cannot be resumed: put it back, or start a new search in another --out")
    changes: dict[str, Any] = {}
    fallback, notes = [], []
    for name, flag in SHAPING.items():
        if name not in recorded:  # a search.json older than this setting
            continue
        now, then = getattr(opts, name), recorded[name]
        if _same(name, now, then, meta):
            continue
        given = getattr(opts, "given", None)
        if (name not in given) if given is not None else (now is None or now == defaults[name]):
            # not given (module docstring): the recorded value
            changes[name] = then
            if then != defaults[name] and name != "storage":
                fallback.append(_shown(flag, then)[5:])
            continue
        if name in ("space", "categories"):  # another spelling of the same file or list: check_resumed compares
            continue
        if name == "trials" and now > then:
            notes.append(f"--trials {now}: this search had {then} trials per category; the {now - then} more run "
                         "after them, in another Tune experiment over the same Optuna study (its sampler sees every "
                         "earlier trial)")
            continue
        raise DraemZooError(_refusal(name, flag, now, then, meta))
    given = getattr(opts, "given", None)
    space_given = ("space" in given) if given is not None else opts.space not in (None, defaults["space"])
    if not space_given and (out / "space.py").is_file():
        changes["space"] = str(out / "space.py")  # not given: the search's own copy (the recorded path may be relative)
    if fallback:
        notes.insert(0, "resuming with this search's settings: " + ", ".join(fallback)
                     + " (a flag left at its default takes the value the search started with)")
    return dataclasses.replace(opts, **changes), notes


def _refusal(name: str, flag: str, now: Any, then: Any, meta: dict[str, Any]) -> str:
    if name == "trials":
        return (f"--trials {now}: this search already has {then} trials per category; resume with --trials {then} "
                "or more (trials that ran cannot be taken back), or start a new search in another --out")
    if name == "storage":
        return (f"--storage {now}: this search's trials and studies are in {meta.get('storage')}; resume with "
                f"--storage {meta.get('storage')} (a moved storage cannot be resumed), or start a new search in "
                "another --out")
    started = _shown(flag, then)
    if name in ("budget", "final_budget") and then is None:
        started = f"with the space's {name.replace('_', ' ')} ({meta.get(name)})"
    same = f"without {flag}" if started.startswith("without") else f"with the same {flag}{' values' if name == 'sets' else ''}"
    return f"{_shown(flag, now)[len('with '):]}: this search started {started}; resume {same}, or start a new search in another --out"


def check_resumed(opts, pre: dict[str, Any], meta: dict[str, Any]) -> None:
    """What the preflight resolved against what the search started with: the space file's source, the
    categories, the budgets (before ``plan.json`` and the tables are rewritten with them)."""
    if meta["space_sha256"] != hashlib.sha256(pre["space"].source().encode()).hexdigest():
        raise DraemZooError(f"--space {opts.space}: not the space this search started with ({meta.get('space')}, kept "
                            f"in {pre['out'] / 'space.py'}); resume with that file (or without --space), or start a "
                            "new search in another --out")
    if sorted(pre["categories"]) != sorted(meta["categories"]):
        raise DraemZooError(f"--categories {opts.categories} ({','.join(pre['categories'])}): this search started "
                            f"with {','.join(meta['categories'])}; resume with --categories "
                            f"{','.join(meta['categories'])}, or start a new search in another --out")
    for key, flag in (("budget", "--budget"), ("final_budget", "--final-budget")):
        if key in meta and str(pre[key]) != meta[key]:  # the space's BUDGET, with the same file: a safeguard
            raise DraemZooError(f"{flag} {pre[key]}: this search started with {flag} {meta[key]}; resume with the "
                                "same budget, or start a new search in another --out")


def extend_trials(meta: dict[str, Any], trials: int) -> bool:
    """Record ``trials`` per category in ``meta``; True when that adds a Tune experiment of more trials."""
    have = recorded_trials(meta)
    if trials <= have:
        return False
    meta["trial_segments"] = [*trial_segments(meta), trials - have]
    meta["trials"] = trials
    return True


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def private_group(gid: int, uid: int) -> bool:
    """Whether ``gid`` is the user-private group of ``uid`` (named after the user, no other member): the
    group a umask of 002 makes folders writable by, which no one else is in."""
    try:
        g, user = grp.getgrgid(gid), pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    return g.gr_name == user and set(g.gr_mem) <= {user}


def _untrusted(path: Path) -> str | None:
    """Why ``path`` cannot be trusted (owned by another user, or writable by others or by a group others are
    in); None if it can."""
    try:
        st = path.stat()
    except OSError:
        return None
    if st.st_uid != os.getuid():
        return (f"{path}: owned by {_user(st.st_uid)}, not by you ({_user(os.getuid())}); a resumed search lets Ray unpickle "
                f"what it holds, so it must be yours: check its contents, then chown -R {os.getuid()} {path}, or "
                "start a new search in another --out")
    group = st.st_mode & stat.S_IWGRP and not private_group(st.st_gid, st.st_uid)
    who = " and ".join(w for on, w in ((group, f"its group {_group(st.st_gid)}"), (st.st_mode & stat.S_IWOTH, "others"))
                       if on)
    if who:
        return (f"{path}: writable by {who} (mode {stat.S_IMODE(st.st_mode):o}); a resumed search lets Ray unpickle "
                f"what it holds, so only you may write it: check its contents, then chmod -R go-w {path}")
    return None


def trusted_paths(out: Path, storage: str, search_id: str) -> list[Path]:
    """The results folder and what a resume reads code from: ``space.py``, the storage folder, every folder
    of this search in it (each category's Tune experiments, its finals' runs) and the pickles and Tune
    state files directly inside those (``tuner.pkl``, ``searcher-state-*.pkl``, ``experiment_state-*.json``)."""
    paths = [out, out / "search.json", out / "space.py"]
    if is_object_store(storage):  # an object store's permissions are its own: not checked here
        return paths
    root = Path(storage)
    paths.append(root)
    if root.is_dir():
        for exp in sorted(root.iterdir()):
            if exp.name.startswith(f"{search_id}-") and exp.is_dir():
                paths.append(exp)
                paths += sorted(p for p in exp.iterdir() if p.suffix in (".pkl", ".json", ".journal"))
    return paths


def check_trusted(out: Path, storage: str, search_id: str) -> None:
    """Refuse to resume from a results or storage folder that others could have written (:func:`_untrusted`)."""
    for path in trusted_paths(out, storage, search_id):
        why = _untrusted(path)
        if why:
            raise DraemZooError(why)
