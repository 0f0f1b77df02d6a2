"""Where derived data (tokenizers, token tensors) is cached, and how a cache file is written atomically
(moelab.outfile.atomic_write)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from moelab.errors import MoelabError
from moelab.outfile import atomic_write


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
    if path.exists() and not path.is_file():  # a device or FIFO: the atomic rename would replace the node
        raise MoelabError(f"{what} {path}: exists and is not a regular file (a device, FIFO or socket)")
    if path.exists() and not os.access(path, os.W_OK):
        raise MoelabError(f"{what} {path}: the file is read-only")
    check_writable_dir(path.parent, what)
    return path


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """`cache_dir` (default: default_cache_dir()), created if missing."""
    path = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write UTF-8 text to `path`."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    """Atomically write `obj` as indented strict JSON to `path` (NaN and infinities as null: moelab.jsonout),
    so that every file moelab writes reads back through moelab.userfile's strict parser."""
    from moelab.jsonout import dumps

    atomic_write_text(path, dumps(obj))
    return path
