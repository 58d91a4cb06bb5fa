"""The one place where the CLI turns errors into one line: what went wrong, where, and what to do.

Errors of the package (:class:`DraemZooError`) already say all that. The rest come from the
operating system (a full disk, a read-only folder, a file where a folder belongs), PIL, safetensors,
CUDA and the network; :func:`explain` words them, naming the path, flag or host. Anything it does
not recognise is a bug and keeps its traceback. ``--debug`` (or ``DRAEM_ZOO_DEBUG=1``) shows the
traceback of every error.
"""

from __future__ import annotations

import errno
import os
from urllib.parse import urlparse

from ..errors import DraemZooError
from ..files import free_space, os_errno_in


def debug_enabled(flag: bool = False) -> bool:
    return flag or os.environ.get("DRAEM_ZOO_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def _where(exc: OSError) -> str:
    names = [str(n) for n in (exc.filename, exc.filename2) if n]
    return " -> ".join(names) if names else "a file"


def _space(exc: OSError) -> str:
    """" (12 KiB free of 2.0 MiB on the file system of /mnt/x)", from the nearest existing folder."""
    if not exc.filename:
        return ""
    found = free_space(str(exc.filename))
    if found is None:
        return ""
    here, free, total = found
    return f" ({_size(free)} free of {_size(total)} on the file system of {here})"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _free_hint(exc: OSError) -> str:
    """What to free for the path that failed."""
    name = str(exc.filename or "")
    if name.startswith("/dev/shm"):
        return ("the shared memory (/dev/shm) the synthesis workers use is full: give the container more "
                "(docker --shm-size), or set --set train.synthesis_workers=0")
    if "/checkpoints/" in name:
        return ("free space there (old model folders and their checkpoints/ are the big files; a checkpoint is "
                "about three times the weights), or choose another --out")
    return "free space there, or choose another --out"


def _again(command: str) -> str:
    return ("run the same command again with --resume (it continues from the last checkpoint)"
            if command in ("train", "search") else "run the command again"
            if command != "reproduce" else "run the same command again (it keeps finished runs)")


def _network(exc: BaseException) -> str | None:
    """A connection failure (requests / urllib3 / a socket), worded with the host it tried."""
    module, name = type(exc).__module__ or "", type(exc).__name__
    transport = module.startswith(("requests", "urllib3", "httpx")) and any(
        w in name for w in ("Connect", "Timeout", "Network", "Proxy", "SSL", "Protocol"))
    if not (transport or isinstance(exc, (ConnectionError, TimeoutError))):
        return None
    url = getattr(getattr(exc, "request", None), "url", None)
    host = urlparse(url).netloc if url else os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return (f"cannot reach {host} ({type(exc).__name__}): check the network or proxy (HF_ENDPOINT sets the Hub's "
            "address); for models already downloaded, set HF_HUB_OFFLINE=1")


def explain(exc: BaseException, command: str) -> str | None:
    """One line for ``exc``, or None when it is not an error a user can act on (a bug)."""
    if isinstance(exc, DraemZooError):
        return str(exc)
    net = _network(exc)
    if net is not None:
        return net
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = UnidentifiedImageError = None
    if Image is not None and isinstance(exc, Image.DecompressionBombError):
        return (f"an image is too large to decode safely ({exc}); resize it, or raise the limit with "
                "DRAEM_ZOO_MAX_PIXELS if it is genuine")
    if UnidentifiedImageError is not None and isinstance(exc, UnidentifiedImageError):
        return f"{exc}: not an image PIL can read; re-export it as PNG or remove it"
    storage = os_errno_in(exc)
    if storage is not None and not isinstance(exc, OSError):  # safetensors / torch carry it in their text
        shm = "/dev/shm" if "torch_" in str(exc) or "shared memory" in str(exc).lower() else None
        exc = OSError(storage, os.strerror(storage), shm)
    if type(exc).__name__ == "SafetensorError":
        return f"a weights or checkpoint file is damaged or not safetensors ({exc}); re-download or re-create it"
    if isinstance(exc, OSError):
        where, code = _where(exc), exc.errno
        if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1), errno.EFBIG):
            what = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "a file grew past the file system's "
                    "size limit"}.get(code, "disk quota exceeded")
            return f"{where}: {what}{_space(exc)}; {_free_hint(exc)}, then {_again(command)}"
        if code == errno.EROFS:
            return f"{where}: the file system is read-only; choose a writable --out"
        if code in (errno.EACCES, errno.EPERM):
            return f"{where}: permission denied; choose a folder you can write (--out) or fix its permissions"
        if code in (errno.EEXIST, errno.ENOTDIR):
            return f"{where}: a file is in the way where a folder is needed (is --out an existing file?); choose another path"
        if code == errno.EISDIR:
            return f"{where}: is a folder where a file is needed; give a file path"
        if code == errno.ENOENT:
            return f"{where}: no such file or folder"
        if code == errno.ELOOP:
            return f"{where}: a symbolic link loop; remove or fix the link"
        return f"{where}: {exc.strerror or exc}"
    text = str(exc)
    if isinstance(exc, RuntimeError) and "out of memory" in text:
        return "the GPU ran out of memory; lower --batch-size (or eval.batch_size with --set), or use a smaller --variant"
    if isinstance(exc, (RuntimeError, AssertionError)) and ("CUDA" in text or "NVIDIA" in text):
        return (f"CUDA failed ({text.splitlines()[0] if text else type(exc).__name__}); check that a GPU is visible "
                "(nvidia-smi) or run with --device cpu")
    return None


__all__ = ["DraemZooError", "debug_enabled", "explain"]
