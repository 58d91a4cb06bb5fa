"""``draem-zoo search``: checks, Ray start-up, one search actor per category, results.

Everything that can be wrong is checked before any trial starts: the data root and
categories (every file of every category), the search-space file (its suggestions make
valid runs and buildable models), the storage (writable), the results folder (a new
search needs a new folder; ``--resume`` needs the old one, the settings the search started
with and folders no one else can write: :mod:`.resume`), and the cluster (enough CPUs/GPUs
for one trial). A resume also repairs what a killed driver left in the Optuna studies
(:mod:`.journal`). Without ``--address`` Ray starts embedded on this machine, with its
dashboard (needed so that trials stopped by ASHA release their resources).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ..__about__ import __version__
from ..data import scan_category, select_categories
from ..errors import DraemZooError
from ..files import OutputLock, swap_in
from ..pipeline.runconfig import make_run_config
from ..train.budget import parse_budget
from . import results
from .cost import spent
from .journal import check_journal, reconcile_study
from .plan import effective_reduction_factor, make_plan
from .resume import check_resumed, check_trusted, extend_trials, resume_options, trial_segments
from .space import check_selection, check_space, check_trial_image_size, load_space, overrides_of
from .status import ProgressLog
from .study import dashboard_lines, is_object_store, journal_path, search_studies, segment_experiments
from .warm import read_earlier


@dataclasses.dataclass
class SearchOptions:
    data: str
    out: str
    categories: str = "all"
    space: str = "search_spaces/default.py"
    trials: int = 16
    budget: str | int | None = None  # iterations (20000, "20000 iterations") or epochs ("100 epochs")
    final_budget: str | int | None = None  # the same; 0 = the paper's 700 epochs
    address: str | None = None
    storage: str | None = None
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    final_workers: int | None = None
    final_seeds: int = 1
    backbones_final: bool = False
    front: int = 0  # retrain and export N configurations of each category's accuracy-speed front
    resume: bool = False
    sets: list[str] = dataclasses.field(default_factory=list)
    sampler: str | None = None
    seed: int = 0
    retries: int = 2
    validations: int = 5
    rungs: int = 0  # >= 2: trials validate at geometric points, ASHA (reduction factor 3) cuts there (.plan)
    trial_image_size: int | None = None  # trials' model.image_size; None: the space's TRIAL_IMAGE_SIZE; 0: the final's
    warm_start: str | None = None  # an earlier search's results: its winners first, its same-run results reused (.warm)
    reduction_factor: int = 2
    grace_validations: int = 2
    max_concurrent: int | None = None
    lr_scaling: str = "none"
    num_cpus: float | None = None
    progress: bool = True
    poll_seconds: float = 5.0
    crash_at_iteration: int | None = None  # fault injection (tests): first attempt of each run
    plan: bool = False  # print what the search costs and stop (no Ray, no training)
    throughput: float | None = None  # one accelerator's training images/s, for the plan's hours
    throughput_from: str | None = None  # or the gpu_check / bench_train --e2e JSON lines to read it from
    given: tuple[str, ...] | None = None  # the fields set by a typed flag (CLI); None: unknown (see .resume)


def _check_storage(storage: str) -> str:
    if "://" in storage:
        try:
            import pyarrow.fs as pafs  # object stores only

            fs, path = pafs.FileSystem.from_uri(storage)
            fs.create_dir(path, recursive=True)
            with fs.open_output_stream(f"{path}/.draem_zoo_write_test") as f:
                f.write(b"ok")
            fs.delete_file(f"{path}/.draem_zoo_write_test")
        except Exception as exc:
            raise DraemZooError(f"--storage {storage}: not writable ({type(exc).__name__}: {exc})") from None
        return storage
    path = Path(storage).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".draem_zoo_write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise DraemZooError(f"--storage {storage}: not writable ({exc.strerror}); give a folder every node can "
                            "write (shared file system) or an object-store URI such as s3://bucket/draem") from None
    return str(path)


def preflight(opts: SearchOptions) -> dict[str, Any]:
    """All the checks that need no cluster; returns what the search (or its plan) needs, with ``opts``
    (on ``--resume``, the settings the search started with: :func:`.resume.resume_options`)."""
    out = Path(opts.out).expanduser().resolve()
    meta_path = out / "search.json"
    meta, notes = None, []
    if not opts.plan:
        if meta_path.exists() and not opts.resume:
            raise DraemZooError(f"{out}: already holds a search; pass --resume to continue it, or choose another --out")
        if opts.resume and not meta_path.exists():
            raise DraemZooError(f"{out}: no search to resume (no search.json); run without --resume")
        if opts.resume:  # the settings the search started with; a change is refused or honoured here
            meta = json.loads(meta_path.read_text())
            opts, notes = resume_options(opts, meta, out)
    if opts.trials < 1:
        raise DraemZooError(f"--trials {opts.trials}: a search needs at least one trial per category")
    if opts.front < 0:
        raise DraemZooError(f"--front {opts.front}: give the number of front configurations to retrain (0: none)")
    if opts.validations < 1:
        raise DraemZooError(f"--validations {opts.validations}: each run needs at least one validation")
    space = load_space(opts.space)
    if not opts.rungs and space.rungs and not (meta and "rungs" in (meta.get("options") or {})):
        opts = dataclasses.replace(opts, rungs=space.rungs)  # the space's RUNGS, unless --rungs says otherwise
    if opts.rungs == 1 or opts.rungs < 0:
        raise DraemZooError(f"--rungs {opts.rungs}: give 2 or more geometrically spaced validation points per trial "
                            "(e.g. 4: 1/27, 1/9, 1/3 and all of the budget), or 0 for --validations evenly spaced")
    budget = (parse_budget(opts.budget, "--budget") if opts.budget is not None
              else parse_budget(space.budget, f"{opts.space}: BUDGET ="))
    if budget is None:
        raise DraemZooError(f"{opts.space}: no budget; pass --budget (iterations, e.g. 20000, or epochs, e.g. "
                            "'100 epochs') or set BUDGET in the space file")
    final_budget = (parse_budget(opts.final_budget, "--final-budget") if opts.final_budget is not None
                    else parse_budget(space.final_budget or 0, f"{opts.space}: FINAL_BUDGET ="))
    if opts.warm_start:  # checked before anything starts; each category's actor reads it again
        opts = dataclasses.replace(opts, warm_start=read_earlier(opts.warm_start, space.mode)["out"])
    data = str(Path(opts.data).expanduser().resolve())
    base = make_run_config([f"data.root={data}", *opts.sets])
    wanted = select_categories(data, opts.categories, "search", base.data.dataset)
    n_train = {}
    for c in wanted:
        files = scan_category(data, c, base.data.val_fraction, base.data.split_seed, dataset=base.data.dataset)
        n_train[c] = len(files.train)
        if not files.val:
            raise DraemZooError(f"{data}/{c}: no validation normals ({len(files.train)} to train on, none held out: "
                                f"{files.validation}); the search selects on validation data: it needs at least 2 "
                                "training images and data.val_fraction > 0 (MVTec AD 2: its validation/good)")
    sizes: dict[str, dict[str, int]] = {}
    draws = check_space(space, base, sizes=sizes)
    check_selection(space, base, draws)
    if opts.trial_image_size is None:  # the space's; where its runs are that small already, trials run at theirs
        finals = min(make_run_config(overrides_of(d), base=base).model.image_size for d in draws or [{}])
        opts = dataclasses.replace(opts, trial_image_size=space.trial_image_size
                                   if space.trial_image_size < finals else 0)
    check_trial_image_size(space, base, draws, opts.trial_image_size)
    if opts.lr_scaling not in ("none", "linear", "sqrt"):
        raise DraemZooError(f"--lr-scaling {opts.lr_scaling}: use none, linear or sqrt")
    storage = None if opts.plan else _check_storage(opts.storage or str(out / "ray"))
    pre = {"out": out, "space": space, "budget": budget, "final_budget": final_budget,
           "categories": wanted, "base": base, "storage": storage, "n_train": n_train, "draws": draws,
           "model_sizes": sizes, "opts": opts, "meta": meta, "notes": notes}
    if meta is not None:  # before anything is rewritten, or unpickled
        check_resumed(opts, pre, meta)
        check_trusted(out, storage, meta["search_id"])
    return pre


def plan_search(opts: SearchOptions) -> dict[str, Any]:
    """``--plan``: the cost of the search, in seconds, without Ray."""
    pre = preflight(opts)
    return make_plan(pre, pre["opts"])


def _start_ray(opts: SearchOptions) -> bool:
    import ray  # lazily, here and below: preflight and --plan run without Ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # worker start-up on a busy machine can take minutes: a slow start should not fail a trial
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    if ray.is_initialized():
        return False
    if opts.address:
        ray.init(address=opts.address, log_to_driver=False)
    else:
        ray.init(include_dashboard=True, num_cpus=opts.num_cpus, log_to_driver=False)
    return True


def _check_cluster(opts: SearchOptions) -> dict[str, float]:
    import ray

    res = ray.cluster_resources()
    need_cpu = opts.cpus_per_worker * opts.workers_per_trial
    if res.get("CPU", 0) < need_cpu:
        raise DraemZooError(f"the cluster has {res.get('CPU', 0):g} CPUs; one trial needs {need_cpu:g} "
                            "(--cpus-per-worker x --workers-per-trial)")
    if opts.gpus_per_trial > 0 and res.get("GPU", 0) < opts.gpus_per_trial:
        raise DraemZooError(f"the cluster has {res.get('GPU', 0):g} GPUs; --gpus-per-trial {opts.gpus_per_trial:g} "
                            "cannot be placed (use --gpus-per-trial 0 for CPU trials)")
    return res


def _max_concurrent(opts: SearchOptions, res: dict[str, float], n_categories: int) -> int:
    if opts.max_concurrent:
        return opts.max_concurrent
    per_trial = opts.cpus_per_worker * opts.workers_per_trial
    slots = int(res.get("CPU", 1) // per_trial)
    if opts.gpus_per_trial > 0:
        slots = min(slots, int(res.get("GPU", 0) / opts.gpus_per_trial))
    return max(1, slots // n_categories)


def _copy_best(final: list[dict[str, Any]], dest: Path) -> dict[str, Any] | None:
    """Export the final run of ``final`` with the best validation score to ``dest``; that run, or None."""
    import ray.train

    done = [f for f in final if f.get("status") == "done" and f.get("checkpoint")]
    if not done:
        return None
    best = max(done, key=lambda f: f["metrics"].get("val_score") or -1.0)
    with tempfile.TemporaryDirectory() as tmp:
        local = ray.train.Checkpoint(best["checkpoint"]).to_directory(tmp)
        staging = dest.with_name(dest.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ("model.safetensors", "config.json", "history.json"):
            if (Path(local) / name).is_file():
                shutil.copyfile(Path(local) / name, staging / name)  # the user's umask, not the trial's modes
        swap_in(staging, dest)  # the old best stays until the new one is complete and in place
    return best


def _export(summary: dict[str, Any], out: Path) -> None:
    """Export the category's best model to ``<category>/best`` and its front members to
    ``<category>/front/<name>``, each from its own final runs (the seed best on validation)."""
    cat, finals = summary["category"], summary.get("final") or []
    chosen = summary.get("best_trial") or {}
    if not summary.get("backbones_final") and chosen.get("trial_id"):
        finals_of_best = [f for f in finals if f.get("trial_id") == chosen["trial_id"]] or finals
    else:  # --backbones-final: the export is the best of every backbone's final on validation
        finals_of_best = finals
    best = _copy_best(finals_of_best, out / cat / "best")
    summary["exported_seed"] = best["seed"] if best else None
    if best and best.get("trial_id"):  # with --backbones-final, the export may be another backbone
        summary["best_trial"] = next((t for t in summary["trials"] if t["trial_id"] == best["trial_id"]),
                                     summary.get("best_trial"))
        summary["exported_trial"] = best["trial_id"]
    for m in summary.get("front") or []:
        done = _copy_best([f for f in finals if f.get("trial_id") == m["trial_id"]], out / cat / "front" / m["name"])
        m["model_dir"] = f"front/{m['name']}" if done else None
        m["metrics"] = (done or {}).get("metrics")
        m["exported_seed"] = (done or {}).get("seed")


def run_search(opts: SearchOptions) -> dict[str, Any]:
    if opts.plan:
        return plan_search(opts)
    pre = preflight(opts)
    opts, out = pre["opts"], pre["out"]  # on --resume, the options the search started with
    if out.exists() and not out.is_dir():
        raise DraemZooError(f"--out {out}: is a file, not a folder; choose another --out")
    with OutputLock(out, "this search"):  # one driver per results folder; a killed one's lock is taken over
        return _run_search(opts, pre, out)


def search_meta(opts: SearchOptions, pre: dict[str, Any]) -> dict[str, Any]:
    """What ``search.json`` records of a new search: a resume is compared with it (:mod:`.resume`)."""
    return {"search_id": f"{pre['out'].name}-{uuid.uuid4().hex[:8]}", "created": time.time(), "version": __version__,
            "space": str(opts.space), "space_sha256": hashlib.sha256(pre["space"].source().encode()).hexdigest(),
            "options": dataclasses.asdict(opts), "budget": str(pre["budget"]), "final_budget": str(pre["final_budget"]),
            "categories": pre["categories"], "storage": pre["storage"], "base": pre["base"].to_dict()}


def _settle_studies(opts: SearchOptions, pre: dict[str, Any], meta: dict[str, Any]) -> None:
    """On --resume, before Ray starts: more trials recorded, each category's journal made replayable and
    the trials the killed driver left RUNNING in its study settled (:mod:`.journal`); said on stderr."""
    lines = list(pre["notes"])
    for cat in pre["categories"]:
        exp = f"{meta['search_id']}-{cat}"
        if not is_object_store(pre["storage"]):
            lines.append(check_journal(journal_path(pre["storage"], exp)))
        lines.append(reconcile_study(pre["storage"], exp, segment_experiments(exp, len(trial_segments(meta))),
                                     pre["space"].metric, cat))
    if extend_trials(meta, opts.trials):  # recorded: a later resume compares with the new count
        results.write_json(pre["out"] / "search.json", meta)
    for line in filter(None, lines):
        print(line, file=sys.stderr)


def _run_search(opts: SearchOptions, pre: dict[str, Any], out: Path) -> dict[str, Any]:
    meta_path = out / "search.json"
    if opts.resume:
        meta = pre["meta"]
    else:
        meta = search_meta(opts, pre)
        results.write_json(meta_path, meta)
    if not opts.address:
        from .cleanup import reap_ray_processes

        left = reap_ray_processes(out)
        if left:
            print(f"stopped {len(left)} Ray processes left running by the earlier, killed driver of {out}",
                  file=sys.stderr)
    if opts.resume:
        _settle_studies(opts, pre, meta)
    started_ray = _start_ray(opts)
    import ray

    from .cleanup import forget_ray_processes, record_ray_processes

    try:
        if started_ray:
            record_ray_processes(out)
        res = _check_cluster(opts)
        from .category import CategorySearch  # imports Ray Tune: only once Ray runs

        settings = {"search_id": meta["search_id"], "storage": pre["storage"], "trials": opts.trials,
                    "segments": trial_segments(meta),
                    "budget": str(pre["budget"]), "final_budget": str(pre["final_budget"]),
                    "validations": opts.validations,
                    "workers_per_trial": opts.workers_per_trial, "gpus_per_trial": opts.gpus_per_trial,
                    "cpus_per_worker": opts.cpus_per_worker, "final_workers": opts.final_workers,
                    "final_seeds": opts.final_seeds, "backbones_final": opts.backbones_final, "front": opts.front,
                    "retries": opts.retries, "sampler": opts.sampler,
                    "seed": opts.seed, "reduction_factor": effective_reduction_factor(opts), "rungs": opts.rungs,
                    "trial_image_size": opts.trial_image_size or 0, "warm_start": opts.warm_start,
                    "grace_validations": opts.grace_validations, "lr_scaling": opts.lr_scaling,
                    "max_concurrent": _max_concurrent(opts, res, len(pre["categories"])),
                    "crash_at_iteration": opts.crash_at_iteration,
                    "placement": "SPREAD" if opts.workers_per_trial > 1 else "PACK"}
        space_copy = out / "space.py"
        if not opts.resume:
            space_copy.write_text(pre["space"].source())
        plan = make_plan(pre, opts)  # per category: trial iterations (ASHA's max_t), cadence, final
        results.write_json(out / "plan.json", plan)
        actors = {c: CategorySearch.remote(c, str(space_copy), pre["base"].to_dict(), settings, plan["categories"][c])
                  for c in pre["categories"]}
        pending = {actors[c].run.remote(opts.resume): c for c in pre["categories"]}
        summaries: dict[str, dict] = {}
        log = ProgressLog(sys.stderr) if opts.progress else None
        while pending:
            done, _ = ray.wait(list(pending), timeout=opts.poll_seconds, num_returns=1)
            for ref in done:
                cat = pending.pop(ref)
                summary = ray.get(ref)
                _export(summary, out)
                results.write_category(out, summary)
                summaries[cat] = summary
            snapshots = ray.get([actors[c].progress.remote() for c in pre["categories"]])
            status = {"search_id": meta["search_id"], "state": "running" if pending else "done",
                      "updated": time.time(), "trials_per_category": opts.trials, "categories": snapshots}
            results.write_json(out / "status.json", status)
            if started_ray:  # Ray starts some of its agents late: the record follows
                record_ray_processes(out)
            if log:
                log.show(status)
        tables = results.write_tables(out)
        cost = spent(out)
        if cost:  # what the search cost beside its plan, in search.json too
            results.write_json(out / "search.json", {**json.loads((out / "search.json").read_text()), "cost": cost})
        studies = search_studies(out)
        return {"results": str(out), "search_id": meta["search_id"], "tables": {k: str(v) for k, v in tables.items()},
                "categories": {c: {"best_trial": (s.get("best_trial") or {}).get("trial_id"),
                                   "error": s.get("error"), "study": s.get("study"),
                                   "dashboard": (studies.get(c) or {}).get("dashboard"),
                                   "model_dir": str(out / c / "best") if (out / c / "best").is_dir() else None,
                                   "front": {m["name"]: str(out / c / m["model_dir"]) for m in s.get("front") or []
                                             if m.get("model_dir")}}
                               for c, s in summaries.items()},
                "dashboard": dashboard_lines(out)}
    finally:
        from .cleanup import sweep_workdirs

        try:  # what killed runs left on the nodes' local disks: nothing of the search stays there
            sweep_workdirs(meta["search_id"])
        finally:
            if started_ray:
                ray.shutdown()
                forget_ray_processes(out)
