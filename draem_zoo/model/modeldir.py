"""The model directory: ``model.safetensors`` + ``config.json``, nothing pickled.

``config.json`` holds everything needed to rebuild and use the model: the model
config (architecture, image size, channel order), the scoring config (s_f and
thresholds), the sha256 of the weights file, the package version, and whatever the
producer adds about where the model came from (training config, data fingerprint,
metrics with the split they came from). ``config_sha256`` is the sha256 of the rest
of config.json in canonical form (:func:`config_digest`), so that an edit of the
thresholds, s_f or the recorded weights hash is detected like a damaged weights file.
Loading checks both hashes and loads the state dict strictly; a directory without either hash
(written before ``config_sha256`` existed, or with the keys deleted) is refused, not loaded
unchecked: :func:`rehash` (``draem-zoo rehash DIR``) stamps the hashes of the files as they are,
for a directory whose origin the user trusts.

Everything that writes or updates a model directory's config.json goes through
:func:`save_model_dir` or :func:`write_config`, which stamp the hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..__about__ import __version__
from ..config import from_dict, to_dict
from ..errors import DraemZooError
from ..files import atomic_write_text, fsync_parent, fsync_tree, ordinary_mode, temp_dir, writing
from .draem import DraemModel
from .scoring import ScoreConfig
from .variants import ModelConfig

FORMAT = "draem-zoo-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CONFIG_HASH = "config_sha256"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parameters_digest(model: torch.nn.Module) -> str:
    """sha256 over a model's parameters (names and bytes): DDP ranks must agree on it.

    BatchNorm running statistics are left out: DDP re-broadcasts rank 0's at every forward,
    but each rank then updates its own copy with its own batch.
    """
    h = hashlib.sha256()
    for k, v in sorted(model.named_parameters()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def state_dict_for_export(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def config_digest(cfg: dict[str, Any]) -> str:
    """sha256 of ``cfg`` without its ``config_sha256``, as canonical JSON (sorted keys, compact
    separators, ASCII) of what the file holds (tuples as lists, keys as strings)."""
    body = json.loads(json.dumps({k: v for k, v in cfg.items() if k != CONFIG_HASH}))
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def config_text(cfg: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``cfg`` stamped with its ``config_sha256``, and the text of config.json for it."""
    body = json.loads(json.dumps({k: v for k, v in cfg.items() if k != CONFIG_HASH}))
    stamped = {**body, CONFIG_HASH: config_digest(body)}
    return stamped, json.dumps(stamped, indent=2) + "\n"


def write_config(model_dir: str | Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Write (or replace) ``model_dir/config.json`` atomically with a fresh ``config_sha256``.

    For any code that updates a model directory's config after :func:`save_model_dir` (new
    thresholds, metrics added later): editing the file any other way makes loading refuse it."""
    stamped, text = config_text(cfg)
    atomic_write_text(Path(model_dir) / CONFIG, text)
    return stamped


REHASH_HINT = ("re-export it (draem-zoo train / search / convert-official write both hashes), or, if you trust "
               "where this directory came from, run `draem-zoo rehash {dir}` to record the hashes of the files as "
               "they are now")


def check_config(cfg: dict[str, Any], path: str | Path) -> None:
    """Refuse a config.json whose content does not match its ``config_sha256``, or that has none (a
    directory without it could carry any thresholds and s_f: it is never loaded unchecked)."""
    recorded = cfg.get(CONFIG_HASH)
    if recorded is None:
        raise DraemZooError(f"{path}: records no {CONFIG_HASH}, so its thresholds, s_f and weights hash cannot be "
                            f"checked; " + REHASH_HINT.format(dir=Path(path).parent))
    digest = config_digest(cfg)
    if recorded != digest:
        raise DraemZooError(f"{path}: edited after it was written (its {CONFIG_HASH} {str(recorded)[:12]}... does not "
                            f"match the content, {digest[:12]}...): thresholds, s_f or hashes in it cannot be "
                            "trusted; restore it (or download it again), or retrain/re-export the model")


def check_weights(model_dir: str | Path, cfg: dict[str, Any]) -> str:
    """sha256 of ``model_dir/model.safetensors``, refused unless it is the one config.json records."""
    weights = Path(model_dir) / WEIGHTS
    if not weights.is_file():
        raise DraemZooError(f"{model_dir}: {WEIGHTS} is missing")
    digest = sha256_file(weights)
    recorded = cfg.get("weights_sha256")
    if not recorded:
        raise DraemZooError(f"{Path(model_dir) / CONFIG}: records no weights_sha256, so {weights} cannot be checked; "
                            + REHASH_HINT.format(dir=model_dir))
    if digest != recorded:
        raise DraemZooError(f"{weights}: sha256 {digest[:12]}... does not match config.json ({recorded[:12]}...); "
                            "the file is corrupt or was altered: download it again, or re-run the export that "
                            "wrote it")
    return digest


def save_model_dir(model: DraemModel, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``out_dir`` (other files there stay).

    Both files are written to a temporary folder first, flushed to disk, and moved into place
    with atomic renames, weights first: an interrupted export leaves a weights file whose hash
    does not match config.json, which loading detects, never a half-written file. The files get
    the modes of the user's umask (0644 under umask 022), like any file the user writes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(out, ".export.")
    try:
        with writing(tmp / WEIGHTS):
            save_file(state_dict_for_export(model), str(tmp / WEIGHTS), metadata={"format": FORMAT})
        ordinary_mode(tmp / WEIGHTS)  # safetensors creates its files 0600 whatever the umask
        cfg = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "model": to_dict(model.config),
            "score": to_dict(model.score_config),
            "input": {"value_range": [0.0, 1.0], "channel_order": model.config.channel_order,
                      "normalization": "none outside the model (timm encoders normalise inside)",
                      "image_size": model.config.image_size},
            "weights_sha256": sha256_file(tmp / WEIGHTS),
            "params": model.num_parameters(),
            **(extra or {}),
        }
        with writing(tmp / CONFIG):
            (tmp / CONFIG).write_text(config_text(cfg)[1])
        fsync_tree(tmp)  # the data is on disk before any rename points at it
        os.replace(tmp / WEIGHTS, out / WEIGHTS)
        os.replace(tmp / CONFIG, out / CONFIG)
        fsync_parent(out / CONFIG)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_config(model_dir: str | Path, verify: bool = True) -> dict[str, Any]:
    """config.json of a model directory, checked against its ``config_sha256`` unless ``verify=False``."""
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise DraemZooError(f"{model_dir}: not a draem-zoo model directory (no {CONFIG}); expected "
                            f"{WEIGHTS} + {CONFIG} as written by `draem-zoo train` or `convert-official`")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DraemZooError(f"{path}: not valid JSON ({exc})") from None
    if cfg.get("format") != FORMAT:
        raise DraemZooError(f"{path}: format is {cfg.get('format')!r}, expected {FORMAT!r}")
    if int(cfg.get("format_version", 0)) > FORMAT_VERSION:
        raise DraemZooError(f"{path}: written by a newer draem-zoo (format {cfg['format_version']}); upgrade "
                            "draem-zoo to load it")
    if verify:
        check_config(cfg, path)
    return cfg


def load_model_dir(model_dir: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> DraemModel:
    """Rebuild a model from its directory; strict keys, checked config and weights hashes; eval mode."""
    model_dir = Path(model_dir)
    cfg = read_config(model_dir, verify=verify)
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        raise DraemZooError(f"{model_dir}: {WEIGHTS} is missing")
    if verify:
        check_weights(model_dir, cfg)
    mcfg = from_dict(ModelConfig, cfg["model"], f"{CONFIG}:model")
    # weights come from the file: never fetch or read pretrained encoder weights here
    mcfg = dataclasses.replace(mcfg, pretrained=False, pretrained_file=None, rec_pretrained_file=None)
    score = from_dict(ScoreConfig, cfg.get("score", {}), f"{CONFIG}:score")
    model = DraemModel(mcfg, score)
    try:
        state = load_file(str(weights))
    except Exception as exc:
        raise DraemZooError(f"{weights}: cannot read safetensors ({exc}); download it again") from None
    load_strict(model, state, str(weights))
    model.metadata = cfg  # type: ignore[attr-defined]
    return model.to(device).eval()


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} vs "
                         f"{tuple(own[wrong[0]].shape)})")
        raise DraemZooError(f"{where}: the weights do not fit the architecture in config.json: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def rehash(model_dir: str | Path, accept_changes: bool = False) -> dict[str, Any]:
    """Record the hashes of a model directory's files as they are now (``draem-zoo rehash``).

    What it trusts: the weights file as it is (after checking that its keys and shapes fit the
    architecture config.json describes) and every value in config.json (thresholds, s_f, metrics).
    It only fills in hashes that are missing; hashes that are recorded but no longer match (an edited
    file) are replaced only with ``accept_changes``, since that is exactly the edit loading refuses."""
    model_dir = Path(model_dir)
    cfg = read_config(model_dir, verify=False)
    load_model_dir(model_dir, verify=False)  # the weights fit the architecture: strict keys and shapes
    digest = sha256_file(model_dir / WEIGHTS)
    changed = []
    if cfg.get("weights_sha256") and cfg["weights_sha256"] != digest:
        changed.append(f"{WEIGHTS} (sha256 {digest[:12]}..., config.json records {str(cfg['weights_sha256'])[:12]}...)")
    if cfg.get(CONFIG_HASH) is not None and cfg[CONFIG_HASH] != config_digest(cfg):
        changed.append(f"{CONFIG} (edited after its {CONFIG_HASH} was recorded)")
    if changed and not accept_changes:
        raise DraemZooError(f"{model_dir}: {' and '.join(changed)}: rehash only records missing hashes; an edited "
                            "file is what loading refuses. If you made the change yourself and trust it, run "
                            f"`draem-zoo rehash {model_dir} --accept-changes`; otherwise restore the files")
    missing = [k for k in ("weights_sha256", CONFIG_HASH) if not cfg.get(k)]
    stamped = cfg
    if missing or changed:
        stamped = write_config(model_dir, {**cfg, "weights_sha256": digest})
    score = stamped.get("score") or {}
    return {"model_dir": str(model_dir), "recorded": bool(missing or changed), "missing_before": missing,
            "accepted_changes": changed, "weights_sha256": digest, "config_sha256": stamped[CONFIG_HASH],
            "trusted": {"weights": f"{WEIGHTS} as it is now (its keys and shapes fit config.json's architecture)",
                        "config": {k: score.get(k) for k in ("filter_size", "image_threshold", "pixel_threshold")}}}
