"""One category of any dataset: its checked file lists, and the same once decoded.

Every reader (:mod:`.mvtec`, :mod:`.visa`, :mod:`.mvtec_ad2`, :mod:`.dagm`) hands back a
:class:`CategoryFiles`: training normals, the held-out validation normals (a seeded share of the
training normals, or the dataset's own validation images where it has them), and the test images with
their labels, defect types and masks. A defect type labelled per image only (no masks) has ``None``
masks and is listed in ``unmasked``: image metrics are computed, pixel metrics are not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..config import DATASET_CHOICES
from ..errors import ConfigError

GOOD = "good"
MIN_VALIDATION_NORMALS = 1  # held out of the training normals; the split needs one more image to train on


@dataclass
class DataConfig:
    """Where the data is and how it is split.

    dataset: the layout of ``root`` (see :mod:`.datasets`): "auto" (detected from its files), "mvtec",
    "visa", "mvtec_ad2" or "dagm".
    val_fraction: share of the training normals held out for validation (never from the test split);
    MVTec AD 2 has its own validation/good instead (any val_fraction > 0 uses it; 0: no validation).
    split_seed: seed of that split.
    resize: "pil" (bilinear, antialiased when shrinking; masks nearest-neighbour) or "opencv" (the
    original DRAEM code's cv2.resize, and its masks resized bilinearly and truncated).
    """

    root: str | None = None
    category: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    resize: Literal["pil", "opencv"] = "pil"
    dataset: str = "auto"

    def validate(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={self.val_fraction}: must be in [0, 1)")
        if self.dataset not in DATASET_CHOICES:
            raise ConfigError(f"data.dataset={self.dataset!r}: choose one of {', '.join(DATASET_CHOICES)}")


@dataclass
class CategoryFiles:
    """The files of one category, checked, before any decoding.

    dataset: the layout they were read as; validation: where the validation normals come from (for the
    fingerprint); unmasked: defect types labelled per image only (their masks are None)."""

    root: Path
    category: str
    train: list[Path]
    val: list[Path]
    test: list[Path]
    test_labels: list[int]
    test_defects: list[str]
    test_masks: list[Path | None]
    dataset: str = "mvtec"
    validation: str = "held out of train/good"
    unmasked: list[str] = field(default_factory=list)

    def counts(self) -> dict:
        per_defect: dict[str, int] = {}
        for d in self.test_defects:
            per_defect[d] = per_defect.get(d, 0) + 1
        out = {"train": len(self.train), "val": len(self.val), "test": len(self.test), "test_per_defect": per_defect}
        if self.unmasked:
            out["image_labels_only"] = list(self.unmasked)
        return out

    @property
    def pixel_note(self) -> str | None:
        """Why pixel metrics are not available on the test split (None: they are)."""
        if not self.unmasked:
            return None
        return (f"pixel AUROC/AP/F1-max/AUPRO: not available: the anomalous test images of "
                f"{', '.join(self.unmasked)} are labelled per image only (no masks); image metrics only")

    def fingerprint(self) -> dict:
        """Dataset, category, file count, a hash of the sorted relative file list, where validation came from."""
        base = self.root / self.category
        rel = sorted(_relative(p, base, self.root) for p in [*self.train, *self.val, *self.test])
        digest = hashlib.sha256("\n".join(rel).encode()).hexdigest()
        out = {"dataset": self.dataset, "category": self.category, "files": len(rel), "file_list_sha256": digest,
               "validation": self.validation, "counts": self.counts()}
        if self.unmasked:
            out["pixel_labels"] = self.pixel_note
        return out


def _relative(p: Path, base: Path, root: Path) -> str:
    for start in (base, root):
        try:
            return str(p.relative_to(start))
        except ValueError:
            pass
    return str(p)  # a CSV may name files anywhere


@dataclass
class CategoryData:
    """Decoded, resized uint8 tensors of one category."""

    files: CategoryFiles
    image_size: int
    train: torch.Tensor  # (N, 3, S, S) uint8
    val: torch.Tensor  # (M, 3, S, S) uint8
    test: torch.Tensor  # (T, 3, S, S) uint8
    test_masks: torch.Tensor  # (T, 1, S, S) bool (all False where a defect type has no masks)
    test_labels: torch.Tensor  # (T,) int64
    test_defects: list[str] = field(default_factory=list)

    @property
    def pixel_masks(self) -> torch.Tensor | None:
        """The test masks, or None when some anomalous images have none (pixel metrics not available)."""
        return None if self.files.unmasked else self.test_masks


def hold_out(normals: list[Path], val_fraction: float, split_seed: int) -> tuple[list[Path], list[Path]]:
    """(train, val): a seeded ``val_fraction`` of ``normals`` held out (at least one, and one left to
    train on, where there are two or more)."""
    n_val = int(round(len(normals) * val_fraction))
    if val_fraction > 0 and len(normals) >= 2:
        n_val = max(1, min(n_val, len(normals) - 1))
    else:
        n_val = 0
    g = torch.Generator().manual_seed(split_seed)
    order = torch.randperm(len(normals), generator=g).tolist()
    val_idx = set(order[:n_val])
    return ([p for i, p in enumerate(normals) if i not in val_idx],
            [p for i, p in enumerate(normals) if i in val_idx])
