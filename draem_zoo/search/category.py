"""The search of one category, run as a Ray actor so that all categories share the cluster.

Phase 1: a Ray Tune experiment: ``OptunaSearch`` (TPE by default) drives the search
space, ASHA stops weak trials early on our reported ``iteration``, each trial is a
:func:`~draem_zoo.search.trial.trial_trainable`. The Optuna study lives in a journal file
beside the experiment when the storage is a folder (:mod:`.study`; safe on NFS), so it keeps
every finished trial across driver restarts and optuna-dashboard opens it. Phase 2: the best
configuration (by validation score) is retrained at the full budget with Ray Train across the
requested workers, once per seed, and so are, with ``--backbones-final``, every backbone's best
and, with ``--front N``, N configurations of the accuracy-speed front (:mod:`.front`); each
result carries the test metrics and the exported model directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from ..errors import DraemZooError
from ..pipeline.runconfig import RunConfig, make_run_config
from . import progress
from .front import front_members
from .records import variant_of
from .searcher import DurableOptunaSearch, seed_asha
from .space import load_space, overrides_of
from .study import journal_storage, load_category_study, segment_experiments
from .trial import budget_run_config, run_final, trial_resources, trial_run_config, trial_trainable
from .warm import frozen_trials, read_earlier, reusable, warm_points


def _trial_id_from_path(path: str | None) -> str | None:
    match = re.search(r"_([0-9a-f]{5,})_\d+_", Path(path).name) if path else None
    return match.group(1) if match else None


def _optuna_storage(storage: str, experiment: str):
    """The study's ``JournalStorage`` (``<storage>/<experiment>/optuna.journal``); None for an object store,
    where the study is kept in Tune's searcher checkpoints."""
    return journal_storage(storage, experiment)


def choose_trial(scored: list[dict[str, Any]], mode: str = "max") -> dict[str, Any]:
    """The best trial by validation; trials within one standard error of the top score are tied,
    and a tie goes to the cheaper model (fewer parameters), then the higher score."""
    sign = 1 if mode == "max" else -1
    top = max(scored, key=lambda t: sign * t["best_val_score"])
    se = top.get("val_score_se") or 0.0
    tied = [t for t in scored if sign * (top["best_val_score"] - t["best_val_score"]) <= se]
    best = min(tied, key=lambda t: (t.get("params_count") or float("inf"), -sign * t["best_val_score"]))
    return dict(best, selection={"rule": "best validation score; within one standard error of the top "
                                         "(bootstrap over the validation normals) the cheaper model",
                                 "top_trial": top["trial_id"], "top_score": top["best_val_score"],
                                 "standard_error": se, "tied": [t["trial_id"] for t in tied]})


@ray.remote(num_cpus=0, max_retries=0)
def _final_task(run: RunConfig, name: str, settings: dict[str, Any], workers: int):
    """One final run (:func:`run_final`) in its own process, so that a category's finals run side by
    side; like the category's driver it holds no CPU: its Tune trial or Train workers do."""
    return run_final(run, name, settings, workers)


def _reason(exc: Exception) -> str:
    """The first line of what went wrong, without Ray's task wrapper around it."""
    err = (exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else None) or exc
    lines = str(err).splitlines()
    return lines[0][:500] if lines else type(err).__name__


# the search driver of a category waits on Tune; it holds no CPU, so that trials never wait on it
@ray.remote(num_cpus=0, max_concurrency=4)
class CategorySearch:
    def __init__(self, category: str, space_path: str, base: dict[str, Any], settings: dict[str, Any],
                 plan: dict[str, Any]):
        # Tune persists its experiment state (trial statuses, scheduler, searcher) at this period;
        # what happened after the last save is redone on --resume, so keep it short (the state is
        # small: the study itself lives in SQLite).
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(settings.get("experiment_checkpoint_s", 1)))
        self.category = category
        self.space = load_space(space_path)
        self.base = make_run_config({"data.category": category}, base=RunConfig.from_dict(base)).to_dict()
        self.settings = dict(settings, experiment=f"{settings['search_id']}-{category}")
        self.plan = plan  # this category's entry of the search plan: trial and final iterations, cadence
        self.phase = "pending"
        self.final: list[dict[str, Any]] = []

    def progress(self) -> dict[str, Any]:
        return {"category": self.category, "phase": self.phase, "trials": progress.snapshot(self.settings["experiment"]),
                "final": [dict(f) for f in self.final]}

    def _validate_at(self) -> list[float] | None:
        points = self.plan["trial"].get("val_points")  # --rungs: validate where ASHA cuts
        return [p / self.plan["trial"]["iterations"] for p in points] if points else None

    def _trial_run(self, params: dict[str, Any]) -> dict[str, Any]:
        """Everything that makes a trial's training what it is in this search (what a reused result must match)."""
        s = self.settings
        run = trial_run_config(params, self.base, s["budget"], s["validations"], self._validate_at(),
                               s.get("trial_image_size") or 0)
        return {"run": run.to_dict(), "workers": s["workers_per_trial"], "lr_scaling": s.get("lr_scaling", "none")}

    def warm_start(self) -> dict[str, Any]:
        """``--warm-start RESULTS`` (:mod:`.warm`): this category's reused earlier results, their study
        entries, and the points to enqueue; without it the space's own points."""
        s, sp = self.settings, self.space
        points = sp.enqueued_points(s.get("sampler"))
        if not s.get("warm_start"):
            return {"points": points, "reused": [], "frozen": []}
        earlier = read_earlier(s["warm_start"], sp.mode)
        e_meta, e_opts = earlier["meta"], earlier["meta"].get("options") or {}
        e_trial = ((earlier["plan"].get("categories") or {}).get(self.category) or {}).get("trial")
        e_base = (make_run_config({"data.category": self.category}, base=RunConfig.from_dict(e_meta["base"])).to_dict()
                  if e_trial and "base" in e_meta else None)

        def trial_run(params: dict[str, Any], side: str) -> dict[str, Any]:
            if side == "now":
                return self._trial_run(params)
            if e_base is None:
                raise DraemZooError("the earlier search did not plan this category")
            pts = e_trial.get("val_points")
            run = trial_run_config(params, e_base, e_meta["budget"], int(e_opts.get("validations", 5)),
                                   [p / e_trial["iterations"] for p in pts] if pts else None,
                                   int(e_opts.get("trial_image_size") or 0))
            return {"run": run.to_dict(), "workers": e_opts.get("workers_per_trial", 1),
                    "lr_scaling": e_opts.get("lr_scaling", "none")}

        first = (s.get("segments") or [s["trials"]])[0]
        reused = reusable(earlier, self.category, trial_run)[:first]
        grid = (s.get("sampler") or sp.sampler) == "grid"  # a grid visits its own points; nothing is enqueued
        return {"points": [] if grid else warm_points(earlier, self.category, points, reused), "reused": reused,
                "frozen": frozen_trials(earlier, self.category, reused)}

    def _tuner(self, resume: bool, segment: int = 0, earlier: list[dict[str, Any]] | None = None,
               warm: dict[str, Any] | None = None) -> tune.Tuner:
        """The Tune experiment of the ``segment``-th batch of trials (:func:`.study.segment_experiments`):
        restored when a resume finds it, else new, over the category's one study."""
        s, sp = self.settings, self.space
        exp = s["experiment"]
        segments = s.get("segments") or [s["trials"]]
        name = segment_experiments(exp, len(segments))[segment]
        inner = tune.with_parameters(trial_trainable, base=self.base, settings=dict(s, validate_at=self._validate_at()))
        # Tune registers trainables by name in a registry shared by the whole Ray job: every
        # category's searcher runs in the same job, so a shared name would let one category's
        # trials run with another's base config (its data). One name per experiment.
        inner.__name__ = "trial_" + re.sub(r"[^A-Za-z0-9]+", "-", name)
        trainable = tune.with_resources(inner, trial_resources(s))
        path = f"{s['storage'].rstrip('/')}/{name}"
        if resume and tune.Tuner.can_restore(path):
            return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        max_t, every = self.plan["trial"]["iterations"], self.plan["trial"]["val_every"]
        # a later batch asks the same study (its sampler sees every earlier trial); the points to
        # evaluate first were the first batch's
        searcher = DurableOptunaSearch(space=sp.fn, metric=sp.metric, mode=sp.mode,
                                       sampler=sp.make_sampler(s.get("seed", 0) + segment, s.get("sampler")),
                                       storage=_optuna_storage(s["storage"], exp), study_name=exp,
                                       points_to_evaluate=(warm["points"] or None) if warm and not segment else None,
                                       warm_trials=warm["frozen"] if warm and not segment else None)
        scheduler = ASHAScheduler(time_attr="iteration", metric=sp.metric, mode=sp.mode, max_t=max_t,
                                  grace_period=self.plan["trial"].get("asha_grace")
                                  or max(every, min(max_t, every * s.get("grace_validations", 2))),
                                  reduction_factor=s.get("reduction_factor", 2),
                                  # a trial at the budget ends by itself, after its final report (test metrics)
                                  stop_last_trials=False)
        seed_asha(scheduler, earlier or [], sp.metric, sp.mode)
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                        num_samples=segments[segment] - (len(warm["reused"]) if warm and not segment else 0),
                                        max_concurrent_trials=s.get("max_concurrent") or None),
            run_config=tune.RunConfig(name=name, storage_path=s["storage"], verbose=0,
                                      # a one-worker trial trains in the trial: its crash is the trial's
                                      failure_config=tune.FailureConfig(max_failures=int(s.get("retries", 2))),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      callbacks=[progress.ProgressCallback(exp, sp.metric)]),
        )

    def run(self, resume: bool = False) -> dict[str, Any]:
        self.phase = "search"
        warm = self.warm_start()
        trials: list[dict[str, Any]] = list(warm["reused"])  # --warm-start: earlier results, not trained again
        for segment, n in enumerate(self.settings.get("segments") or [self.settings["trials"]]):
            if n - (len(warm["reused"]) if not segment else 0) > 0:  # more trials added by a resume: later
                trials += [self._record(r) for r in self._tuner(resume, segment, trials, warm).fit()]
        scored = [t for t in trials if t["best_val_score"] is not None]
        if not scored:
            self.phase = "failed"
            errors = [t["error"] for t in trials if t.get("error")]
            return {"category": self.category, "trials": trials, "best_trial": None, "final": [],
                    "error": "no trial produced a validation score" + (f": {errors[0]}" if errors else "")}
        prints = {t["val_fingerprint"] for t in scored if t.get("val_fingerprint")}
        if len(prints) > 1:
            self.phase = "failed"
            return {"category": self.category, "trials": trials, "best_trial": None, "final": [],
                    "error": f"trials were validated on {len(prints)} different validation sets "
                             f"({', '.join(sorted(p[:12] for p in prints))}): their scores are not comparable, so "
                             "none is ranked; pin eval.validation_source and the image size"}
        best = choose_trial(scored, self.space.mode)
        self.phase = "final"
        finalists = {best["trial_id"]: best}
        if self.settings.get("backbones_final"):
            # every backbone's best trial is retrained at the final budget, so that the backbone
            # comparison is made on the same footing; the export is the best of them on validation
            sign = 1 if self.space.mode == "max" else -1
            per: dict[str, dict[str, Any]] = {variant_of(best): best}
            for t in sorted(scored, key=lambda t: -sign * t["best_val_score"]):
                per.setdefault(variant_of(t), t)
            finalists.update({t["trial_id"]: t for t in per.values() if t["trial_id"] not in finalists})
        if self.space.final_per:
            # FINAL_PER (an ablation's rows): the best trial of every value of that parameter is retrained
            # at the final budget and tested, so that the values are compared on test, at one budget
            sign = 1 if self.space.mode == "max" else -1
            per_value: dict[str, dict[str, Any]] = {}
            for t in sorted(scored, key=lambda t: -sign * t["best_val_score"]):
                per_value.setdefault(repr((t.get("params") or {}).get(self.space.final_per)), t)
            finalists.update({t["trial_id"]: t for t in per_value.values() if t["trial_id"] not in finalists})
        # --front N: N configurations of the accuracy-speed front, retrained and exported beside the best
        front = front_members([dict(t, category=self.category) for t in trials], int(self.settings.get("front") or 0),
                              self.space.mode)
        by_id = {t["trial_id"]: t for t in trials}
        for m in front:
            finalists.setdefault(m["trial_id"], by_id[m["trial_id"]])
        self._final_runs(list(finalists.values()))
        self.phase = "done"
        return {"category": self.category, "trials": trials, "best_trial": best, "final": self.final,
                "front": front, "metric": self.space.metric, "mode": self.space.mode,
                "study": self._study_summary(), "backbones_final": bool(self.settings.get("backbones_final")),
                "final_per": self.space.final_per}

    def _record(self, result) -> dict[str, Any]:
        m = result.metrics or {}
        curve = []
        df = result.metrics_dataframe
        if df is not None and len(df):
            cols = [c for c in ("iteration", "loss", "l2", "ssim", "focal", "val_score", "val_filter_size",
                                "val_saturation", "val_tie", "best_val_score", "it_per_s", "resumed")
                    if c in df.columns]
            curve = _rolled_back([{k: (None if v != v else v) for k, v in row.items()}  # NaN -> None
                                  for row in df[cols].to_dict("records")])
        params = dict(result.config or {})
        best_scores = [c["best_val_score"] for c in curve if c.get("best_val_score") is not None]
        return {
            "trial_id": m.get("trial_id") or _trial_id_from_path(result.path),
            "params": params, "overrides": overrides_of(params),
            "variant": overrides_of(params).get("model.variant", self.base["model"]["variant"]),
            "status": "ERROR" if result.error else "TERMINATED",
            "error": str(result.error).splitlines()[0][:500] if result.error else None,
            "iteration": m.get("iteration"), "budget": self.plan["trial"]["iterations"],
            "budget_spec": self.settings["budget"],
            "stopped_early": (m.get("iteration") or 0) < self.plan["trial"]["iterations"] and not result.error,
            "best_val_score": max(best_scores) if best_scores else m.get("best_val_score"),
            "val_filter_size": m.get("val_filter_size"),
            "resumed": bool(m.get("resumed")), "category": m.get("category"),
            "train_seconds": m.get("train_seconds"), "params_count": m.get("params"),
            "images_per_s": m.get("images_per_s"),  # inference, measured on the validation set (at the budget)
            # inference of model.predict on a fixed batch, measured by every trial before it trains (.speed)
            **{k: m.get(k) for k in ("infer_images_per_s", "infer_batch", "infer_image_size", "infer_device",
                                     "infer_threads")},
            "val_score_se": m.get("val_score_se"), "val_fingerprint": m.get("val_fingerprint"),
            "curve": curve, "path": result.path,
        }

    def _final_runs(self, finalists: list[dict[str, Any]]) -> None:
        """Each finalist at the final budget, once per seed (DDP over the final workers), validating
        ``--validations`` times whatever the budget, evaluated on test and exported. The runs are
        independent, so they run side by side (an ablation's rows, the front's members, the seeds), as
        many at once as the category's share of the cluster holds (``max_concurrent`` trial slots);
        Ray queues what does not fit."""
        s = self.settings
        workers = s.get("final_workers") or s["workers_per_trial"]
        queue = []
        for best in finalists:
            base = make_run_config(best["overrides"], base=RunConfig.from_dict(self.base))
            row = (best.get("params") or {}).get(self.space.final_per) if self.space.final_per else None
            for i in range(int(s.get("final_seeds", 1))):
                seed = base.train.seed + i
                run = budget_run_config(make_run_config({"train.seed": seed}, base=base), s["final_budget"],
                                        s["validations"])
                entry = {"seed": seed, "status": "queued", "workers": workers, "trial_id": best.get("trial_id"),
                         "variant": variant_of(best), "budget": s["final_budget"],
                         "iterations": run.train.budget(self.plan["n_train"], workers)}
                if row is not None:
                    entry["row"] = row
                self.final.append(entry)
                name = f"{s['experiment']}-final-s{seed}"
                if s.get("backbones_final") or s.get("front") or self.space.final_per:
                    name += f"-{best.get('trial_id')}"
                queue.append((entry, run, name))
        cap = max(1, int(s.get("max_concurrent") or 1) * int(s["workers_per_trial"]) // max(1, int(workers)))
        pending: dict[Any, dict[str, Any]] = {}
        while queue or pending:
            while queue and len(pending) < cap:
                entry, run, name = queue.pop(0)
                entry["status"] = "running"
                pending[_final_task.remote(run, name, s, workers)] = entry
            ready, _ = ray.wait(list(pending), num_returns=1)
            entry = pending.pop(ready[0])
            try:
                metrics, checkpoint = ray.get(ready[0])
            except Exception as exc:  # retries exhausted
                entry.update(status="error", error=_reason(exc))
                continue
            entry.update(status="done", metrics=metrics, checkpoint=checkpoint.path if checkpoint else None,
                         filesystem=type(checkpoint.filesystem).__name__ if checkpoint else None)

    def _study_summary(self) -> dict[str, Any] | None:
        study = load_category_study(self.settings["storage"], self.settings["experiment"])
        if study is None:  # an object store: the study is in Tune's searcher checkpoints
            return None
        states = [t.state.name for t in study.trials]
        return {"trials": len(states), "complete": states.count("COMPLETE"), "running": states.count("RUNNING"),
                "pruned": states.count("PRUNED"), "fail": states.count("FAIL"), "study_name": study.study_name}


def _rolled_back(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The curve of the run that counts. A trial restored from a checkpoint reports again from the
    checkpoint's iteration on; what its earlier run reported past that point (after the checkpoint Tune
    restored, e.g. from an actor orphaned by a killed driver) was rolled back, and is dropped."""
    kept: list[dict[str, Any]] = []
    for point in curve:
        it = point.get("iteration")
        while it is not None and kept and kept[-1].get("iteration") is not None and kept[-1]["iteration"] >= it:
            kept.pop()
        kept.append(point)
    return kept
