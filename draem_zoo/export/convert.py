"""Conversion of the authors' released checkpoints into a model directory.

The official files are torch pickles of two state dicts (``<name>.pckl`` for the
reconstructive network, ``<name>_seg.pckl`` for the discriminative one) with the
original module names, trained on BGR images in [0, 1] (they were read with
``cv2.imread``). They are read with ``torch.load(weights_only=True)``, which refuses
anything but tensors and plain containers; the base widths are read off the first
conv's shape; the converted model records ``channel_order: "BGR"`` so that
``predict`` (which takes RGB) feeds them correctly.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import DraemZooError
from ..model.draem import DraemModel
from ..model.modeldir import load_strict, save_model_dir
from ..model.variants import ModelConfig

_ENCODER = re.compile(r"encoder(?:_segment)?\.block(\d)\.(.+)")
_DECODER = re.compile(r"decoder(?:_segment)?\.(up|db)(\d|_b)\.(.+)")
_HEAD = re.compile(r"decoder(?:_segment)?\.fin_out\.0\.(.+)")


def official_key(key: str, discriminative: bool) -> str:
    """This project's name for one key of an official state dict."""
    m = _ENCODER.fullmatch(key)
    if m:
        return f"encoder.stages.{int(m[1]) - 1}.{m[2]}"
    m = _DECODER.fullmatch(key)
    if m:
        # discriminative decoder: up_b/db_b first, then up1..up4; reconstructive: up1..up4
        step = 0 if m[2] == "_b" else int(m[2]) - (0 if discriminative else 1)
        return f"decoder.{'ups' if m[1] == 'up' else 'blocks'}.{step}.{m[3]}"
    m = _HEAD.fullmatch(key)
    if m:
        return f"decoder.head.{m[1]}"
    raise KeyError(key)


def convert_state_dicts(rec: dict[str, torch.Tensor], seg: dict[str, torch.Tensor], image_size: int = 256,
                        channel_order: str = "BGR", names: tuple[str, str] = ("REC", "SEG")) -> DraemModel:
    """A paper model holding the official weights (keys renamed, widths detected)."""
    try:
        rec_width = int(rec["encoder.block1.0.weight"].shape[0])
        disc_width = int(seg["encoder_segment.block1.0.weight"].shape[0])
    except KeyError:
        raise DraemZooError(
            f"{names[0]} / {names[1]}: not DRAEM checkpoints (expected keys encoder.block1.0.weight and "
            "encoder_segment.block1.0.weight); pass the reconstructive file first, then the _seg file"
        ) from None
    variant = {(128, 64): "paper", (64, 32): "paper-small"}.get((rec_width, disc_width), "paper")
    cfg = ModelConfig(variant=variant, rec_width=rec_width, disc_width=disc_width, image_size=image_size,
                      channel_order=channel_order)  # type: ignore[arg-type]
    model = DraemModel(cfg)
    state = {}
    for prefix, sd, disc, name in (("reconstructive", rec, False, names[0]), ("discriminative", seg, True, names[1])):
        for key, value in sd.items():
            try:
                state[f"{prefix}.{official_key(key, disc)}"] = value
            except KeyError:
                raise DraemZooError(f"{name}: unexpected key {key!r} for a DRAEM checkpoint") from None
    load_strict(model, state, f"{names[0]} + {names[1]}")
    return model.eval()


def read_official(path: str | Path) -> dict[str, torch.Tensor]:
    """One official checkpoint file, read without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise DraemZooError(f"{path}: no such file")
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DraemZooError(f"{path}: cannot read it as a weights-only torch file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DraemZooError(f"{path}: does not hold a state dict of tensors")
    return sd


def convert_official(rec_path: str | Path, seg_path: str | Path, out_dir: str | Path,
                     image_size: int = 256) -> Path:
    """``draem-zoo convert-official``: official .pckl pair -> model directory."""
    model = convert_state_dicts(read_official(rec_path), read_official(seg_path), image_size,
                                names=(str(rec_path), str(seg_path)))
    source = {"kind": "converted-official", "files": [Path(rec_path).name, Path(seg_path).name],
              "note": "authors' release (VitjanZ/DRAEM), trained on BGR images in [0, 1]"}
    return save_model_dir(model, out_dir, {"source": source})
