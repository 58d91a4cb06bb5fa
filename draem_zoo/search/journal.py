"""A category's Optuna journal after a killed driver: damage, and trials left RUNNING (no Ray needed).

The journal (:mod:`.study`) is a log of JSON lines, one storage operation each, which Optuna replays
in order (``JournalFileBackend.read_logs``): trial ids are handed out by counting the trials the log
creates, so a line cannot be dropped alone, and a line that does not parse stops the replay with a
``JSONDecodeError`` when any line follows it. A line without its newline is a write cut short; Optuna
skips it while it is last, but the next write appends to it and turns it into such a line.
:func:`check_journal`, run by ``search --resume`` while it holds the results folder (the earlier
driver's processes stopped): a line cut short at the end is removed (the whole file kept beside it);
any other line that does not parse is an error naming the file, the line and the fix (cut the journal
before that line: what follows cannot be replayed without it).

A driver killed between Tune's experiment checkpoints leaves trials RUNNING in the study that no one
will finish. :func:`reconcile_study` compares them with Tune's last experiment state (its JSON part):
a trial Tune resumes (PENDING, RUNNING, PAUSED) stays RUNNING, for the restored searcher reports to
it; one Tune finished is told its last result (what ``OptunaSearch.on_trial_complete`` would have
told); any other (Tune errored it, or never recorded it and starts another in its place) is marked
FAIL. Each Optuna trial names its Tune trial (user attribute ``tune_trial_id``); a study written
before that attribute is matched by parameters.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import DraemZooError
from .study import existing_storage, journal_path

TUNE_TRIAL_ID = "tune_trial_id"  # user attribute of each Optuna trial: the Tune trial it runs as
CONTINUED = ("PENDING", "RUNNING", "PAUSED")  # what Tune's restore (resume_unfinished) runs on


def journal_damage(path: Path) -> tuple[int, str, int] | None:
    """(line number, what is wrong, bytes of a last line cut short: 0 if it is a complete line) of the first
    line of the journal Optuna cannot replay; None when every line is a record."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with its newline
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError as exc:
            return n, f"not JSON: {exc}", 0
        if not isinstance(record, dict) or "op_code" not in record:
            return n, "not a journal record (no op_code)", 0
    if tail:
        return len(lines) + 1, "cut short (no newline)", len(tail)
    return None


def check_journal(path: Path) -> str | None:
    """Make the journal replayable, or say how: see the module docstring. Returns the line to print when
    a last line cut short was removed; None when nothing was wrong."""
    if not path.is_file():
        return None
    damage = journal_damage(path)
    if damage is None:
        return None
    n, what, cut = damage
    if not cut:
        raise DraemZooError(
            f"{path}: line {n} is {what}, so Optuna cannot replay the study past it; keep a copy (cp {path} "
            f"{path}.damaged), cut the journal before that line (head -n {n - 1} {path}.damaged > {path}) and resume: "
            f"the trials recorded after line {n - 1} are lost to the study (not to the results; Tune's trials go on)")
    copy = path.with_name(f"{path.name}.cut-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.copy2(path, copy)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - cut)
    return (f"{path}: its last line ({cut} bytes) was cut short by the killed driver, and removed (the file as it was "
            f"is kept in {copy})")


def tune_trials(storage: str, experiments: list[str]) -> dict[str, dict[str, Any]]:
    """Tune trial id -> status, config and last result, from the newest ``experiment_state-*.json`` of each
    experiment (read as JSON: the cloudpickled parts stay encoded)."""
    out: dict[str, dict[str, Any]] = {}
    for exp in experiments:
        states = sorted((Path(storage) / exp).glob("experiment_state-*.json"))
        if not states:
            continue
        try:
            data = json.loads(states[-1].read_text())
            for trial_json, runtime_json in data["trial_data"]:
                t, run = json.loads(trial_json), json.loads(runtime_json)
                out[t["trial_id"]] = {"status": t.get("status"), "config": t.get("config") or {},
                                      "last_result": run.get("last_result") or {}}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DraemZooError(f"{states[-1]}: Tune's experiment state cannot be read ({type(exc).__name__}: {exc}); "
                                "the search cannot be resumed from it: start a new search in another --out") from None
    return out


def _tune_id(trial, tune: dict[str, dict[str, Any]], claimed: set[str]) -> str | None:
    tid = trial.user_attrs.get(TUNE_TRIAL_ID)
    if tid or not trial.params:
        return tid
    same = [k for k, t in tune.items() if k not in claimed
            and all(t["config"].get(p) == v for p, v in trial.params.items())]
    return same[0] if len(same) == 1 else None


def reconcile_study(storage: str, experiment: str, experiments: list[str], metric: str, category: str) -> str | None:
    """Settle the trials a killed driver left RUNNING in the study of ``experiment`` (module docstring), given
    the Tune experiments of the category; the line that says what was done, or None."""
    import optuna
    from optuna.trial import TrialState

    found = existing_storage(storage, experiment)
    if found is None:
        return None
    try:
        study = optuna.load_study(study_name=experiment, storage=found)
    except KeyError:
        return None
    running = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    if not running:
        return None
    tune = tune_trials(storage, experiments)
    claimed = {t.user_attrs[TUNE_TRIAL_ID] for t in study.get_trials(deepcopy=False) if TUNE_TRIAL_ID in t.user_attrs}
    resumed, told, failed = 0, 0, 0
    for trial in running:
        info = tune.get(_tune_id(trial, tune, claimed) or "")
        status = (info or {}).get("status")
        if status in CONTINUED:
            resumed += 1
            continue
        value = (info or {}).get("last_result", {}).get(metric) if status == "TERMINATED" else None
        if isinstance(value, (int, float)) and math.isfinite(value):
            found.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [float(value)])
            told += 1
        else:
            found.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed += 1
    done = [f"{told} that Tune had finished told {_their(told)} last {_result(told)}" if told else "",
            f"{failed} marked failed (Tune errored {_them(failed)}, or had not recorded {_them(failed)} and runs others "
            "in their place)" if failed else "",
            f"{resumed} left RUNNING: Tune resumes {_them(resumed)}" if resumed else ""]
    return f"{category}: {len(running)} trials left RUNNING in the Optuna study (by a killed driver): " + "; ".join(
        d for d in done if d)


def _them(n: int) -> str:
    return "it" if n == 1 else "them"


def _their(n: int) -> str:
    return "its" if n == 1 else "their"


def _result(n: int) -> str:
    return "result" if n == 1 else "results"


def running_in_study(storage: str, experiment: str) -> int | str:
    """Trials RUNNING in the study of ``experiment`` (0 without a study file); what is wrong with a journal
    Optuna cannot replay, as text."""
    import optuna
    from optuna.trial import TrialState

    path = journal_path(storage, experiment)
    if path.is_file():
        damage = journal_damage(path)
        if damage and not damage[2]:
            return f"{path}: line {damage[0]} is {damage[1]}"
    found = existing_storage(storage, experiment)
    if found is None:
        return 0
    try:
        study = optuna.load_study(study_name=experiment, storage=found)
    except KeyError:
        return 0
    return sum(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))
