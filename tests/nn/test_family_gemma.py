"""Gemma 2 and Gemma 3 (text) in moelab.nn: logits equal transformers' Gemma2ForCausalLM / Gemma3ForCausalLM both
ways on tiny random configs that keep every switch (attention and final soft caps, a window shorter than the
sequence, the layer pattern, query_pre_attn_scalar != head_dim, q/k norms, two RoPE bases and a scaled global
RoPE); each switch is shown to matter; KV-cache decoding equals the full forward and transformers' generate."""

import json
from dataclasses import replace

import pytest
import torch
from tests.nn.family_checks import (
    assert_loads_in_transformers,
    assert_loads_with_equal_logits,
    assert_moelab_reload_is_exact,
    decode_stepwise,
    fresh_model,
    hf_random_model,
)
from tests.nn.test_hf_interop import IDS, logits, rel_err

from moelab.errors import MoelabError
from moelab.nn import build_model, load_pretrained, save_pretrained
from moelab.spec.hf import spec_from_config, spec_from_file
from moelab.spec.model import map_attention

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

TINY = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            vocab_size=128, max_position_embeddings=256, rms_norm_eps=1e-5, sliding_window=5,
            query_pre_attn_scalar=20)  # IDS are 12 long: the window of 5 cuts every later query's past
CASES = {
    "gemma2": dict(model_type="gemma2", **TINY, num_hidden_layers=4, attn_logit_softcapping=3.0,
                   final_logit_softcapping=2.0),
    "gemma2-bias-untied": dict(model_type="gemma2", **TINY, num_hidden_layers=3, attention_bias=True,
                               tie_word_embeddings=False, attn_logit_softcapping=5.0, final_logit_softcapping=None,
                               hidden_activation="gelu"),
    "gemma3": dict(model_type="gemma3_text", **TINY, num_hidden_layers=7, sliding_window_pattern=3,
                   final_logit_softcapping=2.5,
                   rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
                                    "sliding_attention": {"rope_type": "default", "rope_theta": 1e2}}),
    # the hub's legacy spelling, as Gemma 3 1b/27b ship it
    "gemma3-legacy": dict(model_type="gemma3_text", **TINY, num_hidden_layers=4, sliding_window_pattern=2,
                          rope_theta=1e5, rope_local_base_freq=50.0, rope_scaling={"rope_type": "linear",
                                                                                   "factor": 2.0}),
}


def hf_model(case: str):
    cfg = dict(CASES[case])
    return hf_random_model(cfg.pop("model_type"), cfg)


@pytest.mark.parametrize("case", CASES)
def test_transformers_checkpoint_loads_with_equal_logits(case, tmp_path):
    hf = hf_model(case)
    assert type(hf).__name__ == ("Gemma2ForCausalLM" if case.startswith("gemma2") else "Gemma3ForCausalLM")
    hf.save_pretrained(tmp_path)
    assert_loads_with_equal_logits(tmp_path, hf, logits)


@pytest.mark.parametrize("case", CASES)
def test_moelab_checkpoint_loads_in_transformers_and_back(case, tmp_path):
    hf_model(case).save_pretrained(tmp_path / "hf")
    loaded = load_pretrained(tmp_path / "hf")  # a loaded model writes its own config.json back
    assert_loads_in_transformers(loaded, tmp_path / "kept", logits, 1e-6)
    fresh = fresh_model(spec_from_file(tmp_path / "hf"))
    _, written = assert_loads_in_transformers(fresh, tmp_path / "new", logits, 1e-4)
    assert written["model_type"] == CASES[case]["model_type"] and "hidden_act" not in written
    assert_moelab_reload_is_exact(tmp_path / "new", fresh, logits)


def _variants(spec):
    """The spec with one Gemma switch undone at a time: each must change the logits (the cases exercise it)."""
    sliding = [i for i, layer in enumerate(spec.layers) if layer.attention.sliding_window]
    out = {
        "window": map_attention(spec, lambda a: replace(a, sliding_window=None)),
        "scale": map_attention(spec, lambda a: replace(a, scale=None)),
        "offset norm": replace(spec, norm="rms"),
        "embedding scale": replace(spec, embedding_scale=1.0),
    }
    if spec.logits_softcap:
        out["final cap"] = replace(spec, logits_softcap=None)
    if spec.attention.softcap:
        out["attention cap"] = map_attention(spec, lambda a: replace(a, softcap=None))
    if spec.layers[sliding[0]].attention.rope_theta is not None:
        out["local rope base"] = map_attention(spec, lambda a: replace(a, rope_theta=None, rope_scaling=None))
    if spec.rope_scaling:
        out["global rope scaling"] = map_attention(replace(spec, rope_scaling=()), lambda a: replace(
            a, rope_scaling=None))
    return out


@pytest.mark.parametrize("case", CASES)
def test_every_switch_matters(case, tmp_path):
    hf = hf_model(case)
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    reference = logits(hf)
    variants = _variants(model.spec)
    assert len(variants) >= 5
    for what, spec in variants.items():
        other = build_model(spec)
        other.load_state_dict(model.state_dict())
        assert rel_err(logits(other.eval()), reference) > 1e-3, what


@pytest.mark.parametrize("case", CASES)
def test_kv_cache_decoding_equals_the_full_forward(case, tmp_path):
    """Prefill 3 tokens, then one at a time past the window: each step's logits equal the full forward's; greedy
    generation equals transformers' (its sliding layers keep only the window in their cache)."""
    hf = hf_model(case)
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    full = logits(model)
    cache = model.new_cache()
    steps = decode_stepwise(model, IDS, 3, cache)
    assert cache.length == IDS.shape[1]
    assert rel_err(steps, full) < 1e-4  # float32 rounding only: a wrong window is O(1)
    with torch.no_grad():
        theirs = hf.generate(IDS, max_new_tokens=10, do_sample=False, min_new_tokens=10)
    assert torch.equal(model.generate(IDS, 10), theirs)


def test_bf16_checkpoint_matches_transformers_in_bf16(tmp_path):
    """In bf16, sqrt(d) is rounded to the activations' dtype as transformers rounds it (Gemma2TextScaledWord
    Embedding casts embed_scale to the weights' dtype)."""
    hf = hf_model("gemma3").to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path, dtype="auto")
    assert model.embed_tokens.weight.dtype == torch.bfloat16
    assert rel_err(logits(model).float(), logits(hf).float()) < 2e-2


def test_multimodal_gemma3_checkpoint_is_refused(tmp_path):
    text = {k: v for k, v in CASES["gemma3"].items() if k != "model_type"}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": {
        **text, "model_type": "gemma3_text"}, "vision_config": {}}))
    assert spec_from_file(tmp_path).n_layers == 7  # the engine reads its text model
    with pytest.raises(MoelabError, match="multimodal gemma3"):
        load_pretrained(tmp_path)


def test_what_gemma_configs_cannot_state_is_refused(tmp_path):
    spec = spec_from_config(CASES["gemma3"], "g")
    capped = map_attention(spec, lambda a: replace(a, softcap=10.0))  # transformers' Gemma 3 ignores the field
    with pytest.raises(MoelabError, match="no Hugging Face family"):
        save_pretrained(build_model(capped), tmp_path)
