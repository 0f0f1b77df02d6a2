"""Llama 4 in the engine: the real (trimmed) configs' counts equal transformers', actives against Meta's 17B,
each layer's switches as transformers' Llama4TextConfig derives them (defaults included), and bad switches as
one line (exit 2)."""

import json
import re
from pathlib import Path

import pytest

from moelab.cli import main
from moelab.cost.params import count_params
from moelab.spec.families import REGISTRY
from moelab.spec.hf import spec_from_config

CONFIGS = Path(__file__).parent / "configs"
EXPECTED = json.loads((CONFIGS / "expected_counts.json").read_text())
SCOUT, MAVERICK = "llama4_scout_17b_16e_instruct", "llama4_maverick_17b_128e_instruct"
REAL = (SCOUT, MAVERICK)
# Meta's model cards (hf.co/meta-llama/Llama-4-Scout-17B-16E-Instruct, -Maverick-17B-128E-Instruct): 17B activated
# parameters each, 109B / 400B in total (Scout's total with its vision encoder, which moelab does not count).
META_ACTIVE = 17e9


def real(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def text(name: str, **change) -> dict:
    """A llama4_text config: the real text_config with `change` applied (a value of None removes the key)."""
    raw = {**real(name)["text_config"], **change}
    return {k: v for k, v in raw.items() if v is not None}


@pytest.mark.parametrize("name", REAL)
def test_real_config_total_equals_transformers(name):
    p = count_params(spec_from_config(real(name), name))
    assert p.total == EXPECTED[name]["total"]
    assert p.embedding == EXPECTED[name]["embedding"] and p.lm_head == EXPECTED[name]["lm_head"]
    assert p.total - p.embedding - p.lm_head == EXPECTED[name]["decoder_layers"] + EXPECTED[name]["other"]


@pytest.mark.parametrize("name", REAL)
def test_active_follows_metas_17b(name):
    """The rule: active = every parameter but the routed experts a token does not use (the shared expert, the
    dense layers, the embedding and the unembedding all count). Scout: 48 MoE layers, top-1 of 16; Maverick: 24
    MoE layers (every second), top-1 of 128. Both give 17.2B, Meta's "17B"; leaving the embedding out (16.1B)
    would not round to it."""
    spec = spec_from_config(real(name), name)
    p = count_params(spec)
    m = spec.moe
    expert = 3 * spec.d_model * m.expert_ffn
    assert p.expert_size == expert
    assert p.active == p.total - spec.n_moe_layers * (m.n_experts - m.top_k) * expert
    assert abs(p.active - META_ACTIVE) < 0.25e9
    assert round((p.active - p.embedding) / 1e9) != 17


def _transformers_config(raw: dict):
    transformers = pytest.importorskip("transformers")
    inner = dict(raw.get("text_config", raw))
    inner.pop("model_type", None)
    return transformers.Llama4TextConfig(**inner)


VARIANTS = {
    "scout": real(SCOUT),
    "maverick": real(MAVERICK),
    "text": text(SCOUT, model_type="llama4_text"),
    # Meta's published per-layer lists (the trimmed copies lack them): the same as the defaults
    "published-lists": text(MAVERICK, model_type="llama4_text", moe_layers=list(range(1, 48, 2)),
                            no_rope_layers=[int((i + 1) % 4 != 0) for i in range(48)]),
    "lists": text(SCOUT, model_type="llama4_text", num_hidden_layers=6, moe_layers=[0, 4, 9],
                  no_rope_layers=[0, 1, 1, 0, 1, 0]),
    "empty-no_rope-list": text(SCOUT, model_type="llama4_text", num_hidden_layers=8, no_rope_layers=[],
                               no_rope_layer_interval=3, interleave_moe_layer_step=3),
    "no-chunk-no-tuning": text(SCOUT, model_type="llama4_text", attention_chunk_size=None,
                               attn_temperature_tuning=False, use_qk_norm=False),
    "layer_types": text(SCOUT, model_type="llama4_text", num_hidden_layers=4,
                        layer_types=["full_attention", "chunked_attention", "chunked_attention", "chunked_attention"],
                        attention_chunk_size=1024, floor_scale=16, attn_scale=0.5),
    "dense": text(SCOUT, model_type="llama4_text", num_hidden_layers=4, moe_layers=[]),
    "bare": dict(model_type="llama4_text"),  # every field transformers' default
}


@pytest.mark.parametrize("case", VARIANTS)
def test_each_layer_as_transformers_config_derives_it(case):
    raw = VARIANTS[case]
    cfg = _transformers_config(raw)
    spec = spec_from_config(raw, case)
    assert spec.n_layers == cfg.num_hidden_layers and spec.rope_interleave
    assert spec.moe_layers == tuple(i for i in range(cfg.num_hidden_layers) if i in cfg.moe_layers)
    for i, layer in enumerate(spec.layers):
        a, rope = layer.attention, bool(cfg.no_rope_layers[i])
        assert a.rope == rope
        assert a.chunk_size == (cfg.attention_chunk_size if cfg.layer_types[i] == "chunked_attention" else None)
        assert a.qk_norm == ("l2" if cfg.use_qk_norm and rope else "none")
        tuning = (cfg.floor_scale, cfg.attn_scale) if cfg.attn_temperature_tuning and not rope else None
        assert a.temperature_tuning == tuning
        assert (a.n_heads, a.n_kv_heads, a.head_dim) == (cfg.num_attention_heads, cfg.num_key_value_heads,
                                                          cfg.head_dim)
        assert a.qkv_bias == a.o_bias == cfg.attention_bias
        if layer.moe is None:
            assert layer.ffn.width == cfg.intermediate_size_mlp
        else:
            m = layer.moe
            assert (m.n_experts, m.top_k, m.expert_ffn) == (cfg.num_local_experts, cfg.num_experts_per_tok,
                                                            cfg.intermediate_size)
            assert m.router == "topk_sigmoid" and m.weighted_input and (m.n_shared, m.shared_ffn) == (1, m.expert_ffn)
    rope = dict(cfg.rope_parameters)
    assert spec.rope_theta == rope.pop("rope_theta")
    assert dict(spec.rope_scaling) == ({} if rope["rope_type"] == "default" else rope)
    assert (spec.norm_eps, spec.max_position, spec.vocab_size, spec.d_model) == (
        cfg.rms_norm_eps, cfg.max_position_embeddings, cfg.vocab_size, cfg.hidden_size)
    assert spec.tie_embeddings == cfg.tie_word_embeddings


@pytest.mark.parametrize("case", ["lists", "empty-no_rope-list", "layer_types", "dense"])
def test_variant_totals_equal_transformers_meta_device(case):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = _transformers_config(VARIANTS[case])
    with torch.device("meta"):
        model = transformers.Llama4ForCausalLM(cfg)
    assert count_params(spec_from_config(VARIANTS[case], case)).total == sum(p.numel() for p in model.parameters())


def test_published_integer_temperature_switch_is_read_by_truth_value():
    """Meta's Scout config.json says "attn_temperature_tuning": 4 (transformers 4.51 tested it with `if`)."""
    on = spec_from_config(text(SCOUT, model_type="llama4_text", attn_temperature_tuning=4), "t")
    off = spec_from_config(text(SCOUT, model_type="llama4_text", attn_temperature_tuning=0), "t")
    assert on.layers[3].attention.temperature_tuning == (8192.0, 0.1)
    assert off.layers[3].attention.temperature_tuning is None


def test_chunked_layers_cap_the_kv_cache():
    spec = spec_from_config(real(SCOUT), SCOUT)
    cached = [layer.attention.cached(1_000_000) for layer in spec.layers]
    assert cached[:4] == [8192, 8192, 8192, 1_000_000]  # the NoPE layer keeps every position


@pytest.mark.parametrize("name", REAL)
def test_write_reads_back_as_the_same_architecture(name):
    spec = spec_from_config(real(name), name)
    cfg = REGISTRY["llama4_text"].write(spec, "bfloat16")
    assert cfg["model_type"] == "llama4_text" and cfg["architectures"] == ["Llama4ForCausalLM"]
    again = spec_from_config(cfg, name)
    assert again.layers == spec.layers and again.rope_scaling == spec.rope_scaling
    _transformers_config(cfg)  # transformers' strict config takes it


@pytest.mark.parametrize("change, message", [
    ({"no_rope_layers": [1, 1, 0]}, "no_rope_layers lists 3 layers"),
    ({"no_rope_layers": [1, 1, 1, 0] * 13}, "no_rope_layers lists 52 layers"),
    ({"no_rope_layers": [2] * 48}, "no_rope_layers' must be a list of 0"),
    ({"no_rope_layer_interval": 0}, "no_rope_layer_interval' must be positive"),
    ({"interleave_moe_layer_step": 0}, "interleave_moe_layer_step' must be positive"),
    ({"moe_layers": "all"}, "moe_layers"),
    ({"attn_temperature_tuning": "yes"}, "attn_temperature_tuning"),
    ({"floor_scale": 0}, "floor_scale' must be positive"),
    ({"attn_scale": -1.0}, "attn_scale"),
    ({"attention_chunk_size": 0}, "attention_chunk_size"),
    ({"layer_types": ["sliding_attention"] * 48}, "layer_types"),
    ({"layer_types": ["chunked_attention"] * 48, "attention_chunk_size": None}, "attention_chunk_size is null"),
    ({"use_qk_norm": 1}, "use_qk_norm"),
    ({"num_experts_per_tok": 17}, r"top_k \(17\) exceeds"),
    ({"hidden_act": "relu"}, "hidden_act 'relu'"),
])
def test_bad_switches_are_one_line_exit_2(change, message, tmp_path, capsys):
    raw = real(SCOUT)
    raw["text_config"].update(change)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    rc = main(["estimate", str(path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err
