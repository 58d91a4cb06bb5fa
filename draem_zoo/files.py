"""Writing files so that a crash leaves the old or the new version, never half of one, with the
user's permissions.

* :func:`temp_dir` / :func:`temp_file`: a temporary folder or file beside the destination (same file
  system, so a rename moves it into place), with the modes an ordinary ``open`` or ``mkdir`` would
  give under the user's umask (``tempfile`` makes them private: 0700 / 0600).
* :func:`fsync_tree`: flush a file or a folder's files and the folder itself to disk before it is
  renamed into place, so that after a power cut the rename never points at unwritten data.
* :func:`atomic_write_text`: the two together for one small file; :func:`swap_in` for a folder.
* :class:`OutputLock`: one writer per output folder (a lock file with the holder's pid and host;
  a stale lock of a dead process on this host is taken over with a warning).
* :func:`writing`: ``with writing(path):`` turns what a full disk, a quota or a read-only file system
  raises inside it (an ``OSError`` without a file name, safetensors' ``SafetensorError``, torch's
  ``RuntimeError``, each carrying the OS error in its text) into an ``OSError`` with its errno and
  ``path``, so the CLI can say which path and what to do (:func:`os_errno_in`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from .errors import DraemZooError, OutputLocked

# the OS errors a write meets on a full, over-quota or read-only file system
STORAGE_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", 122), errno.EROFS, errno.EFBIG)
_OS_ERROR_TEXT = re.compile(r"os error (\d+)|\((\d+)\)\s*$|errno[ =:]+(\d+)", re.IGNORECASE)


def os_errno_in(exc: BaseException) -> int | None:
    """The errno of a storage failure (:data:`STORAGE_ERRNOS`) that ``exc`` carries: its own errno
    (``OSError``), or the one in its text (safetensors: "... Os { code: 28, ... } ... (os error 28)";
    torch: "unable to write to file </torch_...>: No space left on device (28)"); None otherwise."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno if exc.errno in STORAGE_ERRNOS else None
    text = str(exc)
    for m in _OS_ERROR_TEXT.finditer(text):
        code = int(next(g for g in m.groups() if g))
        if code in STORAGE_ERRNOS:
            return code
    for code in STORAGE_ERRNOS:
        if os.strerror(code) in text:
            return code
    return None


@contextlib.contextmanager
def writing(path: str | Path):
    """``with writing(path):``: a storage failure inside (see :func:`os_errno_in`) is re-raised as
    ``OSError(errno, strerror, path)``; other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and os_errno_in(exc) is not None:
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
        raise
    except Exception as exc:
        code = os_errno_in(exc)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from exc


def free_space(path: str | Path) -> tuple[Path, int, int] | None:
    """(the nearest existing folder at or above ``path``, its file system's free and total bytes)."""
    here = Path(path).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        here = here.parent
    try:
        usage = shutil.disk_usage(here)
    except OSError:
        return None
    return here, usage.free, usage.total


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ordinary_mode(path: str | Path) -> None:
    """The mode ``open``/``mkdir`` would have given ``path`` under the user's umask."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask())


def temp_dir(parent: str | Path, prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    ordinary_mode(path)
    return path


def temp_file(parent: str | Path, prefix: str, suffix: str = ".tmp") -> Path:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
    os.close(fd)
    ordinary_mode(name)
    return Path(name)


def _fsync(path: Path, directory: bool) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. a file system that cannot open folders: nothing to flush there
        return
    try:
        with contextlib.suppress(OSError):  # some file systems (and /dev/shm) do not sync folders
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """fsync a file, or every file directly in a folder and the folder itself."""
    path = Path(path)
    if path.is_dir():
        for child in path.iterdir():
            if child.is_file():
                _fsync(child, False)
        _fsync(path, True)
    else:
        _fsync(path, False)


def fsync_parent(path: str | Path) -> None:
    """Make a rename inside ``path``'s folder durable."""
    _fsync(Path(path).parent, True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    tmp = temp_file(path.parent, f".{path.name}.")
    try:
        with writing(tmp):
            tmp.write_text(text)
        fsync_tree(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_parent(path)
    return path


def backup_of(path: str | Path) -> Path:
    """Where :func:`swap_in` keeps the previous version between its two renames (``.NAME.old``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


def swap_in(new: str | Path, dest: str | Path) -> Path:
    """Move the complete folder ``new`` to ``dest``, replacing what was there, so that a crash at any
    point leaves ``dest`` or its backup (:func:`backup_of`) complete: ``new`` is flushed first; the old
    ``dest`` becomes the backup; ``new`` becomes ``dest``; the backup goes. An existing backup (left by
    a crash between the renames) is the one good copy while ``dest`` is missing, so it is kept until
    the new ``dest`` is in place."""
    new, dest = Path(new), Path(dest)
    old = backup_of(dest)
    fsync_tree(new)
    if dest.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(dest, old)
    os.replace(new, dest)
    fsync_parent(dest)
    if old.exists():
        shutil.rmtree(old)
    return dest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class OutputLock:
    """``with OutputLock(folder, what):`` one process at a time writes into ``folder``.

    The lock is ``folder/.draem-zoo.lock`` holding the holder's pid, host and command. A second
    process gets a :class:`DraemZooError` naming the holder. A lock left by a process of this
    host that is no longer alive (a SIGKILL, a power cut) is taken over with a warning; one from
    another host cannot be checked and is refused, with the command that removes it.
    """

    NAME = ".draem-zoo.lock"

    def __init__(self, folder: str | Path, what: str = "this run"):
        self.folder = Path(folder)
        self.path = self.folder / self.NAME
        self.what = what
        self.held = False
        self.created = False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
              "command": " ".join(sys.argv[:4])}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # being written right now, or garbage: look again
                    time.sleep(0.2)
                    holder = self._holder()
                    if holder is None:
                        self.path.unlink(missing_ok=True)
                        continue
                if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1))):
                    print(f"warning: {self.path}: taking over the lock of process {holder.get('pid')}, which is "
                          "no longer running (it was killed or crashed)", file=sys.stderr)
                    self.path.unlink(missing_ok=True)
                    continue
                where = "" if holder.get("host") == me["host"] else f" on {holder.get('host')}"
                raise OutputLocked(
                    f"{self.folder}: {self.what} is already being written by process {holder.get('pid')}{where} "
                    f"({holder.get('command', '?')}); wait for it, or choose another output folder. If that process "
                    f"is gone, remove {self.path}") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise DraemZooError(f"{self.path}: could not take the lock; remove the file and try again")

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder is None or holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
            if self.created:  # a run that failed before writing anything leaves no empty folder behind
                with contextlib.suppress(OSError):
                    self.folder.rmdir()

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
