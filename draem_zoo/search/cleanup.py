"""What a search removes as it goes, so that nothing of it stays behind.

* Local work directories: a run deletes its own when it ends; a run that is killed (ASHA's stop,
  a lost worker) cannot, so the search sweeps every alive node for the run's folder when the
  trial ends, and for every folder of the search when the search ends (:func:`sweep_workdirs`).
* Checkpoints in storage: a trial keeps only its latest (``num_to_keep=1``); when a trial ends,
  its heavy checkpoints (weights + Adam state, over a gigabyte for the paper model) are deleted
  and only the tiny marker of a finished trial stays, which a restore after a driver crash
  replays (:func:`drop_trial_checkpoints`). Final runs keep theirs: they hold the exported model.
* Local Ray processes of a killed driver: a driver that started Ray on this machine records the
  processes it started (pid and start time, from /proc); a SIGKILL leaves some of them running
  (``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent`` ignore SIGTERM), and the next search into the
  same folder stops them (:func:`record_ray_processes`, :func:`reap_ray_processes`). Linux only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

import pyarrow.fs as pafs
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..files import atomic_write_text
from .trial import FINAL, work_root

PROCESSES = ".ray-processes.json"


def _started(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22): a pid with another
    start time is another process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def record_ray_processes(out: Path) -> None:
    """Write ``out/.ray-processes.json``: this driver and every process under it (Ray's, started here)."""
    if not Path("/proc/self/stat").is_file():
        return
    me = os.getpid()
    record = {"driver": {"pid": me, "started": _started(me)},
              "processes": [{"pid": p, "started": _started(p)} for p in _descendants(me)]}
    with contextlib.suppress(OSError):
        atomic_write_text(out / PROCESSES, json.dumps(record))


def reap_ray_processes(out: Path) -> list[int]:
    """SIGKILL what a dead driver's record lists that still runs (same pid and start time); the pids."""
    path = out / PROCESSES
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    driver = record.get("driver", {})
    if driver.get("pid") and _started(driver["pid"]) == driver.get("started") and driver["pid"] != os.getpid():
        return []  # that driver is alive: not ours to touch
    killed = []
    for proc in record.get("processes", []):
        if proc.get("started") is not None and _started(proc["pid"]) == proc["started"]:
            with contextlib.suppress(OSError):
                os.kill(proc["pid"], signal.SIGKILL)
                killed.append(proc["pid"])
    path.unlink(missing_ok=True)
    return killed


def forget_ray_processes(out: Path) -> None:
    (out / PROCESSES).unlink(missing_ok=True)


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
