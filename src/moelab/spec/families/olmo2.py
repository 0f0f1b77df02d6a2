"""OLMo 2 (model_type olmo2): Llama's projections with the norms moved after each sublayer (x + norm(attn(x)),
then + norm(mlp(.)); no input norm) and RMSNorms on q and k over all heads, before RoPE.
Source: transformers models/olmo2/modeling_olmo2.py (Olmo2DecoderLayer, Olmo2Attention)."""

from __future__ import annotations

from dataclasses import replace

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import base_config, check_gqa, finish, gqa


@register
class Olmo2(Family):
    model_types = ("olmo2",)
    architecture = "Olmo2ForCausalLM"

    def read(self, c, name):
        bias = c.bool("attention_bias", False)  # q, k, v and o together (Olmo2Attention)
        return finish(c, name, gqa(c, bias, bias, "full"), norm_placement="post")

    def write(self, spec, dtype):
        need(not spec.is_moe, "MoE layers")
        need(not spec.mlp_bias, "FFN biases")
        need(spec.norm_placement == "post", f"norms placed {spec.norm_placement}")
        a = spec.attention
        check_gqa(replace(spec, norm_placement="pre"), None, None, "full")
        need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        cfg = base_config(spec, "olmo2", self.architecture, dtype)
        cfg["attention_bias"] = a.qkv_bias
        return cfg
