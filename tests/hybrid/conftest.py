"""Hybrid tests start from two small trained runs (tiny-dense and tiny-moe, a few steps on a small corpus whose
lines look like the probes' questions), trained once per session into a temp folder with the caches and the runs
store isolated. The runs are read-only: a test writes under its own tmp_path."""

import random

import pytest
import torch

from moelab.train.config import TrainConfig
from moelab.train.loop import train
from moelab.train.presets import load_train_spec


@pytest.fixture(scope="session")
def hybrid_home(tmp_path_factory):
    return tmp_path_factory.mktemp("hybrid-home")


@pytest.fixture(autouse=True)
def isolated_home(hybrid_home, monkeypatch):
    monkeypatch.setenv("MOELAB_HOME", str(hybrid_home / "home"))
    monkeypatch.setenv("MOELAB_CACHE", str(hybrid_home / "cache"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread (two were much slower on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def short_answers(monkeypatch):
    """Answers of at most 4 tokens: these barely trained models never stop at a newline on their own, and the
    tests check composition and plumbing, not answers."""
    import moelab.eval.generate

    monkeypatch.setattr(moelab.eval.generate, "MAX_NEW_TOKENS", 4)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """Two domains of short Q/A lines (people's cities, sums): enough for a tokenizer and a few steps."""
    root = tmp_path_factory.mktemp("hybrid-corpus")
    rng = random.Random(0)
    names = "Ana Oscar Priya Emil Dmitri Lena Kofi Mei".split()
    cities = "Kyoto Lima Oslo Cairo Quito Perth".split()
    for domain in ("facts", "math"):
        folder = root / domain
        folder.mkdir()
        for i in range(8):
            if domain == "facts":
                lines = [f"Q: Where was {rng.choice(names)} born? A: {rng.choice(cities)}" for _ in range(150)]
            else:
                lines = [f"Q: {a} + {b} = ? A: {a + b}" for a, b in
                         ((rng.randrange(10), rng.randrange(10)) for _ in range(150))]
            (folder / f"doc{i}.txt").write_text("\n".join(lines) + "\n")
    return root


def _trained(tmp_path_factory, hybrid_home, corpus_dir, preset: str):
    mp = pytest.MonkeyPatch()
    mp.setenv("MOELAB_HOME", str(hybrid_home / "home"))
    mp.setenv("MOELAB_CACHE", str(hybrid_home / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp(preset)
        cfg = TrainConfig(steps=8, batch_size=4, seq_len=32, warmup=2, eval_every=8, ckpt_every=8, eval_tokens=256,
                          vocab_size=512, data=str(corpus_dir), max_bytes_per_domain=100_000)
        train(load_train_spec(preset), cfg, out, progress=False, log=lambda _: None)
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def moe_run(tmp_path_factory, hybrid_home, corpus_dir):
    return _trained(tmp_path_factory, hybrid_home, corpus_dir, "tiny-moe")


@pytest.fixture(scope="session")
def dense_run(tmp_path_factory, hybrid_home, corpus_dir):
    return _trained(tmp_path_factory, hybrid_home, corpus_dir, "tiny-dense")
