"""Llama 4 (Scout, Maverick): the text model of a multimodal `llama4` config (its text_config) or a `llama4_text`
config, read as transformers' Llama4TextConfig reads it, its defaults included.

Per layer: NoPE layers (no_rope_layers, 0 = no rotary; default every no_rope_layer_interval-th layer) with
attention temperature tuning; the RoPE layers chunked (attention_chunk_size) and, when use_qk_norm, with a
weightless L2 q/k norm after the rotation. Rotary pairs are interleaved (complex rotation, torch.polar). MoE on
moe_layers (default every interleave_moe_layer_step-th layer): top-k of the router logits, weight sigmoid(kept
logit) scaling the expert's INPUT, plus one shared expert of the routed width; dense layers are
intermediate_size_mlp wide. Sources: transformers 5.24 models/llama4/configuration_llama4.py (Llama4TextConfig,
its __post_init__), modeling_llama4.py (Llama4Router, Llama4TextMoe, Llama4TextAttention, apply_rotary_emb).
"""

from __future__ import annotations

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import base_config, check_plain, finish, gqa, head_dim, rope_theta
from moelab.validation import show_value

CHUNKED, FULL = "chunked_attention", "full_attention"  # transformers' llama4 layer_types

# Llama4TextConfig's defaults (Scout's shape) for the fields every family reads as required.
_DEFAULTS = dict(vocab_size=202048, hidden_size=5120, num_hidden_layers=48, num_attention_heads=40,
                 num_key_value_heads=8)


def _no_rope_layers(c, n: int) -> list[bool]:
    """Per layer, whether it rotates: no_rope_layers (1 = RoPE, 0 = NoPE, one per layer) when given and non-empty
    (transformers takes an empty list as absent), else a NoPE layer every no_rope_layer_interval-th layer.
    Llama4TextConfig types it list[int] | None, strictly: true/false, 1.0 or a falsy non-list are refused."""
    given = c.raw.get("no_rope_layers")
    if given is not None:
        if not isinstance(given, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v in (0, 1)
                                                  for v in given):
            return c.bad(f"field 'no_rope_layers' must be a list of 0 (NoPE) or 1 (RoPE) as integers, one per layer, "
                         f"got {show_value(given)}", [True] * n)
    if given:
        if len(given) != n:  # transformers: its layer_types, one per entry, must match the layers
            c.cross_errors.append(f"no_rope_layers lists {len(given)} layers, num_hidden_layers is {n}")
            return [True] * n
        return [bool(v) for v in given]
    interval = c.int("no_rope_layer_interval", 4)
    if interval < 1:
        return c.bad(f"field 'no_rope_layer_interval' must be positive, got {show_value(interval)}", [True] * n)
    return [(i + 1) % interval != 0 for i in range(n)]


def _moe_layers(c, n: int) -> list[int]:
    """moe_layers when given (transformers tests `layer_idx in moe_layers`: indices past the last layer match
    none), else every interleave_moe_layer_step-th layer: range(step - 1, n, step)."""
    if c.raw.get("moe_layers") is not None:
        return sorted({i for i in c.int_list("moe_layers") if i < n})
    step = c.int("interleave_moe_layer_step", 1)
    if step < 1:
        return c.bad(f"field 'interleave_moe_layer_step' must be positive, got {show_value(step)}", [])
    return list(range(step - 1, n, step))


def _temperature_tuning(c) -> tuple[float, float] | None:
    """(floor_scale, attn_scale) of the NoPE layers' temperature tuning, None when off. Meta's published configs
    write attn_temperature_tuning as an integer (Scout: 4), which transformers 4.51 read by truth value; it is
    read that way here (transformers 5.24's strict config accepts only a boolean)."""
    on = c.raw.get("attn_temperature_tuning", True)
    if not isinstance(on, bool | int):
        c.errors.append(f"field 'attn_temperature_tuning' must be true or false, got {show_value(on)}")
        return None
    floor_scale, attn_scale = c.int("floor_scale", 8192), c.float("attn_scale", 0.1)
    if floor_scale < 1:
        c.errors.append(f"field 'floor_scale' must be positive, got {show_value(floor_scale)}")
    return (float(floor_scale), attn_scale) if on else None


def layer_attentions(c, n: int) -> list[dict]:
    """Each layer's AttentionSpec fields."""
    bias = c.bool("attention_bias", False)
    base = gqa(c, bias, bias, head_size=head_dim(c, 128))  # Llama4TextConfig's head_dim defaults to 128
    rope = _no_rope_layers(c, n)
    chunk = c.int("attention_chunk_size", 8192, optional=True)
    if chunk == 0:
        c.errors.append("field 'attention_chunk_size' must be positive or null")
        chunk = None
    types = c.raw.get("layer_types")
    if types is None:  # transformers: the RoPE layers chunked when there is a chunk size
        types = [CHUNKED if r and chunk is not None else FULL for r in rope]
    elif not isinstance(types, list) or not all(t in (CHUNKED, FULL) for t in types):
        c.errors.append(f"field 'layer_types' must be a list of {CHUNKED!r} or {FULL!r}")
        types = [FULL] * n
    elif len(types) != n:
        c.cross_errors.append(f"layer_types lists {len(types)} layers, num_hidden_layers is {n}")
        types = [FULL] * n
    elif CHUNKED in types and chunk is None:
        c.cross_errors.append("layer_types has chunked_attention layers but attention_chunk_size is null")
    qk_norm = c.bool("use_qk_norm", True)
    tuning = _temperature_tuning(c)
    return [dict(base, rope=r, chunk_size=chunk if t == CHUNKED else None, qk_norm="l2" if qk_norm and r else "none",
                 temperature_tuning=None if r else tuning) for r, t in zip(rope, types, strict=True)]


@register
class Llama4(Family):
    model_types = ("llama4", "llama4_text")
    architecture = "Llama4ForCausalLM"
    text_config = True
    weights = (
        ("layers.{layer}.mlp.gate.weight", "model.layers.{layer}.feed_forward.router.weight"),
        ("layers.{layer}.mlp.gate.bias", None),
        # fused experts stored transposed, (E, d, 2f) and (E, f, d): the codec in moelab.nn.llama4
        ("layers.{layer}.mlp.gate_up_proj", "model.layers.{layer}.feed_forward.experts.gate_up_proj", "transpose12"),
        ("layers.{layer}.mlp.down_proj", "model.layers.{layer}.feed_forward.experts.down_proj", "transpose12"),
        ("layers.{layer}.mlp.shared_experts.{rest}", "model.layers.{layer}.feed_forward.shared_expert.{rest}"),
        ("layers.{layer}.mlp.{rest}", "model.layers.{layer}.feed_forward.{rest}"),
    )

    def read(self, c, name):
        c.raw = {**_DEFAULTS, **c.raw}  # a new dict: the caller's config is left as it was
        n = c.int("num_hidden_layers")
        attention = layer_attentions(c, n)
        layers = _moe_layers(c, n)
        width = c.int("intermediate_size", 8192)
        moe = dict(n_experts=c.int("num_local_experts", 16), top_k=c.int("num_experts_per_tok", 1),
                   expert_ffn=width, n_shared=1, shared_ffn=width, router="topk_sigmoid", norm_topk_prob=False,
                   weighted_input=True) if layers else None
        return finish(c, name, attention, moe, layers, ffn_dim=c.int("intermediate_size_mlp", 16384),
                      rope_theta=rope_theta(c, 500000.0), norm_eps=c.float("rms_norm_eps", 1e-5),
                      max_position=c.int("max_position_embeddings", 131072), rope_interleave=True)

    def check_loadable(self, raw, spec):
        if "text_config" in raw:
            return ("a multimodal llama4 checkpoint (Llama4ForConditionalGeneration); moelab.nn builds the text "
                    "model, model_type llama4_text")
        return None

    def write(self, spec, dtype):
        check_plain(spec)
        need(spec.rope_interleave, "rotate-half rotary pairs")
        need(spec.is_moe, "no MoE layers")
        attentions = [layer.attention for layer in spec.layers]
        a = attentions[0]
        for x in attentions:
            need(x.kind == "gqa", f"{x.kind} attention")
            need((x.n_heads, x.n_kv_heads, x.head_dim) == (a.n_heads, a.n_kv_heads, a.head_dim),
                 "attention shapes that differ between layers")
            need(x.qkv_bias == x.o_bias == a.qkv_bias, "different or per-layer attention biases")
            need(x.sliding_window is None, "a sliding window")
            need(x.rotary_fraction == 1.0 and x.rope_theta is None and x.rope_scaling is None,
                 "per-layer or partial RoPE")
            need(not (x.sinks or x.softcap or x.scale or x.output_gate or x.clip_qkv),
                 "attention sinks, soft caps, scales, gates or clips")
            need(x.qk_norm == "none" or (x.qk_norm == "l2" and x.rope), "q/k norms other than L2 on RoPE layers")
            need(x.temperature_tuning is None or not x.rope, "temperature tuning on a RoPE layer")
        roped = [x for x in attentions if x.rope]
        need(len({x.qk_norm for x in roped}) <= 1, "L2 q/k norms on some RoPE layers only")
        chunks = {x.chunk_size for x in attentions} - {None}
        need(len(chunks) <= 1, "attention chunks of several sizes")
        tunings = {x.temperature_tuning for x in attentions if not x.rope}
        need(len(tunings) <= 1, "temperature tuning on some NoPE layers only, or of several scales")
        tuning = next(iter(tunings), None)
        need(tuning is None or float(tuning[0]).is_integer(), "a fractional floor_scale")
        m = spec.moe
        need(len({layer.moe for layer in spec.layers if layer.moe}) == 1, "MoE layers that differ")
        need(m.router == "topk_sigmoid" and m.weighted_input and not m.norm_topk_prob, "this router")
        need(m.n_shared == 1 and m.shared_ffn == m.expert_ffn and not m.shared_gate,
             "anything but one shared expert of the routed width")
        need(m.n_group == 1 and m.routed_scaling_factor == 1.0 and not m.selection_bias, "DeepSeek-style routing")
        need(not (m.router_bias or m.expert_bias or spec.mlp_bias), "FFN or router biases")
        need(len({layer.ffn.width for layer in spec.layers if layer.moe is None}) <= 1,
             "dense FFNs of several widths")
        cfg = base_config(spec, "llama4_text", self.architecture, dtype)
        cfg.update(
            attention_bias=a.qkv_bias, intermediate_size=m.expert_ffn,
            intermediate_size_mlp=spec.ffn_dim or m.expert_ffn, num_local_experts=m.n_experts,
            num_experts_per_tok=m.top_k, moe_layers=list(spec.moe_layers), interleave_moe_layer_step=1,
            no_rope_layers=[int(x.rope) for x in attentions], no_rope_layer_interval=4,
            attention_chunk_size=next(iter(chunks), None),
            layer_types=[CHUNKED if x.chunk_size else FULL for x in attentions],
            use_qk_norm=bool(roped) and roped[0].qk_norm == "l2",
            attn_temperature_tuning=tuning is not None,
            floor_scale=int(tuning[0]) if tuning else 8192, attn_scale=tuning[1] if tuning else 0.1,
            output_router_logits=False, router_aux_loss_coef=0.001, router_jitter_noise=0.0,
        )
        return cfg
