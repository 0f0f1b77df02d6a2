"""DeepSeek-V2/V3 and Kimi-K2 (a DeepSeek-V3 body under model_type kimi_k2): multi-head latent attention, the
first first_k_dense_replace layers dense, then MoE every moe_layer_freq-th layer with shared experts; V3 routes
by sigmoid with a selection-only bias and group-limited top-k. Multi-token-prediction layers
(num_nextn_predict_layers) are not part of the causal LM transformers builds, and are skipped here too.
Source: transformers models/deepseek_v3/modeling_deepseek_v3.py, models/deepseek_v2/modeling_deepseek_v2.py;
moonshotai/Kimi-K2-Instruct config.json.

Where transformers 5.24 differs from DeepSeek's own remote code, moelab follows transformers (the counts and
logits are tested against it) and moelab.nn refuses what would make the two disagree:
- q_lora_rank absent is 1536 (both config classes' default), null is a plain q_proj.
- n_shared_experts absent is 2 (V2) or 1 (V3), the config classes' defaults.
- V2 rotates with complex products over consecutive pairs (apply_rotary_emb: view_as_complex), which is
  moelab's interleaved rotation up to one permutation of the rope dims applied to q and k alike, so scores
  are identical: V2 specs have rope_interleave always.
- V2 routes by softmax, then plain top-k ("greedy") or top-k within the topk_group groups of the highest max
  score ("group_limited_greedy": MoESpec.group_score "max"); it never renormalises (DeepseekV2TopkRouter
  ignores norm_topk_prob), then scales by routed_scaling_factor.
- Both modeling files put MoE on every layer >= first_k_dense_replace and never read moe_layer_freq; the
  reader follows DeepSeek's rule (i % moe_layer_freq == 0) for the engine, and moelab.nn builds only 1."""

from __future__ import annotations

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import (
    TOPK_METHODS,
    base_config,
    check_plain,
    empty_shared_experts,
    finish,
    is_mtp_layer,
    mla,
)
from moelab.spec.model import ModelSpec


class _DeepSeek(Family):
    v3: bool = True
    weights = (("layers.{layer}.mlp.gate.bias", "model.layers.{layer}.mlp.gate.e_score_correction_bias"),)
    nn_refused = {"moe_layer_freq": (1,)}

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
                n_shared=c.int("n_shared_experts", 1 if self.v3 else 2, optional=True) or 0,
                shared_ffn=c.int("moe_intermediate_size"),
                router="sigmoid" if scoring == "sigmoid" else "softmax_topk",
                norm_topk_prob=c.bool("norm_topk_prob", self.v3),
                n_group=c.count("n_group", 1) if grouped else 1,
                topk_group=c.count("topk_group", 1) if grouped else 1,
                # DeepSeek-V2's group_limited_greedy ranks groups by their best score, V3's noaux_tc by top-2 sums
                group_score="max" if not self.v3 and topk_method == "group_limited_greedy" else "top2_sum",
                routed_scaling_factor=c.float("routed_scaling_factor", 1.0),
                selection_bias=topk_method == "noaux_tc",
            )
        attention = {**mla(c), "q_lora_rank": c.int("q_lora_rank", 1536, optional=True)}
        interleave = c.flag("rope_interleave", True) if self.v3 else True
        notes = () if freq == 1 or not n_experts else (
            f"moe_layer_freq {freq}: MoE only on layers i >= first_k_dense_replace with i % {freq} == 0, as "
            "DeepSeek's own code builds it; transformers' DeepSeek classes ignore the field (MoE on all of them)",)
        return finish(c, name, attention, moe, moe_layers, mlp_bias=c.bool("mlp_bias", False),
                      rope_interleave=interleave, notes=notes)

    def ignored(self, name, spec, raw):
        return is_mtp_layer(name, spec, raw)


def _check_attention(spec: ModelSpec) -> None:
    """What both writers need of the attention: the same biased-alike MLA in every layer, nothing else."""
    a = spec.attention
    check_plain(spec)
    need(a.kind == "mla", "grouped-query attention")
    need(spec.uniform_attention, "attention that differs between layers")
    need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
    need(a.sliding_window is None and a.qk_norm == "none", "a sliding window or q/k norms")


def _first_of_last_moe_layers(spec: ModelSpec) -> int:
    """first_k_dense_replace: the MoE layers, all alike, must be the last ones; the first of them."""
    need(len({layer.moe for layer in spec.layers if layer.moe}) == 1, "MoE layers that differ")
    first = spec.moe_layers[0]
    need(spec.moe_layers == tuple(range(first, spec.n_layers)), "MoE layers other than the last n")
    return first


@register
class DeepseekV3(_DeepSeek):
    model_types = ("deepseek_v3", "kimi_k2")
    architecture = "DeepseekV3ForCausalLM"

    def write(self, spec, dtype):
        a, m = spec.attention, spec.moe
        _check_attention(spec)
        need(spec.is_moe and m.router == "sigmoid", "no sigmoid-routed MoE layers")
        first = _first_of_last_moe_layers(spec)
        need(m.n_shared >= 1 and m.shared_ffn == m.expert_ffn and not m.shared_gate, "this shared-expert shape")
        need(not (spec.mlp_bias or m.router_bias or m.expert_bias), "FFN biases")
        cfg = base_config(spec, "deepseek_v3", self.architecture, dtype)
        need(m.group_score == "top2_sum", "groups ranked by their best score (DeepSeek-V2's rule)")
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
    weights = ()  # no selection bias: the default table leaves moelab's (zero) router bias unstored
    nn_refused = {"moe_layer_freq": (1,), "scoring_func": ("softmax",), "norm_topk_prob": (False, None)}

    def write(self, spec: ModelSpec, dtype):
        a, m = spec.attention, spec.moe
        _check_attention(spec)
        need(spec.rope_interleave, "rotate-half (non-interleaved) rotary pairs")
        need(spec.is_moe and m.router == "softmax_topk", "no softmax-routed MoE layers")
        first = _first_of_last_moe_layers(spec)
        need(m.n_shared == 0 or m.shared_ffn == m.expert_ffn, "shared experts of another width")
        need(not m.shared_gate and not m.selection_bias, "a shared-expert gate or a selection bias")
        need(not m.norm_topk_prob, "renormalised top-k weights (transformers' DeepSeek-V2 never renormalises)")
        need(m.n_group == 1 or m.group_score == "max", "groups ranked by their top-2 sum")
        need(not (m.router_bias or m.expert_bias or m.weighted_input), "router or expert biases")
        cfg = base_config(spec, "deepseek_v2", self.architecture, dtype)
        cfg.update(
            head_dim=a.qk_rope_head_dim, attention_bias=a.qkv_bias, q_lora_rank=a.q_lora_rank,
            kv_lora_rank=a.kv_lora_rank, qk_nope_head_dim=a.qk_nope_head_dim, qk_rope_head_dim=a.qk_rope_head_dim,
            v_head_dim=a.head_dim, n_routed_experts=m.n_experts, num_experts_per_tok=m.top_k,
            moe_intermediate_size=m.expert_ffn, n_shared_experts=m.n_shared, first_k_dense_replace=first,
            moe_layer_freq=1, n_group=m.n_group, topk_group=m.topk_group, scoring_func="softmax",
            topk_method="group_limited_greedy" if m.n_group > 1 else "greedy",
            routed_scaling_factor=m.routed_scaling_factor, norm_topk_prob=False, mlp_bias=spec.mlp_bias,
        )
        if spec.ffn_dim == 0:
            cfg["intermediate_size"] = m.expert_ffn
        return cfg

    def empty_tensors(self, spec):
        return empty_shared_experts(spec, "shared_experts")
