"""Live trial tables, kept in the process of each category's search actor.

Ray pickles actor classes by value, so this state lives in an importable module (pickled
by reference) and the Tune callback keeps only the experiment's name: a restored
experiment's callback finds the same table.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ray import tune

from .cleanup import drop_trial_checkpoints, sweep_workdirs

_TABLES: dict[str, dict[str, dict[str, Any]]] = {}
_LOCK = threading.Lock()


def update(experiment: str, trial_id: str, **fields: Any) -> None:
    with _LOCK:
        rec = _TABLES.setdefault(experiment, {}).setdefault(trial_id, {"trial_id": trial_id, "status": "PENDING"})
        rec.update(fields)


def snapshot(experiment: str) -> list[dict[str, Any]]:
    with _LOCK:
        return [dict(r) for r in _TABLES.get(experiment, {}).values()]


class ProgressCallback(tune.Callback):
    """Feeds ``draem-zoo status``: trial states, iterations and validation scores; and when a trial
    ends (finished, stopped by ASHA, failed for good), removes what it leaves: its heavy
    checkpoints in storage and its work directories on the nodes (:mod:`.cleanup`)."""

    def __init__(self, experiment: str, metric: str, cleanup: bool = True):
        self.experiment, self.metric, self.cleanup = experiment, metric, cleanup

    def _clean(self, trial) -> None:
        if not self.cleanup:
            return
        name = f"{self.experiment}-{trial.trial_id}"  # the run's name (its Train run, its work directory)
        st = trial.storage
        drop_trial_checkpoints(st.storage_filesystem, [st.trial_fs_path, f"{st.storage_fs_path}/{name}"])
        sweep_workdirs(name, timeout=30)

    def on_trial_start(self, iteration, trials, trial, **info):
        update(self.experiment, trial.trial_id, status="RUNNING", params=dict(trial.config), started=time.time())

    def on_trial_restore(self, iteration, trials, trial, **info):
        update(self.experiment, trial.trial_id, status="RUNNING", params=dict(trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        update(self.experiment, trial.trial_id, iteration=result.get("iteration"), total=result.get("total"),
               val_score=result.get(self.metric), best_val_score=result.get("best_val_score"))

    def on_trial_complete(self, iteration, trials, trial, **info):
        update(self.experiment, trial.trial_id, status="TERMINATED", finished=time.time())
        self._clean(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        update(self.experiment, trial.trial_id, status="ERROR", finished=time.time())
        self._clean(trial)
