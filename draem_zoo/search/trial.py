"""One training run of the search: a trial (a Tune function trainable) or a final retraining.

:func:`worker_loop` is our plain-PyTorch training (:func:`~draem_zoo.pipeline.train_category`)
inside a Ray session. A run over several DDP workers is a Ray Train ``TorchTrainer`` (Train V2)
whose workers run it, and a trial's ``TuneReportCallback`` passes each report and checkpoint back
to Tune; a one-worker trial runs it in the Tune trial itself (:class:`TuneSession`), saving the
Train controller and worker-group start-up (tens of seconds per trial on a busy node) where there
is no DDP to set up. A final run is the same with ``export`` and the test split, as a
``TorchTrainer`` over its workers or a one-trial Tune experiment (:func:`run_final`). Either way
reports happen at validation points only, so every report carries the objective (ASHA's time
attribute is our ``iteration``, which survives restores); a run
restored after a crash continues from its latest checkpoint, and a finished one replays its
result instead of training again. Every report also carries the model's inference speed and
parameter count, measured once on rank 0 before training (:mod:`.speed`).

Nothing is left behind on the nodes: a run's local work directory goes when the run ends
(finished or failed; the checkpoint in storage is what a retry starts from), and the search
sweeps every node for what a killed run (ASHA's stop, a lost worker) left (:mod:`.cleanup`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from ..pipeline.runconfig import RunConfig, make_run_config
from ..pipeline.workflow import Distributed, train_category
from ..train.budget import parse_budget
from .space import overrides_of
from .speed import trial_speed

HEADLINE = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro")
FINAL = "final.json"  # in the last checkpoint of a finished run
WORKDIR_ENV = "DRAEM_ZOO_WORKDIR"


def work_root() -> Path:
    """Where runs keep their local work directories (``DRAEM_ZOO_WORKDIR``; node-local disk)."""
    return Path(os.environ.get(WORKDIR_ENV) or Path(tempfile.gettempdir()) / "draem_zoo_runs")


def _local_workdir(name: str, rank: int) -> Path:
    return work_root() / name / f"rank{rank}"


def _remove_workdir(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        workdir.parent.rmdir()  # the run's folder, once its last rank is gone
    except OSError:
        pass


class TrainSession:
    """A Ray Train worker's view of the run."""

    def __init__(self):
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def checkpoint(self):
        return ray.train.get_checkpoint()

    def report(self, metrics: dict[str, Any], folder: Path | None = None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)) if folder else None)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model) if self.world > 1 else model


class TuneSession:
    """A one-worker trial run in the Tune trial process itself (no DDP, no Train worker group)."""

    rank, world = 0, 1

    def __init__(self):
        gpus = ray.get_gpu_ids()
        self.device = torch.device("cuda", 0) if gpus and torch.cuda.is_available() else torch.device("cpu")

    def checkpoint(self):
        return tune.get_checkpoint()

    def report(self, metrics: dict[str, Any], folder: Path | None = None) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)) if folder else None)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model


def worker_loop(cfg: dict[str, Any], session: TrainSession | TuneSession | None = None) -> None:
    """Restore, train (DDP across workers), report at validations, export on rank 0 (finals)."""
    session = session or TrainSession()
    rank, world = session.rank, session.world
    torch.set_num_threads(max(1, int(cfg.get("threads", 1))))
    # the cores Ray gave this worker (--cpus-per-worker): train.synthesis_workers=auto counts its spare ones
    os.environ["DRAEM_ZOO_CPUS"] = str(max(1, int(cfg.get("threads", 1))))
    run = RunConfig.from_dict(cfg["run"])
    workdir = _local_workdir(cfg["name"], rank)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        _run(cfg, session, run, workdir, rank, world)
    finally:  # uploaded (or failed: a retry starts from the checkpoint in storage): nothing stays here
        _remove_workdir(workdir)


def _run(cfg: dict[str, Any], session, run: RunConfig, workdir: Path, rank: int, world: int) -> None:
    resume = False
    checkpoint = session.checkpoint()
    if checkpoint is not None:  # the work directory as last uploaded (merged over ranks)
        with checkpoint.as_directory() as d:
            shutil.copytree(d, workdir, dirs_exist_ok=True)
        resume = (workdir / "checkpoints" / "last" / "meta.json").is_file()
        if (workdir / FINAL).is_file():  # this run already finished: report its result again, train nothing
            final = json.loads((workdir / FINAL).read_text()) if rank == 0 else {"final": True}
            session.report(dict(final, replayed=True))
            return
    crash_at = cfg.get("crash_at_iteration")  # fault-injection for tests: first attempt only
    # the architecture's inference speed and size, in every report: a trial ASHA stops early has them too
    speed = trial_speed(run.model, session.device) if rank == 0 else {}

    held: dict[str, Any] = {}

    def report(rec: dict) -> None:
        if crash_at and not resume and rec["iteration"] >= crash_at:
            os._exit(3)  # a hard worker crash, as an OOM kill or a lost node would be
        metrics = {k: rec[k] for k in ("iteration", "total", "loss", "l2", "ssim", "focal", "sspcab", "lr", "it_per_s")
                   if k in rec}
        metrics.update(speed)
        if rec.get("total") and rec["iteration"] >= rec["total"]:
            # The report at the budget goes out with the final one (the done marker, test metrics
            # of a final): ASHA's top rung sits at the budget, and a trial it stops there would
            # otherwise end without its final report.
            held.update(metrics)
            return
        metrics.update(val_score=rec.get("val_score"), val_filter_size=rec.get("val_filter_size"),
                       val_saturation=rec.get("val_saturation"), val_tie=int(bool(rec.get("val_filter_size_tie"))),
                       best_val_score=rec.get("best_val_score"), resumed=resume,
                       category=run.data.category)
        checkpointed = rec.get("checkpointed") and (workdir / "checkpoints").is_dir()
        session.report(metrics, workdir if checkpointed else None)

    lr_scale = {"none": 1.0, "linear": float(world), "sqrt": math.sqrt(world)}[cfg.get("lr_scaling", "none")]
    dist = Distributed(rank=rank, world_size=world, wrap=session.wrap, lr_scale=lr_scale, device=session.device)
    result = train_category(run, workdir, resume=resume, progress=False, callbacks=[report], dist=dist,
                            evaluate_test=bool(cfg.get("evaluate_test")))
    final: dict[str, Any] = {**held, **speed, "iteration": result["iterations"], "final": True, "resumed": resume,
                             "category": run.data.category}
    digest = _rank_digest(rank, result.get("last_weights_sha256"))
    if rank:  # its node and final weights, merged into the run's last checkpoint beside rank 0's
        (workdir / "final_marker").mkdir(exist_ok=True)
        (workdir / "final_marker" / f"rank{rank}.json").write_text(json.dumps(digest))
        session.report(final, workdir / "final_marker")
        return
    # the last checkpoint of a finished run says so: a restore replays, never retrains
    val, test = result.get("validation") or {}, result.get("test") or {}
    training = result["training"]
    final.update(val_score=val.get("val_score"), best_val_score=val.get("val_score"),
                 val_score_se=val.get("val_score_se"), val_fingerprint=val.get("val_fingerprint"),
                 val_filter_size=val.get("val_filter_size"), val_saturation=val.get("val_saturation"),
                 val_tie=int(bool(val.get("val_filter_size_tie"))), train_seconds=training["seconds"],
                 params=result["params"], samples=training["samples"], epochs=training["epochs"],
                 validations=training["validations"], world_size=world,
                 images_per_s=val.get("inference_images_per_s"), test_images_per_s=test.get("inference_images_per_s"),
                 **({f"test_{k}": test.get(k) for k in HEADLINE} if test else {}))
    if cfg.get("export"):  # the model directory (and the checkpoints) as the run's last checkpoint
        (workdir / "summary.json").write_text(json.dumps(result, indent=1, default=str))
        (workdir / "rank0.json").write_text(json.dumps(digest))
        (workdir / FINAL).write_text(json.dumps(final))
        session.report(final, workdir)
    else:  # a search trial: a tiny marker checkpoint is enough
        marker = workdir / "final_marker"
        marker.mkdir(exist_ok=True)
        (marker / FINAL).write_text(json.dumps(final))
        session.report(final, marker)


def _rank_digest(rank: int, digest: str | None) -> dict[str, Any]:
    """This rank's node and the sha256 of its final weights: DDP ranks must agree."""
    return {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "last_weights_sha256": digest}


def make_trainer(run: RunConfig, name: str, settings: dict[str, Any], callbacks: list, export: bool,
                 evaluate_test: bool = False, workers: int | None = None) -> TorchTrainer:
    """A ``TorchTrainer`` running :func:`worker_loop` for ``run`` (DDP over ``workers``)."""
    workers = workers or settings["workers_per_trial"]
    gpus = float(settings.get("gpus_per_trial", 0.0))
    per_worker: dict[str, float] = {"CPU": float(settings.get("cpus_per_worker", 1.0))}
    if gpus > 0:
        per_worker["GPU"] = gpus / settings["workers_per_trial"]
    scaling = ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=per_worker,
                            placement_strategy=settings.get("placement", "PACK"))
    return TorchTrainer(
        worker_loop,
        train_loop_config=loop_config(run, name, settings, export, evaluate_test, per_worker["CPU"]),
        scaling_config=scaling,
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=settings["storage"],
            callbacks=callbacks,
            failure_config=FailureConfig(max_failures=int(settings.get("retries", 2)),
                                         controller_failure_limit=int(settings.get("controller_failure_limit", 2))),
            # the latest checkpoint is all a restore needs; the next one lands before it goes
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )


def loop_config(run: RunConfig, name: str, settings: dict[str, Any], export: bool, evaluate_test: bool,
                cpus: float) -> dict[str, Any]:
    return {"run": run.to_dict(), "name": name, "threads": max(1, int(cpus)), "export": export,
            "evaluate_test": evaluate_test, "lr_scaling": settings.get("lr_scaling", "none"),
            "crash_at_iteration": settings.get("crash_at_iteration")}


def budget_run_config(run: RunConfig, budget: Any, validations: int, validate_at: list[float] | None = None) -> RunConfig:
    """``run`` at ``budget`` (iterations or epochs), validating and checkpointing ``validations`` times
    whatever the budget comes to (or at the fractions ``validate_at`` of it), and reporting at validations only."""
    return make_run_config({**parse_budget(budget).overrides(), "train.validations": validations,
                            **({"train.validate_at": list(validate_at)} if validate_at else {}),
                            "train.val_every": 0, "train.report_every": 0, "train.checkpoint_every": 0}, base=run)


def trial_run_config(params: dict[str, Any], base: dict[str, Any], budget: Any, validations: int,
                     validate_at: list[float] | None = None, image_size: int = 0) -> RunConfig:
    """The run a trial stands for: base config + suggestion, the search budget, validation cadence, and
    ``image_size`` (TRIAL_IMAGE_SIZE) where trials train smaller than their finals."""
    run = make_run_config(overrides_of(params), base=RunConfig.from_dict(base))
    if image_size:
        run = make_run_config({"model.image_size": image_size}, base=run)
    return budget_run_config(run, budget, validations, validate_at)


def trial_resources(settings: dict[str, Any]) -> dict[str, float]:
    """What Tune reserves for a trial: its one worker's share when it trains in the trial itself, a
    sliver when a TorchTrainer's workers (which reserve their own) do the training."""
    if settings["workers_per_trial"] > 1:
        return {"CPU": 0.01}
    res = {"CPU": float(settings.get("cpus_per_worker", 1.0))}
    if float(settings.get("gpus_per_trial", 0.0)) > 0:
        res["GPU"] = float(settings["gpus_per_trial"])
    return res


def trial_trainable(config: dict[str, Any], base: dict[str, Any] | None = None,
                    settings: dict[str, Any] | None = None) -> None:
    """Tune function trainable: one search trial. Search trials never evaluate the test split."""
    trial_id = tune.get_context().get_trial_id()
    run = trial_run_config(config, base, settings["budget"], settings["validations"], settings.get("validate_at"),
                           settings.get("trial_image_size") or 0)
    name = f"{settings['experiment']}-{trial_id}"
    if settings["workers_per_trial"] == 1:
        worker_loop(loop_config(run, name, settings, False, False, settings.get("cpus_per_worker", 1.0)),
                    TuneSession())
        return
    make_trainer(run, name, settings, [TuneReportCallback()], export=False, evaluate_test=False).fit()


def final_trainable(config: dict[str, Any], loop: dict[str, Any] | None = None) -> None:
    """Tune function trainable of a one-worker final run: train, evaluate on test, export."""
    worker_loop(loop, TuneSession())


def run_final(run: RunConfig, name: str, settings: dict[str, Any], workers: int):
    """Train, test-evaluate and export ``run`` at its final budget: a ``TorchTrainer`` over ``workers``
    DDP workers, or, with one worker, a one-trial Tune experiment (no Train worker group to start;
    the same restore and retry semantics). Returns (metrics, checkpoint) of the finished run; on
    ``--resume`` a finished final is read back, an interrupted one continues from its checkpoint."""
    if workers > 1:
        result = make_trainer(run, name, settings, callbacks=[], export=True, evaluate_test=True,
                              workers=workers).fit()
        return dict(result.metrics or {}), result.checkpoint
    loop = loop_config(run, name, settings, True, True, settings.get("cpus_per_worker", 1.0))
    inner = tune.with_parameters(final_trainable, loop=loop)
    inner.__name__ = "final_" + re.sub(r"[^A-Za-z0-9]+", "-", name)  # one name per run in Tune's registry
    trainable = tune.with_resources(inner, trial_resources(dict(settings, workers_per_trial=1)))
    path = f"{settings['storage'].rstrip('/')}/{name}"
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(num_samples=1),
                           run_config=tune.RunConfig(
                               name=name, storage_path=settings["storage"], verbose=0,
                               failure_config=tune.FailureConfig(max_failures=int(settings.get("retries", 2))),
                               checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    result = tuner.fit()[0]
    if result.error:
        raise result.error
    return dict(result.metrics or {}), result.checkpoint
