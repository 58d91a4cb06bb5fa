"""Where a training run's batches come from: the training process itself, or CPU worker processes that
synthesise them ahead of the step.

Batch ``k`` of DDP rank ``r`` is a function of (``train.seed``, r, k) alone (:func:`draw_batch`): the
images are drawn from the uint8 cache (with replacement, as the original) and their anomalies
simulated from generators seeded by those three numbers, so any process can make any batch without
the ones before it. That is what lets workers hold no state and a resumed run regenerate its batches.

``train.synthesis_workers = N > 0`` (:class:`WorkerBatches`): N worker processes of a torch
``DataLoader`` run the sparse CPU synthesis on the uint8 training images and textures (moved to
shared memory once, not copied per batch) and hand finished batches through pinned memory (on CUDA);
the loop copies them to the device with ``non_blocking=True`` while up to ``prefetch_factor`` batches
per worker wait in the queue. Worker ``w`` of N makes batches k = first + w, first + w + N, ... and
the ``DataLoader`` returns them in order. ``persistent_workers`` is not needed: one iterator spans the
whole run, and its workers live as long as it. Workers ignore Ctrl-C (the loop finishes its iteration,
saves, and shuts them down); a worker that dies ends the run with one line (:class:`SynthesisWorkerDied`)
rather than a hang, and the ``DataLoader``'s watchdog ends workers whose parent died. On the CPU the
batches are bit-identical to the in-process ones (same code, same generators), so a run gives the
same weights with or without workers.

``auto`` (:func:`resolve_workers`) uses workers on CUDA when the process has at least two spare cores
(its allowance minus the one that drives the GPU), on-device synthesis otherwise; CPU training keeps
the in-process path, where workers would only take cores from the step.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import SynthesisWorkerDied
from ..synthesis.config import SynthesisConfig
from ..synthesis.simulator import AnomalySynthesizer, SynthBatch, batch_seed, make_generator
from ..synthesis.textures import TextureBank

MAX_AUTO_WORKERS = 8  # more than this gains nothing at the paper's batch sizes and only holds memory
PREFETCH = 2  # batches queued per worker


def cpu_allowance() -> int:
    """The cores this training process may use: ``DRAEM_ZOO_CPUS`` (the search sets it to a Ray Train
    worker's CPUs), else the cores it may run on, shared with the node's other DDP processes
    (``LOCAL_WORLD_SIZE``, as torchrun sets it)."""
    if os.environ.get("DRAEM_ZOO_CPUS"):
        return max(1, int(float(os.environ["DRAEM_ZOO_CPUS"])))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def resolve_workers(setting: int | str, device: torch.device, cpus: int | None = None) -> int:
    """How many synthesis workers ``train.synthesis_workers`` means for a process on ``device`` with
    ``cpus`` cores (default: :func:`cpu_allowance`)."""
    if setting != "auto":
        return int(setting)
    if device.type != "cuda":
        return 0
    spare = (cpus if cpus is not None else cpu_allowance()) - 1
    return min(spare, MAX_AUTO_WORKERS) if spare >= 2 else 0


def draw_batch(images: torch.Tensor, synth: AnomalySynthesizer, sampler: torch.Generator, seed: int, rank: int,
               k: int, batch_size: int) -> SynthBatch:
    """Batch ``k`` of ``rank``: ``batch_size`` images drawn from ``images`` and their anomalies."""
    sampler.manual_seed(batch_seed(seed, rank, k, "sampler"))
    synth.generator.manual_seed(batch_seed(seed, rank, k, "synthesis"))
    idx = torch.randint(0, len(images), (batch_size,), generator=sampler, device=sampler.device)
    return synth(images[idx.to(images.device)])


class InProcessBatches:
    """Batches made in the training process, on its device, when the loop asks for them."""

    workers = 0  # made in the training process

    def __init__(self, draw: Callable[[int], SynthBatch]):
        self.draw = draw

    def start(self, first: int, stop: int) -> None:
        pass

    def get(self, k: int) -> SynthBatch:
        return self.draw(k)

    def close(self) -> None:
        pass


class SynthesisStream(IterableDataset):
    """Batches ``first`` to ``stop - 1`` of one rank, split between the ``DataLoader``'s workers."""

    def __init__(self, images: torch.Tensor, textures: torch.Tensor, source: str, cfg: SynthesisConfig, seed: int,
                 rank: int, batch_size: int, first: int, stop: int):
        super().__init__()
        self.images, self.textures, self.source, self.cfg = images, textures, source, cfg
        self.seed, self.rank, self.batch_size, self.first, self.stop = seed, rank, batch_size, first, stop

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        synth = AnomalySynthesizer(self.cfg, TextureBank(self.textures, self.source), make_generator(0, 0, "cpu"),
                                   dense=False)
        sampler = torch.Generator()
        for k in range(self.first + worker, self.stop, workers):
            b = draw_batch(self.images, synth, sampler, self.seed, self.rank, k, self.batch_size)
            yield k, b.clean, b.augmented, b.mask, b.has_anomaly


def _ignore_ctrl_c(_worker: int) -> None:
    # Ctrl-C reaches the whole process group: the training process decides what happens (finish the
    # iteration, save, shut the workers down); a worker that died of it would look like a crash
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _shared_cpu(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().cpu()
    return t if t.is_shared() else t.clone().share_memory_()


class WorkerBatches:
    """Batches made ahead of the step by ``workers`` CPU processes (a ``DataLoader`` over a
    :class:`SynthesisStream`), copied to ``device`` without blocking."""

    def __init__(self, images: torch.Tensor, synth: AnomalySynthesizer, seed: int, rank: int, batch_size: int,
                 device: torch.device, workers: int, prefetch: int = PREFETCH):
        if workers < 1:
            raise ValueError("WorkerBatches needs at least one worker")
        self.images = _shared_cpu(images)
        self.textures = _shared_cpu(synth.textures.images)
        self.source, self.cfg = synth.textures.source, synth.cfg
        self.seed, self.rank, self.batch_size = seed, rank, batch_size
        self.device, self.workers, self.prefetch = device, workers, prefetch
        self._it: Any = None
        self._next = 0

    def start(self, first: int, stop: int) -> None:
        self.close()
        stream = SynthesisStream(self.images, self.textures, self.source, self.cfg, self.seed, self.rank,
                                 self.batch_size, first, stop)
        loader = DataLoader(stream, batch_size=None, num_workers=self.workers, prefetch_factor=self.prefetch,
                            pin_memory=self.device.type == "cuda", worker_init_fn=_ignore_ctrl_c,
                            generator=torch.Generator().manual_seed(0))  # its base seed: not from torch's global stream
        # torch's SIGCHLD handler would raise a worker's death in the middle of a step, where nothing
        # can be saved; without it the death is found when the next batch is fetched (within
        # seconds: the DataLoader checks its workers while it waits), between iterations
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGCHLD) if main else None
        self._it, self._next = iter(loader), first
        if previous is not None:
            signal.signal(signal.SIGCHLD, previous)

    def get(self, k: int) -> SynthBatch:
        if self._it is None or k != self._next:
            raise RuntimeError(f"batch {k} asked for, but the workers make batch {self._next} next")
        try:
            index, *tensors = next(self._it)
        except (RuntimeError, ConnectionError, EOFError) as exc:
            # torch reports a dead worker as a RuntimeError; read from its pipe as it dies, the same death
            # surfaces as a ConnectionResetError or EOFError
            died = worker_death(exc, f"before batch {k}")
            if died is None:  # a bug in synthesis keeps its traceback
                raise
            self.close()
            raise died from None
        assert index == k, (index, k)
        self._next = k + 1
        return SynthBatch(*(t.to(self.device, non_blocking=True) for t in tensors))

    def close(self) -> None:
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()  # now, rather than whenever the iterator is collected


def worker_death(exc: BaseException, when: str) -> SynthesisWorkerDied | None:
    """The one-line error for a ``DataLoader`` worker that died (``exc`` is torch's report of it), or None."""
    text = str(exc)
    if isinstance(exc, (ConnectionError, EOFError)):
        text = f"its pipe broke: {type(exc).__name__}{': ' + text if text else ''}"
    elif not isinstance(exc, RuntimeError) or "DataLoader worker (pid" not in text:
        return None
    return SynthesisWorkerDied(
        f"a synthesis worker died {when} ({text.strip().rstrip('.')}; killed, or out of memory: see `dmesg`); "
        "lower train.synthesis_workers, or set it to 0 to synthesise in the training process")


def batch_source(images: torch.Tensor, synth: AnomalySynthesizer, draw: Callable[[int], SynthBatch], seed: int,
                 rank: int, batch_size: int, device: torch.device, setting: int | str):
    """The batches of a run: in process (``draw``) or from workers, as ``train.synthesis_workers`` says."""
    workers = resolve_workers(setting, device)
    if workers == 0:
        return InProcessBatches(draw)
    return WorkerBatches(images, synth, seed, rank, batch_size, device, workers)
