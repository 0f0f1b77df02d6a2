"""DBRX and JetMoE in the engine (moelab.nn builds neither): totals equal transformers' meta-device
sum(numel) -- on the real DBRX config, and on JetMoeConfig's defaults and variants (no published JetMoE config
was found: tests/spec/configs/NOT_FOUND.json) -- actives by the documented rule checked against the expert
tensors transformers builds, each layer's switches, and refused switches as one line (exit 2)."""

import json
import re

import pytest
import torch
from tests.spec.family_checks import CONFIGS, meta_model, one_line_exit_2, real, total, unselected
from transformers import AutoModelForCausalLM, DbrxConfig, JetMoeConfig

from moelab.cost.memory import kv_bytes_per_token
from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.spec.families import REGISTRY
from moelab.spec.hf import spec_from_config

EXPECTED = json.loads((CONFIGS / "expected_counts.json").read_text())


def real_dbrx() -> dict:
    return real("dbrx_instruct")


# --- DBRX ---------------------------------------------------------------------------------------------------


def test_dbrx_real_config_total_equals_transformers():
    p = count_params(spec_from_config(real_dbrx(), "dbrx_instruct"))
    row = EXPECTED["dbrx_instruct"]
    assert p.total == row["total"] == 131_596_523_520
    assert p.embedding == row["embedding"] and p.lm_head == row["lm_head"]
    assert p.total - p.embedding - p.lm_head == row["decoder_layers"] + row["other"]


def test_dbrx_active_is_all_but_unselected_experts_as_the_card_says():
    """Active = everything but the routed experts a token does not use (DESIGN.md); transformers keeps each
    layer's experts as three (E*f, d) tensors ffn.experts.mlp.{w1,v1,w2}. The databricks/dbrx-instruct card:
    '132B total parameters of which 36B parameters are active on any input' (SOURCES.json)."""
    raw = real_dbrx()
    spec = spec_from_config(raw, "dbrx_instruct")
    p = count_params(spec)
    fields = {k: v for k, v in raw.items() if k not in ("quantization", "model_type")}
    fields["ffn_config"] = {**raw["ffn_config"], "moe_normalize_expert_weights": 1.0}
    model = meta_model(DbrxConfig(**fields))
    assert p.total == total(model)
    assert p.active == p.total - unselected(model, 16, 4, (".w1", ".v1", ".w2")) == 36_469_708_800
    assert abs(p.total - 132e9) / 132e9 < 0.005 and abs(p.active - 36e9) / 36e9 < 0.015


def test_dbrx_each_layer_as_transformers_builds_it():
    spec = spec_from_config(real_dbrx(), "dbrx_instruct")
    assert spec.n_layers == 40 and spec.moe_layers == tuple(range(40)) and spec.uniform_attention
    a, m = spec.attention, spec.moe
    assert (a.n_heads, a.n_kv_heads, a.head_dim) == (48, 8, 128) and a.kind == "gqa"
    assert a.clip_qkv == 8.0 and not (a.qkv_bias or a.o_bias or a.moa_experts) and a.qk_norm == "none"
    assert (m.n_experts, m.top_k, m.expert_ffn) == (16, 4, 10752)
    assert m.router == "softmax_topk" and m.norm_topk_prob and not (m.n_shared or m.router_bias or m.expert_bias)
    assert spec.norm == "layer_nobias" and spec.norm_placement == "pre" and spec.norm_eps == 1e-5
    assert spec.activation == "silu" and not spec.tie_embeddings and not spec.mlp_bias
    assert spec.rope_theta == 500000.0 and spec.rope_scaling == () and spec.max_position == 32768
    # KV cache: 8 kv heads of 128, keys and values, 40 layers, bf16
    assert kv_bytes_per_token(spec, "bf16") == 40 * 2 * 8 * 128 * 2
    assert not REGISTRY["dbrx"].builds


@pytest.mark.parametrize("attn, ffn, d, heads, layers, vocab", [
    ({"kv_n_heads": 2, "clip_qkv": None, "rope_theta": 1e4}, {"ffn_hidden_size": 48, "moe_num_experts": 4,
                                                             "moe_top_k": 2, "moe_normalize_expert_weights": None},
     64, 8, 3, 100),
    ({"kv_n_heads": 4, "clip_qkv": 0.5, "rope_theta": 5e5}, {"ffn_hidden_size": 24, "moe_num_experts": 6,
                                                            "moe_top_k": 6}, 96, 4, 2, 77),
    ({"kv_n_heads": 1, "rope_theta": 1e4}, {"ffn_hidden_size": 16, "moe_num_experts": 3, "moe_top_k": 1},
     32, 4, 1, 50),
])
def test_dbrx_variants_count_as_transformers(attn, ffn, d, heads, layers, vocab):
    raw = {"model_type": "dbrx", "d_model": d, "n_heads": heads, "n_layers": layers, "vocab_size": vocab,
           "max_seq_len": 64, "attn_config": attn, "ffn_config": ffn}
    spec = spec_from_config(raw, "t")
    model = meta_model(DbrxConfig(**{k: v for k, v in raw.items() if k != "model_type"}))
    p = count_params(spec)
    assert p.total == total(model)
    assert p.active == p.total - unselected(model, ffn["moe_num_experts"], ffn["moe_top_k"], (".w1", ".v1", ".w2"))
    assert spec.attention.clip_qkv == attn.get("clip_qkv")
    assert spec.moe.norm_topk_prob == (ffn.get("moe_normalize_expert_weights", 1.0) is not None)


def test_dbrx_rope_parameters_take_precedence_and_integer_1_is_l1():
    raw = real_dbrx()
    raw["ffn_config"] = {**raw["ffn_config"], "moe_normalize_expert_weights": 1}
    assert spec_from_config(raw, "t").moe.norm_topk_prob
    raw["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e4}
    assert spec_from_config(raw, "t").rope_theta == 1e4


@pytest.mark.parametrize("change, message", [
    ({"tie_word_embeddings": True}, r"tie_word_embeddings' true is not modelled"),
    ({"ffn_config": {"ffn_hidden_size": 8, "moe_num_experts": 4, "moe_top_k": 2,
                     "moe_normalize_expert_weights": 2.0}},
     r"ffn_config.moe_normalize_expert_weights' 2.0 is not modelled"),
    ({"ffn_config": {"ffn_hidden_size": 8, "moe_num_experts": 4, "moe_top_k": 2, "ffn_act_fn": {"name": "relu"}}},
     r"ffn_act_fn' name 'relu'"),
    ({"ffn_config": {"moe_num_experts": 4, "moe_top_k": 2}}, r"missing field 'ffn_config.ffn_hidden_size'"),
    ({"ffn_config": {"ffn_hidden_size": 8, "moe_num_experts": 4, "moe_top_k": 5}}, r"top_k \(5\) exceeds"),
    ({"attn_config": [8]}, r"field 'attn_config' must be an object"),
    ({"attn_config": {"kv_n_heads": 0, "rope_theta": 1e4}}, r"attn_config.kv_n_heads' must be at least 1"),
    ({"attn_config": {"kv_n_heads": 8, "clip_qkv": -1}}, r"attn_config.clip_qkv"),
    ({"n_heads": 7}, r"d_model \(6144\) is not divisible by n_heads \(7\)"),
    ({"attn_config": {"kv_n_heads": 7, "rope_theta": 1e4}}, r"multiple of num_key_value_heads \(7\)"),
])
def test_dbrx_bad_switches_are_one_line_exit_2(change, message, tmp_path, capsys):
    err = one_line_exit_2({**real_dbrx(), **change}, tmp_path, capsys)
    assert re.search(message, err), err


# --- JetMoE -------------------------------------------------------------------------------------------------

_JET_EXPERTS = (".input_linear.weight", ".output_linear.weight")  # JetMoeParallelExperts: (E, out, in)


def jet(**change) -> JetMoeConfig:
    return JetMoeConfig(**change)


@pytest.mark.parametrize("change", [
    {},  # JetMoeConfig's defaults ('JetMoe 4B style', its docstring: not jetmoe-8b's 24 layers)
    {"num_hidden_layers": 24},
    {"num_local_experts": 5, "num_experts_per_tok": 3, "kv_channels": 24, "num_key_value_heads": 3,
     "hidden_size": 96, "intermediate_size": 40, "num_hidden_layers": 2, "vocab_size": 300,
     "tie_word_embeddings": False},  # kv heads * kv_channels != hidden_size, untied
    {"num_local_experts": 4, "num_experts_per_tok": 4, "hidden_size": 64, "kv_channels": 16,
     "num_key_value_heads": 4, "intermediate_size": 32, "num_hidden_layers": 1, "vocab_size": 64},  # k == E
    {"num_local_experts": 6, "num_experts_per_tok": 1, "hidden_size": 48, "kv_channels": 8,
     "num_key_value_heads": 2, "intermediate_size": 20, "num_hidden_layers": 3, "vocab_size": 90},  # k == 1
])
def test_jetmoe_counts_equal_transformers(change):
    """Totals: transformers' meta-device sum(numel) of JetMoeForCausalLM built from the same config (its
    defaults and variants). Active: everything but the unselected routed experts -- here the MLP experts and
    MoA's attention experts (q_proj/o_proj per expert), the rule DESIGN.md states for routed weights."""
    cfg = jet(**change)
    spec = spec_from_config(cfg.to_dict(), "t")
    model = meta_model(cfg)
    p = count_params(spec)
    assert p.total == total(model)
    k, e = cfg.num_experts_per_tok, cfg.num_local_experts
    assert p.active == p.total - unselected(model, e, k, _JET_EXPERTS)
    assert p.embedding == cfg.vocab_size * cfg.hidden_size
    assert p.lm_head == (0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size)
    # routed: both kinds of experts; routers: the MoA's and the MoE's (d -> E each, no bias)
    assert p.routed_experts == sum(q.numel() for n, q in model.named_parameters() if n.endswith(_JET_EXPERTS))
    assert p.routers == sum(q.numel() for n, q in model.named_parameters() if n.endswith("router.layer.weight"))


def test_jetmoe_each_layer_as_transformers_builds_it():
    cfg = jet(num_hidden_layers=24)
    spec = spec_from_config(cfg.to_dict(), "jetmoe")
    assert spec.n_layers == 24 and spec.moe_layers == tuple(range(24)) and spec.uniform_attention
    a, m = spec.attention, spec.moe
    # a token's 2 experts x 16 heads of 128 query heads; 16 kv heads (JetMoeConfig.num_attention_heads == 32)
    assert (a.n_heads, a.n_kv_heads, a.head_dim, a.moa_experts) == (32, 16, 128, 8) == (
        cfg.num_attention_heads, cfg.num_key_value_heads, cfg.kv_channels, cfg.num_local_experts)
    assert a.o_bias and not a.qkv_bias and a.kind == "gqa"
    assert (m.n_experts, m.top_k, m.expert_ffn, m.router) == (8, 2, 5632, "topk_softmax") and not m.n_shared
    assert spec.mlp_bias and spec.tie_embeddings and spec.norm == "rms" and spec.activation == "silu"
    p = count_params(spec)
    d, kv = 2048, 16 * 128
    # per layer: kv_proj, 8 x (q, o) experts, MoA router + bias, 8 SwiGLU experts, MoE router + bias, 2 norms
    layer = d * 2 * kv + 8 * 2 * d * kv + 8 * d + d + 8 * 3 * d * 5632 + 8 * d + d + 2 * d
    assert p.total == 24 * layer + 32000 * d + d
    # only the kv heads are cached
    assert kv_bytes_per_token(spec, "bf16") == 24 * 2 * kv * 2
    assert not REGISTRY["jetmoe"].builds


def test_jetmoe_query_heads_are_kv_heads_times_top_k_whatever_num_attention_heads_says():
    """JetMoeConfig derives num_attention_heads (kv heads x top-k) but keeps a given one; the model ignores it
    (each expert's q_proj makes kv-heads heads): the same logits and parameters either way."""
    small = dict(hidden_size=32, kv_channels=8, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                 intermediate_size=16, num_hidden_layers=1, vocab_size=50)
    models = []
    for heads in (None, 5):
        torch.manual_seed(0)
        cfg = jet(**small) if heads is None else jet(**small, num_attention_heads=heads)
        models.append(AutoModelForCausalLM.from_config(cfg).eval())
        assert spec_from_config(cfg.to_dict(), "t").attention.n_heads == 4
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(models[0](ids).logits, models[1](ids).logits)
    assert total(models[0]) == total(models[1])


@pytest.mark.parametrize("change, message", [
    ({"activation_function": "relu"}, r"activation_function 'relu' is not modelled"),
    ({"num_experts_per_tok": 9}, r"num_experts_per_tok \(9\) exceeds num_local_experts \(8\)"),
    ({"kv_channels": 0}, r"attention"),
    ({"num_local_experts": "8"}, r"num_local_experts' must be an integer"),
])
def test_jetmoe_bad_switches_are_one_line_exit_2(change, message, tmp_path, capsys):
    err = one_line_exit_2({**jet().to_dict(), **change}, tmp_path, capsys)
    assert re.search(message, err), err


def test_a_mixture_of_attention_heads_is_validated():
    from moelab.spec.model import AttentionSpec

    assert AttentionSpec(n_heads=8, n_kv_heads=4, head_dim=16, moa_experts=2).moa_experts == 2
    for bad in (dict(moa_experts=1), dict(moa_experts=4, qkv_bias=True), dict(moa_experts=-1)):
        with pytest.raises(MoelabError, match="moa_experts|mixture of attention"):
            AttentionSpec(n_heads=8, n_kv_heads=4, head_dim=16, **bad)


@pytest.mark.parametrize("kind", ["dbrx", "jetmoe"])
def test_a_one_token_decode_step_reads_the_active_weights(kind):
    """At batch 1 a token touches exactly its top-k experts of each kind (JetMoE: attention and MLP experts), so
    the step's matmuls stream the active weights, at 2 bytes (bf16), and its attention the KV cache."""
    from moelab.cost.roofline import Workload, decode_step
    from moelab.spec.hardware import hardware_presets

    raw = real_dbrx() if kind == "dbrx" else jet(num_hidden_layers=24).to_dict()
    spec = spec_from_config(raw, kind)
    p = count_params(spec)
    wl = Workload(batch=1, prompt=64, gen=2)
    kv = kv_bytes_per_token(spec, "bf16") * (round(wl.decode_context) + 1)
    step = decode_step(spec, next(iter(hardware_presets().values())), wl)
    weights = ("qkv_proj", "o_proj", "attention_experts", "ffn", "router", "experts", "shared_experts", "lm_head")
    streamed = sum(op.bytes for op in step.operators if op.name in weights)
    attended = sum(op.bytes for op in step.operators if op.name == "attention_decode")
    # every active matmul weight once; the lm_head reads its V x d matrix even when tied to the embedding table
    # (JetMoE), the norms' few weights go with the fused elementwise kernels
    head = spec.vocab_size * spec.d_model
    assert streamed == pytest.approx((p.active - p.embedding - p.lm_head - p.norms + head) * 2, rel=1e-12)
    assert attended == pytest.approx(kv, rel=1e-12)  # the cache and the new token's own K, V


def test_moelab_nn_refuses_a_mixture_of_attention_heads():
    """Built as plain attention it would be a different model: moelab.nn says so in one line instead."""
    from moelab.nn.model import build_model

    small = jet(hidden_size=32, kv_channels=8, num_key_value_heads=2, intermediate_size=16, num_hidden_layers=1,
                vocab_size=50)
    with pytest.raises(MoelabError, match="mixture of attention heads .* not built by moelab.nn"):
        build_model(spec_from_config(small.to_dict(), "t"))
