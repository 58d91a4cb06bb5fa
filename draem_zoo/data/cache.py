"""Decode once per node: decoded image stacks cached on the local disk, keyed by the files' content.

Every search trial, final run and reproduction run needs the same decoded category (uint8 at the
training size) and the same anomaly source (DTD: 5,640 JPEGs). The first run on a node decodes
them (in parallel) and writes each stack as one safetensors file; later runs on that node load
it in a fraction of a second. The key is a sha256 over the files' bytes (in order), the size and
how they were decoded, so an edited image, another size or another resize rule is a new entry,
and identical data in two places shares one. A lock file makes concurrent runs on one node
decode once; a damaged entry is decoded again. Entries get the modes of ordinary files under the
user's umask (0644 under umask 022), so that others sharing a node-local cache can read them.

``DRAEM_ZOO_CACHE`` names the folder (default ``~/.cache/draem_zoo``; point it at a node-local
disk); ``DRAEM_ZOO_CACHE=off`` decodes every time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..files import ordinary_mode, temp_file, writing

CACHE_ENV = "DRAEM_ZOO_CACHE"
VERSION = 1  # bump when decoding changes what a file decodes to
_OFF = ("0", "off", "false", "no", "none")


def cache_root() -> Path | None:
    """The cache folder, or None when caching is off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in _OFF:
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "draem_zoo"


def file_digest(path: Path | None) -> str:
    if path is None:
        return "none"
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def content_key(paths: Sequence[Path | None], recipe: str, threads: int = 8) -> str:
    """sha256 over ``recipe`` (what is decoded how, at which size) and every file's bytes, in order."""
    h = hashlib.sha256(f"draem-zoo-cache/{VERSION}/{recipe}/{len(paths)}".encode())
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # hashlib releases the GIL
        for digest in pool.map(file_digest, paths):
            h.update(digest.encode())
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read(path: Path, count: int) -> torch.Tensor | None:
    try:
        t = load_file(str(path))["images"]
    except (OSError, SafetensorError, KeyError, ValueError):
        return None
    return t if len(t) == count else None


def cached_stack(paths: Sequence[Path | None], recipe: str, decode: Callable[[], torch.Tensor],
                 threads: int = 8) -> tuple[torch.Tensor, str]:
    """``decode()`` (a tensor with one row per path), from the cache when this node has it.

    Returns the tensor and where it came from: "cache", "decoded" (and stored) or "uncached"."""
    root = cache_root()
    if root is None or not paths:
        return decode(), "uncached"
    key = content_key(paths, recipe, threads)
    entry = root / f"{key[:40]}.safetensors"
    hit = _read(entry, len(paths)) if entry.is_file() else None
    if hit is not None:
        return hit, "cache"
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = _locked(root / f"{key[:40]}.lock")
        lock.__enter__()
    except OSError:  # a read-only or full cache folder: decode without it
        return decode(), "uncached"
    try:
        hit = _read(entry, len(paths)) if entry.is_file() else None  # another run decoded it meanwhile
        if hit is not None:
            return hit, "cache"
        images = decode()
        tmp = None
        try:
            tmp = temp_file(root, f".{entry.name}.")  # the user's umask (0644 under 022), not mkstemp's 0600
            with writing(tmp):  # safetensors' full-disk error becomes the OSError caught below
                save_file({"images": images.contiguous()}, str(tmp), metadata={"recipe": recipe, "count": str(len(paths))})
            ordinary_mode(tmp)  # safetensors writes a new file (0600) in its place
            os.replace(tmp, entry)
        except OSError:  # a full disk: the run goes on without the cache
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return images, "uncached"
        return images, "decoded"
    finally:
        lock.__exit__(None, None, None)
