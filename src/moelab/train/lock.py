"""One writer per run folder: an exclusive `flock` on DIR/.lock, held for the whole run, holder's PID inside.

The kernel releases a flock when its process dies, however it dies, so a run killed with SIGKILL never
blocks the `--resume` that follows it; whether a folder is in use is always asked of the flock, and the PID
a run leaves in the file is only read to name the holder in a message (a clean end empties the file).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from moelab.errors import MoelabError

NAME = ".lock"


def holder_pid(folder: Path) -> int | None:
    """The PID written in folder/.lock (by its current or its last holder), if readable."""
    try:
        text = (folder / NAME).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def is_locked(folder: Path) -> bool:
    """Whether some process holds folder/.lock: the same truth `run_lock` uses, tested with a shared,
    non-blocking flock on the file opened read-only (never created, never written); the PID inside only
    names the holder in messages (a PID left by a killed run may since belong to another process)."""
    try:
        fd = os.open(folder / NAME, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False  # no lock file (or none this process can read): no holder to wait for
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also releases the shared lock taken just now
    return False


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold folder/.lock exclusively, or raise MoelabError naming the process that holds it."""
    try:
        fd = os.open(folder / NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise MoelabError(f"cannot write to {folder}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = holder_pid(folder)
            raise MoelabError(f"{folder} is in use by another moelab run (pid {pid if pid else 'unknown'}); "
                              "wait for it to end or choose another --out") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as e:
            raise MoelabError(f"cannot write to {folder}: {e.strerror or e}") from None
        try:
            yield
        finally:
            try:
                os.ftruncate(fd, 0)  # a clean end leaves no PID behind (a killed holder's PID stays, harmless)
            except OSError:
                pass
    finally:
        os.close(fd)  # closing the descriptor releases the flock
