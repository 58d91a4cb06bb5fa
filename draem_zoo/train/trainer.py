"""Training DRAEM: one optimisation step, and the loop around it (plain PyTorch, no Ray).

The budget is ``train.iterations`` per rank, or (``iterations = 0``) ``train.paper_epochs``
passes over the category's N training images, the paper's 700 by default: a number of samples,
so with W DDP workers each rank runs ``round(epochs * N / (batch * W))`` iterations
(:mod:`.budget`). The learning rate drops by ``lr_gamma`` (0.2) at 80% and 90% of the budget, a
function of the iteration alone.

The loop samples batches (with replacement, as the original) from the uint8 image cache
on the device, synthesises anomalies there, and steps. Every ``report_every``
iterations (0: at validations only) a metrics dict goes to the callbacks (Ray plugs in
here); ``validations`` times per run (or every ``val_every`` iterations) the validation
score is computed, the best weights kept and the last checkpoint written atomically, so a
run of any budget validates a bounded number of times. A crash loses at most the work since the
last checkpoint; Ctrl-C lets the iteration in flight finish, saves, and stops (a second Ctrl-C
stops at once and discards that iteration); ``resume=True`` continues to the same final weights,
bit for bit, and says in one line where it resumes from.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..compiling import Compiled
from ..errors import ConfigError, SynthesisWorkerDied, TrainingDiverged
from ..files import fsync_tree, ordinary_mode, writing
from ..model.draem import DraemModel
from ..model.losses import LossConfig, LossTerms
from ..synthesis.simulator import AnomalySynthesizer, SynthBatch, make_generator
from .batches import batch_source, draw_batch, worker_death
from .checkpoint import CheckpointWriter, find_checkpoint, load_checkpoint
from .config import TrainConfig, resolve_device  # noqa: F401  (re-exported)
from .ema import WeightAverage
from .step import ForwardLoss, run_step


def train_step(model: DraemModel, batch: SynthBatch, optimizer: torch.optim.Optimizer, loss_cfg: LossConfig,
               autocast_dtype: torch.dtype | None = None, forward: torch.nn.Module | None = None,
               step: ForwardLoss | Compiled | None = None) -> LossTerms:
    """Forward both sub-networks on the augmented images, backprop the DRAEM loss, step.

    As the original, the focal loss reaches the reconstructive network through the
    reconstruction (no detach) and both sub-networks share one optimizer. ``forward``
    is the module to call (a DDP wrapper of ``model``); ``step`` a prepared (possibly
    compiled) :class:`ForwardLoss`, which then stands for both.
    """
    net = forward if forward is not None else model
    net.train()
    if step is None:
        step = ForwardLoss(net, loss_cfg, autocast_dtype)
    x = model.to_model_order(batch.augmented)
    target = model.to_model_order(batch.clean)
    return run_step(step, x, target, batch.mask, optimizer)


def make_step(net: torch.nn.Module, loss_cfg: LossConfig, autocast_dtype: torch.dtype | None, compile: bool,
              mode: str = "default", backend: str = "inductor") -> ForwardLoss | Compiled:
    module = ForwardLoss(net, loss_cfg, autocast_dtype)
    return Compiled(module, mode, backend, "the training step") if compile else module


def state_is_finite(model: torch.nn.Module) -> bool:
    """Whether every floating-point weight and normalisation statistic is finite: one fused norm over all
    of them (a NaN or inf makes its tensor's norm non-finite) and one host sync, not one per tensor."""
    state = [v.detach() for v in model.state_dict().values() if v.is_floating_point()]
    if not state:
        return True
    norms = torch._foreach_norm([v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for v in state])
    return bool(torch.isfinite(torch.stack(norms)).all())


Callback = Callable[[dict[str, Any]], None]
_NOT_INSTALLED = object()


class Trainer:
    """The training loop for one model on one category's cached images."""

    def __init__(self, model: DraemModel, train_images: torch.Tensor, synthesizer: AnomalySynthesizer,
                 cfg: TrainConfig, loss_cfg: LossConfig, workdir: str | Path, *,
                 validate: Callable[[DraemModel], dict] | None = None, callbacks: list[Callback] | None = None,
                 forward: torch.nn.Module | None = None, rank: int = 0, world_size: int = 1,
                 is_main: bool = True, progress: bool = True, lr_scale: float = 1.0,
                 better: Callable[[dict, dict], bool] | None = None):
        self.model = model
        self.device = next(model.parameters()).device
        self.images = train_images.to(self.device)
        self._host_images = train_images  # what synthesis workers share (train.synthesis_workers)
        self.synth = synthesizer
        self.cfg, self.loss_cfg = cfg, loss_cfg
        self.workdir = Path(workdir)
        self.validate = validate
        # whether a validation result replaces the best so far (default: a higher score); the pipeline
        # passes the evaluation's rule, which treats differences within the noise as ties
        self.better = better or (lambda new, best: new["val_score"] > best["val_score"])
        self.callbacks = callbacks or []
        self.forward = forward
        self.is_main = is_main
        self.rank = rank
        self.progress = progress and is_main
        self.world_size = world_size
        self.total = cfg.budget(len(train_images), world_size)
        self.val_every = cfg.val_period(self.total)
        self.ckpt_every = cfg.checkpoint_every or self.val_every
        self.val_points = cfg.val_points(self.total)  # train.validate_at: these iterations instead
        # train.ema_decay: the average is what is validated, saved as best and exported (:mod:`.ema`)
        self.ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.lr_scale = lr_scale * cfg.batch_lr_scale()  # DDP workers (search) x batch size (train.lr_scaling)
        # on CUDA: one fused kernel for the whole Adam update, and cuDNN's autotuner for the fixed-shape step
        # (its choice may differ between processes, so a GPU resume is exact up to kernel choice; CPU is bit-exact)
        cuda = self.device.type == "cuda"
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr * self.lr_scale, **({"fused": True} if cuda else {}))
        if cuda:
            torch.backends.cudnn.benchmark = True
        self.sampler = make_generator(cfg.seed, 1000 + rank, self.device)
        use_amp = self.device.type == "cuda" and cfg.bf16
        self.autocast = torch.bfloat16 if use_amp else None
        self.sspcab = bool(getattr(getattr(model, "config", None), "sspcab", False))  # its loss term is reported too
        compiled, why_not = cfg.compiles(self.device)
        if why_not and is_main:
            warnings.warn(f"train.compile=auto: the step runs eager on {self.device} ({why_not}); install it for a "
                          "faster step, or set train.compile=false to silence this", RuntimeWarning, stacklevel=2)
        self.step = make_step(forward if forward is not None else model, loss_cfg, self.autocast, compiled,
                              cfg.compile_mode, cfg.compile_backend)
        # checkpoints are written in a background thread (from pinned host copies on a GPU)
        self.writer = CheckpointWriter(background=True)
        # seconds outside the steps: validating, saving (the blocking part: the host copies), the first
        # (compiling) step; it_per_s windows leave them out
        self.timing: dict[str, float | None] = {"validation_seconds": 0.0, "checkpoint_seconds": 0.0,
                                                "first_step_seconds": None}
        self.iteration = 0
        self.resumed_from = 0
        self.best: dict[str, Any] = {"val_score": None, "iteration": None}
        self.history: list[dict[str, Any]] = []

    # -- state ---------------------------------------------------------------------------
    def rng_state(self) -> dict[str, torch.Tensor]:
        # the sampler's and the synthesis's generators are reseeded for every batch from (seed, rank, k)
        # alone (wherever the batch is made): only torch's global stream is state
        return {"torch": torch.get_rng_state()}

    def save(self, which: str = "last") -> None:
        if not self.is_main:  # other DDP ranks keep only their own random streams
            if which == "last":
                path = self.workdir / "checkpoints" / f"rng-rank{self.rank}.safetensors"
                path.parent.mkdir(parents=True, exist_ok=True)
                with writing(path.with_suffix(".tmp")):
                    save_file({k: v.cpu() for k, v in self.rng_state().items()}, str(path.with_suffix(".tmp")))
                ordinary_mode(path.with_suffix(".tmp"))
                fsync_tree(path.with_suffix(".tmp"))
                path.with_suffix(".tmp").replace(path)
            return
        meta = {"iteration": self.iteration, "total": self.total, "best": self.best, "history": self.history}
        t0 = time.perf_counter()
        last = which == "last"
        self.writer.save(self.workdir / "checkpoints" / which, self.model if last else self.weights(),
                         self.optimizer if last else None, self.rng_state() if last else {}, meta,
                         average=self.ema.model if last and self.ema else None)
        self.timing["checkpoint_seconds"] += time.perf_counter() - t0

    def restore(self) -> str:
        """Load ``checkpoints/last`` (or its backup after a save cut between its renames); where from."""
        rng, meta = load_checkpoint(self.workdir / "checkpoints" / "last", self.model, self.optimizer,
                                    average=self.ema.model if self.ema else None)
        self.resumed_from = int(meta["iteration"])
        if meta.get("total") != self.total:
            raise ConfigError(f"{self.workdir}: the checkpoint was made for a budget of {meta.get('total')} "
                              f"iterations, this run has {self.total}; resume with the same settings")
        self.iteration = int(meta["iteration"])
        self.best, self.history = meta["best"], meta["history"]
        own = self.workdir / "checkpoints" / f"rng-rank{self.rank}.safetensors"
        if self.rank and own.is_file():
            rng = load_file(str(own))
        torch.set_rng_state(rng["torch"])  # older checkpoints also hold the per-batch generators: unused
        return meta["loaded_from"]

    def weights(self) -> torch.nn.Module:
        """What is validated, saved as best and exported: the weight average with ``train.ema_decay``."""
        return self.ema.model if self.ema else self.model

    def has_checkpoint(self) -> bool:
        return find_checkpoint(self.workdir / "checkpoints" / "last") is not None

    def _resume(self) -> None:
        where = self.workdir / "checkpoints"
        if not self.has_checkpoint():
            self._say(f"--resume: no checkpoint in {where}; starting afresh")
            return
        source = self.restore()
        note = ("" if Path(source).name == "last" else
                f" (from {source}: {where / 'last'} is missing or damaged; a save was cut short)")
        self._say(f"resuming from iteration {self.iteration} of {self.total}{note}")

    def _say(self, message: str) -> None:
        if self.is_main:
            print(message, file=sys.stderr, flush=True)

    def _catch_ctrl_c(self) -> tuple[dict[str, bool], Any]:
        """Ctrl-C sets a flag that the loop reads between iterations (in the main thread only; elsewhere,
        e.g. in a Ray Train worker, signals are not delivered to Python and nothing is installed)."""
        flag = {"stop": False}
        if threading.current_thread() is not threading.main_thread():
            return flag, _NOT_INSTALLED

        def on_sigint(signum, frame):
            if flag["stop"]:  # the second Ctrl-C: stop now, the iteration in flight is discarded
                raise KeyboardInterrupt
            flag["stop"] = True
            self._say("\ninterrupted: finishing this iteration and saving a checkpoint (Ctrl-C again to stop now, "
                      "losing the work since the last checkpoint)")

        return flag, signal.signal(signal.SIGINT, on_sigint)

    # -- loop ----------------------------------------------------------------------------
    def draw(self, k: int) -> SynthBatch:
        """Batch ``k`` of this rank, made here (:func:`.batches.draw_batch`): the same whoever draws it and
        whenever, so a resumed run or a worker process regenerates it without the batches before it."""
        return draw_batch(self.images, self.synth, self.sampler, self.cfg.seed, self.rank, k, self.cfg.batch_size)

    def batch_source(self):
        """Where this run's batches come from (:mod:`.batches`): made here, or by synthesis workers."""
        return batch_source(self._host_images, self.synth, self.draw, self.cfg.seed, self.rank, self.cfg.batch_size,
                            self.device, self.cfg.synthesis_workers)

    def fit(self, resume: bool = False) -> dict[str, Any]:
        if resume:
            self._resume()
        bar = None
        if self.progress:
            bar = tqdm(total=self.total, initial=self.iteration, desc="training", unit="it", dynamic_ncols=True)
        sums: dict[str, torch.Tensor] = {}
        # a window is the iterations between two reports; its it_per_s leaves out what ran outside the steps
        window = {"count": 0, "t0": time.perf_counter(), "paused": 0.0}
        steady = {"count": 0, "seconds": 0.0, "windows": 0}  # every window after the first (warm-up, compile)
        started = time.perf_counter()
        interrupt, previous_handler = self._catch_ctrl_c()
        source = self.batch_source()
        try:
            source.start(self.iteration, self.total)
            while self.iteration < self.total:
                lr = self.cfg.lr_at(self.iteration, self.total) * self.lr_scale
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                try:
                    batch = source.get(self.iteration)
                except SynthesisWorkerDied as exc:  # between iterations: save what is done, then stop
                    if self.iteration > self.resumed_from:
                        self._check_finite(sums, lr, state=True)
                        self.save("last")
                        raise SynthesisWorkerDied(f"{exc}; checkpoint saved at iteration {self.iteration} of "
                                                  f"{self.total}: --resume continues from it") from None
                    raise
                if self.device.type == "cuda" and self.cfg.channels_last:
                    # one memory format through the loss: the reconstruction comes out channels-last, so the
                    # target and the mask go in so too (no layout copies between the model and the loss)
                    cl = torch.channels_last
                    batch.augmented = batch.augmented.contiguous(memory_format=cl)
                    batch.clean = batch.clean.contiguous(memory_format=cl)
                    batch.mask = batch.mask.contiguous(memory_format=cl)
                first = self.timing["first_step_seconds"] is None
                t_step = time.perf_counter()
                terms = train_step(self.model, batch, self.optimizer, self.loss_cfg, self.autocast, self.forward,
                                   self.step)
                if first:  # the first step compiles (train.compile): its seconds are reported on their own
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    self.timing["first_step_seconds"] = round(time.perf_counter() - t_step, 3)
                for k, v in (("loss", terms.total), ("l2", terms.l2), ("ssim", terms.ssim), ("focal", terms.focal),
                             *((("sspcab", terms.sspcab),) if self.sspcab else ())):
                    sums[k] = sums.get(k, 0) + v.detach()
                window["count"] += 1
                self.iteration += 1
                if self.ema:
                    self.ema.update(self.iteration)
                if bar:
                    bar.update(1)
                last = self.iteration == self.total
                if self.val_points:
                    do_val = do_ckpt = self.iteration in self.val_points
                else:
                    do_val = self.iteration % self.val_every == 0 or last
                    do_ckpt = self.iteration % self.ckpt_every == 0 or last
                report = do_val or (self.cfg.report_every and self.iteration % self.cfg.report_every == 0)
                record = None
                if report or do_ckpt:
                    # one host sync per report or save: a diverged run stops before it is validated or saved,
                    # so the last checkpoint on disk stays the last good one (the weights are checked, in one
                    # fused pass, only before a validation or a save)
                    self._check_finite(sums, lr, state=do_val or do_ckpt)
                if report:
                    record = self._record(sums, window, steady, lr)
                    sums = {}
                    if do_val:
                        t_val = time.perf_counter()
                        record.update(self._validate())
                        spent = time.perf_counter() - t_val
                        self.timing["validation_seconds"] += spent
                        window["paused"] += spent
                    record["best_val_score"] = self.best.get("val_score")
                    record.update({k: round(v, 3) for k, v in self.timing.items() if v is not None})
                    self.history.append(record)
                    if bar:
                        bar.set_postfix({k: record[k] for k in ("loss", "l2", "ssim", "focal") if k in record}
                                        | ({"val": round(record["val_score"], 4)} if record.get("val_score") else {}))
                if do_ckpt:
                    t_ck = time.perf_counter()
                    self.save("last")
                    if record is not None and self.callbacks:
                        # they report the checkpoint (a search hands the whole work folder to Ray Train, which
                        # copies it): every write, `best`'s too, must be on disk and renamed into place first
                        self.writer.wait()
                    window["paused"] += time.perf_counter() - t_ck
                if record is not None:
                    for cb in self.callbacks:
                        cb(dict(record, total=self.total, checkpointed=do_ckpt))
                if interrupt["stop"]:  # between iterations: every state belongs to this iteration
                    if not do_ckpt:
                        self._check_finite(sums, lr, state=True)
                        self.save("last")
                    self.writer.wait()
                    self._say(f"checkpoint saved at iteration {self.iteration} of {self.total}; "
                              "--resume continues from it")
                    raise KeyboardInterrupt
        except RuntimeError as exc:  # a worker's death reported in the middle of a step: the last checkpoint stands
            died = worker_death(exc, f"in iteration {self.iteration + 1}")
            if died is None:
                raise
            raise SynthesisWorkerDied(f"{died}; --resume continues from the last checkpoint") from None
        finally:
            source.close()
            if previous_handler is not _NOT_INSTALLED:
                signal.signal(signal.SIGINT, previous_handler if previous_handler is not None else signal.SIG_DFL)
            if bar:
                bar.close()
            # the checkpoints in flight reach the disk before fit returns or raises; a failed write is the
            # error of the run, unless another one is already on its way out
            self.writer.wait(raise_errors=sys.exc_info()[0] is None)
        if self.ema:  # what the run exports: the average (checkpoints/last keeps both)
            self.model.load_state_dict(self.ema.state_dict())
        return {"iterations": self.total, "world_size": self.world_size,
                "samples": self.total * self.cfg.batch_size * self.world_size, "validations": self.validations(),
                "best": self.best, "seconds": round(time.perf_counter() - started, 2), "history": self.history,
                "resumed_from": self.resumed_from, "timing": self.timing_summary(steady)}

    def _record(self, sums: dict[str, torch.Tensor], window: dict[str, float], steady: dict[str, float],
                lr: float) -> dict[str, Any]:
        """The mean loss terms and the step rate of the window since the last report, which starts a new one."""
        now = time.perf_counter()
        seconds = max(now - window["t0"] - window["paused"], 1e-9)
        count = max(window["count"], 1)
        record = {k: round(float(v) / count, 6) for k, v in sums.items()}
        record.update(iteration=self.iteration, lr=lr, it_per_s=round(window["count"] / seconds, 3))
        if steady["windows"] > 0:  # the first window holds the warm-up (and a compile): not steady
            steady["count"] += window["count"]
            steady["seconds"] += seconds
        steady["windows"] += 1
        if steady["count"]:
            record["steady_it_per_s"] = round(steady["count"] / steady["seconds"], 3)
        window.update(count=0, t0=now, paused=0.0)
        return record

    def timing_summary(self, steady: dict[str, float]) -> dict[str, Any]:
        """Where the run's time went: steady-state iterations/s (every report window after the first), the
        first step (a compile), validating, saving (the part the loop waited for)."""
        return {"steady_it_per_s": round(steady["count"] / steady["seconds"], 3) if steady["count"] else None,
                **{k: (round(v, 3) if v is not None else None) for k, v in self.timing.items()}}

    def _check_finite(self, sums: dict[str, torch.Tensor], lr: float, state: bool = True) -> None:
        bad = [k for k, v in sums.items() if not bool(torch.isfinite(torch.as_tensor(v)).all())]
        if not bad and state and not state_is_finite(self.model):
            bad = ["weights"]  # a finite loss with overflowing weights or BatchNorm statistics is diverged too
        if bad:
            self.writer.wait(raise_errors=False)  # is the last good checkpoint on disk?
            last = (self.workdir / "checkpoints" / "last" / "meta.json").is_file()
            what = ("the model's weights (or normalisation statistics)" if bad[-1].startswith("weights")
                    else f"the {bad[-1] if bad != ['loss'] else 'total'} loss")
            raise TrainingDiverged(
                f"training diverged: {what} became non-finite (NaN or inf) by iteration {self.iteration} at "
                f"learning rate {lr:g}: lower train.lr (or check the data); "
                + ("the last good checkpoint is kept in " + str(self.workdir / "checkpoints" / "last")
                   if last else "no checkpoint was saved before it"))

    def validations(self) -> int:
        """How many times this run validates (every ``val_every`` iterations and at the end, or at ``validate_at``)."""
        return len(self.val_points) if self.val_points else math.ceil(self.total / self.val_every)

    def _validate(self) -> dict[str, Any]:
        if self.validate is None:
            return {}
        result = self.validate(self.weights())
        score = result.get("val_score")
        # differences within the validation set's noise are ties, and ties go to the earlier checkpoint
        if score is not None and (self.best["val_score"] is None or self.better(result, self.best)):
            self.best = {"val_score": score, "iteration": self.iteration, "val_score_se": result.get("val_score_se"),
                         "val_filter_size": result.get("val_filter_size"), "replicates": result.get("replicates")}
            self.save("best")
        return {"val_score": score, "val_score_se": result.get("val_score_se"),
                "val_filter_size": result.get("val_filter_size"),
                "val_filter_size_tie": result.get("val_filter_size_tie"), "val_saturation": result.get("val_saturation"),
                "val_score_by_filter_size": result.get("val_score_by_filter_size"),
                **({"analysis": result["analysis"]} if "analysis" in result else {})}
