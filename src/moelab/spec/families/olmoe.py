"""OLMoE: q/k RMSNorms over all heads, every FFN a MoE (softmax, top-k, optional renormalisation).
Source: transformers models/olmoe/modeling_olmoe.py."""

from __future__ import annotations

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import base_config, check_gqa, check_moe, finish, gqa


@register
class Olmoe(Family):
    model_types = ("olmoe",)
    architecture = "OlmoeForCausalLM"
    nn_refused = {"clip_qkv": (None,)}

    def read(self, c, name):
        bias = c.bool("attention_bias", False)
        moe = dict(n_experts=c.int("num_experts"), top_k=c.int("num_experts_per_tok"),
                   expert_ffn=c.int("intermediate_size"), router="softmax_topk",
                   norm_topk_prob=c.bool("norm_topk_prob", False))
        return finish(c, name, gqa(c, bias, bias, "full"), moe, range(c.int("num_hidden_layers")))

    def check_buildable(self, raw, spec):
        a = spec.attention
        if a.n_heads * a.head_dim != spec.d_model:
            return "olmoe needs head_dim * num_attention_heads == hidden_size"
        return None

    def write(self, spec, dtype):
        a, m = spec.attention, spec.moe
        check_gqa(spec, None, None, "full")
        need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        need(a.n_heads * a.head_dim == spec.d_model, "head_dim * heads != hidden_size")
        check_moe(spec, "softmax_topk", all_layers=True)
        cfg = base_config(spec, "olmoe", self.architecture, dtype)
        cfg.update(attention_bias=a.qkv_bias, clip_qkv=None, num_experts=m.n_experts, num_experts_per_tok=m.top_k,
                   intermediate_size=m.expert_ffn, norm_topk_prob=m.norm_topk_prob, router_aux_loss_coef=0.01,
                   output_router_logits=False)
        return cfg
