"""Mistral: Llama's layout with a sliding window on every layer whenever `sliding_window` is set.
Source: transformers models/mistral/modeling_mistral.py."""

from __future__ import annotations

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import base_config, check_gqa, finish, gqa


@register
class Mistral(Family):
    model_types = ("mistral",)
    architecture = "MistralForCausalLM"

    def read(self, c, name):
        return finish(c, name, gqa(c, False, False, window=c.int("sliding_window", None, optional=True)))

    def write(self, spec, dtype):
        need(not spec.is_moe, "MoE layers")
        need(not spec.mlp_bias, "FFN biases")
        check_gqa(spec, False, False, "none", window=True)
        cfg = base_config(spec, "mistral", self.architecture, dtype)
        cfg["sliding_window"] = spec.attention.sliding_window
        return cfg
