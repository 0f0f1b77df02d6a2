"""GLM-4.5 and GLM-4.5-Air: grouped-query attention with q/k/v biases (attention_bias; o_proj never has one),
optional per-head RMSNorm of q and k before RoPE (use_qk_norm), partial rotary (partial_rotary_factor, default
0.5: the first half of each head's dims rotate); the first first_k_dense_replace layers dense, every later one
a MoE routed as DeepSeek-V3 routes (sigmoid scores, the e_score_correction_bias for selection only,
group-limited top-k over n_group groups, norm_topk_prob, routed_scaling_factor) plus n_shared_experts shared
experts of moe_intermediate_size each (transformers builds that MLP even at width 0). Multi-token-prediction
layers (num_nextn_predict_layers) are not part of the causal LM transformers builds, and are skipped here too.
Source: transformers models/glm4_moe/modeling_glm4_moe.py, configuration_glm4_moe.py; zai-org/GLM-4.5 and
zai-org/GLM-4.5-Air config.json."""

from __future__ import annotations

from moelab import limits
from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import (
    base_config,
    check_dense_widths,
    check_plain,
    empty_shared_experts,
    finish,
    gqa,
    is_mtp_layer,
)

PARTIAL_ROTARY_DEFAULT = 0.5  # Glm4MoeConfig.__post_init__'s default for partial_rotary_factor


def partial_rotary_factor(c) -> float:
    """rope_parameters.partial_rotary_factor (transformers >= 5), else the top-level field, else 0.5."""
    params = c.raw.get("rope_parameters")
    if isinstance(params, dict) and "partial_rotary_factor" in params:
        value, label = params["partial_rotary_factor"], "rope_parameters.partial_rotary_factor"
    else:
        value, label = c.raw.get("partial_rotary_factor", PARTIAL_ROTARY_DEFAULT), "partial_rotary_factor"
    problem = limits.number_problem(value, 0, 1.0, low_open=True)
    if problem:
        return c.bad(f"field '{label}' {problem}", PARTIAL_ROTARY_DEFAULT)
    return float(value)


@register
class Glm4Moe(Family):
    model_types = ("glm4_moe",)
    architecture = "Glm4MoeForCausalLM"
    weights = (("layers.{layer}.mlp.gate.bias", "model.layers.{layer}.mlp.gate.e_score_correction_bias"),)

    def read(self, c, name):
        layers = c.int("num_hidden_layers")
        first_dense = min(c.int("first_k_dense_replace", 1), layers)
        c.int("num_nextn_predict_layers", 1, optional=True)  # multi-token-prediction layers: skipped, but checked
        n_shared = c.int("n_shared_experts", 1)
        moe = dict(
            n_experts=c.int("n_routed_experts" if "n_routed_experts" in c.raw or "num_local_experts" not in c.raw
                            else "num_local_experts", 128),
            top_k=c.int("num_experts_per_tok", 8),
            expert_ffn=c.int("moe_intermediate_size", 1408),
            n_shared=n_shared,
            shared_ffn=c.int("moe_intermediate_size", 1408) if n_shared else 0,
            router="sigmoid",
            norm_topk_prob=c.bool("norm_topk_prob", True),
            n_group=c.count("n_group", 1),
            topk_group=c.count("topk_group", 1),
            routed_scaling_factor=c.float("routed_scaling_factor", 1.0),
            selection_bias=True,  # the router always has e_score_correction_bias
        )
        attention = gqa(c, c.bool("attention_bias", False), False,
                        qk_norm="head" if c.bool("use_qk_norm", False) else "none",
                        rotary_fraction=partial_rotary_factor(c))
        return finish(c, name, attention, moe, range(first_dense, layers),
                      norm_eps=c.float("rms_norm_eps", 1e-5))

    def ignored(self, name, spec, raw):
        return is_mtp_layer(name, spec, raw)

    def empty_tensors(self, spec):
        return empty_shared_experts(spec, "shared_experts")

    def write(self, spec, dtype):
        a, m = spec.attention, spec.moe
        check_plain(spec)
        need(spec.uniform_attention, "attention that differs between layers")
        need(a.kind == "gqa" and not a.o_bias, f"{a.kind} attention" if a.kind != "gqa" else "an o_proj bias")
        need(a.qk_norm in ("none", "head"), f"qk_norm {a.qk_norm!r}")
        need(a.sliding_window is None and a.chunk_size is None, "a sliding window or chunks")
        need(a.rope and a.rope_theta is None and a.rope_scaling is None, "per-layer RoPE or no RoPE")
        need(not (a.sinks or a.softcap or a.scale or a.output_gate or a.clip_qkv or a.temperature_tuning),
             "attention sinks, soft caps, scales, gates, clips or temperature tuning")
        need(not spec.rope_interleave, "interleaved rotary pairs")
        need(spec.is_moe, "no MoE layers")
        need(len({layer.moe for layer in spec.layers if layer.moe}) == 1, "MoE layers that differ")
        first = spec.moe_layers[0]
        need(spec.moe_layers == tuple(range(first, spec.n_layers)), "MoE layers other than the last n")
        check_dense_widths(spec)
        need(m.router == "sigmoid" and m.selection_bias, "routing other than sigmoid with a selection bias")
        need(m.n_shared == 0 or m.shared_ffn == m.expert_ffn, "shared experts of another width than the routed")
        need(not (m.shared_gate or m.router_bias or m.expert_bias or spec.mlp_bias), "gates or biases on the FFNs")
        cfg = base_config(spec, "glm4_moe", self.architecture, dtype)
        cfg["rope_parameters"]["partial_rotary_factor"] = a.rotary_fraction
        cfg.update(
            attention_bias=a.qkv_bias, use_qk_norm=a.qk_norm == "head", partial_rotary_factor=a.rotary_fraction,
            n_routed_experts=m.n_experts, num_experts_per_tok=m.top_k, moe_intermediate_size=m.expert_ffn,
            n_shared_experts=m.n_shared, first_k_dense_replace=first, n_group=m.n_group, topk_group=m.topk_group,
            routed_scaling_factor=m.routed_scaling_factor, norm_topk_prob=m.norm_topk_prob,
            num_nextn_predict_layers=0,
        )
        if first == 0:
            cfg["intermediate_size"] = m.expert_ffn
        return cfg
