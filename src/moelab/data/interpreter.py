"""Real text that ships with the running Python: standard-library sources ("code") and pydoc topics ("prose")."""

from __future__ import annotations

import os
import random
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from moelab.data.document import Document

SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})


def stdlib_dir() -> Path:
    """Folder of the standard library's .py sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def _spread(rels: list[str]) -> list[str]:
    """A fixed shuffle of the sorted paths, so that a size cap samples the whole library rather than its
    alphabetical beginning (the same order on every run of the same Python)."""
    ordered = sorted(rels)
    random.Random(0).shuffle(ordered)
    return ordered


def stdlib_sources(root: Path | None = None) -> Iterator[Document]:
    """One "code" document per standard-library .py file, in a fixed shuffled order; undecodable files skipped."""
    root = stdlib_dir() if root is None else root
    rels = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]  # prune: never walk site-packages
        base = Path(folder).relative_to(root)
        rels.extend((base / f).as_posix() for f in files if f.endswith(".py"))
    for rel in _spread(rels):
        try:
            text = (root / rel).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        yield Document("code", rel, text)


def pydoc_topics() -> Iterator[Document]:
    """One "prose" document per topic of the interpreter's reference documentation, sorted by key."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield Document("prose", key, topics[key])
