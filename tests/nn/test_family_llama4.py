"""Llama 4 in moelab.nn: tiny random configs keeping every switch (chunks shorter than the sequence, a NoPE layer
with temperature tuning that matters, MoE every second layer, L2 q/k norms, Llama 3 RoPE on interleaved pairs,
top-1 and top-2 sigmoid routing scaling the expert input) give transformers' Llama4ForCausalLM logits both ways,
and KV-cache decoding across chunk and temperature-floor boundaries equals a full forward (and transformers'
own cached decoding)."""

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
    hf_decode_stepwise,
    hf_random_model,
    logits_on,
)
from tests.nn.test_hf_interop import rel_err

from moelab.errors import MoelabError
from moelab.nn import build_model, load_pretrained
from moelab.spec.hf import spec_from_config, spec_from_file
from moelab.spec.model import map_attention, map_moe

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

TINY = dict(hidden_size=64, intermediate_size=32, intermediate_size_mlp=96, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=128, max_position_embeddings=256,
            rms_norm_eps=1e-5, num_local_experts=4)
LLAMA3 = dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=16)
# Scout's published rope: equal low and high factors (no smoothed band), and the longest wavelengths still scaled
SCOUT_ROPE = dict(rope_type="llama3", rope_theta=500000.0, factor=16.0, low_freq_factor=1.0, high_freq_factor=1.0,
                  original_max_position_embeddings=8192)
CASES = {
    # chunk 5 < 13 tokens; layer 1 NoPE (full attention) with temperature tuning from position 2 (floor_scale 3)
    "every-switch": dict(TINY, num_experts_per_tok=1, interleave_moe_layer_step=2, attention_chunk_size=5,
                         no_rope_layers=[1, 0, 1, 1], use_qk_norm=True, attn_temperature_tuning=True, floor_scale=3,
                         attn_scale=0.5, rope_parameters=LLAMA3),
    # top-2, MoE everywhere, biases, tied embeddings, no q/k norm; layer_types chunks the NoPE layer 3 too
    "top2-tied-chunked-nope": dict(TINY, num_experts_per_tok=2, interleave_moe_layer_step=1, attention_bias=True,
                                   tie_word_embeddings=True, use_qk_norm=False, attention_chunk_size=4,
                                   layer_types=["full_attention", "chunked_attention", "full_attention",
                                                "chunked_attention"], floor_scale=2, attn_scale=0.3,
                                   rope_parameters=dict(rope_type="default", rope_theta=500000.0)),
    "scout-rope": dict(TINY, num_experts_per_tok=1, attention_chunk_size=6, floor_scale=4, attn_scale=0.2,
                       rope_parameters=SCOUT_ROPE),
}
IDS = torch.randint(0, 128, (2, 13), generator=torch.Generator().manual_seed(2))


logits = logits_on(IDS)


def hf_model(case: str):
    return hf_random_model("llama4_text", CASES[case])


@pytest.mark.parametrize("case", CASES)
def test_transformers_checkpoint_loads_with_equal_logits(case, tmp_path):
    hf = hf_model(case)
    hf.save_pretrained(tmp_path)
    names = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"] \
        if (tmp_path / "model.safetensors.index.json").exists() else None
    assert names is None  # one file
    model = assert_loads_with_equal_logits(tmp_path, hf, logits)
    assert model.spec.family == "llama4_text"


@pytest.mark.parametrize("case", CASES)
def test_moelab_checkpoint_loads_in_transformers_and_back(case, tmp_path):
    hf = hf_model(case)
    hf.save_pretrained(tmp_path / "hf")
    fresh = fresh_model(spec_from_file(tmp_path / "hf"))
    _, written = assert_loads_in_transformers(fresh, tmp_path / "new", logits, 1e-4)
    assert written["model_type"] == "llama4_text" and written["architectures"] == ["Llama4ForCausalLM"]
    assert_moelab_reload_is_exact(tmp_path / "new", fresh, logits)


@pytest.mark.parametrize("case", CASES)
def test_kv_cache_decoding_equals_a_full_forward(case, tmp_path):
    """Prefill 3, then one token at a time to 13: across the chunk boundaries (4/5, 8/10) and the temperature
    floors, where the NoPE layer's scale comes from the cached length; transformers' own cache agrees."""
    hf = hf_model(case)
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    full = logits(model)
    assert rel_err(decode_stepwise(model, IDS, 3), full) < 1e-5
    assert rel_err(decode_stepwise(model, IDS, 7), full) < 1e-5
    ref = hf_decode_stepwise(hf, IDS, 3, transformers.DynamicCache(config=hf.config))
    assert rel_err(ref, full) < 1e-4


def _variant(model, change) -> torch.nn.Module:
    other = build_model(change(model.spec))
    other.load_state_dict(model.state_dict())
    return other.eval()


def _no_tuning(a):
    return replace(a, temperature_tuning=None)


def _no_chunk(a):
    return replace(a, chunk_size=None)


def _no_qk_norm(a):
    return replace(a, qk_norm="none")


def test_every_switch_changes_the_logits(tmp_path):
    """The equality above is not vacuous: with any one switch of the tiny model off, the logits move."""
    hf = hf_model("every-switch")
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    ref = logits(hf)
    changes = {
        "chunks": lambda s: map_attention(s, _no_chunk),
        "temperature tuning": lambda s: map_attention(s, _no_tuning),
        "l2 q/k norm": lambda s: map_attention(s, _no_qk_norm),
        "rotate-half pairs": lambda s: replace(s, rope_interleave=False),
        "weighted output": lambda s: map_moe(s, lambda m: replace(m, weighted_input=False)),
        "NoPE": lambda s: map_attention(s, lambda a: replace(a, rope=True, temperature_tuning=None)),
        "no RoPE scaling": lambda s: replace(s, rope_scaling=()),
    }
    for what, change in changes.items():
        assert rel_err(logits(_variant(model, change)), ref) > 1e-3, what


def test_a_multimodal_checkpoint_is_refused_in_one_line(tmp_path):
    """A Llama4ForConditionalGeneration folder (model_type llama4 with a text_config): moelab.nn builds the text
    model only, and says so before reading any tensor."""
    raw = {"model_type": "llama4", "text_config": dict(CASES["every-switch"], model_type="llama4_text")}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert spec_from_config(raw).family == "llama4"  # the engine reads it
    with pytest.raises(MoelabError, match="multimodal llama4 checkpoint.*llama4_text") as e:
        load_pretrained(tmp_path)
    assert "\n" not in str(e.value)
