"""What a search removes as it goes, so that nothing of it stays behind.

* Local work directories: a run deletes its own when it ends; a run that is killed (ASHA's stop,
  a lost worker) cannot, so the search sweeps every alive node for the run's folder when the
  trial ends, and for every folder of the search when the search ends (:func:`sweep_workdirs`).
* Checkpoints in storage: a trial keeps only its latest (``num_to_keep=1``); when a trial ends,
  its heavy checkpoints (weights + Adam state, over a gigabyte for the paper model) are deleted
  and only the tiny marker of a finished trial stays, which a restore after a driver crash
  replays (:func:`drop_trial_checkpoints`). Final runs keep theirs: they hold the exported model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.fs as pafs
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .trial import FINAL, work_root


@ray.remote(num_cpus=0)
def _sweep(root: str, prefix: str) -> list[str]:
    removed = []
    for path in Path(root).glob(f"{prefix}*"):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


def sweep_workdirs(prefix: str, root: Path | None = None, timeout: float = 120.0) -> list[str]:
    """Delete ``root/<prefix>*`` on every alive node; returns what went."""
    root = root or work_root()
    refs = [_sweep.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(str(root), prefix) for n in ray.nodes() if n.get("Alive")]
    removed: list[str] = []
    for ref in refs:
        try:
            removed += ray.get(ref, timeout=timeout)
        except Exception:  # a node that went away has nothing left to sweep
            pass
    return removed


def drop_trial_checkpoints(fs: pafs.FileSystem, run_dirs: list[str]) -> int:
    """Delete the ``checkpoint_*`` folders under ``run_dirs`` that hold no finished-run marker;
    returns how many went. ``fs`` is the storage's filesystem (a local path or an object store)."""
    dropped = 0
    for run_dir in run_dirs:
        try:
            entries = fs.get_file_info(pafs.FileSelector(run_dir, allow_not_found=True))
        except OSError:
            continue
        for e in entries:
            if e.type != pafs.FileType.Directory or not e.base_name.startswith("checkpoint_"):
                continue
            if fs.get_file_info(f"{e.path}/{FINAL}").type == pafs.FileType.File:
                continue  # a finished run's marker: a restore replays it
            try:
                fs.delete_dir(e.path)
                dropped += 1
            except OSError:
                pass
    return dropped
