"""Gemma 2: GeGLU, embeddings times sqrt(hidden_size), x * (1 + w) RMSNorms in a sandwich around each sublayer,
tied embeddings, a softmax scale of query_pre_attn_scalar ** -0.5, tanh soft caps on the attention scores and on
the final logits, and sliding-window layers alternating with global ones (even layers slide).
Source: transformers models/gemma2/configuration_gemma2.py, modeling_gemma2.py. The helpers here are shared
with Gemma 3 (gemma3.py)."""

from __future__ import annotations

from dataclasses import replace

from moelab.spec.families.base import Family, need, register
from moelab.spec.families.common import FULL, SLIDING, base_config, finish, gqa, head_dim, layer_types, windowed

# hidden_activation values (transformers' ACT2FN names) -> moelab's; Gemma's MLP reads `hidden_activation`
# (Gemma2MLP / Gemma3MLP: ACT2FN[config.hidden_activation]), never `hidden_act`.
ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "silu": "silu"}
WRITTEN_ACTIVATION = {moelab: hf for hf, moelab in ACTIVATIONS.items()}
DEFAULT_ACTIVATION = "gelu_pytorch_tanh"  # Gemma2Config / Gemma3TextConfig default
# Gemma 2 as an encoder (use_bidirectional_attention, EmbeddingGemma): not a causal LM.
REFUSED = {"use_bidirectional_attention": (None, False)}


def gemma_activation(c) -> None:
    """The driver reads an absent hidden_activation as silu; Gemma's default is gelu_pytorch_tanh."""
    if "hidden_activation" not in c.raw:
        c.activation = ACTIVATIONS[DEFAULT_ACTIVATION]


def softcap(c, key: str, default: float | None) -> float | None:
    """A soft cap transformers defaults to `default` when absent and turns off when null."""
    return c.optional_float(key) if key in c.raw else default


def gemma_attention(c, qk_norm: str, attn_softcap: float | None) -> dict:
    """The AttentionSpec fields every Gemma 2/3 layer shares: head_dim (default 256), biases on q/k/v/o as
    attention_bias says, scale query_pre_attn_scalar ** -0.5 (None when that is head_dim ** -0.5)."""
    size = head_dim(c, 256)
    scalar = c.check_number("query_pre_attn_scalar", c.raw.get("query_pre_attn_scalar", 256))
    bias = c.bool("attention_bias", False)
    return gqa(c, bias, bias, qk_norm, head_size=size, softcap=attn_softcap,
               scale=None if scalar == size else scalar ** -0.5)


def gemma_types(c, pattern: int) -> list[str]:
    """layer_types as given, else every `pattern`-th layer global and the others sliding."""
    n = c.int("num_hidden_layers")
    return layer_types(c, [SLIDING if (i + 1) % pattern else FULL for i in range(n)])


def gemma_fields(c) -> dict:
    """The ModelSpec fields every Gemma 2/3 shares."""
    return dict(norm="rms_offset", norm_placement="sandwich", tie_embeddings=c.bool("tie_word_embeddings", True),
                embedding_scale=c.int("hidden_size") ** 0.5)


def check_gemma(spec, qk_norm: str) -> None:
    """What every Gemma 2/3 config states the same way: dense GeGLU (or another ACTIVATIONS) FFNs of one width,
    offset RMSNorms in a sandwich, sqrt(d) embeddings, plain full-rotary GQA with one bias flag."""
    need(not spec.is_moe, "MoE layers")
    need(not spec.mlp_bias, "FFN biases")
    need(len({layer.ffn.width for layer in spec.layers}) == 1, "dense FFNs of several widths")
    need(spec.norm == "rms_offset" and spec.norm_placement == "sandwich",
         f"{spec.norm} norms placed {spec.norm_placement}")
    need(spec.activation in WRITTEN_ACTIVATION, f"activation {spec.activation}")
    need(not spec.lm_head_bias, "an lm_head bias")
    need(spec.embedding_scale == spec.d_model ** 0.5, "an embedding scale other than sqrt(hidden_size)")
    need((spec.residual_scale, spec.logits_scale) == (1.0, 1.0), "multipliers")
    need(not spec.rope_interleave, "interleaved rotary pairs")
    for a in {layer.attention for layer in spec.layers}:
        need(a.kind == "gqa", f"{a.kind} attention")
        need(a.qk_norm == qk_norm, f"qk_norm {a.qk_norm!r}")
        need(a.qkv_bias == a.o_bias, "different q/k/v and output biases")
        need(a.rope and a.rotary_fraction == 1.0, "NoPE or partial RoPE")
        need(not (a.sinks or a.output_gate or a.clip_qkv or a.chunk_size or a.temperature_tuning),
             "attention sinks, gates, clips, chunks or temperature tuning")
    windows = {layer.attention.sliding_window for layer in spec.layers} - {None}
    need(len(windows) <= 1, "sliding windows of several sizes")


def query_pre_attn_scalar(a) -> float | int:
    """The query_pre_attn_scalar whose ** -0.5 is the layer's scale (an integer where it rounds to one)."""
    if a.scale is None:
        return a.head_dim
    value = a.scale ** -2
    return round(value) if abs(value - round(value)) < 1e-9 * value else value


def gemma_config(spec, model_type: str, architecture: str, dtype: str) -> dict:
    """base_config in Gemma's spelling: hidden_activation, query_pre_attn_scalar, layer_types, sliding_window."""
    a = spec.attention
    cfg = base_config(spec, model_type, architecture, dtype)
    cfg.pop("hidden_act")
    windows = {layer.attention.sliding_window for layer in spec.layers} - {None}
    cfg.update(hidden_activation=WRITTEN_ACTIVATION[spec.activation], attention_bias=a.qkv_bias,
               query_pre_attn_scalar=query_pre_attn_scalar(a), sliding_window=min(windows) if windows else None,
               layer_types=[SLIDING if layer.attention.sliding_window else FULL for layer in spec.layers],
               use_bidirectional_attention=False)
    return cfg


@register
class Gemma2(Family):
    model_types = ("gemma2",)
    architecture = "Gemma2ForCausalLM"
    activations = ACTIVATIONS
    activation_key = "hidden_activation"
    refused = REFUSED

    def read(self, c, name):
        gemma_activation(c)
        attention = gemma_attention(c, "none", softcap(c, "attn_logit_softcapping", 50.0))
        layers = windowed(attention, gemma_types(c, 2), c.int("sliding_window", 4096, optional=True))
        return finish(c, name, layers, logits_softcap=softcap(c, "final_logit_softcapping", 30.0), **gemma_fields(c))

    def write(self, spec, dtype):
        check_gemma(spec, "none")
        need(len({replace(layer.attention, sliding_window=None) for layer in spec.layers}) == 1,
             "attention that differs between layers beyond its window")
        a = spec.attention
        need(a.rope_theta is None and a.rope_scaling is None, "per-layer RoPE")
        cfg = gemma_config(spec, "gemma2", self.architecture, dtype)
        cfg.update(attn_logit_softcapping=a.softcap, final_logit_softcapping=spec.logits_softcap)
        return cfg
