"""Train/val/test split by document, decided by a hash of (domain, name): stable as the corpus grows."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from moelab.data.document import Document
from moelab.errors import MoelabError

SPLITS = ("train", "val", "test")


def doc_unit(doc: Document) -> float:
    """A uniform-looking number in [0, 1) fixed by the document's domain and name."""
    digest = hashlib.sha256(f"{doc.domain}\0{doc.name}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_documents(docs: Sequence[Document], val_fraction: float = 0.05,
                    test_fraction: float = 0.05) -> dict[str, list[Document]]:
    """{"train", "val", "test"} lists of whole documents, in input order.

    Per domain, a document goes to test when its hash unit is below `test_fraction`, to val when below
    `test_fraction + val_fraction`. A domain of >= 3 documents gets at least one val and one test document (its
    lowest-hash ones), and a domain keeps at least one train document.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise MoelabError(f"split fractions must be >= 0 and sum below 1, got val {val_fraction}, test {test_fraction}")
    by_domain: dict[str, list[int]] = {}
    for i, doc in enumerate(docs):
        by_domain.setdefault(doc.domain, []).append(i)
    assignment: dict[int, str] = {}
    for indices in by_domain.values():
        units = {i: doc_unit(docs[i]) for i in indices}
        ranked = sorted(indices, key=lambda i: (units[i], i))
        n = len(ranked)
        least = 1 if n >= 3 else 0
        n_test = max(sum(u < test_fraction for u in units.values()), least)
        n_val = max(sum(u < test_fraction + val_fraction for u in units.values()) - n_test, least)
        n_test = min(n_test, max(n - 1, 0))
        n_val = min(n_val, max(n - 1 - n_test, 0))
        for rank, i in enumerate(ranked):
            assignment[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    out: dict[str, list[Document]] = {name: [] for name in SPLITS}
    for i, doc in enumerate(docs):
        out[assignment[i]].append(doc)
    return out
