"""The default multi-domain corpus, built offline from this Python installation and seeded generators.

Domains: "code" (standard-library sources), "prose" (pydoc reference topics), "math" (generated problems with
exact answers), "json" (generated structured records). Re-exports the corpus API of the sibling modules.
"""

from __future__ import annotations

from moelab.data.document import Document, cap_bytes, corpus_hash
from moelab.data.interpreter import pydoc_topics, stdlib_sources
from moelab.data.json_records import json_documents
from moelab.data.loading import load_corpus
from moelab.data.math_problems import math_documents
from moelab.data.split import split_documents
from moelab.errors import MoelabError

__all__ = ["DOMAINS", "Document", "corpus_hash", "default_corpus", "load_corpus", "split_documents"]

DOMAINS = ("code", "prose", "math", "json")


def default_corpus(max_bytes_per_domain: int = 1_500_000) -> list[Document]:
    """The four default domains, each capped at `max_bytes_per_domain` UTF-8 bytes (see cap_bytes)."""
    if max_bytes_per_domain <= 0:
        raise MoelabError(f"max_bytes_per_domain must be positive, got {max_bytes_per_domain}")
    sources = {"code": stdlib_sources(), "prose": pydoc_topics(), "math": math_documents(), "json": json_documents()}
    docs: list[Document] = []
    for domain in DOMAINS:
        docs.extend(cap_bytes(sources[domain], max_bytes_per_domain))
    return docs
