"""Sweep tests train on a small corpus written to a temp folder, with caches and the runs store isolated."""

import random

import pytest


@pytest.fixture(scope="session")
def laws_corpus(tmp_path_factory):
    """Two small domains of text: enough for a 300-token vocabulary and a few steps (read-only: shared)."""
    root = tmp_path_factory.mktemp("laws-corpus")
    rng = random.Random(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    for domain in ("prose", "numbers"):
        folder = root / domain
        folder.mkdir()
        for i in range(12):
            if domain == "prose":
                text = " ".join(rng.choice(words) for _ in range(400))
            else:
                text = "\n".join(f"{a} + {b} = {a + b}" for a, b in
                                 ((rng.randrange(100), rng.randrange(100)) for _ in range(150)))
            (folder / f"doc{i}.txt").write_text(text)
    return root


@pytest.fixture(scope="module")
def laws_home(tmp_path_factory):
    """One runs store and cache per module (the tokenizer is trained once, not per test)."""
    return tmp_path_factory.mktemp("laws-home")


@pytest.fixture(autouse=True)
def isolated_home(laws_home, monkeypatch):
    monkeypatch.setenv("MOELAB_HOME", str(laws_home / "home"))
    monkeypatch.setenv("MOELAB_CACHE", str(laws_home / "cache"))
