"""Masks of anomalous test images: found beside their image's name, checked against its size.

Shared by the readers: a mask is ``NAME_mask.png`` (MVTec AD's name) or ``NAME_mask`` / ``NAME`` with a
lossless suffix (where a list names it, as VisA's CSV and DAGM's Labels.txt do, that file), and must have
its image's displayed size."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .images import IMAGE_SUFFIXES, MASK_SUFFIXES, ImageHeader, check_mask_format, image_header


def find_mask(folder: Path, img: Path) -> Path:
    """The mask of anomalous test image ``img`` in ``folder`` (``ground_truth/<defect>``): ``NAME_mask.png``
    (MVTec AD's name), else ``NAME_mask`` or ``NAME`` with a lossless suffix (.png, .bmp, .tif, .tiff;
    as some datasets name them). A mask found only in a lossy format (JPEG, WebP) is a DataError naming
    it; none at all, one naming the expected file."""
    expected = folder / f"{img.stem}_mask.png"
    if expected.is_file():
        return expected
    found = [p for p in (sorted(folder.glob(f"{img.stem}_mask.*")) + sorted(folder.glob(f"{img.stem}.*")))
             if p.is_file()] if folder.is_dir() else []
    for p in found:
        if p.suffix.lower() in MASK_SUFFIXES:
            return p
    for p in found:
        if p.suffix.lower() in IMAGE_SUFFIXES:
            check_mask_format(p)  # raises: a lossy mask
    raise DataError(f"{img}: no mask for this anomalous test image; expected {expected} (or NAME_mask / NAME with "
                    f"{', '.join(MASK_SUFFIXES)}; pixels at half their range or more = anomalous; an all-black mask if "
                    "the defect is not localised)")


def check_mask_size(img: Path, mask: Path) -> None:
    """The mask must have its image's displayed size (both with their EXIF orientation applied, as
    they are decoded); a mask in the stored orientation of an EXIF-rotated image is named as such."""
    ih, mh = image_header(img), image_header(mask)
    if ih.displayed == mh.displayed:
        return
    (dh, dw), (mdh, mdw) = ih.displayed, mh.displayed
    if ih.swapped and (mdh, mdw) == (ih.height, ih.width):
        raise DataError(
            f"{mask}: mask is {mdw}x{mdh}, the stored size of its image {img}, but that image has EXIF orientation "
            f"{ih.orientation} ({ih.turn()}): it is read, as any viewer shows it, at {dw}x{dh}, and this mask would not "
            f"line up with it; save the mask in the image's displayed orientation ({dw}x{dh}), or strip the image's "
            "EXIF orientation tag (keeping its stored pixels) so that both are read as stored")
    raise DataError(f"{mask}: mask is {mdw}x{mdh}{_exif_note(mh)} but its image {img} is {dw}x{dh}{_exif_note(ih)}; "
                    "masks must have their image's size")


def _exif_note(h: ImageHeader) -> str:
    return f" (stored {h.width}x{h.height}, EXIF orientation {h.orientation}: {h.turn()})" if h.swapped else ""
