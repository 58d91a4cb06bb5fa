"""Batch k of rank r is a function of (seed, r, k) alone: the same whoever draws it, in any order,
after any number of other batches; other ranks and seeds get other batches."""

from __future__ import annotations

import os

import pytest
import torch

from draem_zoo.errors import ConfigError
from draem_zoo.model.draem import build_model
from draem_zoo.model.losses import LossConfig
from draem_zoo.synthesis.config import SynthesisConfig
from draem_zoo.synthesis.simulator import AnomalySynthesizer, batch_seed, load_textures, make_generator
from draem_zoo.train import trainer as trainer_mod
from draem_zoo.train.batches import WorkerBatches, cpu_allowance, resolve_workers
from draem_zoo.train.trainer import TrainConfig, Trainer


def make_trainer(tmp_path, seed=0, rank=0, images=None):
    torch.manual_seed(0)
    images = images if images is not None else torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    synth_cfg = SynthesisConfig(procedural_textures=4)
    bank = load_textures(synth_cfg, 32)
    # the generator a run starts with (and its state) does not matter: every batch reseeds it
    synth = AnomalySynthesizer(synth_cfg, bank, make_generator(123 + rank, rank))
    model = build_model("paper-tiny", rec_width=4, disc_width=4, image_size=32)
    cfg = TrainConfig(iterations=6, batch_size=4, seed=seed, report_every=0, validations=1)
    return Trainer(model, images, synth, cfg, LossConfig(), tmp_path, rank=rank, progress=False), images


def same(a, b):
    return all(torch.equal(x, y) for x, y in ((a.augmented, b.augmented), (a.mask, b.mask), (a.clean, b.clean)))


def test_a_batch_depends_on_seed_rank_and_index_alone(tmp_path):
    t, images = make_trainer(tmp_path)
    b3 = t.draw(3)
    for k in (0, 5, 1):  # other batches in between move nothing
        t.draw(k)
    assert same(t.draw(3), b3)
    other, _ = make_trainer(tmp_path / "o", images=images)
    assert same(other.draw(3), b3)  # a fresh trainer (a resumed run, a worker) regenerates it
    assert not same(t.draw(4), b3)
    rank1, _ = make_trainer(tmp_path / "r", rank=1, images=images)
    assert not same(rank1.draw(3), b3)
    seed1, _ = make_trainer(tmp_path / "s", seed=1, images=images)
    assert not same(seed1.draw(3), b3)
    assert len({batch_seed(0, r, k, s) for r in range(3) for k in range(50) for s in ("sampler", "synthesis")}) == 300


def test_the_loop_trains_on_exactly_those_batches(tmp_path, monkeypatch):
    t, images = make_trainer(tmp_path)
    seen = []
    real = trainer_mod.train_step

    def record(model, batch, *a, **k):
        seen.append(batch.augmented.clone())
        return real(model, batch, *a, **k)

    monkeypatch.setattr(trainer_mod, "train_step", record)
    t.fit()
    fresh, _ = make_trainer(tmp_path / "f", images=images)
    assert len(seen) == 6
    for k, x in enumerate(seen):
        assert torch.equal(fresh.draw(k).augmented, x), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("workers", [0, 2])
def test_a_training_iteration_never_waits_for_the_gpu(tmp_path, workers):
    """Getting a batch (dense on-device synthesis, or 2 CPU workers' batches copied from pinned memory
    without blocking) and the step (bf16, fused Adam) queue work on the GPU without one host sync: the
    loop only syncs at reports, validations and saves."""
    from draem_zoo.train.trainer import train_step

    device = torch.device("cuda")
    synth_cfg = SynthesisConfig(procedural_textures=4)
    bank = load_textures(synth_cfg, 32, device)
    synth = AnomalySynthesizer(synth_cfg, bank, make_generator(0, 0, device))
    model = build_model("paper-tiny", rec_width=4, disc_width=4, image_size=32).to(device)
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    t = Trainer(model, images, synth, TrainConfig(iterations=6, batch_size=4, report_every=0, validations=1,
                                                  synthesis_workers=workers), LossConfig(), tmp_path, progress=False)
    assert t.optimizer.defaults.get("fused") is True
    source = t.batch_source()
    assert source.workers == workers
    source.start(0, 6)
    try:
        for k in range(2):  # warm-up: cuDNN's autotuner and lazy initialisation may sync once
            train_step(t.model, source.get(k), t.optimizer, t.loss_cfg, t.autocast, None, t.step)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for k in range(2, 5):
                train_step(t.model, source.get(k), t.optimizer, t.loss_cfg, t.autocast, None, t.step)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    finally:
        source.close()
    torch.cuda.synchronize()


def test_worker_batches_are_the_in_process_batches(tmp_path):
    """Batches made by 2 DataLoader workers from any starting batch (a resume) are the ones the training
    process makes itself, bit for bit, in order."""
    t, images = make_trainer(tmp_path)
    workers = WorkerBatches(images, t.synth, t.cfg.seed, 0, t.cfg.batch_size, torch.device("cpu"), 2)
    try:
        workers.start(3, 9)
        with pytest.raises(RuntimeError, match="batch 4 asked for, but the workers make batch 3 next"):
            workers.get(4)
        for k in range(3, 9):
            assert same(workers.get(k), t.draw(k)), k
    finally:
        workers.close()
    assert workers._it is None


def test_auto_workers_need_cuda_and_two_spare_cores(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_workers("auto", cpu, cpus=32) == 0  # CPU training keeps the in-process path
    assert [resolve_workers("auto", cuda, cpus=c) for c in (1, 2, 3, 4, 9, 64)] == [0, 0, 2, 3, 8, 8]
    assert resolve_workers(3, cpu) == 3 and resolve_workers(0, cuda, cpus=64) == 0  # a number is a number
    monkeypatch.setenv("DRAEM_ZOO_CPUS", "4.0")  # a Ray Train worker's CPUs
    assert cpu_allowance() == 4 and resolve_workers("auto", cuda) == 3
    monkeypatch.delenv("DRAEM_ZOO_CPUS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four DDP processes share the node's 16 cores
    assert cpu_allowance() == 4
    with pytest.raises(ConfigError, match="synthesis_workers=-1"):
        TrainConfig(synthesis_workers=-1).validate()
