"""Where derived data (tokenizers, token tensors) is cached, and how a cache file is written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moelab.errors import MoelabError


def home_dir() -> Path:
    """$MOELAB_HOME, else ~/.cache/moelab: every cache moelab keeps (the runs store, this machine's
    calibrations, and tokenizers and token tensors unless $MOELAB_CACHE moves those)."""
    env = os.environ.get("MOELAB_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "moelab"


def default_cache_dir() -> Path:
    """Where tokenizers and token tensors are cached: $MOELAB_CACHE if set, else home_dir()."""
    env = os.environ.get("MOELAB_CACHE")
    return Path(env).expanduser() if env else home_dir()


PROBE_PREFIX = ".moelab-write-probe-"


def check_writable_dir(path: str | Path, what: str) -> Path:
    """`path` as a folder this process can write into, created if missing; checked before long work starts,
    so that a read-only or misnamed folder is one line (MoelabError) and not a failure after minutes of work.
    Pass the user's text as it is: an empty (or blank) name is refused, where Path("") would mean "here"."""
    if not str(path).strip():
        raise MoelabError(f"{what} must name a folder")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MoelabError(f"{what} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise MoelabError(f"{what} {path}: cannot write there ({e.strerror or e})") from None
    return path


def check_writable_file(path: Path, what: str) -> Path:
    """`path` as a file this process can (over)write, its folder created if missing; checked before work."""
    path = Path(path)
    if path.is_dir():
        raise MoelabError(f"{what} {path}: is a folder, not a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise MoelabError(f"{what} {path}: the file is read-only")
    check_writable_dir(path.parent, what)
    return path


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """`cache_dir` (default: default_cache_dir()), created if missing."""
    path = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write UTF-8 text to `path`."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    """Atomically write `obj` as indented strict JSON to `path` (NaN and infinities as null: moelab.jsonout),
    so that every file moelab writes reads back through moelab.userfile's strict parser."""
    from moelab.jsonout import dumps

    atomic_write_text(path, dumps(obj))
    return path
