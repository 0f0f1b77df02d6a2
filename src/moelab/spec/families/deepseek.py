"""DeepSeek-V2/V3 and Kimi-K2 (a DeepSeek-V3 body under model_type kimi_k2): multi-head latent attention, the
first first_k_dense_replace layers dense, then MoE every moe_layer_freq-th layer with shared experts; V3 routes
by sigmoid with a selection-only bias and group-limited top-k. Multi-token-prediction layers
(num_nextn_predict_layers) are not part of the causal LM transformers builds, and are skipped here too.
Source: transformers models/deepseek_v3/modeling_deepseek_v3.py, models/deepseek_v2/modeling_deepseek_v2.py;
moonshotai/Kimi-K2-Instruct config.json."""

from __future__ import annotations

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import TOPK_METHODS, base_config, check_plain, finish, mla


class _DeepSeek(Family):
    v3: bool = True
    weights = (("layers.{layer}.mlp.gate.bias", "model.layers.{layer}.mlp.gate.e_score_correction_bias"),)

    def read(self, c, name):
        layers = c.int("num_hidden_layers")
        first_dense = c.int("first_k_dense_replace", 3 if self.v3 else 0, optional=True) or 0
        freq = c.int("moe_layer_freq", 1)
        if freq <= 0:
            c.errors.append("field 'moe_layer_freq' must be positive")
            freq = 1
        n_experts = c.int("n_routed_experts", None, optional=True)
        c.int("num_nextn_predict_layers", 0, optional=True)  # multi-token-prediction layers: skipped, but checked
        moe, moe_layers = None, []
        if n_experts:
            moe_layers = [i for i in range(layers) if i >= first_dense and i % freq == 0]
            scoring = c.choice("scoring_func", "sigmoid" if self.v3 else "softmax", ("sigmoid", "softmax"))
            topk_method = c.choice("topk_method", "noaux_tc" if self.v3 else "greedy", TOPK_METHODS)
            grouped = topk_method in ("noaux_tc", "group_limited_greedy")
            moe = dict(
                n_experts=n_experts,
                top_k=c.int("num_experts_per_tok"),
                expert_ffn=c.int("moe_intermediate_size"),
                n_shared=c.int("n_shared_experts", None, optional=True) or 0,
                shared_ffn=c.int("moe_intermediate_size"),
                router="sigmoid" if scoring == "sigmoid" else "softmax_topk",
                norm_topk_prob=c.bool("norm_topk_prob", self.v3),
                n_group=c.count("n_group", 1) if grouped else 1,
                topk_group=c.count("topk_group", 1) if grouped else 1,
                routed_scaling_factor=c.float("routed_scaling_factor", 1.0),
                selection_bias=topk_method == "noaux_tc",
            )
        return finish(c, name, mla(c), moe, moe_layers, mlp_bias=c.bool("mlp_bias", False),
                      rope_interleave=self.v3 and c.flag("rope_interleave", True))

    def ignored(self, name, spec, raw):
        """The multi-token-prediction layers some checkpoints carry after the last decoder layer."""
        parts = name.split(".")
        if len(parts) < 3 or parts[:2] != ["model", "layers"] or not parts[2].isdigit():
            return False
        extra = raw.get("num_nextn_predict_layers") or 0
        return spec.n_layers <= int(parts[2]) < spec.n_layers + extra


@register
class DeepseekV3(_DeepSeek):
    model_types = ("deepseek_v3", "kimi_k2")
    architecture = "DeepseekV3ForCausalLM"

    def write(self, spec, dtype):
        a, m = spec.attention, spec.moe
        check_plain(spec)
        need(a.kind == "mla", "grouped-query attention")
        need(spec.uniform_attention, "attention that differs between layers")
        need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        need(a.sliding_window is None and a.qk_norm == "none", "a sliding window or q/k norms")
        need(spec.is_moe and m.router == "sigmoid", "no sigmoid-routed MoE layers")
        need(len({layer.moe for layer in spec.layers if layer.moe}) == 1, "MoE layers that differ")
        first = spec.moe_layers[0]
        need(spec.moe_layers == tuple(range(first, spec.n_layers)), "MoE layers other than the last n")
        need(m.n_shared >= 1 and m.shared_ffn == m.expert_ffn and not m.shared_gate, "this shared-expert shape")
        need(not (spec.mlp_bias or m.router_bias or m.expert_bias), "FFN biases")
        cfg = base_config(spec, "deepseek_v3", self.architecture, dtype)
        method = "noaux_tc" if m.selection_bias else "group_limited_greedy" if m.n_group > 1 else "greedy"
        cfg.update(
            head_dim=a.qk_rope_head_dim, attention_bias=a.qkv_bias, q_lora_rank=a.q_lora_rank,
            kv_lora_rank=a.kv_lora_rank, qk_nope_head_dim=a.qk_nope_head_dim, qk_rope_head_dim=a.qk_rope_head_dim,
            v_head_dim=a.head_dim, rope_interleave=spec.rope_interleave,
            n_routed_experts=m.n_experts, num_experts_per_tok=m.top_k, moe_intermediate_size=m.expert_ffn,
            n_shared_experts=m.n_shared, first_k_dense_replace=first, moe_layer_freq=1, n_group=m.n_group,
            topk_group=m.topk_group, routed_scaling_factor=m.routed_scaling_factor, norm_topk_prob=m.norm_topk_prob,
            scoring_func="sigmoid", topk_method=method, num_nextn_predict_layers=0, mlp_bias=False,
        )
        if spec.ffn_dim == 0:
            cfg["intermediate_size"] = m.expert_ffn
        return cfg


@register
class DeepseekV2(_DeepSeek):
    model_types = ("deepseek_v2",)
    architecture = "DeepseekV2ForCausalLM"
    v3 = False
