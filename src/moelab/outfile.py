"""A file the user names for moelab to write (`fit --out`, `frontier --plot`): checked before any work, written
all or nothing.

`check_output_file` refuses in one line a path whose folder does not exist, a folder, anything that exists and is
not a regular file (a device such as /dev/null, a FIFO, a socket: an atomic rename would replace the node), an
unwritable place and a name the file system refuses (too long). `atomic_write` (every file moelab writes goes
through it, moelab.data.cache's caches and checkpoints too) writes a temporary file in the same folder, fsyncs it
and renames it over the target, so readers never see half a file; `write_atomically` is it for bytes or text.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from moelab.errors import MoelabError


def check_output_file(path: str | Path, option: str) -> Path:
    """`path` as a place moelab may write one regular file, or one MoelabError line naming `option`."""
    target = Path(path)
    try:
        if not target.parent.is_dir():
            raise MoelabError(f"{option} {path}: the folder {target.parent} does not exist")
        try:
            mode = os.lstat(target).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and stat.S_ISDIR(mode):
            raise MoelabError(f"{option} {path}: is a folder, not a file")
        if mode is not None and not stat.S_ISREG(mode):
            raise MoelabError(f"{option} {path}: exists and is not a regular file (a device, FIFO, socket or "
                              "link); name a new file or a regular one")
        if (mode is not None and not os.access(target, os.W_OK)) or not os.access(target.parent, os.W_OK):
            raise MoelabError(f"{option} {path}: cannot write there")
        if len(target.name.encode()) > os.pathconf(target.parent, "PC_NAME_MAX"):
            raise MoelabError(f"{option}: the file name is longer than the file system allows")
    except OSError as e:
        raise MoelabError(f"{option} {path}: {e.strerror or e}") from None
    return target


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# This process's umask, read once at import (os.umask can only be read by setting it): the mode a plain open()
# gives a new file, which atomic_write gives its files too (mkstemp makes them 0600).
FILE_MODE = 0o666 & ~_read_umask()


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable; best-effort (some platforms cannot open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """write(temp_path) in the same folder, fsync, os.replace onto `path`, fsync the folder: readers see all
    or nothing, and the file has the permissions a plain open() would give it (0666 less the umask)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """`data` into `path` all or nothing (atomic_write); an OS error is one line."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        atomic_write(Path(path), lambda tmp: tmp.write_bytes(payload))
    except OSError as e:
        raise MoelabError(f"cannot write {path}: {e.strerror or e}") from None
