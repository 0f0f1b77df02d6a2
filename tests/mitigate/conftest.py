"""Mitigation tests start from small trained runs (a three-domain corpus, a few steps of tiny-moe and tiny-dense),
trained once per session into a temp folder with caches and the runs store isolated. The runs are read-only:
a test writes its transform's output under its own tmp_path."""

import json
import random
import shutil

import pytest
import torch

from moelab.train.config import TrainConfig
from moelab.train.loop import train
from moelab.train.presets import load_train_spec


@pytest.fixture(scope="session")
def mitigate_home(tmp_path_factory):
    return tmp_path_factory.mktemp("mitigate-home")


@pytest.fixture(autouse=True)
def isolated_home(mitigate_home, monkeypatch):
    monkeypatch.setenv("MOELAB_HOME", str(mitigate_home / "home"))
    monkeypatch.setenv("MOELAB_CACHE", str(mitigate_home / "cache"))


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread (on a shared 2-core machine two were up to 20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """Three domains of text, the third rare (a few short documents): enough for a tokenizer and a few steps."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    for domain, docs in (("prose", 12), ("numbers", 12), ("code", 4)):
        folder = root / domain
        folder.mkdir()
        for i in range(docs):
            if domain == "prose":
                text = " ".join(rng.choice(words) for _ in range(400))
            elif domain == "numbers":
                text = "\n".join(f"{a} + {b} = {a + b}" for a, b in
                                 ((rng.randrange(100), rng.randrange(100)) for _ in range(150)))
            else:
                text = "\n".join(f"def f{j}(x):\n    return x * {j}" for j in range(20))
            (folder / f"doc{i}.txt").write_text(text)
    return root


def small_config(corpus_dir, steps: int = 12, **extra) -> TrainConfig:
    """A few steps of batch 4 x 32 tokens with a 512-token vocabulary: seconds on the CPU."""
    return TrainConfig(steps=steps, batch_size=4, seq_len=32, warmup=2, eval_every=steps, ckpt_every=steps,
                       eval_tokens=512, vocab_size=512, data=str(corpus_dir), max_bytes_per_domain=200_000, **extra)


def _trained(tmp_path_factory, mitigate_home, corpus_dir, preset: str):
    mp = pytest.MonkeyPatch()
    mp.setenv("MOELAB_HOME", str(mitigate_home / "home"))
    mp.setenv("MOELAB_CACHE", str(mitigate_home / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp(preset)
        train(load_train_spec(preset), small_config(corpus_dir), out, progress=False, log=lambda _: None)
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def moe_run(tmp_path_factory, mitigate_home, corpus_dir):
    """A trained tiny-moe run folder (8 experts, top-2, 4 MoE layers)."""
    return _trained(tmp_path_factory, mitigate_home, corpus_dir, "tiny-moe")


@pytest.fixture(scope="session")
def dense_run(tmp_path_factory, mitigate_home, corpus_dir):
    """A trained tiny-dense run folder (SwiGLU width 512)."""
    return _trained(tmp_path_factory, mitigate_home, corpus_dir, "tiny-dense")


@pytest.fixture
def make_config(corpus_dir):
    """small_config bound to the shared corpus: make_config(steps=..., **TrainConfig fields)."""
    return lambda steps=12, **extra: small_config(corpus_dir, steps, **extra)


@pytest.fixture
def marked_quantized(tmp_path):
    """marked_quantized(run): a copy of the run whose meta.json says it is quantized (int8 experts), to check that
    a command refuses quantized runs without quantizing one."""
    def mark(run):
        fake = tmp_path / "quantized"
        shutil.copytree(run / "final", fake / "final")
        meta = json.loads((fake / "final" / "meta.json").read_text())
        meta["quantization"] = {"components": {"routed_experts": "int8"}, "group_size": 128, "scheme": "symmetric"}
        (fake / "final" / "meta.json").write_text(json.dumps(meta))
        return fake

    return mark
