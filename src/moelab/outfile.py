"""A file the user names for moelab to write (`fit --out`, `frontier --plot`): checked before any work, written
all or nothing.

`check_output_file` refuses in one line a path whose folder does not exist, a folder, anything that exists and is
not a regular file (a device such as /dev/null, a FIFO, a socket: an atomic rename would replace the node), an
unwritable place and a name the file system refuses (too long). `write_atomically` writes a temporary file in
the same folder, fsyncs it and renames it over the target, so readers never see half a file.
"""

from __future__ import annotations

import os
import stat
import tempfile
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


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """`data` into `path` all or nothing (temporary file in its folder, fsync, rename); an OS error is one line."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except OSError as e:
        raise MoelabError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp_name and os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
