"""gpt-oss in the engine: the real configs' counts equal transformers', each layer's switches, MXFP4 expert
storage in the weight bytes, and refused switches as one line (exit 2)."""

import json
import re

import pytest
from tests.spec.family_checks import CONFIGS, one_line_exit_2, real

from moelab.cli import main
from moelab.cost.memory import model_weight_bytes
from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.spec.families import REGISTRY
from moelab.spec.hf import spec_from_config

EXPECTED = json.loads((CONFIGS / "expected_counts.json").read_text())
GIB = 2**30
# OpenAI's model card (arXiv 2508.10925, Table 1): active parameters (the unembedding counted, the embedding
# not) and checkpoint sizes.
CARD = {"gpt_oss_20b": dict(active=3.61e9, checkpoint=12.8 * GIB),
        "gpt_oss_120b": dict(active=5.13e9, checkpoint=60.8 * GIB)}


@pytest.mark.parametrize("name", CARD)
def test_real_config_total_equals_transformers(name):
    spec = spec_from_config(real(name), name)
    p = count_params(spec)
    assert p.total == EXPECTED[name]["total"]
    assert p.embedding == EXPECTED[name]["embedding"] and p.lm_head == EXPECTED[name]["lm_head"]
    assert p.attention + p.routed_experts + p.routers + p.norms == EXPECTED[name]["decoder_layers"] \
        + EXPECTED[name]["other"]


@pytest.mark.parametrize("name", CARD)
def test_active_is_all_but_unselected_experts_and_the_card_excludes_the_embedding(name):
    spec = spec_from_config(real(name), name)
    p = count_params(spec)
    m = spec.moe
    expert = 3 * spec.d_model * m.expert_ffn + 2 * m.expert_ffn + spec.d_model  # with its biases
    assert p.expert_size == expert
    assert p.active == p.total - spec.n_layers * (m.n_experts - m.top_k) * expert
    # the card's active: moelab's minus the embedding table, to its 3 significant figures
    assert abs((p.active - p.embedding) - CARD[name]["active"]) < 0.005e9


@pytest.mark.parametrize("name", CARD)
def test_each_layer_as_transformers_builds_it(name):
    raw = real(name)
    spec = spec_from_config(raw, name)
    assert spec.n_layers == raw["num_hidden_layers"] and spec.moe_layers == tuple(range(spec.n_layers))
    for i, layer in enumerate(spec.layers):
        a = layer.attention
        assert a.sliding_window == (128 if raw["layer_types"][i] == "sliding_attention" else None)
        assert a.sliding_window == (128 if i % 2 == 0 else None)  # sliding first, then alternating
        assert a.sinks and a.qkv_bias and a.o_bias and a.qk_norm == "none"
        assert (a.n_heads, a.n_kv_heads, a.head_dim) == (64, 8, 64)
        m = layer.moe
        assert m.router == "topk_softmax" and m.router_bias and m.expert_bias and not m.n_shared
        assert (m.n_experts, m.top_k, m.expert_ffn) == (raw["num_local_experts"], 4, 2880)
    assert spec.activation == "clamped_swiglu" and spec.norm == "rms" and spec.norm_eps == 1e-5
    assert spec.rope_theta == 150000.0 and not spec.tie_embeddings
    assert dict(spec.rope_scaling) == dict(rope_type="yarn", factor=32.0, beta_fast=32.0, beta_slow=1.0,
                                           original_max_position_embeddings=4096, truncate=False)
    assert spec.expert_storage == "mxfp4"


@pytest.mark.parametrize("name", CARD)
def test_estimate_weight_bytes_count_experts_at_mxfp4(name, capsys):
    """bf16 for everything but the routed experts, 4.25 bits (FP4 E2M1 + one E8M0 scale per 32) for those.

    The card's checkpoint sizes (12.8 GiB, 60.8 GiB) are within 0.5%: the checkpoint keeps the expert biases
    in bf16, which moelab counts with the experts at 4.25 bits (9.7 MB for 20b, 58 MB for 120b)."""
    path = CONFIGS / f"{name}.json"
    assert main(["estimate", str(path), "--json"]) == 0
    weights = json.loads(capsys.readouterr().out)["memory"]["weights_bytes"]
    p = count_params(spec_from_config(real(name), name))
    exact = (p.total - p.routed_experts) * 2 + p.routed_experts * (4 + 8 / 32) / 8
    assert weights == exact == model_weight_bytes(spec_from_config(real(name), name), "bf16").total
    assert abs(weights - CARD[name]["checkpoint"]) / CARD[name]["checkpoint"] < 0.005
    m = spec_from_config(real(name), name).moe
    bias_bytes = spec_from_config(real(name), name).n_layers * m.n_experts * (2 * m.expert_ffn + 2880) * (2 - 0.53125)
    assert abs(weights + bias_bytes - CARD[name]["checkpoint"]) / CARD[name]["checkpoint"] < 0.002


def _spec(**change):
    raw = {**real("gpt_oss_20b"), **change}
    for key, value in change.items():
        if value is None:
            raw.pop(key)
    return spec_from_config(raw, "t")


def test_quantization_config_decides_the_expert_storage():
    assert _spec(quantization_config=None).expert_storage is None
    unconverted = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.mlp.experts", "lm_head"]}
    assert _spec(quantization_config=unconverted).expert_storage is None
    assert _spec(quantization_config={"quant_method": "mxfp4"}).expert_storage == "mxfp4"
    # without MXFP4 every weight is 16-bit
    plain = _spec(quantization_config=None)
    assert model_weight_bytes(plain, "bf16").total == count_params(plain).total * 2
    with pytest.raises(MoelabError, match="quant_method' 'gptq' is not modelled"):
        _spec(quantization_config={"quant_method": "gptq", "bits": 4})
    with pytest.raises(MoelabError, match="some layers only"):
        _spec(quantization_config={"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.1.mlp"]})
    with pytest.raises(MoelabError, match="quantization_config"):
        _spec(quantization_config="mxfp4")


def test_defaults_are_transformers():
    """GptOssConfig without rope_scaling: YaRN x32 from 4096; without layer_types: sliding first, alternating;
    without sliding_window: 128; head_dim 64 whatever hidden / heads."""
    spec = _spec(rope_scaling=None, layer_types=None, sliding_window=None, head_dim=None)
    assert dict(spec.rope_scaling)["factor"] == 32.0 and dict(spec.rope_scaling)["rope_type"] == "yarn"
    assert [layer.attention.sliding_window for layer in spec.layers[:4]] == [128, None, 128, None]
    assert spec.attention.head_dim == 64
    default_rope = _spec(rope_scaling=None, rope_parameters={"rope_type": "default", "rope_theta": 1e4})
    assert default_rope.rope_scaling == () and default_rope.rope_theta == 1e4


@pytest.mark.parametrize("change, message", [
    ({"sliding_window": None, "layer_types": ["sliding_attention"] * 24}, None),  # absent: 128
    ({"layer_types": ["sliding_attention"] * 3}, "layer_types lists 3 layers"),
    ({"layer_types": ["chunked_attention"] * 24}, "layer_types"),
    ({"num_experts_per_tok": 33}, r"top_k \(33\) exceeds"),
    ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quant_method' 'bitsandbytes'"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
])
def test_bad_switches_are_one_line_exit_2(change, message, tmp_path, capsys):
    raw = {**real("gpt_oss_20b"), **change}
    for key, value in change.items():
        if value is None:
            raw.pop(key)
    if message is None:
        path = tmp_path / "config.json"
        path.write_text(json.dumps(raw))
        assert main(["estimate", str(path)]) == 0
        return
    err = one_line_exit_2(raw, tmp_path, capsys)
    assert re.search(message, err), err


def test_a_null_sliding_window_with_sliding_layers_is_refused(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**real("gpt_oss_20b"), "sliding_window": None}))
    assert main(["estimate", str(path)]) == 2
    assert "sliding_window' is null" in capsys.readouterr().err


@pytest.mark.parametrize("name", CARD)
def test_write_reads_back_as_the_same_architecture(name):
    """The config moelab.nn saves (experts dequantized: no quantization_config) reads back as the spec."""
    from dataclasses import replace

    spec = spec_from_config(real(name), name)
    cfg = REGISTRY["gpt_oss"].write(spec, "bfloat16")
    assert "quantization_config" not in cfg and cfg["architectures"] == ["GptOssForCausalLM"]
    again = spec_from_config(cfg, name)
    assert again == replace(spec, expert_storage=None)
    assert cfg["layer_types"] == real(name)["layer_types"]
