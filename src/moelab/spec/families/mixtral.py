"""Mixtral: Mistral's attention, every FFN a MoE routed top-k on logits then softmax over the kept.
HF names its experts block_sparse_moe.experts.N.w1/w3/w2 (gate/up/down). Source: transformers
models/mixtral/modeling_mixtral.py."""

from __future__ import annotations

from moelab.spec.families.base import Family, register
from moelab.spec.families.common import base_config, check_gqa, check_moe, finish, gqa


@register
class Mixtral(Family):
    model_types = ("mixtral",)
    architecture = "MixtralForCausalLM"
    weights = (
        ("layers.{layer}.mlp.gate_up_proj[gate]", "model.layers.{layer}.block_sparse_moe.experts.{expert}.w1.weight"),
        ("layers.{layer}.mlp.gate_up_proj[up]", "model.layers.{layer}.block_sparse_moe.experts.{expert}.w3.weight"),
        ("layers.{layer}.mlp.down_proj", "model.layers.{layer}.block_sparse_moe.experts.{expert}.w2.weight"),
        ("layers.{layer}.mlp.gate.weight", "model.layers.{layer}.block_sparse_moe.gate.weight"),
    )
    # transformers >= 5 keeps the router under mlp.gate: accepted as another spelling
    aliases = (("model.layers.{layer}.mlp.gate.weight", "model.layers.{layer}.block_sparse_moe.gate.weight"),)

    def read(self, c, name):
        moe = dict(n_experts=c.int("num_local_experts"), top_k=c.int("num_experts_per_tok"),
                   expert_ffn=c.int("intermediate_size"), router="topk_softmax")
        window = c.int("sliding_window", None, optional=True)
        return finish(c, name, gqa(c, False, False, window=window), moe, range(c.int("num_hidden_layers")))

    def write(self, spec, dtype):
        check_gqa(spec, False, False, "none", window=True)
        check_moe(spec, "topk_softmax", all_layers=True)
        cfg = base_config(spec, "mixtral", self.architecture, dtype)
        m = spec.moe
        cfg.update(num_local_experts=m.n_experts, num_experts_per_tok=m.top_k, intermediate_size=m.expert_ffn,
                   router_jitter_noise=0.0, router_aux_loss_coef=0.001, output_router_logits=False,
                   sliding_window=spec.attention.sliding_window)
        return cfg
