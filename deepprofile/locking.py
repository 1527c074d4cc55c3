"""Advisory file locks for run folders and stores, with the owner's pid inside.

A lock is a file (``.lock`` beside what it protects) held with ``fcntl.flock``.
The kernel drops the lock when its owner dies, so a lock left by a killed
process is *stale*: the file still names the dead pid but the next caller
acquires it at once. A lock held by a live process makes a non-blocking caller
fail with :class:`~deepprofile.errors.RunLockedError` naming that pid, and a
blocking caller wait (up to ``timeout`` seconds). A thread that already holds a
lock may take it again (nested ``with``), other threads and processes may not.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deepprofile.errors import RunLockedError

_held: dict[tuple[str, int], int] = {}  # (lock path, thread id) -> nesting depth


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_owner(path: str | Path) -> int | None:
    """The pid written in the lock file at ``path`` (``None`` when absent or unreadable)."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def file_lock(path: str | Path, *, what: str, blocking: bool = False,
              timeout: float = 60.0) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` for the ``with`` block.

    ``what`` names the protected thing in the error message. Non-blocking callers
    fail at once when a live process holds the lock; blocking callers poll until
    ``timeout``.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = (str(path.resolve()), threading.get_ident())
    if key in _held:  # re-entered by the holder
        _held[key] += 1
        try:
            yield path
        finally:
            _held[key] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not blocking or time.monotonic() > deadline:
                    owner = lock_owner(path)
                    raise RunLockedError(
                        f"{what} is in use by another deepprofile process"
                        + (f" (pid {owner})" if owner else "")
                        + f"; wait for it to finish (lock file {path})."
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = 1
        try:
            yield path
        finally:
            del _held[key]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
