"""Split by document: disjoint, complete, deterministic, stable as documents are added, val/test per domain."""

import random

import pytest

from moelab.data import Document, split_documents
from moelab.errors import MoelabError


def _keys(docs):
    return [(d.domain, d.name) for d in docs]


def test_disjoint_complete_deterministic(small_docs):
    split = split_documents(small_docs)
    keys = {name: set(_keys(docs)) for name, docs in split.items()}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
    assert sum(len(v) for v in split.values()) == len(small_docs)
    assert keys["train"] | keys["val"] | keys["test"] == set(_keys(small_docs))
    assert split_documents(small_docs) == split
    for domain in {d.domain for d in small_docs}:
        for name in ("train", "val", "test"):
            assert any(d.domain == domain for d in split[name]), (domain, name)


def test_assignment_depends_only_on_domain_and_name():
    docs = [Document(dom, f"doc{i}", f"text {i}") for dom in ("a", "b") for i in range(400)]
    split = split_documents(docs)
    where = {k: name for name, part in split.items() for k in _keys(part)}
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    retexted = [Document(d.domain, d.name, d.text + " changed") for d in shuffled]
    more = retexted + [Document("a", f"new{i}", "x") for i in range(100)]
    where_more = {k: name for name, part in split_documents(more).items() for k in _keys(part)}
    assert all(where_more[k] == v for k, v in where.items())
    for name, part in split.items():  # input order kept within each split
        assert part == [d for d in docs if where[(d.domain, d.name)] == name]
    for dom in ("a", "b"):
        n_val = sum(d.domain == dom for d in split["val"])
        n_test = sum(d.domain == dom for d in split["test"])
        assert 5 <= n_val <= 40 and 5 <= n_test <= 40  # ~20 each at 5%


def test_small_domains():
    three = [Document("s", f"d{i}", "t") for i in range(3)]
    split = split_documents(three)
    assert [len(split[k]) for k in ("train", "val", "test")] == [1, 1, 1]
    for n in (1, 2):
        split = split_documents([Document("s", f"d{i}", "t") for i in range(n)], 0.45, 0.45)
        assert len(split["train"]) >= 1


def test_bad_fractions():
    with pytest.raises(MoelabError):
        split_documents([], 0.6, 0.4)
    with pytest.raises(MoelabError):
        split_documents([], -0.1, 0.1)
