"""Synthesis in worker processes (train.synthesis_workers=2) on the CPU, driven through the real CLI in
its own session (as a terminal runs it): Ctrl-C stops the run and its workers with one line and no
process left behind; a killed worker ends the run with one line and a checkpoint, never a hang; and
--resume after that gives the same weights as a run with no workers that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ITERATIONS = 150
SETS = ["model.rec_width=4", "model.disc_width=4", "eval.filter_sizes=1,5", "eval.batch_size=32",
        "synthesis.procedural_textures=8", "train.checkpoint_every=10", "train.validations=1"]


def argv(root, out, workers, *extra):
    return [sys.executable, "-m", "draem_zoo.cli", "train", "--data", str(root), "--category", "weave", "--out",
            str(out), "--iterations", str(ITERATIONS), "--image-size", "32", "--batch-size", "4", "--quiet",
            "--seed", "2", *[a for s in [*SETS, f"train.synthesis_workers={workers}"] for a in ("--set", s)], *extra]


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def in_session(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


def start(root, out, workers, *extra) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), OMP_NUM_THREADS="1")
    return subprocess.Popen(argv(root, out, workers, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)


def wait_for(cond, timeout=300.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def running_with_workers(proc: subprocess.Popen, out: Path) -> list[int]:
    """Wait until the run has its 2 workers and has written a checkpoint; the workers' pids."""
    wait_for(lambda: proc.poll() is not None or (len(children(proc.pid)) >= 2
                                                 and (out / "checkpoints" / "last" / "meta.json").is_file()),
             what="the workers and a first checkpoint")
    assert proc.poll() is None, proc.communicate()
    return children(proc.pid)


def no_process_left(sid: int) -> None:
    wait_for(lambda: not in_session(sid), timeout=60, what=f"the processes of session {sid} to end")


@pytest.mark.slow
def test_ctrl_c_stops_the_run_and_its_workers(root, tmp_path):
    out = tmp_path / "m"
    proc = start(root, out, 2)
    workers = running_with_workers(proc, out)
    assert len(workers) == 2
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "checkpoint saved at iteration" in err, err
    no_process_left(proc.pid)


@pytest.mark.slow
def test_a_killed_worker_ends_the_run_in_one_line_and_resume_is_exact(root, tmp_path):
    out = tmp_path / "m"
    proc = start(root, out, 2)
    workers = running_with_workers(proc, out)
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)  # never a hang (seconds when the machine is idle)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert lines[-1].startswith("draem-zoo train: error: a synthesis worker died"), err
    assert "synthesis_workers" in lines[-1] and "--resume continues from" in lines[-1]
    no_process_left(proc.pid)
    # resume (with workers) to the end, and a run with no workers at all: the same weights, bit for bit
    resumed = start(root, out, 2, "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resuming from iteration" in err
    straight = start(root, tmp_path / "straight", 0)
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "straight" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
