"""Training tests run on a small corpus written to a temp folder, with caches and the runs store isolated."""

import random

import pytest


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """Two small domains of text: enough for a tokenizer and a few training steps (read-only: shared)."""
    root = tmp_path_factory.mktemp("corpus")
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


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MOELAB_CACHE", str(tmp_path / "cache"))
