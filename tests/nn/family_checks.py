"""Checks the tests/nn/test_family_*.py files share (a plain module, not a test file): building a random
transformers model, its checkpoint read by moelab, a moelab checkpoint read by transformers and by moelab, and
KV-cache decoding (prefill, then one token at a time) in moelab and in transformers. The weight randomiser,
rel_err, hf_load and assert_same_state are tests/nn/test_hf_interop.py's."""

import json

import pytest
import torch
from tests.nn.test_hf_interop import assert_same_state, hf_load, randomise, rel_err

from moelab.nn import build_model, load_pretrained, save_pretrained

transformers = pytest.importorskip("transformers")


def logits_on(default_ids: torch.Tensor):
    """A `logits(model, ids=default_ids)` for a test file: the no-grad logits of a moelab model (a tensor) or a
    transformers one (its .logits)."""

    def logits(model, ids: torch.Tensor = default_ids) -> torch.Tensor:
        with torch.no_grad():
            out = model(ids)
        return out.logits if hasattr(out, "logits") else out

    return logits


def hf_random_model(model_type: str, fields: dict, randomise=randomise):
    """transformers' AutoModelForCausalLM for `model_type` built from `fields` under seed 0, then `randomise`d
    (every weight random and O(1), norms and biases away from 1 and 0 so that they matter)."""
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, **fields)
    return randomise(transformers.AutoModelForCausalLM.from_config(config))


def fresh_model(spec):
    """A moelab model built from `spec` with weights none of the transformers models hold (seeds 3 and 4)."""
    torch.manual_seed(3)
    return randomise(build_model(spec), seed=4)


def assert_loads_with_equal_logits(folder, hf, logits, tol: float = 1e-4):
    """moelab's load_pretrained of the checkpoint in `folder` gives the logits of transformers' `hf` (relative
    max error < tol); returns the moelab model."""
    model = load_pretrained(folder)
    assert rel_err(logits(model), logits(hf)) < tol
    return model


def assert_loads_in_transformers(model, folder, logits, tol: float, load=hf_load):
    """save_pretrained(model, folder); transformers' `load` of the folder (hf_load: no missing, unexpected or
    mismatched tensor) gives the model's logits (relative max error < tol). Returns the transformers model and
    the config.json written."""
    save_pretrained(model, folder)
    theirs = load(folder)
    assert rel_err(logits(theirs), logits(model)) < tol
    return theirs, json.loads((folder / "config.json").read_text())


def assert_moelab_reload_is_exact(folder, model, logits) -> None:
    """moelab's load_pretrained of `folder` (saved from `model`) holds the same tensors, bit for bit and in the
    same dtypes, and gives exactly the same logits."""
    back = load_pretrained(folder)
    assert_same_state(back, model)
    assert torch.equal(logits(back), logits(model))


def decode_stepwise(model, ids: torch.Tensor, prefill: int, cache=None) -> torch.Tensor:
    """A moelab model's logits from its KV cache (`cache`, or a new one): the first `prefill` tokens in one call,
    then one token at a time to the end of `ids`; the steps concatenated along the sequence, to compare with a
    full forward."""
    cache = model.new_cache() if cache is None else cache
    with torch.no_grad():
        out = [model(ids[:, :prefill], cache)]
        out += [model(ids[:, t:t + 1], cache) for t in range(prefill, ids.shape[1])]
    return torch.cat(out, dim=1)


def hf_decode_stepwise(model, ids: torch.Tensor, prefill: int, cache=None) -> torch.Tensor:
    """The same with transformers' own cache (`cache`, or the one its first call returns): its reference for
    cached decoding."""
    with torch.no_grad():
        first = model(ids[:, :prefill], cache=cache, use_cache=True)
        cache, out = first.cache, [first.logits]
        for t in range(prefill, ids.shape[1]):
            step = model(ids[:, t:t + 1], cache=cache, use_cache=True)
            cache = step.cache
            out.append(step.logits)
    return torch.cat(out, dim=1)
