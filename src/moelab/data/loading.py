"""Read a user corpus from disk: a folder of domain subfolders, a .txt file, a .jsonl file, or a folder of those.

Every file is read through moelab.userfile: regular files only (a FIFO or device given as the corpus, or as a
.txt/.jsonl in it, is refused; inside a domain folder only regular files are read), at most
MAX_CORPUS_FILE_BYTES each. A .txt or .jsonl file must be UTF-8; a domain folder's binary or non-UTF-8 files
are skipped. Each .jsonl line is strict JSON (no NaN, duplicate keys or unbounded nesting).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from moelab.data.document import Document
from moelab.errors import MoelabError
from moelab.userfile import parse_json, read_user_bytes

MIN_BLOCK_CHARS = 2048  # a .txt file is cut at blank lines into documents of at least this many characters
# Per file: corpora can be large, but one file beyond this is more than moelab's CPU-scale training reads
# (it keeps a few MB per domain) and would be held in memory whole.
MAX_CORPUS_FILE_BYTES = 256 * 2**20


def _read_text(path: Path) -> str | None:
    """UTF-8 text of a file, or None for a binary or undecodable one."""
    raw = read_user_bytes(path, "corpus file", MAX_CORPUS_FILE_BYTES)
    if b"\0" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def text_blocks(text: str, min_chars: int = MIN_BLOCK_CHARS) -> list[str]:
    """Blank-line-separated paragraphs joined greedily into blocks of >= `min_chars` (a short tail joins the last)."""
    paragraphs = [p.strip("\n") for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    blocks: list[str] = []
    current: list[str] = []
    size = 0
    for paragraph in paragraphs:
        current.append(paragraph)
        size += len(paragraph) + 2
        if size >= min_chars:
            blocks.append("\n\n".join(current) + "\n")
            current, size = [], 0
    if current:
        tail = "\n\n".join(current) + "\n"
        if blocks:
            blocks[-1] = blocks[-1] + "\n" + tail
        else:
            blocks.append(tail)
    return blocks


def load_txt(path: Path) -> list[Document]:
    """A .txt file: domain = file stem, documents = blocks of blank-line-separated paragraphs (>= 2 KB each)."""
    text = _read_text(path)
    if text is None:
        raise MoelabError(f"{path}: not a UTF-8 text file")
    return [Document(path.stem, f"{path.name}:{i:05d}", block) for i, block in enumerate(text_blocks(text))]


def load_jsonl(path: Path, default_domain: str = "default") -> list[Document]:
    """A .jsonl file: one object per line with "text" (str) and optional "domain" and "name" (str)."""
    text = _read_text(path)
    if text is None:
        raise MoelabError(f"{path}: not a UTF-8 text file")
    docs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = parse_json(line, f"{path}:{lineno}")
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise MoelabError(f'{path}:{lineno}: expected an object with a string "text" field')
        domain, name = record.get("domain", default_domain), record.get("name", f"{path.name}:{lineno}")
        if not isinstance(domain, str) or not domain or not isinstance(name, str):
            raise MoelabError(f'{path}:{lineno}: "domain" and "name" must be non-empty strings')
        docs.append(Document(domain, name, record["text"]))
    return docs


def _load_file(path: Path) -> list[Document]:
    if path.suffix == ".txt":
        return load_txt(path)
    if path.suffix == ".jsonl":
        return load_jsonl(path)
    raise MoelabError(f"{path}: unsupported corpus file (expected .txt, .jsonl, or a folder)")


def _load_domain_dir(folder: Path) -> list[Document]:
    """Every visible UTF-8 text file under `folder`, recursively and sorted, as one document of its domain."""
    docs = []
    for path in sorted(p for p in folder.rglob("*") if _is_regular(p) and _visible(p, folder)):
        text = _read_text(path)
        if text is not None:
            docs.append(Document(folder.name, path.relative_to(folder).as_posix(), text))
    return docs


def _is_regular(path: Path) -> bool:
    """A regular file (a link to one counts); FIFOs, devices and sockets are not."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def load_corpus(path: str | Path) -> list[Document]:
    """Documents from `path`: a .txt or .jsonl file, or a folder whose subfolders are domains and whose top-level
    .txt/.jsonl files are read as such (other top-level files are ignored). Empty documents are dropped."""
    path = Path(path).expanduser()
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):
        raise MoelabError(f"{path}: no such corpus file or folder") from None
    except OSError as e:
        raise MoelabError(f"{path}: cannot read the corpus ({e.strerror})") from None
    if stat.S_ISREG(mode):
        docs = _load_file(path)
    elif not stat.S_ISDIR(mode):
        raise MoelabError(f"{path}: the corpus is not a regular file or a folder")
    else:
        docs = []
        for child in sorted(p for p in path.iterdir() if not p.name.startswith(".")):
            if child.is_dir():
                docs.extend(_load_domain_dir(child))
            elif child.suffix in (".txt", ".jsonl"):
                docs.extend(_load_file(child))  # a FIFO or device named *.txt is refused by the reader
    docs = [doc for doc in docs if doc.text.strip()]
    if not docs:
        raise MoelabError(f"{path}: the corpus is empty (no non-empty text documents found)")
    return docs
