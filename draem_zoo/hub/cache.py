"""Whether a file in the Hub cache is still what the Hub served, by the cache's own record.

The Hub cache (``HF_HOME``/``HF_HUB_CACHE``) keeps each file once, as ``blobs/<etag>``, behind a link
``snapshots/<commit>/<name>``; the etag is the file's sha256 for LFS files (the weights) and its git
blob sha1 for the others (config.json, README.md). A blob whose content no longer hashes to its own
name was damaged after the Hub described it (on disk, or in transit: the client checks sizes, not
hashes), and a plain download again reuses it; only ``force_download`` replaces it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

SHA256 = re.compile(r"[0-9a-f]{64}")
GIT_SHA1 = re.compile(r"[0-9a-f]{40}")


def _digest(path: Path, algo: str, header: bytes = b"") -> str:
    h = hashlib.new(algo)
    h.update(header)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def blob_of(file: Path) -> Path | None:
    """The cache's blob behind a snapshot's file (one link followed: a blob may itself link into the shared
    store); None when ``file`` is no link (a cache without symlinks keeps plain copies)."""
    if not file.is_symlink():
        return None
    return Path(os.path.normpath(file.parent / os.readlink(file)))


def damaged_blobs(snapshot: Path, names: Iterable[str]) -> list[Path] | None:
    """The blobs behind ``snapshot/<name>`` whose content does not match the checksum they are named by
    (missing ones included); None when this cannot be told (no links, or a blob not named by a checksum)."""
    bad = []
    for name in names:
        file = snapshot / name
        if not file.exists() and not file.is_symlink():
            continue  # not part of this model
        blob = blob_of(file)
        if blob is None:
            return None
        etag = blob.name
        if not file.exists():
            bad.append(blob)
        elif SHA256.fullmatch(etag):
            if _digest(file, "sha256") != etag:
                bad.append(blob)
        elif GIT_SHA1.fullmatch(etag):
            if _digest(file, "sha1", b"blob %d\0" % file.stat().st_size) != etag:
                bad.append(blob)
        else:
            return None
    return bad
