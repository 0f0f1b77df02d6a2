"""Qwen2-MoE: Qwen2's attention; MoE on every decoder_sparse_step-th layer not in mlp_only_layers, softmax
then top-k, and one shared expert gated by sigmoid(Linear(d -> 1)) (built even at width 0).
Source: transformers models/qwen2_moe/modeling_qwen2_moe.py."""

from __future__ import annotations

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import (
    base_config,
    check_gqa,
    check_moe,
    empty_shared_experts,
    finish,
    gqa,
    moe_layer_list,
    qwen_window,
)
from moelab.spec.families.qwen2 import qwen_layer_windows


def qwen_moe_layers(c) -> tuple[int, list[int]]:
    """(expert count, MoE layer indices) of a Qwen MoE config."""
    # transformers >= 5 writes Qwen3-MoE's expert count as num_local_experts (its attribute_map alias)
    n_experts = c.int("num_experts" if "num_experts" in c.raw or "num_local_experts" not in c.raw
                      else "num_local_experts")
    step = c.int("decoder_sparse_step", 1)
    if step <= 0:
        c.errors.append("field 'decoder_sparse_step' must be positive")
        step = 1
    layers = moe_layer_list(c, c.int("num_hidden_layers"), every=step, dense_only=c.int_list("mlp_only_layers"))
    return n_experts, layers if n_experts > 0 else []


def qwen_moe_fields(c, n_experts: int, **extra) -> dict:
    return dict(n_experts=n_experts, top_k=c.int("num_experts_per_tok"), expert_ffn=c.int("moe_intermediate_size"),
                router="softmax_topk", norm_topk_prob=c.bool("norm_topk_prob", False), **extra)


def write_qwen_moe(spec, model_type: str, architecture: str, dtype: str) -> dict:
    m = spec.moe
    cfg = base_config(spec, model_type, architecture, dtype)
    cfg.update(num_experts=m.n_experts, num_experts_per_tok=m.top_k, moe_intermediate_size=m.expert_ffn,
               norm_topk_prob=m.norm_topk_prob, decoder_sparse_step=1,
               mlp_only_layers=[i for i in range(spec.n_layers) if i not in spec.moe_layers],
               router_aux_loss_coef=0.001, output_router_logits=False)
    return cfg


@register
class Qwen2Moe(Family):
    model_types = ("qwen2_moe",)
    architecture = "Qwen2MoeForCausalLM"
    weights = (("layers.{layer}.mlp.shared_experts.{rest}", "model.layers.{layer}.mlp.shared_expert.{rest}"),)

    def read(self, c, name):
        n_experts, layers = qwen_moe_layers(c)
        shared_ffn = c.int("shared_expert_intermediate_size", 0)
        moe = qwen_moe_fields(c, n_experts, n_shared=1 if shared_ffn else 0, shared_ffn=shared_ffn, shared_gate=True)
        attention = qwen_layer_windows(c, gqa(c, c.bool("qkv_bias", True), False), moe_style=True)
        return finish(c, name, attention, moe, layers)

    def empty_tensors(self, spec):
        return empty_shared_experts(spec, "shared_expert")

    def write(self, spec, dtype):
        m = spec.moe
        need(not spec.mlp_bias, "FFN biases")
        check_gqa(spec, None, False, "none", window=True, per_layer_window=True)
        check_moe(spec, "softmax_topk", all_layers=False, shared=True)
        need(m.n_shared <= 1 and m.shared_gate, "anything but one sigmoid-gated shared expert (or none)")
        cfg = write_qwen_moe(spec, "qwen2_moe", self.architecture, dtype)
        cfg.update(qkv_bias=spec.attention.qkv_bias, shared_expert_intermediate_size=m.n_shared * m.shared_ffn)
        qwen_window(cfg, spec)
        return cfg
