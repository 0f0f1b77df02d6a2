"""Fixtures of the training-across-processes tests: a small corpus, micro model specs, isolated homes and caches."""

import json
from dataclasses import replace

import pytest
from tests.train.conftest import corpus_dir  # noqa: F401 - the training tests' small corpus, the same fixture

from moelab.spec.hf import spec_from_config
from moelab.spec.model import spec_to_dict
from moelab.spec.transform import as_moe

# The tokenizer trained on corpus_dir has 583 tokens (train has no --vocab-size): 640 covers it.
MICRO_VOCAB = 640


def micro(moe: bool = False):
    """tests/train/test_durability.py's micro model (d=64, 2 layers; MoE: 4 experts, top-2) with a smaller vocabulary:
    a 20-step run takes about a second, so the tests' time is torchrun's start."""
    spec = spec_from_config({"model_type": "llama", "vocab_size": MICRO_VOCAB, "hidden_size": 64,
                             "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
                             "intermediate_size": 128, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
                             "rope_theta": 10000.0, "tie_word_embeddings": False}, "micro-dense")
    return replace(as_moe(spec, 4, 2), name="micro-moe") if moe else spec


@pytest.fixture(scope="session")
def micro_specs(tmp_path_factory) -> dict:
    """{"moe": path, "dense": path}: micro() as moelab spec JSON files, for the command line."""
    root = tmp_path_factory.mktemp("spec")
    paths = {}
    for kind in ("moe", "dense"):
        paths[kind] = root / f"micro-{kind}.json"
        paths[kind].write_text(json.dumps(spec_to_dict(micro(kind == "moe"))))
    return paths


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """In-process commands get their own runs store and caches (launches pass theirs in their env)."""
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MOELAB_CACHE", str(tmp_path / "cache"))
