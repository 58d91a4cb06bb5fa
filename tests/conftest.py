from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / "shared"

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# decode caches and run work directories of the tests go to a temporary folder (Ray workers inherit
# the environment), never into the user's ~/.cache or /tmp/draem_zoo_runs
_SCRATCH = Path(tempfile.mkdtemp(prefix="draem_zoo_tests_"))
os.environ["DRAEM_ZOO_CACHE"] = str(_SCRATCH / "cache")
os.environ.setdefault("DRAEM_ZOO_WORKDIR", str(_SCRATCH / "work"))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SCRATCH, ignore_errors=True)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


def write_image(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


@pytest.fixture
def texture_dir(tmp_path: Path) -> Path:
    """A small DTD-like folder: images/<class>/*.jpg."""
    rng = np.random.default_rng(0)
    for cls in ("banded", "dotted"):
        for i in range(3):
            arr = (rng.random((48, 40, 3)) * 255).astype(np.uint8)
            write_image(tmp_path / "dtd" / "images" / cls / f"{cls}_{i}.jpg", arr)
    return tmp_path / "dtd" / "images"
