"""Phi-3.5-MoE: Mistral-like attention with q/k/v/o biases (attention_bias) and an optional sliding window,
LayerNorms with biases (eps rms_norm_eps), an lm_head bias (lm_head_bias), and every FFN a MoE of
num_local_experts experts routed by sparsemixer (exactly two experts; router_jitter_noise is its eps, used in
eval too). Checkpoints name the experts block_sparse_moe.experts.N.w1/w3/w2 (gate/up/down) and the router
block_sparse_moe.gate.

RoPE: transformers' PhimoeRotaryEmbedding scales cos/sin by rope_scaling's short_mscale (long_mscale beyond
original_max_position_embeddings) instead of LongRoPE's default attention factor; moelab reads the mscale as
the LongRoPE attention_factor, and builds the model only where the two agree (they do in Phi-3.5-MoE).
transformers 5.24 also computes the frequencies from short_factor at every length (its forward calls the rope
function without seq_len), where moelab, like Phi-3's LongRoPE, switches to long_factor beyond
original_max_position_embeddings: the two agree up to that length. That length is rope_scaling's own
original_max_position_embeddings, else max_position_embeddings: PhimoeConfig (5.24) does not take the top-level
field Phi-3 configs carry (it ends up overwritten with the rope dict's value), and neither does moelab.
Source: transformers models/phimoe/modeling_phimoe.py, configuration_phimoe.py, conversion_mapping.py
("phimoe"); microsoft/Phi-3.5-MoE-instruct config.json."""

from __future__ import annotations

from dataclasses import replace

from moelab import limits
from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import base_config, check_gqa, finish, gqa, rope_scaling, rope_theta
from moelab.validation import show_value

_MOE = "model.layers.{layer}.block_sparse_moe"
SPARSEMIXER_TOP_K = 2  # transformers' sparsemixer picks two experts whatever num_experts_per_tok says


def _scaling(c) -> tuple:
    """rope_scaling's items, a LongRoPE short_mscale carried over as attention_factor when long_mscale agrees."""
    items = dict(rope_scaling(c))
    short, long = items.get("short_mscale"), items.get("long_mscale")
    if items.get("rope_type") == "longrope" and short is not None and short == long and "attention_factor" not in items:
        items["attention_factor"] = short
    return tuple(sorted(items.items()))


@register
class Phimoe(Family):
    model_types = ("phimoe",)
    architecture = "PhimoeForCausalLM"
    refused = {"num_experts_per_tok": (SPARSEMIXER_TOP_K,)}
    weights = (
        ("layers.{layer}.mlp.gate_up_proj[gate]", f"{_MOE}.experts.{{expert}}.w1.weight"),
        ("layers.{layer}.mlp.gate_up_proj[up]", f"{_MOE}.experts.{{expert}}.w3.weight"),
        ("layers.{layer}.mlp.down_proj", f"{_MOE}.experts.{{expert}}.w2.weight"),
        ("layers.{layer}.mlp.gate.weight", f"{_MOE}.gate.weight"),
    )
    # transformers >= 5 keeps the router as mlp.router (its conversion_mapping renames block_sparse_moe.gate)
    aliases = (("model.layers.{layer}.mlp.router.weight", f"{_MOE}.gate.weight"),)

    def read(self, c, name):
        bias = c.bool("attention_bias", False)
        attention = gqa(c, bias, bias, window=c.int("sliding_window", None, optional=True))
        eps = c.raw.get("router_jitter_noise", 0.01)
        problem = limits.number_problem(eps, 0, 1.0)
        if problem:
            c.errors.append(f"field 'router_jitter_noise' {problem}")
            eps = 0.01
        moe = dict(n_experts=c.int("num_local_experts", 16), top_k=c.int("num_experts_per_tok", SPARSEMIXER_TOP_K),
                   expert_ffn=c.int("intermediate_size"), router="sparsemixer", norm_topk_prob=False,
                   sparsemixer_eps=float(eps))
        return finish(c, name, attention, moe, range(c.int("num_hidden_layers")), ffn_dim=0, norm="layer",
                      norm_eps=c.float("rms_norm_eps", 1e-5), lm_head_bias=c.bool("lm_head_bias", False),
                      rope_theta=rope_theta(c, 1e6), rope_scaling=_scaling(c))  # 1e6: PhimoeConfig.default_theta

    def check_buildable(self, raw, spec):
        scaling = dict(spec.rope_scaling)
        kind = scaling.get("rope_type")
        if kind is None:
            return None
        if kind != "longrope":
            return f"rope type {show_value(kind)} (moelab.nn builds Phi-MoE with plain RoPE or LongRoPE)"
        if scaling.get("short_mscale") is None or scaling.get("short_mscale") != scaling.get("long_mscale"):
            return "rope_scaling short_mscale and long_mscale that are absent or differ"
        if scaling.get("attention_factor") != scaling["short_mscale"]:
            return "rope_scaling attention_factor other than its short_mscale"
        return None

    def write(self, spec, dtype):
        a, m = spec.attention, spec.moe
        need(spec.norm == "layer", f"{spec.norm} norms (Phi-MoE has LayerNorms with biases)")
        check_gqa(replace(spec, norm="rms", lm_head_bias=False), None, None, "none", window=True)
        need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        need(spec.is_moe and spec.moe_layers == tuple(range(spec.n_layers)), "dense layers between MoE layers")
        need(len({layer.moe for layer in spec.layers}) == 1, "MoE layers that differ")
        need(m.router == "sparsemixer" and m.top_k == SPARSEMIXER_TOP_K, "routing other than sparsemixer top-2")
        need(m.n_shared == 0 and m.n_group == 1 and m.routed_scaling_factor == 1.0 and not m.selection_bias,
             "shared experts or DeepSeek-style routing")
        need(not (m.router_bias or m.expert_bias or spec.mlp_bias), "router or expert biases")
        need(m.sparsemixer_eps <= 1.0, "a sparsemixer eps above 1")
        cfg = base_config(spec, "phimoe", self.architecture, dtype)
        cfg.update(num_local_experts=m.n_experts, num_experts_per_tok=m.top_k, intermediate_size=m.expert_ffn,
                   attention_bias=a.qkv_bias, lm_head_bias=spec.lm_head_bias, sliding_window=a.sliding_window,
                   router_jitter_noise=m.sparsemixer_eps, input_jitter_noise=0.0, router_aux_loss_coef=0.001,
                   output_router_logits=False)
        return cfg

