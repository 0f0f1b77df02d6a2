"""Shared small corpus and tokenizer for the data tests (built once per session, cached under a tmp folder)."""

import pytest

from moelab.data import default_corpus, split_documents, train_tokenizer

SMALL_CAP = 100_000


@pytest.fixture(scope="session")
def small_cap():
    return SMALL_CAP


@pytest.fixture(scope="session")
def small_docs():
    return default_corpus(SMALL_CAP)


@pytest.fixture(scope="session")
def small_tokenizer(small_docs, tmp_path_factory):
    return train_tokenizer(split_documents(small_docs)["train"], 512, tmp_path_factory.mktemp("tok-cache"))
