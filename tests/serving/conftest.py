"""A tiny model directory with thresholds, and generated images (a corrupt one among them), for the
predict / Ray Data / Serve tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from draem_zoo.data.images import read_rgb
from draem_zoo.model.draem import build_model
from draem_zoo.model.modeldir import load_model_dir, save_model_dir

SIZE = 32


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("paper-tiny", rec_width=8, disc_width=8, image_size=SIZE)
    # batch-norm statistics of random images: an untrained model then scores images apart (about 0.50-0.52)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.rand(16, 3, SIZE, SIZE))
    model.eval()
    # the threshold halfway through the scores of the images the tests use: some are anomalous, some not
    paths = write_images(tmp_path_factory.mktemp("calibration"), 9)
    x = torch.stack([read_rgb(p, SIZE) for p in paths]).float() / 255
    scores = sorted(model.predict(x, filter_size=5).score.tolist())
    model.score_config = dataclasses.replace(model.score_config, filter_size=5, image_threshold=scores[4],
                                             pixel_threshold=0.5)
    out = tmp_path_factory.mktemp("model") / "weave"
    extra = {"run": {"data": {"category": "weave"}},
             "metrics": {"test": {"image_auroc": 0.975, "pixel_auroc": 0.962, "pixel_ap": 0.581, "aupro": 0.9}}}
    return save_model_dir(model, out, extra)


def threshold(model_dir: Path) -> float:
    return load_model_dir(model_dir).score_config.image_threshold


def write_images(folder: Path, n: int, seed: int = 0, size: int = 48) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        arr[size // 4: size // 2, size // 4: size // 2] = 255 * (i % 2)  # a square on half of them
        p = folder / f"{i:03d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


@pytest.fixture
def images(tmp_path) -> list[Path]:
    """Nine PNGs with a corrupt one in the middle (index 4)."""
    paths = write_images(tmp_path / "imgs", 9)
    paths[4].write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return paths


def reference_scores(model_dir: Path, paths: list[Path]) -> dict[str, float]:
    """model.predict on each readable image alone: the scores every path must reproduce."""
    model = load_model_dir(model_dir)
    out = {}
    for p in paths:
        try:
            x = read_rgb(p, SIZE).float()[None] / 255
        except Exception:
            continue
        out[str(p)] = float(model.predict(x).score[0])
    return out


@pytest.fixture(scope="package")
def ray_local():
    """One local Ray for the Ray Data and Ray Serve tests of this package (2 CPUs, as on CI)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def png_header(width: int, height: int) -> bytes:
    """A PNG file's header for an image of width x height (no pixel data): refused from its header alone."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
