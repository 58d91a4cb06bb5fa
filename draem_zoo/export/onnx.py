"""ONNX export of a model: one graph from uint8 RGB images to the anomaly map and the image score.

The graph (``model.onnx``) needs nothing beside it:

* input ``image_rgb_uint8_nhwc``: uint8 RGB images, shape (B, S, S, 3) (what PIL, OpenCV after
  ``cvtColor(BGR2RGB)`` and camera SDKs hand over), S = the model's ``image_size``; B is 1 unless
  exported with ``dynamic_batch`` (then any B). Scaling to [0, 1], the channel flip of BGR models
  (the converted official checkpoints) and the timm encoders' normalisation are inside the graph.
* outputs ``anomaly_map`` (B, 1, S, S) float32 in [0, 1] (softmax channel 1; 1 - SSIM for
  ``model.mode=reconstructive``) and ``score`` (B,) float32 (max of the map after the model's own
  s_f mean filter), as ``DraemModel.predict``; every ``model.mode``, SSPCAB or not, alike.
* ``metadata_props``: format, package version, input and output conventions, s_f, channel
  orders, thresholds, the model's config.json and the sha256 of the ``model.safetensors`` it was
  made from (``draem_zoo.weights_sha256``), so that a stale ``model.onnx`` can be detected.

The exporter is torch's ``torch.export``-based one (``torch.onnx.export(dynamo=True)``, needs
onnxscript), which handles every variant, the timm ones included; it writes opset 18 natively.
The file is written under a temporary name beside the destination, checked with ONNX Runtime
(CPU) against ``DraemModel.predict`` on generated images, and only then renamed into place, with a
record beside it (``model.onnx.json``: the file's sha256 and size, and the weights and config
sha256 it was made from) that ``publish`` checks the file against before uploading it.
onnx, onnxruntime and onnxscript are an optional extra: ``pip install "draem-zoo[onnx]"``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import inspect
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..__about__ import __version__
from ..config import to_dict
from ..errors import DraemZooError
from ..files import fsync_parent, temp_file
from ..model.draem import map_meaning
from ..model.modeldir import load_model_dir
from ..model.scoring import check_filter_size, image_scores

ONNX_FILE = "model.onnx"
FORMAT = "draem-zoo-onnx"
FORMAT_VERSION = 1
RECORD_FORMAT = "draem-zoo-onnx-record"
INPUT_NAME = "image_rgb_uint8_nhwc"
OUTPUT_NAMES = ("anomaly_map", "score")
OPSETS = range(18, 24)  # what torch's exporter builds (18 natively, up to 23) and ONNX Runtime runs
DEFAULT_OPSET = 18
TOLERANCE = 1e-4
META = "draem_zoo."
INSTALL_HINT = 'pip install "draem-zoo[onnx]"'
_NEEDED = ("onnx", "onnxruntime", "onnxscript")


class OnnxGraph(nn.Module):
    """uint8 RGB (B, S, S, 3) -> (anomaly map (B, 1, S, S), score (B,)), as ``DraemModel.predict``."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.filter_size = check_filter_size(model.score_config.filter_size, "score.filter_size")

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        _, amap = self.model.anomaly_maps(self.model.to_model_order(x))  # BGR models: channels flipped here
        return amap, image_scores(amap, self.filter_size)


def check_opset(opset: int) -> int:
    if not isinstance(opset, int) or isinstance(opset, bool) or opset not in OPSETS:
        raise DraemZooError(f"--opset {opset}: not supported; choose an ONNX opset from {OPSETS[0]} to {OPSETS[-1]} "
                            f"(default {DEFAULT_OPSET}, which torch's exporter writes natively and ONNX Runtime, "
                            "OpenVINO and TensorRT read)")
    return opset


def require_onnx() -> None:
    """Fail with the install command when the optional ONNX packages are missing."""
    missing = [m for m in _NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        raise DraemZooError(f"ONNX export needs {', '.join(missing)} (not installed): {INSTALL_HINT}")
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise DraemZooError(f"ONNX export needs torch >= 2.6 (torch.onnx.export(dynamo=True)); this is torch "
                            f"{torch.__version__}: pip install -U torch")


def default_output(spec: str) -> Path:
    """``<model dir>/model.onnx`` for a local directory, ``./model.onnx`` for a Hub model."""
    return Path(ONNX_FILE) if str(spec).startswith("hf-hub:") else Path(spec) / ONNX_FILE


def check_output(out: str | Path) -> Path:
    """The destination, refused now (before any export) when it cannot be written."""
    out = Path(out).expanduser()
    if out.is_dir():
        raise DraemZooError(f"--out {out}: is a folder; give a file path, e.g. --out {out / ONNX_FILE}")
    parent = out.parent
    if not parent.is_dir():
        what = "is a file, not a folder" if parent.exists() else "does not exist (create it first)"
        raise DraemZooError(f"--out {out}: cannot be written: {parent} {what}")
    return out


def record_path(onnx_path: str | Path) -> Path:
    """The record export-onnx writes beside an ONNX file: ``model.onnx`` -> ``model.onnx.json``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


def _temp_beside(out: Path) -> Path:
    """A temporary file beside ``out`` with the umask's mode (not mkstemp's 0600)."""
    try:
        return temp_file(out.parent, f".{out.name}.")
    except OSError as exc:
        raise DraemZooError(f"--out {out}: cannot be written in {out.parent} ({exc.strerror or exc})") from None


def io_spec(model, dynamic_batch: bool) -> dict[str, Any]:
    """Input and outputs of the graph, as recorded in the file and printed by the command."""
    s = model.config.image_size
    b: int | str = "batch" if dynamic_batch else 1
    return {
        "input": {"name": INPUT_NAME, "shape": [b, s, s, 3], "dtype": "uint8", "layout": "NHWC",
                  "channel_order": "RGB", "value_range": [0, 255],
                  "preprocessing": "none outside the graph: scaling to [0, 1], the channel order of the weights "
                                   f"({model.config.channel_order}) and encoder normalisation happen inside"},
        "outputs": [{"name": OUTPUT_NAMES[0], "shape": [b, 1, s, s], "dtype": "float32",
                     "meaning": f"{map_meaning(model.config)}, at the input resolution"},
                    {"name": OUTPUT_NAMES[1], "shape": [b], "dtype": "float32",
                     "meaning": f"image score: max of the anomaly map after a {model.score_config.filter_size}x"
                                f"{model.score_config.filter_size} mean filter (s_f)"}],
    }


def _model_config(model) -> dict[str, Any]:
    meta = getattr(model, "metadata", None)
    if isinstance(meta, dict) and meta.get("model"):
        return {k: v for k, v in meta.items() if k != "hub"}
    return {"model": to_dict(model.config), "score": to_dict(model.score_config), "package_version": __version__}


def metadata(model, dynamic_batch: bool, opset: int, weights_sha256: str | None) -> dict[str, str]:
    """The ``metadata_props`` written into the file (all values are strings)."""
    spec = io_spec(model, dynamic_batch)
    sc = model.score_config
    return {
        META + "format": FORMAT, META + "format_version": str(FORMAT_VERSION), META + "package_version": __version__,
        META + "input": json.dumps(spec["input"]), META + "outputs": json.dumps(spec["outputs"]),
        META + "input_channel_order": "RGB", META + "model_channel_order": model.config.channel_order,
        META + "filter_size": str(sc.filter_size), META + "image_size": str(model.config.image_size),
        META + "image_threshold": "" if sc.image_threshold is None else repr(float(sc.image_threshold)),
        META + "pixel_threshold": "" if sc.pixel_threshold is None else repr(float(sc.pixel_threshold)),
        META + "variant": model.config.variant, META + "mode": model.config.mode,
        META + "sspcab": "true" if model.config.sspcab else "false", META + "weights_sha256": weights_sha256 or "",
        META + "export": json.dumps({"opset": opset, "dynamic_batch": dynamic_batch, "torch": torch.__version__,
                                     "exporter": "torch.onnx.export(dynamo=True)"}),
        META + "config": json.dumps(_model_config(model)),
    }


def build_proto(model, opset: int, dynamic_batch: bool):
    """The ONNX ModelProto of :class:`OnnxGraph` around ``model`` (CPU, eval mode)."""
    s = model.config.image_size
    graph = OnnxGraph(model).eval()
    example = torch.zeros(2 if dynamic_batch else 1, s, s, 3, dtype=torch.uint8)
    shapes = {"image": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, (example,), None, dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                        dynamic_shapes=shapes, external_data=False, optimize=True, verbose=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise DraemZooError(f"variant {model.config.variant}: torch.onnx.export failed ({type(exc).__name__}: "
                            f"{first}); nothing was written") from exc
    proto = program.model_proto
    got = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if got != [opset]:
        raise DraemZooError(f"--opset {opset}: the exporter produced opset {got} for variant "
                            f"{model.config.variant}; use --opset {DEFAULT_OPSET}; nothing was written")
    return proto


def parity_images(size: int, n: int, seed: int = 0) -> np.ndarray:
    """n uint8 RGB (n, S, S, 3) test images: a smooth shaded surface with a dark blob, then noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    smooth = np.stack([0.3 + 0.4 * xx, 0.5 + 0.3 * yy, 0.6 - 0.2 * xx * yy], axis=-1)
    blob = np.exp(-(((xx - 0.6) ** 2 + (yy - 0.4) ** 2) / 0.01))[..., None]
    first = np.clip((smooth * (1 - 0.8 * blob)) * 255, 0, 255).astype(np.uint8)
    rest = rng.integers(0, 256, (max(n - 1, 0), size, size, 3), dtype=np.uint8)
    return np.concatenate([first[None], rest])[:n]


def session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path``."""
    import onnxruntime as ort  # the optional [onnx] extra, imported only when used

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def check_parity(path: str | Path, model, images: np.ndarray, batch: int | None = None,
                 tolerance: float = TOLERANCE) -> dict[str, Any]:
    """ONNX Runtime (CPU) on ``path`` against ``model.predict`` on the same uint8 RGB NHWC images."""
    import onnxruntime as ort

    sess = session(path)
    step = batch or len(images)
    outs = [sess.run(None, {INPUT_NAME: images[i: i + step]}) for i in range(0, len(images), step)]
    amap = np.concatenate([o[0] for o in outs])
    score = np.concatenate([o[1] for o in outs])
    pred = model.predict(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    d_map = float(np.abs(amap - pred.anomaly_map.cpu().numpy()).max())
    d_score = float(np.abs(score - pred.score.cpu().numpy()).max())
    result = {"runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider", "images": len(images),
              "batch": step, "max_abs_diff_anomaly_map": d_map, "max_abs_diff_score": d_score,
              "tolerance": tolerance}
    if not (d_map <= tolerance and d_score <= tolerance):  # also catches NaN
        raise DraemZooError(f"{path}: ONNX Runtime and PyTorch disagree (max abs difference: anomaly map {d_map:.2e}, "
                            f"score {d_score:.2e}; allowed {tolerance:g}); nothing was written")
    return result


def export_model(model, out: str | Path, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False,
                 weights_sha256: str | None = None) -> dict[str, Any]:
    """Export an in-memory model to ``out`` atomically; returns what the command prints.

    Written to a temporary file beside ``out``, checked with ONNX Runtime against
    ``model.predict`` (<= 1e-4 on map and score), then renamed; on any failure the
    temporary file is removed and ``out`` is left as it was.
    """
    check_opset(opset)
    require_onnx()
    out = check_output(out)
    meta = getattr(model, "metadata", None) or {}
    weights_sha256 = weights_sha256 or meta.get("weights_sha256")
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    was_training = model.training
    tmp = _temp_beside(out)
    record, record_tmp = record_path(out), None
    try:
        record_tmp = _temp_beside(record)
        proto = build_proto(model, opset, dynamic_batch)
        proto.producer_name, proto.producer_version = "draem-zoo", __version__
        proto.doc_string = (f"DRAEM anomaly detector ({model.config.variant}): {INPUT_NAME} uint8 RGB (B, S, S, 3) "
                            "-> anomaly_map (B, 1, S, S), score (B,); see metadata_props draem_zoo.*")
        del proto.metadata_props[:]
        for key, value in metadata(model, dynamic_batch, opset, weights_sha256).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        data = proto.SerializeToString()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise DraemZooError(f"--out {out}: cannot be written ({exc.strerror or exc}); nothing was written") from None
        images = parity_images(model.config.image_size, 3 if dynamic_batch else 2)
        parity = check_parity(tmp, model, images, batch=None if dynamic_batch else 1)
        sha = hashlib.sha256(data).hexdigest()
        _write_record(record_tmp, {
            "format": RECORD_FORMAT, "format_version": FORMAT_VERSION, "file": out.name, "sha256": sha,
            "bytes": len(data), "weights_sha256": weights_sha256, "config_sha256": meta.get("config_sha256"),
            "opset": opset, "dynamic_batch": dynamic_batch, "package_version": __version__})
        # the file first: a crash between the renames leaves a record that does not match it, which
        # publish refuses (re-export), never a file that passes for another
        os.replace(tmp, out)
        os.replace(record_tmp, record)
        fsync_parent(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if record_tmp is not None:
            record_tmp.unlink(missing_ok=True)
        raise
    finally:
        model.train(was_training)
    spec = io_spec(model, dynamic_batch)
    return {"path": str(out), "record": str(record), "bytes": len(data), "sha256": sha, "opset": opset,
            "dynamic_batch": dynamic_batch, "input": spec["input"], "outputs": spec["outputs"],
            "variant": model.config.variant, "image_size": model.config.image_size,
            "filter_size": model.score_config.filter_size, "model_channel_order": model.config.channel_order,
            "weights_sha256": weights_sha256, "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=True)",
            "parity": parity}


def _write_record(path: Path, record: dict[str, Any]) -> None:
    try:
        with open(path, "w") as f:
            f.write(json.dumps(record, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise DraemZooError(f"{path}: cannot be written ({exc.strerror or exc}); nothing was written") from None


def export_onnx(spec: str, out: str | Path | None = None, opset: int | None = None, dynamic_batch: bool = False,
                load: Callable[[str], Any] = load_model_dir) -> dict[str, Any]:
    """Export a model directory (or, with ``load=draem_zoo.load`` as the CLI passes,
    ``hf-hub:ORG/NAME[@REV]``) to ONNX (see :func:`export_model`).

    ``load`` must check keys strictly and the weights' sha256 against config.json, as
    :func:`~draem_zoo.model.modeldir.load_model_dir` does; ``out`` defaults to
    ``<model dir>/model.onnx`` for a local directory and ``./model.onnx`` for a Hub model.
    """
    opset = check_opset(DEFAULT_OPSET if opset is None else opset)
    require_onnx()
    model = load(str(spec))
    dest = check_output(out if out is not None else default_output(str(spec)))
    result = export_model(model, dest, opset, dynamic_batch)
    return {"model": str(spec), **result}


# -- reading the metadata back (publish and pull use this) ---------------------------------------

def read_metadata(path: str | Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file, read with the onnx package (external weights not loaded)
    or, where only ONNX Runtime is installed (a deployment machine), with ONNX Runtime."""
    path = Path(path)
    try:
        if importlib.util.find_spec("onnx") is not None:
            import onnx

            return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if importlib.util.find_spec("onnxruntime") is not None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            return dict(sess.get_modelmeta().custom_metadata_map)
    except Exception as exc:
        raise DraemZooError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    raise MissingReader(f"{path}: reading an ONNX file needs onnx or onnxruntime: {INSTALL_HINT}")


class MissingReader(DraemZooError):
    """Neither onnx nor onnxruntime is installed."""


def onnx_info(path: str | Path) -> dict[str, Any] | None:
    """What a model card and publish need from a draem-zoo ONNX file; None if it is not one."""
    props = read_metadata(path)
    if props.get(META + "format") != FORMAT:
        return None
    export = json.loads(props.get(META + "export") or "{}")
    return {"input_name": json.loads(props[META + "input"])["name"], "image_size": int(props[META + "image_size"]),
            "filter_size": int(props[META + "filter_size"]), "opset": export.get("opset"),
            "dynamic_batch": bool(export.get("dynamic_batch")), "weights_sha256": props.get(META + "weights_sha256"),
            "package_version": props.get(META + "package_version")}


def stale_reason(model_dir: str | Path, weights_sha256: str | None, strict: bool = True) -> str | None:
    """Why ``model_dir/model.onnx`` does not belong to the weights beside it (None: it does, or there is none).

    ``strict=False`` (pull): without onnx or onnxruntime installed the file is kept unchecked."""
    path = Path(model_dir) / ONNX_FILE
    if not path.is_file():
        return None
    try:
        info = onnx_info(path)
    except MissingReader:
        if strict:
            raise
        return None
    except DraemZooError as exc:
        return str(exc)
    if info is None:
        return f"{path}: not written by draem-zoo export-onnx (no {META}format metadata)"
    if not weights_sha256 or info["weights_sha256"] != weights_sha256:
        made = (info["weights_sha256"] or "unknown weights")[:12]
        return (f"{path}: made from weights sha256 {made}..., but config.json has {(weights_sha256 or '?')[:12]}...: "
                f"stale; re-export it with draem-zoo export-onnx --model {model_dir}")
    return None


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The record export-onnx wrote beside ``path`` (None: there is none, or it is not one)."""
    try:
        record = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == RECORD_FORMAT else None

