"""Qwen2 (dense): q/k/v biases, no output bias; a sliding window on layers i >= max_window_layers when
use_sliding_window (or as layer_types says). Source: transformers models/qwen2/configuration_qwen2.py."""

from __future__ import annotations

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import (
    FULL,
    SLIDING,
    base_config,
    check_dense_widths,
    check_gqa,
    finish,
    gqa,
    layer_types,
    qwen_window,
    windowed,
)


def qwen_layer_windows(c, attention: dict, moe_style: bool = False) -> list[dict]:
    """Per-layer attention of a Qwen config: transformers' layer_types, else its default rule (dense Qwen:
    sliding on i >= max_window_layers; Qwen2-MoE: on even-numbered layers i < max_window_layers)."""
    n = c.int("num_hidden_layers")
    use = c.flag("use_sliding_window", False)
    window = c.int("sliding_window", None, optional=True) if use else None
    limit = c.int("max_window_layers", 28)
    if moe_style:
        default = [SLIDING if use and (i + 1) % 2 and i < limit else FULL for i in range(n)]
    else:
        default = [SLIDING if window and i >= limit else FULL for i in range(n)]
    types = layer_types(c, default)
    return windowed(attention, types, window or None)


def write_qwen_dense(spec, model_type: str, architecture: str, dtype: str, qkv_bias, o_bias, qk_norm: str) -> dict:
    need(not spec.is_moe, "MoE layers")
    need(not spec.mlp_bias, "FFN biases")
    check_gqa(spec, qkv_bias, o_bias, qk_norm, window=True, per_layer_window=True)
    check_dense_widths(spec)
    cfg = base_config(spec, model_type, architecture, dtype)
    qwen_window(cfg, spec)
    return cfg


@register
class Qwen2(Family):
    model_types = ("qwen2",)
    architecture = "Qwen2ForCausalLM"

    def read(self, c, name):
        return finish(c, name, qwen_layer_windows(c, gqa(c, True, False)))

    def write(self, spec, dtype):
        return write_qwen_dense(spec, "qwen2", self.architecture, dtype, True, False, "none")
