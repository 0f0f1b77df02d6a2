"""DBRX (databricks/dbrx-instruct, dbrx-base) in the engine: the config nests attention in attn_config and the
MoE in ffn_config; every layer is bias-free LayerNorm, fused Wqkv (d -> d + 2 kv heads) with q, k, v clamped to
[-clip_qkv, clip_qkv], then every FFN a MoE: softmax over all experts, top-k, the kept weights divided by their
p-norm (p = moe_normalize_expert_weights; 1: they sum to 1, null: kept as they are); experts w1/v1/w2 (gate,
up, down). Source: transformers models/dbrx/modeling_dbrx.py and configuration_dbrx.py.

Engine only: moelab.nn does not build DBRX (no `write`). Its checkpoint stores each layer's experts as three
(E*f, d) matrices under transformer.blocks.N.ffn.experts.mlp and attention as one fused Wqkv, names and layouts
moelab.nn has no table or codec for; nothing else in it is beyond moelab.nn's layers.

RoPE: DBRX rotates with attn_config.rope_theta (500000 in dbrx-instruct); transformers 5.24 builds its rotary
table from the top-level rope_parameters instead, which a DBRX config does not set (so it rotates with
10000). moelab keeps the checkpoint's attn_config.rope_theta unless rope_parameters is given."""

from __future__ import annotations

from typing import Any

from moelab.errors import MoelabError
from moelab.spec.families.base import Family, register
from moelab.spec.families.common import rope_scaling
from moelab.spec.families.config import MISSING, ConfigReader
from moelab.spec.model import AttentionSpec, MoESpec, build_spec
from moelab.validation import show_value

# ffn_config switches the engine cannot model: field -> accepted values (absent: the first)
_FFN_REFUSED = {
    "moe_normalize_expert_weights": (1.0, 1, None),  # a p-norm other than L1 is not a router moelab has
}
_ACTIVATIONS = {"silu": "silu", "swish": "silu"}  # ffn_config.ffn_act_fn.name -> moelab's


def _block(c: ConfigReader, key: str) -> dict[str, Any]:
    """attn_config / ffn_config: an object (absent or null: transformers' defaults, an empty one)."""
    value = c.raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        return c.bad(f"field '{key}' must be an object, got {show_value(value)}", {})
    return value


def _int(c: ConfigReader, raw: dict[str, Any], key: str, bound: str, label: str, default: Any = MISSING) -> int:
    """A positive integer `key` of `raw`, bounded as the field `bound`, named `label` in errors."""
    value = raw.get(key, default)
    if value is MISSING:
        return c.bad(f"missing field '{label}'", 1)
    value = c.check_int(bound, value, label=label)
    return value if value >= 1 else c.bad(f"field '{label}' must be at least 1, got {value}", 1)


def _activation(c: ConfigReader, act: Any) -> str:
    """moelab's name for ffn_config.ffn_act_fn, an object {"name": ...} or null. transformers 5.24: null is
    {"name": "silu"} (DbrxFFNConfig.__post_init__; its strict type, dict | None, refuses anything else) and
    DbrxExpertGLU reads ACT2FN[ffn_act_fn.get("name", "silu")], so an object without a name is SiLU too."""
    if act is None:
        return "silu"
    if not isinstance(act, dict):
        return c.bad(f"field 'ffn_config.ffn_act_fn' must be an object such as {{\"name\": \"silu\"}} or null, "
                     f"got {show_value(act)}", "silu")
    name = act.get("name", "silu")
    if not isinstance(name, str):
        return c.bad(f"field 'ffn_config.ffn_act_fn.name' must be a string, got {show_value(name)}", "silu")
    if name not in _ACTIVATIONS:
        return c.bad(f"field 'ffn_config.ffn_act_fn' name {show_value(name)} is not modelled by moelab for dbrx "
                     f"(known: {', '.join(_ACTIVATIONS)})", "silu")
    return _ACTIVATIONS[name]


@register
class Dbrx(Family):
    model_types = ("dbrx",)
    architecture = "DbrxForCausalLM"
    # transformers refuses a tied DBRX (DbrxConfig.validate_architecture): no such model exists
    refused = {"tie_word_embeddings": (False,)}

    def read(self, c, name):
        raw, attn, ffn = c.raw, _block(c, "attn_config"), _block(c, "ffn_config")
        d = _int(c, raw, "d_model", "hidden_size", "d_model")
        heads = _int(c, raw, "n_heads", "num_attention_heads", "n_heads")
        n_layers = _int(c, raw, "n_layers", "num_hidden_layers", "n_layers")
        kv_heads = _int(c, attn, "kv_n_heads", "num_key_value_heads", "attn_config.kv_n_heads", 1)
        clip = attn.get("clip_qkv")
        clip = None if clip is None else c.check_number("clip_qkv", clip, "attn_config.clip_qkv")
        if d % heads:  # Wqkv splits its d query rows into n_heads heads of d // n_heads
            c.cross_errors.append(f"d_model ({d}) is not divisible by n_heads ({heads})")
        moe = dict(n_experts=_int(c, ffn, "moe_num_experts", "num_local_experts", "ffn_config.moe_num_experts"),
                   top_k=_int(c, ffn, "moe_top_k", "num_experts_per_tok", "ffn_config.moe_top_k"),
                   expert_ffn=_int(c, ffn, "ffn_hidden_size", "intermediate_size", "ffn_config.ffn_hidden_size"),
                   router="softmax_topk", norm_topk_prob=ffn.get("moe_normalize_expert_weights", 1.0) is not None)
        for key, accepted in _FFN_REFUSED.items():  # as spec.hf.refused_switches, for the nested block
            value = ffn.get(key, accepted[0])
            if not any(value is a or (type(value) is type(a) and value == a) for a in accepted):
                c.errors.append(f"field 'ffn_config.{key}' {show_value(value)} is not modelled by moelab "
                                f"(accepted: {', '.join(show_value(a) for a in accepted)})")
        act = _activation(c, ffn.get("ffn_act_fn"))
        params = raw.get("rope_parameters")
        if isinstance(params, dict) and "rope_theta" in params:
            theta = c.check_number("rope_theta", params["rope_theta"], "rope_parameters.rope_theta")
        else:
            theta = c.check_number("rope_theta", attn.get("rope_theta", 10000.0), "attn_config.rope_theta")
        fields = dict(name=name, family=c.family, vocab_size=c.int("vocab_size"), d_model=d,
                      tie_embeddings=c.bool("tie_word_embeddings", False),
                      max_position=None if raw.get("max_seq_len", 2048) is None else
                      c.check_int("max_position_embeddings", raw.get("max_seq_len", 2048), label="max_seq_len"),
                      norm="layer_nobias", rope_theta=theta, norm_eps=1e-5, rope_scaling=rope_scaling(c),
                      activation=act)
        c.raise_errors()
        try:
            attention = AttentionSpec(n_heads=heads, n_kv_heads=kv_heads, head_dim=d // heads, clip_qkv=clip)
            return build_spec(n_layers=n_layers, attention=attention, moe=MoESpec(**moe),
                              moe_layers=range(n_layers), **fields)
        except MoelabError as e:
            raise MoelabError(f"{c.where}: {e}") from None
