"""The two ways ``draem-zoo reproduce`` trains and evaluates a category.

* ``paper``: the paper's protocol as the original code runs it: all of ``train/good`` for training
  (no validation split), the last weights, s_f = 21, and the original preprocessing (OpenCV's
  bilinear resize of images; masks resized bilinearly and truncated, :mod:`draem_zoo.data.opencv_resize`).
* ``zoo``: this project's: 90% of ``train/good`` for training, the checkpoint and s_f chosen on the
  synthetic validation set made from the other 10%, thresholds from it, PIL's antialiased resize.

Each is a set of config overrides; the report says which protocol each row ran and how it
differs from the paper.
"""

from __future__ import annotations

from ..errors import DraemZooError

PROTOCOLS = ("zoo", "paper")
OVERRIDES = {
    "paper": ["data.val_fraction=0", "train.export=last", "data.resize=opencv"],
    "zoo": [],
}
DIFFERENCES = {
    "paper": ["trained on all of train/good", "the last weights", "s_f = 21 (no validation set, no thresholds)",
              "images resized as OpenCV's cv2.resize (bilinear), masks resized and truncated as the original"],
    "zoo": ["trained on train/good less a held-out share for validation (data.val_fraction, 10% by default)",
            "the checkpoint (of the validations, 5 by default) and s_f (of eval.filter_sizes) chosen on the "
            "synthetic validation set, s_f "
            "leaving 21 only beyond the validation noise", "thresholds from the validation set",
            "images resized with PIL's antialiased bilinear filter, masks nearest-neighbour"],
}


def check(protocol: str) -> tuple[str, ...]:
    if protocol == "both":
        return PROTOCOLS
    if protocol not in PROTOCOLS:
        raise DraemZooError(f"--protocol {protocol!r}: choose zoo (validation-selected models, the default), paper "
                            "(the paper's protocol as the original code runs it) or both")
    return (protocol,)


def run_dir_name(protocol: str, seed: int) -> str:
    """``seed<k>`` for the zoo protocol (as before), ``paper-seed<k>`` for the paper's."""
    return f"seed{seed}" if protocol == "zoo" else f"{protocol}-seed{seed}"


def protocol_of(dir_name: str) -> str:
    return dir_name.split("-seed")[0] if "-seed" in dir_name else "zoo"
