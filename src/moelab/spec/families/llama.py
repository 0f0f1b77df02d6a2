"""Llama (1-3.x): grouped-query attention, SwiGLU, optional attention and MLP biases.
Source: transformers models/llama/configuration_llama.py, modeling_llama.py."""

from __future__ import annotations

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import base_config, check_gqa, finish, gqa


@register
class Llama(Family):
    model_types = ("llama",)
    architecture = "LlamaForCausalLM"

    def read(self, c, name):
        bias = c.bool("attention_bias", False)
        return finish(c, name, gqa(c, bias, bias), mlp_bias=c.bool("mlp_bias", False))

    def write(self, spec, dtype):
        need(not spec.is_moe, "MoE layers")
        a = spec.attention
        check_gqa(spec, None, None, "none")
        need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        cfg = base_config(spec, "llama", self.architecture, dtype)
        cfg.update(attention_bias=a.qkv_bias, mlp_bias=spec.mlp_bias)
        return cfg
