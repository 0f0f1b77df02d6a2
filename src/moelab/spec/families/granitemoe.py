"""Granite MoE (granite-3.0-1b-a400m, granite-3.0-3b-a800m): Mixtral-like (every FFN a MoE routed top-k on the
logits, then softmax over the kept) with Granite's multipliers: embeddings times embedding_multiplier, each
sublayer's output times residual_multiplier before its residual add, logits divided by logits_scaling, and
attention_multiplier as the softmax scale (not 1/sqrt(head_dim)). Checkpoints store the experts fused:
block_sparse_moe.input_linear.weight (E, 2f, d: gate rows, then up rows, as moelab's gate_up_proj),
output_linear.weight (E, d, f) and router.layer.weight (E, d).
Source: transformers models/granitemoe/modeling_granitemoe.py, configuration_granitemoe.py and
conversion_mapping.py ("granitemoe")."""

from __future__ import annotations

from dataclasses import replace

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import base_config, check_gqa, check_moe, finish, gqa

_MOE = "model.layers.{layer}.block_sparse_moe"


def _default_scale(head_dim: int) -> float:
    """1/sqrt(head_dim), the scale moelab uses when a spec sets none (written out: Granite states it always)."""
    return head_dim ** -0.5


@register
class GraniteMoe(Family):
    model_types = ("granitemoe",)
    architecture = "GraniteMoeForCausalLM"
    weights = (
        ("layers.{layer}.mlp.gate_up_proj", f"{_MOE}.input_linear.weight"),
        ("layers.{layer}.mlp.down_proj", f"{_MOE}.output_linear.weight"),
        ("layers.{layer}.mlp.gate.weight", f"{_MOE}.router.layer.weight"),
    )
    # the names transformers >= 5 keeps in memory (its conversion_mapping renames the file's on load)
    aliases = (
        (f"{_MOE}.experts.gate_up_proj", f"{_MOE}.input_linear.weight"),
        (f"{_MOE}.experts.down_proj", f"{_MOE}.output_linear.weight"),
        (f"{_MOE}.router.weight", f"{_MOE}.router.layer.weight"),
    )

    def read(self, c, name):
        # transformers' defaults: every multiplier 1.0, so an absent attention_multiplier is a softmax scale of 1
        attention = gqa(c, c.bool("attention_bias", False), c.bool("attention_bias", False))
        scale = c.float("attention_multiplier", 1.0)
        attention["scale"] = None if scale == _default_scale(attention["head_dim"]) else scale
        moe = dict(n_experts=c.int("num_local_experts", 8), top_k=c.int("num_experts_per_tok", 2),
                   expert_ffn=c.int("intermediate_size"), router="topk_softmax")
        return finish(c, name, attention, moe, range(c.int("num_hidden_layers")), ffn_dim=0,
                      embedding_scale=c.float("embedding_multiplier", 1.0),
                      residual_scale=c.float("residual_multiplier", 1.0),
                      logits_scale=c.float("logits_scaling", 1.0))

    def write(self, spec, dtype):
        a = spec.attention
        # the multipliers and the scale are Granite's own: checked here, the rest as any plain family
        plain = replace(spec, embedding_scale=1.0, residual_scale=1.0, logits_scale=1.0,
                        layers=tuple(replace(layer, attention=replace(layer.attention, scale=None))
                                     for layer in spec.layers))
        need(len({layer.attention.scale for layer in spec.layers}) == 1, "softmax scales that differ between layers")
        check_gqa(plain, None, None, "none")
        need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        check_moe(plain, "topk_softmax", all_layers=True)
        m = spec.moe
        cfg = base_config(spec, "granitemoe", self.architecture, dtype)
        cfg.update(num_local_experts=m.n_experts, num_experts_per_tok=m.top_k, intermediate_size=m.expert_ffn,
                   attention_bias=a.qkv_bias,
                   attention_multiplier=a.scale if a.scale is not None else _default_scale(a.head_dim),
                   embedding_multiplier=spec.embedding_scale, residual_multiplier=spec.residual_scale,
                   logits_scaling=spec.logits_scale, router_aux_loss_coef=0.001, output_router_logits=False)
        return cfg
