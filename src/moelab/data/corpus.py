"""The built-in multi-domain corpora, built offline from this Python installation and seeded generators.

Domains: "code" (standard-library sources), "prose" (pydoc reference topics), "math" (generated problems with
exact answers), "json" (generated structured records), and in the "study" corpus "facts" (synthetic
biographies, moelab.data.facts), whose math also carries the reasoning probe's ladder (math_problems.
ladder_documents). The "default" corpus is what `moelab train` reads unless told otherwise; it is exactly what it
was before the study corpus existed (same documents, same hash). Re-exports the corpus API of the sibling modules.
"""

from __future__ import annotations

from moelab.data.document import Document, cap_bytes, corpus_hash
from moelab.data.facts import facts_documents
from moelab.data.interpreter import pydoc_topics, stdlib_sources
from moelab.data.json_records import json_documents
from moelab.data.loading import load_corpus
from moelab.data.math_problems import ladder_documents, math_documents
from moelab.data.split import split_documents
from moelab.errors import MoelabError

__all__ = ["CORPORA", "DOMAINS", "Document", "check_corpus", "corpus_hash", "default_corpus", "load_corpus",
           "split_documents"]

DOMAINS = ("code", "prose", "math", "json")
CORPORA = {"default": DOMAINS, "study": (*DOMAINS, "facts")}


def check_corpus(corpus: object) -> str:
    """`corpus` as the name of a built-in corpus; one line for anything else."""
    if not isinstance(corpus, str) or corpus not in CORPORA:
        raise MoelabError(f"--corpus must be one of {', '.join(CORPORA)}, got {corpus!r}")
    return corpus


def default_corpus(max_bytes_per_domain: int = 1_500_000, corpus: str = "default") -> list[Document]:
    """The domains of the built-in corpus `corpus` (CORPORA), each capped at `max_bytes_per_domain` UTF-8 bytes
    (see cap_bytes). "study" is "default" plus "facts", its math the ladder's (levels 1-2 mixed in, the probe's
    reserved questions left out)."""
    check_corpus(corpus)
    if max_bytes_per_domain <= 0:
        raise MoelabError(f"max_bytes_per_domain must be positive, got {max_bytes_per_domain}")
    study = corpus == "study"
    sources = {"code": stdlib_sources(), "prose": pydoc_topics(),
               "math": ladder_documents() if study else math_documents(), "json": json_documents(),
               "facts": facts_documents()}
    docs: list[Document] = []
    for domain in CORPORA[corpus]:
        docs.extend(cap_bytes(sources[domain], max_bytes_per_domain))
    return docs
