"""Qwen3 (dense): per-head q/k RMSNorms, head_dim 128 when the config omits it, optional attention biases.
Source: transformers models/qwen3/modeling_qwen3.py."""

from __future__ import annotations

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import finish, gqa, head_dim
from moelab.spec.families.qwen2 import qwen_layer_windows, write_qwen_dense


@register
class Qwen3(Family):
    model_types = ("qwen3",)
    architecture = "Qwen3ForCausalLM"

    def read(self, c, name):
        bias = c.bool("attention_bias", False)
        attention = gqa(c, bias, bias, "head", head_size=head_dim(c, 128))
        return finish(c, name, qwen_layer_windows(c, attention))

    def write(self, spec, dtype):
        a = spec.attention
        need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        cfg = write_qwen_dense(spec, "qwen3", self.architecture, dtype, None, None, "head")
        cfg["attention_bias"] = a.qkv_bias
        return cfg
