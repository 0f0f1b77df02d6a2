"""The unit of a corpus: a named document of one domain; its stable hash and the per-domain byte cap."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    domain: str
    name: str
    text: str


def corpus_hash(docs: Iterable[Document]) -> str:
    """sha256 (hex) over every document's domain, name and text, in order, each field length-prefixed."""
    h = hashlib.sha256()
    for doc in docs:
        for field in (doc.domain, doc.name, doc.text):
            raw = field.encode("utf-8", "surrogatepass")
            h.update(len(raw).to_bytes(8, "little"))
            h.update(raw)
    return h.hexdigest()


def cap_bytes(docs: Iterable[Document], max_bytes: int) -> Iterator[Document]:
    """Documents in order while their UTF-8 bytes total at most `max_bytes`; stop at the first that overflows.

    Empty documents are dropped. Only a first document larger than the whole cap is truncated (at a character
    boundary) rather than dropped, so that a domain is never empty because of one big file.
    """
    total = 0
    for doc in docs:
        size = len(doc.text.encode("utf-8"))
        if size == 0:
            continue
        if total + size > max_bytes:
            if total == 0 and max_bytes > 0:
                text = doc.text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
                if text:
                    yield Document(doc.domain, doc.name, text)
            return
        total += size
        yield doc
