"""One search trial: a Tune function trainable that builds and fits a Ray Train ``TorchTrainer``.

Ray 2.60 runs Train V2: a trainer is not handed to ``Tuner``; instead the trial function
builds a ``TorchTrainer`` whose workers run :func:`worker_loop` (our plain-PyTorch
training, DDP across workers) and whose ``TuneReportCallback`` passes each report and
checkpoint path back to Tune. Reports happen at validation points only, so every
report carries the objective (ASHA's time attribute is our ``iteration``, which
survives restores). The Train run is named after the trial, so a trial restored after
a driver crash resumes its Train run from the latest checkpoint, and a crashed worker
is restarted from it by the trainer's ``FailureConfig``.
"""

from __future__ import annotations

import json
import math
import os
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
from .space import overrides_of

HEADLINE = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro")
FINAL = "final.json"  # in the last checkpoint of a finished run


def _local_workdir(name: str, rank: int) -> Path:
    root = Path(os.environ.get("DRAEM_ZOO_WORKDIR", Path(tempfile.gettempdir()) / "draem_zoo_runs"))
    return root / name / f"rank{rank}"


def worker_loop(cfg: dict[str, Any]) -> None:
    """Runs on every Train worker: restore, train (DDP), report, export on rank 0."""
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.get("threads", 1))))
    run = RunConfig.from_dict(cfg["run"])
    workdir = _local_workdir(cfg["name"], rank)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    resume = False
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # the work directory as last uploaded (merged over ranks)
        with checkpoint.as_directory() as d:
            shutil.copytree(d, workdir, dirs_exist_ok=True)
        resume = (workdir / "checkpoints" / "last" / "meta.json").is_file()
        if (workdir / FINAL).is_file():  # this run already finished: report its result again, train nothing
            final = json.loads((workdir / FINAL).read_text()) if rank == 0 else {"final": True}
            ray.train.report(dict(final, replayed=True))
            return
    crash_at = cfg.get("crash_at_iteration")  # fault-injection for tests: first attempt only

    held: dict[str, Any] = {}

    def report(rec: dict) -> None:
        if crash_at and not resume and rec["iteration"] >= crash_at:
            os._exit(3)  # a hard worker crash, as an OOM kill or a lost node would be
        metrics = {k: rec[k] for k in ("iteration", "total", "loss", "l2", "ssim", "focal", "lr", "it_per_s")
                   if k in rec}
        if rec.get("total") and rec["iteration"] >= rec["total"]:
            # The report at the budget goes out with the final one (test metrics, done marker):
            # ASHA's top rung sits at the budget, and a trial it stops there would otherwise
            # end without its final report.
            held.update(metrics)
            return
        metrics.update(val_score=rec.get("val_score"), val_filter_size=rec.get("val_filter_size"),
                       val_saturation=rec.get("val_saturation"), val_tie=int(bool(rec.get("val_filter_size_tie"))),
                       best_val_score=rec.get("best_val_score"), resumed=resume,
                       category=run.data.category)
        ckpt = None
        if rec.get("checkpointed") and (workdir / "checkpoints").is_dir():
            ckpt = ray.train.Checkpoint.from_directory(str(workdir))
        ray.train.report(metrics, checkpoint=ckpt)

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(model) if world > 1 else model

    lr_scale = {"none": 1.0, "linear": float(world), "sqrt": math.sqrt(world)}[cfg.get("lr_scaling", "none")]
    dist = Distributed(rank=rank, world_size=world, wrap=wrap, lr_scale=lr_scale,
                       device=ray.train.torch.get_device())
    result = train_category(run, workdir, resume=resume, progress=False, callbacks=[report], dist=dist,
                            evaluate_test=cfg.get("evaluate_test", True))
    _write_rank_digest(workdir, rank, result.get("last_weights_sha256"))
    final: dict[str, Any] = {**held, "iteration": result["iterations"], "final": True, "resumed": resume,
                             "category": run.data.category}
    upload = None
    if rank == 0:  # the last checkpoint of a finished run says so: a restore replays, never retrains
        val, test = result.get("validation") or {}, result.get("test") or {}
        final.update(val_score=val.get("val_score"), best_val_score=val.get("val_score"),
                     val_filter_size=val.get("val_filter_size"), val_saturation=val.get("val_saturation"),
                     val_tie=int(bool(val.get("val_filter_size_tie"))), train_seconds=result["training"]["seconds"],
                     params=result["params"], test_images_per_s=test.get("inference_images_per_s"),
                     **{f"test_{k}": test.get(k) for k in HEADLINE})
        if cfg.get("export"):  # the model directory (and the checkpoints) as the run's last checkpoint
            (workdir / "summary.json").write_text(json.dumps(result, indent=1, default=str))
            (workdir / FINAL).write_text(json.dumps(final))
            upload = ray.train.Checkpoint.from_directory(str(workdir))
        else:  # a search trial: a tiny marker checkpoint is enough
            marker = workdir / "final_marker"
            marker.mkdir()
            (marker / FINAL).write_text(json.dumps(final))
            upload = ray.train.Checkpoint.from_directory(str(marker))
    ray.train.report(final, checkpoint=upload)


def _write_rank_digest(workdir: Path, rank: int, digest: str | None) -> None:
    """This rank's node and the sha256 of its final weights: DDP ranks must agree."""
    record = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "last_weights_sha256": digest}
    (workdir / f"rank{rank}.json").write_text(json.dumps(record))


def make_trainer(run: RunConfig, name: str, settings: dict[str, Any], callbacks: list, export: bool,
                 evaluate_test: bool = True, workers: int | None = None) -> TorchTrainer:
    """A ``TorchTrainer`` running :func:`worker_loop` for ``run`` (DDP over ``workers``)."""
    workers = workers or settings["workers_per_trial"]
    gpus = float(settings.get("gpus_per_trial", 0.0))
    per_worker: dict[str, float] = {"CPU": float(settings.get("cpus_per_worker", 1.0))}
    if gpus > 0:
        per_worker["GPU"] = gpus / settings["workers_per_trial"]
    scaling = ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=per_worker,
                            placement_strategy=settings.get("placement", "PACK"))
    loop_cfg = {"run": run.to_dict(), "name": name, "threads": max(1, int(per_worker["CPU"])), "export": export,
                "evaluate_test": evaluate_test, "lr_scaling": settings.get("lr_scaling", "none"),
                "crash_at_iteration": settings.get("crash_at_iteration")}
    return TorchTrainer(
        worker_loop,
        train_loop_config=loop_cfg,
        scaling_config=scaling,
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=settings["storage"],
            callbacks=callbacks,
            failure_config=FailureConfig(max_failures=int(settings.get("retries", 2)),
                                         controller_failure_limit=int(settings.get("controller_failure_limit", 2))),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )


def trial_run_config(params: dict[str, Any], base: dict[str, Any], budget: int, validations: int) -> RunConfig:
    """The run a trial stands for: base config + suggestion, the search budget, validation cadence."""
    run = make_run_config(overrides_of(params), base=RunConfig.from_dict(base))
    every = max(1, math.ceil(budget / validations))
    return make_run_config({"train.iterations": budget, "train.val_every": every, "train.report_every": every,
                            "train.checkpoint_every": every}, base=run)


def trial_trainable(config: dict[str, Any], base: dict[str, Any] | None = None,
                    settings: dict[str, Any] | None = None) -> None:
    """Tune function trainable: one search trial = one TorchTrainer run."""
    trial_id = tune.get_context().get_trial_id()
    run = trial_run_config(config, base, settings["budget"], settings["validations"])
    trainer = make_trainer(run, f"{settings['experiment']}-{trial_id}", settings, [TuneReportCallback()],
                           export=False, evaluate_test=settings.get("evaluate_test", True))
    trainer.fit()
