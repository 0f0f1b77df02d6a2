"""Sweep tests train on a small corpus written to a temp folder, with caches and the runs store isolated."""

import pytest
from tests.train.conftest import corpus_dir  # noqa: F401 - the training tests' small corpus, the same fixture


@pytest.fixture(scope="module")
def laws_home(tmp_path_factory):
    """One runs store and cache per module (the tokenizer is trained once, not per test)."""
    return tmp_path_factory.mktemp("laws-home")


@pytest.fixture(autouse=True)
def isolated_home(laws_home, monkeypatch):
    monkeypatch.setenv("MOELAB_HOME", str(laws_home / "home"))
    monkeypatch.setenv("MOELAB_CACHE", str(laws_home / "cache"))
