"""The device check runs its code paths on a CPU at tiny sizes (the real run needs an accelerator)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_every_check_on_a_cpu():
    res = subprocess.run([sys.executable, "scripts/gpu_check.py", "--smoke"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:] + res.stdout[-2000:]
    rows = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    checks = [r["check"] for r in rows]
    assert checks[0] == "device" and checks[-1] == "summary" and "validation" in checks
    train = [r for r in rows if r["check"] == "train" and "images_per_s" in r]
    assert {(r["batch"], r["synthesis"]) for r in train} == {(b, m) for b in (2, 4) for m in
                                                              ("dense", "sparse", "workers (2 processes)")}
    for r in train:
        assert r["images_per_s"] > 0 and 0 < r["iteration_vs_step"] <= 1.5 and 0 <= r["synthesis_share"] < 1
    val = next(r for r in rows if r["check"] == "validation")
    assert val["images"] == 14 and val["metrics_seconds"] > 0
    assert rows[-1]["failed"] == 0 and rows[-1]["done"] >= 7
