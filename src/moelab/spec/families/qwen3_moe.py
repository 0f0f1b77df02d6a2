"""Qwen3-MoE: Qwen3's attention (per-head q/k norms) with Qwen's MoE layout, no shared expert; a sliding
window on every layer when use_sliding_window. Source: transformers models/qwen3_moe/modeling_qwen3_moe.py."""

from __future__ import annotations

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import check_gqa, check_moe, finish, gqa, qwen_window
from moelab.spec.families.qwen2_moe import qwen_moe_fields, qwen_moe_layers, write_qwen_moe


@register
class Qwen3Moe(Family):
    model_types = ("qwen3_moe",)
    architecture = "Qwen3MoeForCausalLM"

    def read(self, c, name):
        n_experts, layers = qwen_moe_layers(c)
        bias = c.bool("attention_bias", False)
        window = c.int("sliding_window", None, optional=True) if c.flag("use_sliding_window", False) else None
        return finish(c, name, gqa(c, bias, bias, "head", window=window), qwen_moe_fields(c, n_experts), layers)

    def write(self, spec, dtype):
        a = spec.attention
        check_gqa(spec, None, None, "head", window=True)
        need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        check_moe(spec, "softmax_topk", all_layers=False)
        cfg = write_qwen_moe(spec, "qwen3_moe", self.architecture, dtype)
        cfg["attention_bias"] = a.qkv_bias
        qwen_window(cfg, spec)
        return cfg
