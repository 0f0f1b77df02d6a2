"""Where derived data (tokenizers, token tensors) is cached, and how a cache file is written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def home_dir() -> Path:
    """$MOELAB_HOME, else ~/.cache/moelab: the runs store and this machine's calibrations."""
    return Path(os.environ.get("MOELAB_HOME", Path.home() / ".cache" / "moelab"))


def default_cache_dir() -> Path:
    """$MOELAB_CACHE, else ~/.cache/moelab."""
    env = os.environ.get("MOELAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "moelab"


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """`cache_dir` (default: default_cache_dir()), created if missing."""
    path = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """write(temp_path) in the same folder, fsync, then os.replace onto `path`: readers see all or nothing."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write UTF-8 text to `path`."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    """Atomically write `obj` as indented JSON to `path`."""
    atomic_write_text(path, json.dumps(obj, indent=2))
    return path
