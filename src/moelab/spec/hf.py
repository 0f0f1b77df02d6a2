"""Read a Hugging Face config.json into a ModelSpec, honouring each family's switches.

The readers form one validation layer: keys moelab does not read are ignored, but every field it reads is
type-checked and bounded (moelab.limits), and switches it knows it cannot model (another activation, router
scoring or top-k method) are refused by name. Field errors are collected and reported together on one line.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from moelab import limits
from moelab.errors import MoelabError
from moelab.spec.model import AttentionSpec, ModelSpec, MoESpec
from moelab.userfile import parse_json, read_user_text
from moelab.validation import format_errors, show_value

_MISSING = object()

# The upper bound of every integer field a reader takes (see moelab.limits for the reasons).
_INT_BOUNDS = {
    "vocab_size": limits.MAX_VOCAB,
    **dict.fromkeys(("hidden_size", "head_dim", "v_head_dim", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                     "qk_rope_head_dim"), limits.MAX_WIDTH),
    **dict.fromkeys(("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size"),
                    limits.MAX_FFN),
    **dict.fromkeys(("num_hidden_layers", "first_k_dense_replace", "moe_layer_freq", "decoder_sparse_step",
                     "mlp_only_layers", "num_nextn_predict_layers"), limits.MAX_LAYERS),
    **dict.fromkeys(("num_attention_heads", "num_key_value_heads"), limits.MAX_HEADS),
    **dict.fromkeys(("num_local_experts", "num_experts", "n_routed_experts", "n_shared_experts",
                     "num_experts_per_tok", "n_group", "topk_group"), limits.MAX_EXPERTS),
    **dict.fromkeys(("max_position_embeddings", "sliding_window", "original_max_position_embeddings"),
                    limits.MAX_POSITIONS),
}
# Numbers that must be finite and in (0, bound].
_NUMBER_BOUNDS = {
    "rope_theta": limits.MAX_ROPE_THETA,
    "rms_norm_eps": limits.MAX_NORM_EPS,
    "routed_scaling_factor": limits.MAX_ROUTER_SCALE,
    "factor": limits.MAX_ROPE_FACTOR,
}
# DeepSeek's top-k methods: greedy (plain top-k), group-limited (top groups first), noaux_tc (that, plus bias).
TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")
# YaRN parameters moelab.nn reads (numbers when given); transformers names them the same.
_YARN_NUMBERS = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
                 "attention_factor")


class _Config:
    """Typed access to a config dict. Every failure names the field and is collected in `errors`; the
    accessor then returns a harmless placeholder so that reading goes on and finds the other errors."""

    def __init__(self, raw: dict[str, Any], family: str, where: str) -> None:
        self.raw, self.family, self.where = raw, family, where
        self.errors: list[str] = []  # a field's own type or bound
        self.cross_errors: list[str] = []  # fields that disagree: reported only when each field is sound

    def raise_errors(self) -> None:
        """One MoelabError listing every field error (or, failing those, every cross-field error)."""
        errors = list(dict.fromkeys(self.errors or self.cross_errors))
        if errors:
            raise MoelabError(format_errors(self.where, errors))

    def _value(self, key: str, default: Any) -> Any:
        value = self.raw.get(key, default)
        if value is _MISSING:
            self.errors.append(f"missing field '{key}'")
        return value

    def _bad(self, message: str, placeholder: Any) -> Any:
        self.errors.append(message)
        return placeholder

    def int(self, key: str, default: Any = _MISSING, optional: bool = False) -> int | None:
        value = self._value(key, default)
        if value is None and optional:
            return None
        placeholder = default if isinstance(default, int) and 0 < default <= _INT_BOUNDS[key] else 1
        if value is _MISSING:
            return placeholder
        return self.check_int(key, value, placeholder)

    def check_int(self, key: str, value: Any, placeholder: int = 1, label: str | None = None) -> int:
        """`value` as the integer field `key` (bounded by _INT_BOUNDS), or `placeholder` after an error."""
        label = label or key
        if isinstance(value, bool) or not isinstance(value, int):
            return self._bad(f"field '{label}' must be an integer, got {show_value(value)}", placeholder)
        if value < 0:
            return self._bad(f"field '{label}' must not be negative, got {show_value(value)}", placeholder)
        if value > _INT_BOUNDS[key]:
            return self._bad(f"field '{label}' must be at most {_INT_BOUNDS[key]}, got {show_value(value)}",
                             placeholder)
        return value

    def count(self, key: str, default: int) -> int:
        """An integer field of at least 1 that transformers defaults when absent or null (to `default`):
        0 is an error, never read as "absent" (num_key_value_heads: 0 is not full multi-head attention)."""
        value = self.int(key, default, optional=True)
        if value is None:
            return default
        if value < 1:
            return self._bad(f"field '{key}' must be at least 1, got {show_value(value)}", max(default, 1))
        return value

    def float(self, key: str, default: Any = _MISSING) -> float:
        value = self._value(key, default)
        if value is _MISSING:
            return 1.0
        return self.check_number(key, value)

    def check_number(self, key: str, value: Any, label: str | None = None) -> float:
        """`value` as a finite number in (0, _NUMBER_BOUNDS[key]], or 1.0 after an error."""
        problem = limits.number_problem(value, 0, _NUMBER_BOUNDS[key], low_open=True)
        if problem:
            return self._bad(f"field '{label or key}' {problem}", 1.0)
        return float(value)

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        value = self._value(key, default)
        if value is _MISSING:
            return False
        if not isinstance(value, bool):
            return self._bad(f"field '{key}' must be true or false, got {show_value(value)}", False)
        return value

    def flag(self, key: str, default: bool) -> bool:
        """A switch transformers reads by truth value: absent -> default, null -> false, else true or false."""
        value = self.raw.get(key, default)
        if value is None:
            return False
        if not isinstance(value, bool):
            return self._bad(f"field '{key}' must be true or false, got {show_value(value)}", default)
        return value

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        """A string switch with the values moelab models; any other is refused by name."""
        value = self.raw.get(key, default)
        if value not in allowed or not isinstance(value, str):
            return self._bad(f"field '{key}' {show_value(value)} is not modelled by moelab (known: "
                             f"{', '.join(allowed)})", default)
        return value

    def int_list(self, key: str) -> list[int]:
        value = self._value(key, [])
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return self._bad(f"field '{key}' must be a list of integers", [])
        if any(v < 0 or v > _INT_BOUNDS[key] for v in value):
            return self._bad(f"field '{key}' must list integers in 0..{_INT_BOUNDS[key]}", [])
        return value


def _gqa(c: _Config, qkv_bias: bool, o_bias: bool, qk_norm: str = "none") -> dict[str, Any]:
    """The AttentionSpec fields of a grouped-query attention config."""
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    if not heads:
        c.errors.append("field 'num_attention_heads' must be positive")
        heads = 1
    # Qwen3 (dense) defaults head_dim to 128 when the config omits it; the others derive it from the width.
    head_dim = c.int("head_dim", 128 if c.family == "qwen3" else None, optional=True)
    if head_dim is None:
        if d % heads:
            c.cross_errors.append(f"hidden_size ({d}) is not divisible by num_attention_heads ({heads})")
        head_dim = max(d // heads, 1)
    # As transformers reads it: Mistral/Mixtral slide whenever sliding_window is set; Qwen only with
    # use_sliding_window (default false); the other families never do.
    window = None
    if c.family in ("mistral", "mixtral") or (c.family.startswith("qwen") and c.flag("use_sliding_window", False)):
        window = c.int("sliding_window", None, optional=True)
    return dict(
        n_heads=heads,
        n_kv_heads=c.count("num_key_value_heads", heads),
        head_dim=head_dim,
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        qk_norm=qk_norm,
        sliding_window=window,
    )


def _mla(c: _Config) -> dict[str, Any]:
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


def _spec(c: _Config, name: str, attention: dict[str, Any], moe: dict[str, Any] | None = None,
          moe_layers: list[int] | tuple[int, ...] = (), ffn_key: str = "intermediate_size",
          mlp_bias: bool = False) -> ModelSpec:
    """Read the fields every family shares, then build the spec once no field had an error."""
    layers = c.int("num_hidden_layers")
    fields = dict(
        name=name,
        family=c.family,
        vocab_size=c.int("vocab_size"),
        d_model=c.int("hidden_size"),
        n_layers=layers,
        ffn_dim=c.int(ffn_key) if (moe is None or len(moe_layers) < layers) else c.int(ffn_key, 0),
        moe_layers=tuple(moe_layers),
        tie_embeddings=c.bool("tie_word_embeddings", False),
        mlp_bias=mlp_bias,
        max_position=c.int("max_position_embeddings", None, optional=True),
        rope_theta=_rope_theta(c),
        norm_eps=c.float("rms_norm_eps", 1e-6),
        rope_scaling=_rope_scaling(c),
        rope_interleave=c.family == "deepseek_v3" and c.flag("rope_interleave", True),
    )
    c.raise_errors()
    try:
        return ModelSpec(attention=AttentionSpec(**attention), moe=MoESpec(**moe) if moe is not None else None,
                         **fields)
    except MoelabError as e:
        raise MoelabError(f"{c.where}: {e}") from None


def _rope_theta(c: _Config) -> float:
    params = c.raw.get("rope_parameters")  # transformers >= 5 nests theta here
    if isinstance(params, dict) and "rope_theta" in params:
        return c.check_number("rope_theta", params["rope_theta"], "rope_parameters.rope_theta")
    return c.float("rope_theta", 10000.0)


def _rope_scaling(c: _Config) -> tuple:
    """The sorted scalar items of rope_scaling (or transformers 5's rope_parameters); () for plain RoPE.

    Any rope type is read (it does not change the cost); moelab.nn refuses the ones it does not build.
    YaRN's parameters must be numbers, since moelab.nn computes with them."""
    key = "rope_scaling" if c.raw.get("rope_scaling") else "rope_parameters"
    scaling = c.raw.get(key)
    if scaling is None:
        return ()
    if not isinstance(scaling, dict):
        return c._bad(f"field '{key}' must be an object or null, got {show_value(scaling)}", ())
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if not isinstance(kind, str):
        return c._bad(f"field '{key}.rope_type' must be a string, got {show_value(kind)}", ())
    if kind == "default":
        return ()
    items = {}
    for k, v in scaling.items():
        if k in ("type", "rope_theta") or not isinstance(v, int | float | str | bool):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            c.errors.append(f"field '{key}.{k}' must be a finite number, got {v}")
            continue
        items[k] = v
    if kind == "yarn":
        _check_yarn(c, key, scaling)
    items["rope_type"] = kind
    return tuple(sorted(items.items()))


def _check_yarn(c: _Config, key: str, scaling: dict) -> None:
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


def _dense(c: _Config, name: str) -> ModelSpec:
    family = c.family
    if family == "qwen2":
        attention = _gqa(c, qkv_bias=True, o_bias=False)
    elif family == "qwen3":
        bias = c.bool("attention_bias", False)
        attention = _gqa(c, qkv_bias=bias, o_bias=bias, qk_norm="head")
    elif family == "llama":
        bias = c.bool("attention_bias", False)
        attention = _gqa(c, qkv_bias=bias, o_bias=bias)
        return _spec(c, name, attention, mlp_bias=c.bool("mlp_bias", False))
    else:  # mistral
        attention = _gqa(c, qkv_bias=False, o_bias=False)
    return _spec(c, name, attention)


def _mixtral(c: _Config, name: str) -> ModelSpec:
    moe = dict(
        n_experts=c.int("num_local_experts"),
        top_k=c.int("num_experts_per_tok"),
        expert_ffn=c.int("intermediate_size"),
        router="topk_softmax",
    )
    layers = range(c.int("num_hidden_layers"))
    return _spec(c, name, _gqa(c, False, False), moe, list(layers))


def _qwen_moe(c: _Config, name: str) -> ModelSpec:
    layers = c.int("num_hidden_layers")
    # transformers >= 5 writes Qwen3-MoE's expert count as num_local_experts (its attribute_map alias)
    n_experts = c.int("num_experts" if "num_experts" in c.raw or "num_local_experts" not in c.raw
                      else "num_local_experts")
    step = c.int("decoder_sparse_step", 1)
    if step <= 0:
        c.errors.append("field 'decoder_sparse_step' must be positive")
        step = 1
    dense_only = set(c.int_list("mlp_only_layers"))
    moe_layers = [i for i in range(layers) if i not in dense_only and n_experts > 0 and (i + 1) % step == 0]
    if c.family == "qwen2_moe":
        attention = _gqa(c, qkv_bias=c.bool("qkv_bias", True), o_bias=False)
        shared_ffn = c.int("shared_expert_intermediate_size", 0)
        # transformers builds the sigmoid gate d -> 1 even when the shared expert has width 0
        shared = dict(n_shared=1 if shared_ffn else 0, shared_ffn=shared_ffn, shared_gate=True)
    else:
        bias = c.bool("attention_bias", False)
        attention = _gqa(c, qkv_bias=bias, o_bias=bias, qk_norm="head")
        shared = {}
    moe = dict(
        n_experts=n_experts,
        top_k=c.int("num_experts_per_tok"),
        expert_ffn=c.int("moe_intermediate_size"),
        router="softmax_topk",
        norm_topk_prob=c.bool("norm_topk_prob", False),
        **shared,
    )
    return _spec(c, name, attention, moe, moe_layers)


def _olmoe(c: _Config, name: str) -> ModelSpec:
    bias = c.bool("attention_bias", False)
    moe = dict(
        n_experts=c.int("num_experts"),
        top_k=c.int("num_experts_per_tok"),
        expert_ffn=c.int("intermediate_size"),
        router="softmax_topk",
        norm_topk_prob=c.bool("norm_topk_prob", False),
    )
    layers = range(c.int("num_hidden_layers"))
    return _spec(c, name, _gqa(c, bias, bias, qk_norm="full"), moe, list(layers))


def _deepseek(c: _Config, name: str) -> ModelSpec:
    layers = c.int("num_hidden_layers")
    first_dense = c.int("first_k_dense_replace", 3 if c.family == "deepseek_v3" else 0, optional=True) or 0
    freq = c.int("moe_layer_freq", 1)
    if freq <= 0:
        c.errors.append("field 'moe_layer_freq' must be positive")
        freq = 1
    n_experts = c.int("n_routed_experts", None, optional=True)
    c.int("num_nextn_predict_layers", 0, optional=True)  # multi-token-prediction layers: skipped, but checked
    moe, moe_layers = None, []
    if n_experts:
        moe_layers = [i for i in range(layers) if i >= first_dense and i % freq == 0]
        v3 = c.family == "deepseek_v3"
        scoring = c.choice("scoring_func", "sigmoid" if v3 else "softmax", ("sigmoid", "softmax"))
        topk_method = c.choice("topk_method", "noaux_tc" if v3 else "greedy", TOPK_METHODS)
        grouped = topk_method in ("noaux_tc", "group_limited_greedy")
        n_shared = c.int("n_shared_experts", None, optional=True) or 0
        moe = dict(
            n_experts=n_experts,
            top_k=c.int("num_experts_per_tok"),
            expert_ffn=c.int("moe_intermediate_size"),
            n_shared=n_shared,
            shared_ffn=c.int("moe_intermediate_size"),
            router="sigmoid" if scoring == "sigmoid" else "softmax_topk",
            norm_topk_prob=c.bool("norm_topk_prob", v3),
            n_group=c.count("n_group", 1) if grouped else 1,
            topk_group=c.count("topk_group", 1) if grouped else 1,
            routed_scaling_factor=c.float("routed_scaling_factor", 1.0),
            selection_bias=topk_method == "noaux_tc",
        )
    return _spec(c, name, _mla(c), moe, moe_layers, mlp_bias=c.bool("mlp_bias", False))


READERS = {
    "llama": _dense,
    "mistral": _dense,
    "qwen2": _dense,
    "qwen3": _dense,
    "mixtral": _mixtral,
    "qwen2_moe": _qwen_moe,
    "qwen3_moe": _qwen_moe,
    "olmoe": _olmoe,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
}


def spec_from_config(raw: Any, name: str = "model", source: str = "config.json") -> ModelSpec:
    """Build a ModelSpec from a parsed config.json dict; `source` names it in errors.

    Every field error is reported, on one line; a cross-field error (heads that do not divide the width,
    top-k above the expert count) only when the fields themselves are sound."""
    if not isinstance(raw, dict):
        raise MoelabError(f"{source}: the top level must be a JSON object")
    family = raw.get("model_type")
    if family is None:
        raise MoelabError(f"{source}: missing field 'model_type'")
    if not isinstance(family, str) or family not in READERS:
        raise MoelabError(f"{source}: unknown model_type {show_value(family)} (known: {', '.join(sorted(READERS))})")
    c = _Config(raw, family, where=f"{source} ({family})")
    act = raw.get("hidden_act", "silu")
    if act not in ("silu", "swish") or not isinstance(act, str):
        c.errors.append(f"hidden_act {show_value(act)} is not a SwiGLU activation")
    return READERS[family](c, name)


def read_config(path: str | Path) -> dict[str, Any]:
    """The parsed config.json at `path`: a regular file of at most userfile.MAX_FILE_BYTES, strict JSON,
    a JSON object at the top."""
    path = Path(path)
    if not os.path.lexists(path):
        raise MoelabError(f"no such file: {show_value(str(path))}")
    raw = parse_json(read_user_text(path, "config.json"), str(path))
    if not isinstance(raw, dict):
        raise MoelabError(f"{path}: the top level must be a JSON object")
    return raw


def spec_from_file(path: str | Path) -> ModelSpec:
    """Read a config.json (or a folder holding one)."""
    path = Path(path)
    if os.path.isdir(path):
        path = path / "config.json"
    name = path.parent.name if path.name == "config.json" else path.stem
    return spec_from_config(read_config(path), name=name, source=str(path))
