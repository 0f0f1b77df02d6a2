"""A small study-corpus tokenizer and tiny random models for the eval tests; caches and runs store isolated."""

import pytest
import torch

from moelab.cli import main
from moelab.data import default_corpus, split_documents, train_tokenizer
from moelab.nn.model import build_model
from moelab.spec.hf import spec_from_config
from moelab.spec.transform import as_moe

VOCAB = 512


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MOELAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    docs = default_corpus(20_000, "study")
    return train_tokenizer(split_documents(docs)["train"], VOCAB, tmp_path_factory.mktemp("tok"))


def _spec(moe: bool):
    cfg = {"model_type": "llama", "vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
           "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False}
    spec = spec_from_config(cfg, "eval-tiny")
    return as_moe(spec, 4, 2) if moe else spec


@pytest.fixture(scope="session", params=["dense", "moe"])
def model(request):
    torch.manual_seed(3)
    m = build_model(_spec(request.param == "moe")).eval()
    with torch.no_grad():  # larger logits than the 0.02 init: a peaked, non-uniform next-token distribution
        m.lm_head.weight.mul_(20.0)
    return m


CAP = 12_000  # bytes per domain: a small corpus, so that only some probed people's biographies are in it


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Batch-1 decoding of a tiny model: one intra-op thread (two fight each other on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(tmp_path_factory, preset: str):
    """RUNS/<preset>, its tokenizer and token caches in RUNS/cache."""
    runs = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("MOELAB_HOME", str(runs / "home"))
    mp.setenv("MOELAB_CACHE", str(runs / "cache"))
    out = runs / preset
    try:
        assert main(["train", "--model", preset, "--corpus", "study", "--steps", "3", "--batch-size", "2",
                     "--seq-len", "32", "--eval-every", "3", "--ckpt-every", "3", "--eval-tokens", "64",
                     "--max-bytes-per-domain", str(CAP), "--out", str(out), "--no-progress", "--json"]) == 0
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="session")
def study_run(tmp_path_factory, one_thread):
    """tiny-dense trained 3 steps of 2 x 32 tokens on the study corpus at a 30 kB cap (seconds)."""
    return _train(tmp_path_factory, "tiny-dense")


@pytest.fixture(scope="session")
def moe_study_run(tmp_path_factory, one_thread):
    """tiny-moe, the same way."""
    return _train(tmp_path_factory, "tiny-moe")
