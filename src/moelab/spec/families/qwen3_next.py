"""Qwen3-Next: Gated DeltaNet linear-attention layers between gated full-attention layers, (1 + w) RMSNorms,
and Qwen's MoE with one sigmoid-gated shared expert.

Per layer, `layer_types` (else every full_attention_interval-th layer full, the rest linear) picks the token
mixer. Full attention: q_proj also yields a sigmoid output gate (2x its width), per-head q/k norms, partial
rotary (partial_rotary_factor, default 0.25). Linear attention (LinearAttentionSpec): linear_num_key_heads /
linear_num_value_heads of linear_key_head_dim / linear_value_head_dim, a causal conv of linear_conv_kernel_dim;
no RoPE. MoE on every decoder_sparse_step-th layer not in mlp_only_layers (none when num_experts is 0): softmax
then top-k, norm_topk_prob (default true), the shared expert always built (width 0 when the config says 0)
and gated by sigmoid(Linear(d -> 1)).
Source: transformers 5.24 models/qwen3_next/configuration_qwen3_next.py and modeling_qwen3_next.py.
"""

from __future__ import annotations

from dataclasses import replace

from moelab.errors import MoelabError
from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import (
    FULL,
    base_config,
    check_moe,
    check_plain,
    empty_shared_experts,
    finish,
    gqa,
    head_dim,
    moe_layer_list,
    rope_scaling,
)
from moelab.spec.model import AttentionSpec, LinearAttentionSpec
from moelab.validation import show_value

LINEAR = "linear_attention"
PARTIAL_ROTARY_DEFAULT = 0.25  # Qwen3NextConfig.__post_init__: kwargs.setdefault("partial_rotary_factor", 0.25)


def _layer_types(c, n_layers: int) -> list[str]:
    """`layer_types` as given, else full attention on every full_attention_interval-th layer (default 4)."""
    types = c.raw.get("layer_types")
    if types is None:
        interval = c.int("full_attention_interval", 4)
        if interval < 1:
            c.errors.append("field 'full_attention_interval' must be positive")
            interval = 4
        return [FULL if (i + 1) % interval == 0 else LINEAR for i in range(n_layers)]
    if not isinstance(types, list) or not all(t in (LINEAR, FULL) for t in types):
        return c.bad(f"field 'layer_types' must be a list of {LINEAR!r} or {FULL!r}", [LINEAR] * n_layers)
    if len(types) != n_layers:
        c.cross_errors.append(f"layer_types lists {len(types)} layers, num_hidden_layers is {n_layers}")
        return [LINEAR] * n_layers
    return types


def _rope(c) -> tuple[tuple, float]:
    """(rope_scaling items without partial_rotary_factor, partial_rotary_factor): the rope dict's own factor
    wins, then the top-level field, then 0.25, as transformers resolves them."""
    key = "rope_scaling" if c.raw.get("rope_scaling") else "rope_parameters"
    rope = c.raw.get(key)
    items = tuple(kv for kv in rope_scaling(c) if kv[0] != "partial_rotary_factor")
    if isinstance(rope, dict) and "partial_rotary_factor" in rope:
        value, label = rope["partial_rotary_factor"], f"{key}.partial_rotary_factor"
    else:
        value, label = c.raw.get("partial_rotary_factor", PARTIAL_ROTARY_DEFAULT), "partial_rotary_factor"
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        return items, c.bad(f"field '{label}' must be a number in (0, 1], got {show_value(value)}",
                            PARTIAL_ROTARY_DEFAULT)
    return items, float(value)


def _linear(c) -> dict:
    """The AttentionSpec fields of a Gated DeltaNet layer (heads and head_dim: its value heads)."""
    try:
        lin = LinearAttentionSpec(n_k_heads=c.count("linear_num_key_heads", 16),
                                  n_v_heads=c.count("linear_num_value_heads", 32),
                                  k_head_dim=c.count("linear_key_head_dim", 128),
                                  v_head_dim=c.count("linear_value_head_dim", 128),
                                  conv_kernel=c.count("linear_conv_kernel_dim", 4))
    except MoelabError as e:
        c.errors.append(str(e))
        lin = LinearAttentionSpec(1, 1, 1, 1, 1)
    return _linear_fields(lin)


def _linear_fields(lin: LinearAttentionSpec) -> dict:
    return dict(kind="linear", n_heads=lin.n_v_heads, n_kv_heads=lin.n_k_heads, head_dim=lin.v_head_dim, rope=False,
                linear=lin)


@register
class Qwen3Next(Family):
    model_types = ("qwen3_next",)
    architecture = "Qwen3NextForCausalLM"
    weights = (
        ("layers.{layer}.mlp.shared_experts.{rest}", "model.layers.{layer}.mlp.shared_expert.{rest}"),
        # moelab's token mixer is always `self_attn`; transformers names a Gated DeltaNet `linear_attn`
        *((f"layers.{{layer}}.self_attn.{name}", f"model.layers.{{layer}}.linear_attn.{name}")
          for name in ("in_proj_qkvz.weight", "in_proj_ba.weight", "conv1d.weight", "dt_bias", "A_log",
                       "norm.weight", "out_proj.weight")),
    )

    def read(self, c, name):
        n_layers = c.int("num_hidden_layers")
        types = _layer_types(c, n_layers)
        scaling, fraction = _rope(c)
        bias = c.bool("attention_bias", False)
        full = gqa(c, bias, bias, "head", head_size=head_dim(c, 256), output_gate=True, rotary_fraction=fraction)
        linear = _linear(c)
        n_experts = c.int("num_experts", 512)
        step = c.int("decoder_sparse_step", 1)
        if step <= 0:
            c.errors.append("field 'decoder_sparse_step' must be positive")
            step = 1
        layers = moe_layer_list(c, n_layers, every=step, dense_only=c.int_list("mlp_only_layers")) \
            if n_experts > 0 else []
        shared_ffn = c.int("shared_expert_intermediate_size", 512)
        moe = dict(n_experts=n_experts, top_k=c.int("num_experts_per_tok", 10),
                   expert_ffn=c.int("moe_intermediate_size", 512), router="softmax_topk",
                   norm_topk_prob=c.bool("norm_topk_prob", True), n_shared=1 if shared_ffn else 0,
                   shared_ffn=shared_ffn, shared_gate=True) if layers else None
        attention = [full if t == FULL else linear for t in types]
        return finish(c, name, attention, moe, layers, norm="rms_offset", rope_scaling=scaling)

    def ignored(self, name, spec, raw):
        """The multi-token-prediction head Qwen's checkpoints carry (mtp.*): transformers skips it too
        (Qwen3NextPreTrainedModel._keys_to_ignore_on_load_unexpected)."""
        return name.startswith("mtp.")

    def empty_tensors(self, spec):
        return empty_shared_experts(spec, "shared_expert")

    def write(self, spec, dtype):
        need(spec.norm == "rms_offset", f"{spec.norm} norms (Qwen3-Next's are (1 + w) RMSNorms)")
        need(spec.norm_placement == "pre", f"norms placed {spec.norm_placement}")
        check_plain(replace(spec, norm="rms"))  # the other model-level checks
        linear = {layer.attention for layer in spec.layers if layer.attention.kind == "linear"}
        full = {layer.attention for layer in spec.layers if layer.attention.kind != "linear"}
        need(len(linear) <= 1, "linear-attention layers that differ")
        need(len(full) == 1, "no full-attention layer, or full-attention layers that differ")
        a = next(iter(full))
        need(a.kind == "gqa" and a.qk_norm == "head" and a.output_gate, "full attention without Qwen3-Next's "
             "output gate and per-head q/k norms")
        need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        need(a.rope and a.rope_theta is None and a.rope_scaling is None, "per-layer or no RoPE")
        need(a.sliding_window is None and not (a.sinks or a.softcap or a.scale or a.clip_qkv or a.chunk_size
                                                or a.temperature_tuning), "windows, sinks, soft caps, scales, "
             "clips or chunks")
        need(not spec.rope_interleave, "interleaved rotary pairs")
        if linear:
            lin_attention = next(iter(linear))
            need(lin_attention == AttentionSpec(**_linear_fields(lin_attention.linear)),
                 "linear attention fields beyond Gated DeltaNet's")
        check_moe(spec, "softmax_topk", all_layers=False, shared=True)
        m = spec.moe
        need(m.n_shared <= 1 and m.shared_gate, "anything but one sigmoid-gated shared expert (or none)")
        need(len({layer.ffn.width for layer in spec.layers if layer.moe is None}) <= 1,
             "dense FFNs of several widths")
        cfg = base_config(spec, "qwen3_next", self.architecture, dtype)
        cfg["rope_parameters"]["partial_rotary_factor"] = a.rotary_fraction
        lin = next(iter(linear)).linear if linear else LinearAttentionSpec(1, 1, 1, 1, 1)
        cfg.update(
            attention_bias=a.qkv_bias,
            layer_types=[LINEAR if layer.attention.kind == "linear" else FULL for layer in spec.layers],
            linear_num_key_heads=lin.n_k_heads, linear_num_value_heads=lin.n_v_heads,
            linear_key_head_dim=lin.k_head_dim, linear_value_head_dim=lin.v_head_dim,
            linear_conv_kernel_dim=lin.conv_kernel,
            num_experts=m.n_experts, num_experts_per_tok=m.top_k, moe_intermediate_size=m.expert_ffn,
            shared_expert_intermediate_size=m.n_shared * m.shared_ffn, norm_topk_prob=m.norm_topk_prob,
            decoder_sparse_step=1, mlp_only_layers=[i for i in range(spec.n_layers) if i not in spec.moe_layers],
            router_aux_loss_coef=0.001, output_router_logits=False,
        )
        return cfg
