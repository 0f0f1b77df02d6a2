"""What the family readers and writers share: grouped-query and latent attention fields, RoPE, layer types,
and the assembly of a spec once every field is read."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from moelab.errors import MoelabError
from moelab.spec.families.base import need
from moelab.spec.families.config import ConfigReader
from moelab.spec.model import AttentionSpec, LayerSpec, ModelSpec, MoESpec, uniform_layers
from moelab.validation import show_value

# DeepSeek's top-k methods: greedy (plain top-k), group-limited (top groups first), noaux_tc (that, plus bias).
TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")
# YaRN parameters moelab.nn reads (numbers when given); transformers names them the same.
_YARN_NUMBERS = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
                 "attention_factor")
SLIDING, FULL = "sliding_attention", "full_attention"

# --------------------------------------------------------------------------------------------- reading


def head_dim(c: ConfigReader, default: int | None = None) -> int:
    """head_dim as given, else `default`, else hidden_size / num_attention_heads."""
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    if not heads:
        c.errors.append("field 'num_attention_heads' must be positive")
        heads = 1
    size = c.int("head_dim", default, optional=True)
    if size is None:
        if d % heads:
            c.cross_errors.append(f"hidden_size ({d}) is not divisible by num_attention_heads ({heads})")
        size = max(d // heads, 1)
    return size


def gqa(c: ConfigReader, qkv_bias: bool, o_bias: bool, qk_norm: str = "none", window: int | None = None,
        head_size: int | None = None, **extra: Any) -> dict[str, Any]:
    """The AttentionSpec fields of a grouped-query attention config (`extra`: further AttentionSpec fields)."""
    heads = c.int("num_attention_heads") or 1
    return dict(
        n_heads=heads,
        n_kv_heads=c.count("num_key_value_heads", heads),
        head_dim=head_size if head_size is not None else head_dim(c),
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        qk_norm=qk_norm,
        sliding_window=window,
        **extra,
    )


def mla(c: ConfigReader) -> dict[str, Any]:
    """The AttentionSpec fields of a DeepSeek multi-head latent attention config."""
    bias = c.bool("attention_bias", False)
    heads = c.int("num_attention_heads")
    return dict(
        kind="mla",
        n_heads=heads,
        n_kv_heads=c.count("num_key_value_heads", heads),
        head_dim=c.int("v_head_dim"),
        qkv_bias=bias,
        o_bias=bias,
        q_lora_rank=c.int("q_lora_rank", None, optional=True),
        kv_lora_rank=c.int("kv_lora_rank"),
        qk_nope_head_dim=c.int("qk_nope_head_dim"),
        qk_rope_head_dim=c.int("qk_rope_head_dim"),
    )


def layer_types(c: ConfigReader, default: list[str]) -> list[str]:
    """transformers' `layer_types` (one of SLIDING / FULL per layer) as given, else `default`."""
    types = c.raw.get("layer_types")
    if types is None:
        return default
    if not isinstance(types, list) or not all(t in (SLIDING, FULL) for t in types):
        return c.bad(f"field 'layer_types' must be a list of {SLIDING!r} or {FULL!r}", default)
    if len(types) != len(default):
        c.cross_errors.append(f"layer_types lists {len(types)} layers, num_hidden_layers is {len(default)}")
        return default
    return types


def windowed(attention: dict[str, Any], types: list[str], window: int | None) -> list[dict[str, Any]]:
    """Per-layer attention fields: `window` on the sliding layers of `types`, none on the full ones."""
    return [{**attention, "sliding_window": window if t == SLIDING else None} for t in types]


def moe_layer_list(c: ConfigReader, n_layers: int, every: int = 1, first_dense: int = 0,
                   dense_only: list[int] | tuple[int, ...] = ()) -> list[int]:
    """Layers i >= first_dense with (i + 1) % every == 0, minus `dense_only` (Qwen's decoder_sparse_step)."""
    skip = set(dense_only)
    return [i for i in range(n_layers) if i >= first_dense and (i + 1) % every == 0 and i not in skip]


def finish(c: ConfigReader, name: str, attention: dict[str, Any] | list[dict[str, Any]],
           moe: dict[str, Any] | None = None, moe_layers: list[int] | tuple[int, ...] = (),
           ffn_key: str = "intermediate_size", ffn_dim: int | None = None, **fields: Any) -> ModelSpec:
    """Read the fields every family shares, then build the spec once no field had an error.

    `attention`: one AttentionSpec's fields for every layer, or a list of them, one per layer. `moe`: the
    MoESpec fields of the layers in `moe_layers`; the others are dense of width `ffn_dim` (default: the
    `ffn_key` field). `fields`: further ModelSpec fields (they override the shared ones)."""
    layers = c.int("num_hidden_layers")
    if ffn_dim is None:
        all_moe = moe is not None and len(moe_layers) >= layers
        ffn_dim = c.int(ffn_key, 0) if all_moe else c.int(ffn_key)
    shared = dict(
        name=name,
        family=c.family,
        vocab_size=c.int("vocab_size"),
        d_model=c.int("hidden_size"),
        tie_embeddings=c.bool("tie_word_embeddings", False),
        max_position=c.int("max_position_embeddings", None, optional=True),
        rope_theta=rope_theta(c),
        norm_eps=c.float("rms_norm_eps", 1e-6),
        rope_scaling=rope_scaling(c),
        activation=c.activation,
    )
    shared.update(fields)
    c.raise_errors()
    try:
        moe_spec = MoESpec(**moe) if moe is not None else None
        if isinstance(attention, dict):
            spec_layers = uniform_layers(layers, AttentionSpec(**attention), ffn_dim, moe_spec, tuple(moe_layers))
        else:
            if len(attention) != layers:
                raise MoelabError(f"{len(attention)} per-layer attentions for {layers} layers")
            kinds = uniform_layers(layers, AttentionSpec(**attention[0]), ffn_dim, moe_spec, tuple(moe_layers))
            spec_layers = tuple(LayerSpec(AttentionSpec(**a), layer.ffn) for a, layer in zip(attention, kinds,
                                                                                             strict=True))
        return ModelSpec(layers=spec_layers, **shared)
    except MoelabError as e:
        raise MoelabError(f"{c.where}: {e}") from None
    except TypeError as e:  # a family passed a field the spec does not have: a moelab bug, said plainly
        raise MoelabError(f"{c.where}: internal error reading the config ({e})") from None


def rope_theta(c: ConfigReader, default: float = 10000.0) -> float:
    params = c.raw.get("rope_parameters")  # transformers >= 5 nests theta here
    if isinstance(params, dict) and "rope_theta" in params:
        return c.check_number("rope_theta", params["rope_theta"], "rope_parameters.rope_theta")
    return c.float("rope_theta", default)


def rope_scaling(c: ConfigReader, scaling: Any = None, key: str | None = None) -> tuple:
    """The sorted items of rope_scaling (or transformers 5's rope_parameters); () for plain RoPE.

    Scalars and flat lists of finite numbers (LongRoPE's short/long factors, as tuples) are kept, a null value is
    unset; any other value (a nested list, a list of booleans or strings, an empty list, an object) is an error
    naming it: transformers 5.24's RopeParameters (modeling_rope_utils.py) types every key a scalar or a flat
    list (short_factor, long_factor: list[float]; mrope_section: list[int]), none an object, and its typed
    keys of the wrong kind (factor: "8", short_factor: "x") are errors too. Any rope type is
    read (it does not change the cost) and moelab.nn refuses the ones it does not build. YaRN's parameters must
    be numbers, since moelab.nn computes with them. `scaling`/`key`: a nested rope dict to read instead (Gemma
    3's per-layer-type rope_parameters, an object of such dicts, is split by its family before this)."""
    if key is None:
        key = "rope_scaling" if c.raw.get("rope_scaling") else "rope_parameters"
        scaling = c.raw.get(key)
    if scaling is None:
        return ()
    if not isinstance(scaling, dict):
        return c.bad(f"field '{key}' must be an object or null, got {show_value(scaling)}", ())
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if not isinstance(kind, str):
        return c.bad(f"field '{key}.rope_type' must be a string, got {show_value(kind)}", ())
    if kind == "default":
        return ()
    # RopeParameters' typed keys (partial_rotary_factor: checked, bounded, by the families that read it)
    numbers = ("factor", "attention_factor", "beta_fast", "beta_slow", "low_freq_factor", "high_freq_factor",
               "mscale", "mscale_all_dim")
    lists = ("short_factor", "long_factor", "mrope_section")
    items = {}
    for k, v in scaling.items():
        if k in ("type", "rope_theta") or v is None:  # rope_theta: read by rope_theta(); null: unset
            continue
        number = isinstance(v, int | float) and not isinstance(v, bool)
        # a typed key of the wrong kind, in the words of check_number / check_int / _check_yarn (one message)
        wrong = ("a number" if k in numbers and not number else
                 "an integer" if k == "original_max_position_embeddings" and not number else
                 "true or false" if k == "truncate" and not isinstance(v, bool) else
                 "a list of finite numbers" if k in lists and not isinstance(v, list) else None)
        if wrong:
            c.errors.append(f"field '{key}.{k}' must be {wrong}, got {show_value(v)}")
            continue
        if isinstance(v, list):
            if not v or not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                                for x in v):
                c.errors.append(f"field '{key}.{k}' must be a list of finite numbers, got {show_value(v)}")
                continue
            items[k] = tuple(float(x) for x in v)
            continue
        if not isinstance(v, int | float | str | bool):
            c.errors.append(f"field '{key}.{k}' must be a number, a string, true or false, or a list of numbers, "
                            f"got {show_value(v)}")
            continue
        if isinstance(v, float) and not math.isfinite(v):
            c.errors.append(f"field '{key}.{k}' must be a finite number, got {v}")
            continue
        items[k] = v
    if kind == "yarn":
        _check_yarn(c, key, scaling)
    items["rope_type"] = kind
    return tuple(sorted(items.items()))


def _check_yarn(c: ConfigReader, key: str, scaling: dict) -> None:
    if scaling.get("factor") is None:
        c.errors.append(f"field '{key}.factor' is missing (YaRN needs it)")
    for k in _YARN_NUMBERS:
        value = scaling.get(k)
        if value is None:
            continue
        if k == "factor":
            c.check_number("factor", value, f"{key}.factor")
        elif k == "original_max_position_embeddings":
            c.check_int(k, value, label=f"{key}.{k}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            c.errors.append(f"field '{key}.{k}' must be a number, got {show_value(value)}")
    if not isinstance(scaling.get("truncate", True), bool):
        c.errors.append(f"field '{key}.truncate' must be true or false, got {show_value(scaling['truncate'])}")


# --------------------------------------------------------------------------------------------- checkpoints


def empty_shared_experts(spec: ModelSpec, module: str) -> dict[str, tuple[int, ...]]:
    """The width-0 shared-expert tensors (under mlp.`module`) transformers builds, and expects in a
    checkpoint, in every MoE layer without shared experts (Qwen2-MoE, Qwen3-Next, GLM-4.5, DeepSeek-V2).
    With biased MLPs moelab builds that width-0 SwiGLU itself (cost.params counts its bias), so none."""
    if spec.mlp_bias:
        return {}
    out, d = {}, spec.d_model
    for i, layer in enumerate(spec.layers):
        if layer.moe is not None and not layer.moe.n_shared:
            prefix = f"model.layers.{i}.mlp.{module}."
            out.update({f"{prefix}gate_proj.weight": (0, d), f"{prefix}up_proj.weight": (0, d),
                        f"{prefix}down_proj.weight": (d, 0)})
    return out


def is_mtp_layer(name: str, spec: ModelSpec, raw: dict[str, Any]) -> bool:
    """Whether file tensor `name` belongs to the multi-token-prediction layers DeepSeek-V3 and GLM-4.5
    checkpoints carry after the last decoder layer (num_nextn_predict_layers; transformers builds none)."""
    parts = name.split(".")
    if len(parts) < 3 or parts[:2] != ["model", "layers"] or not parts[2].isdigit():
        return False
    extra = raw.get("num_nextn_predict_layers") or 0
    return spec.n_layers <= int(parts[2]) < spec.n_layers + extra


# --------------------------------------------------------------------------------------------- writing


def base_config(spec: ModelSpec, model_type: str, architecture: str, dtype: str) -> dict[str, Any]:
    """The config.json fields every family writes the same way (transformers 5 spelling)."""
    a = spec.attention
    rope = {"rope_type": "default", "rope_theta": spec.rope_theta,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in spec.rope_scaling}}
    return {
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.d_model,
        "num_hidden_layers": spec.n_layers,
        "num_attention_heads": a.n_heads,
        "num_key_value_heads": a.n_kv_heads,
        "head_dim": a.head_dim,
        "intermediate_size": spec.ffn_dim,
        "hidden_act": "silu",
        "rms_norm_eps": spec.norm_eps,
        "max_position_embeddings": spec.max_position or 4096,
        "rope_parameters": rope,
        "tie_word_embeddings": spec.tie_embeddings,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "dtype": dtype,
    }


def check_plain(spec: ModelSpec) -> None:
    """The model-level features only some families state: refused unless a writer handles them itself."""
    need(spec.norm == "rms" and spec.norm_placement == "pre", f"{spec.norm} norms placed {spec.norm_placement}")
    need(spec.activation == "silu", f"activation {spec.activation}")
    need(not spec.lm_head_bias, "an lm_head bias")
    need((spec.embedding_scale, spec.residual_scale, spec.logits_scale) == (1.0, 1.0, 1.0), "multipliers")
    need(spec.logits_softcap is None, "a logit soft cap")


def check_gqa(spec: ModelSpec, qkv_bias: bool | None, o_bias: bool | None, qk_norm: str,
              window: bool = False, per_layer_window: bool = False) -> None:
    """Every layer is plain grouped-query attention with these biases and q/k norms; a sliding window only
    when `window`, and then the same on every layer unless `per_layer_window`."""
    check_plain(spec)
    for a in {layer.attention for layer in spec.layers}:
        need(a.kind == "gqa", f"{a.kind} attention")
        need(a.qk_norm == qk_norm, f"qk_norm {a.qk_norm!r}")
        need(qkv_bias is None or a.qkv_bias == qkv_bias, f"qkv_bias={a.qkv_bias}")
        need(o_bias is None or a.o_bias == o_bias, f"o_bias={a.o_bias}")
        need(window or a.sliding_window is None, "a sliding window")
        need(a.rope and a.rotary_fraction == 1.0 and a.rope_theta is None and a.rope_scaling is None,
             "per-layer or partial RoPE")
        need(not (a.sinks or a.softcap or a.scale or a.output_gate or a.clip_qkv or a.chunk_size),
             "attention sinks, soft caps, scales, gates, clips or chunks")
        need(not a.moa_experts, "a mixture of attention heads")
    need(per_layer_window or spec.uniform_attention, "attention that differs between layers")
    need(not spec.rope_interleave, "interleaved rotary pairs")


def check_moe(spec: ModelSpec, router: str, all_layers: bool, shared: bool = False) -> None:
    """Every MoE layer has one MoESpec routed by `router`, without DeepSeek-style routing or FFN biases."""
    m = spec.moe
    need(spec.is_moe, "no MoE layers")
    need(len({layer.moe for layer in spec.layers if layer.moe}) == 1, "MoE layers that differ")
    need(m.router == router, f"router {m.router!r}")
    need(not all_layers or spec.moe_layers == tuple(range(spec.n_layers)), "dense layers between MoE layers")
    need(shared or m.n_shared == 0, "shared experts")
    need(m.n_group == 1 and m.routed_scaling_factor == 1.0 and not m.selection_bias, "DeepSeek-style routing")
    need(not (m.router_bias or m.expert_bias), "router or expert biases")
    need(not spec.mlp_bias, "FFN biases")


def check_dense_widths(spec: ModelSpec) -> None:
    need(len({layer.ffn.width for layer in spec.layers if layer.moe is None}) <= 1, "dense FFNs of several widths")


def window_types(spec: ModelSpec) -> tuple[int | None, list[str]]:
    """(the one sliding window, each layer's SLIDING / FULL) of a spec whose layers differ at most in it."""
    windows = {layer.attention.sliding_window for layer in spec.layers} - {None}
    need(len(windows) <= 1, "sliding windows of several sizes")
    need(len({replace(layer.attention, sliding_window=None) for layer in spec.layers}) == 1,
         "attention that differs between layers beyond its window")
    return (min(windows) if windows else None), [SLIDING if layer.attention.sliding_window else FULL
                                                 for layer in spec.layers]


def qwen_window(cfg: dict, spec: ModelSpec) -> None:
    """Qwen's sliding windows, layer by layer: use_sliding_window, the window, and layer_types."""
    window, types = window_types(spec)
    cfg.update(use_sliding_window=window is not None, sliding_window=window, max_window_layers=0,
               layer_types=types)
