"""Safety of a run directory: one writer at a time, leftovers of a killed writer cleared.

The lock is an ``fcntl.flock`` on ``.hiso.lock`` inside the run directory, held for the life of
the run. The kernel drops it when the process dies (also on SIGKILL), so a killed run never
leaves a stale lock behind; the file itself stays and holds the last holder's pid, which is what
a refused second process reports.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .errors import UserError

LOCK = ".hiso.lock"


def is_bookkeeping(name: str) -> bool:
    """Files a run directory may hold besides its results: the lock and temporary files."""
    return name == LOCK or (name.startswith(".") and name.endswith(".tmp"))


class RunLock:
    """Exclusive, non-blocking lock on a run directory (which must exist)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        path = self.out / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UserError(f"{path}: cannot create the run lock ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"pid {holder}" if holder else "another process"
                raise UserError(f"{self.out}: in use by another hiso run ({who}); wait for it to "
                                f"finish or use another --out") from None
            raise UserError(f"{path}: cannot lock ({exc.strerror})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return raw if raw.isdigit() else ""


def remove_stale_tmp(out: Path) -> list[str]:
    """Delete ``.*.tmp`` files left by an atomic write that was interrupted (call under the
    lock: no other writer can own them then). Returns the names removed."""
    removed = []
    for p in Path(out).iterdir():
        if p.name != LOCK and is_bookkeeping(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return sorted(removed)
