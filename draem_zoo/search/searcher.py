"""The category study's searcher and scheduler state: ``DurableOptunaSearch`` (Ray Tune's ``OptunaSearch`` over a
durable study, with ``--warm-start``'s reused trials) and :func:`seed_asha` (earlier trials recorded at ASHA's rungs).
Imported by :mod:`.category` inside the category's actor (Ray Tune)."""

from __future__ import annotations

from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler

from .journal import TUNE_TRIAL_ID
from .warm import WARM_ATTR

try:
    from ray.tune.search.optuna import OptunaSearch as _OptunaSearch
except ImportError:  # optuna missing: load_space / check_space already said so
    _OptunaSearch = object  # type: ignore[assignment,misc]


class DurableOptunaSearch(_OptunaSearch):
    """``OptunaSearch`` over a durable (journal file) study.

    After a driver crash, Tune restarts the trials that were running at its last experiment
    checkpoint; one of them may have finished (and been told to the study) after that
    checkpoint. Its repeated reports are ignored instead of failing the search. Each Optuna
    trial names its Tune trial (user attribute ``tune_trial_id``), so that a resume can tell
    which trials left RUNNING Tune continues (:mod:`.journal`); on restore, a continued trial
    whose study entry the journal lost (a journal cut after damage) gets a new entry with its
    parameters, so that it never reports to a missing trial, or to another trial given its id.

    ``warm_trials`` (``--warm-start``): earlier trials reused as results, added to a new study before
    the points to evaluate are enqueued (so the study reads: reused, then the first new trials).
    """

    def __init__(self, *args, warm_trials: list[Any] | None = None, **kwargs):
        self._warm_trials = list(warm_trials or [])
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode):
        points, self._points_to_evaluate = self._points_to_evaluate, None
        try:
            super()._setup_study(mode)
        finally:
            self._points_to_evaluate = points
        have = {t.user_attrs.get(WARM_ATTR) for t in self._ot_study.get_trials(deepcopy=False)}
        for t in self._warm_trials:
            if t.user_attrs.get(WARM_ATTR) not in have:  # a restarted driver added them already
                self._ot_study.add_trial(t)
        for point in points or []:
            self._ot_study.enqueue_trial(point)

    def suggest(self, trial_id: str):
        new = trial_id not in self._ot_trials
        config = super().suggest(trial_id)
        if new and trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(TUNE_TRIAL_ID, trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.relink()

    def relink(self) -> list[str]:
        """Give each unfinished Tune trial a study entry of its own (class docstring); the Tune ids relinked."""
        study = self._ot_study
        storage, relinked = study._storage, []
        backend = getattr(storage, "_backend", None)
        if isinstance(getattr(backend, "_log_number_offset", None), dict):
            # the pickled journal reader caches each line's offset in the file as it was: a journal cut since
            # (or cut and written again) would be read from the wrong places
            backend._log_number_offset = {0: 0}
        for tid, ot in sorted(self._ot_trials.items(), key=lambda kv: kv[1]._trial_id):
            if tid in self._completed_trials:
                continue
            mine = ot._cached_frozen_trial
            try:
                entry = storage.get_trial(ot._trial_id)
            except KeyError:
                entry = None
            if entry is not None and entry.user_attrs.get(TUNE_TRIAL_ID, tid) == tid and entry.number == mine.number \
                    and entry.params == mine.params:
                continue
            template = optuna.trial.FrozenTrial(
                number=-1, state=optuna.trial.TrialState.RUNNING, value=None, datetime_start=mine.datetime_start,
                datetime_complete=None, params=dict(mine.params), distributions=dict(mine.distributions),
                user_attrs={**mine.user_attrs, TUNE_TRIAL_ID: tid}, system_attrs={}, intermediate_values={},
                trial_id=-1)
            self._ot_trials[tid] = optuna.trial.Trial(study, storage.create_new_trial(study._study_id, template))
            relinked.append(tid)
        return relinked


def seed_asha(scheduler: ASHAScheduler, earlier: list[dict[str, Any]], metric: str, mode: str) -> int:
    """Record the earlier experiments' trials at ASHA's rungs (their first report at or past each rung,
    as ASHA records a trial's), so that the trials a resume adds are judged against every trial of the
    category, as in one experiment; the number of rung entries recorded."""
    sign, n = (1 if mode == "max" else -1), 0
    for bracket in getattr(scheduler, "_brackets", []):
        for milestone, recorded in getattr(bracket, "_rungs", []):
            for t in earlier:
                at = next((c for c in t.get("curve") or [] if (c.get("iteration") or 0) >= milestone), None)
                if at is not None and at.get(metric) is not None:
                    recorded[t["trial_id"]] = sign * at[metric]
                    n += 1
    return n
