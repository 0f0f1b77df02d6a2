"""Read a Hugging Face config.json into a ModelSpec, honouring each family's switches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moelab.errors import MoelabError
from moelab.spec.model import AttentionSpec, ModelSpec, MoESpec

_MISSING = object()


class _Config:
    """Typed access to a config dict; every failure names the field."""

    def __init__(self, raw: dict[str, Any], family: str) -> None:
        self.raw, self.family = raw, family

    def _value(self, key: str, default: Any) -> Any:
        value = self.raw.get(key, default)
        if value is _MISSING:
            raise MoelabError(f"config.json ({self.family}): missing field '{key}'")
        return value

    def int(self, key: str, default: Any = _MISSING, optional: bool = False) -> int | None:
        value = self._value(key, default)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise MoelabError(f"config.json ({self.family}): field '{key}' must be an integer, got {value!r}")
        if value < 0:
            raise MoelabError(f"config.json ({self.family}): field '{key}' must not be negative, got {value}")
        return value

    def float(self, key: str, default: Any = _MISSING) -> float:
        value = self._value(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MoelabError(f"config.json ({self.family}): field '{key}' must be a number, got {value!r}")
        return float(value)

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        value = self._value(key, default)
        if not isinstance(value, bool):
            raise MoelabError(f"config.json ({self.family}): field '{key}' must be true or false, got {value!r}")
        return value

    def int_list(self, key: str) -> list[int]:
        value = self._value(key, [])
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise MoelabError(f"config.json ({self.family}): field '{key}' must be a list of integers")
        return value


def _gqa(c: _Config, qkv_bias: bool, o_bias: bool, qk_norm: str = "none") -> AttentionSpec:
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    if not heads or heads <= 0:
        raise MoelabError(f"config.json ({c.family}): field 'num_attention_heads' must be positive")
    # Qwen3 (dense) defaults head_dim to 128 when the config omits it; the others derive it from the width.
    head_dim = c.int("head_dim", 128 if c.family == "qwen3" else None, optional=True)
    if head_dim is None:
        if d % heads:
            raise MoelabError(
                f"config.json ({c.family}): hidden_size ({d}) is not divisible by num_attention_heads ({heads})"
            )
        head_dim = d // heads
    # As transformers reads it: Mistral/Mixtral slide whenever sliding_window is set; Qwen only with
    # use_sliding_window (default false); the other families never do.
    window = None
    if c.family in ("mistral", "mixtral") or (c.family.startswith("qwen") and c.raw.get("use_sliding_window", False)):
        window = c.int("sliding_window", None, optional=True)
    return AttentionSpec(
        n_heads=heads,
        n_kv_heads=c.int("num_key_value_heads", heads, optional=True) or heads,
        head_dim=head_dim,
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        qk_norm=qk_norm,
        sliding_window=window,
    )


def _mla(c: _Config) -> AttentionSpec:
    bias = c.bool("attention_bias", False)
    heads = c.int("num_attention_heads")
    return AttentionSpec(
        kind="mla",
        n_heads=heads,
        n_kv_heads=c.int("num_key_value_heads", heads, optional=True) or heads,
        head_dim=c.int("v_head_dim"),
        qkv_bias=bias,
        o_bias=bias,
        q_lora_rank=c.int("q_lora_rank", None, optional=True),
        kv_lora_rank=c.int("kv_lora_rank"),
        qk_nope_head_dim=c.int("qk_nope_head_dim"),
        qk_rope_head_dim=c.int("qk_rope_head_dim"),
    )


def _spec(c: _Config, name: str, attention: AttentionSpec, moe: MoESpec | None = None,
          moe_layers: list[int] | tuple[int, ...] = (), ffn_key: str = "intermediate_size",
          mlp_bias: bool = False) -> ModelSpec:
    layers = c.int("num_hidden_layers")
    return ModelSpec(
        name=name,
        family=c.family,
        vocab_size=c.int("vocab_size"),
        d_model=c.int("hidden_size"),
        n_layers=layers,
        ffn_dim=c.int(ffn_key) if (moe is None or len(moe_layers) < layers) else c.int(ffn_key, 0),
        attention=attention,
        moe=moe,
        moe_layers=tuple(moe_layers),
        tie_embeddings=c.bool("tie_word_embeddings", False),
        mlp_bias=mlp_bias,
        max_position=c.int("max_position_embeddings", None, optional=True),
        rope_theta=_rope_theta(c),
        norm_eps=c.float("rms_norm_eps", 1e-6),
        rope_scaling=_rope_scaling(c),
        rope_interleave=c.family == "deepseek_v3" and bool(c.raw.get("rope_interleave", True)),
    )


def _rope_theta(c: _Config) -> float:
    params = c.raw.get("rope_parameters")  # transformers >= 5 nests theta here
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return c.float("rope_theta", 10000.0)


def _rope_scaling(c: _Config) -> tuple:
    scaling = c.raw.get("rope_scaling") or c.raw.get("rope_parameters")
    if not isinstance(scaling, dict):
        return ()
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return ()
    items = {k: v for k, v in scaling.items()
             if k not in ("type", "rope_theta") and isinstance(v, (int, float, str, bool))}
    items["rope_type"] = kind
    return tuple(sorted(items.items()))


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
    moe = MoESpec(
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
        raise MoelabError(f"config.json ({c.family}): field 'decoder_sparse_step' must be positive")
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
    moe = MoESpec(
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
    moe = MoESpec(
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
        raise MoelabError(f"config.json ({c.family}): field 'moe_layer_freq' must be positive")
    n_experts = c.int("n_routed_experts", None, optional=True)
    moe, moe_layers = None, []
    if n_experts:
        moe_layers = [i for i in range(layers) if i >= first_dense and i % freq == 0]
        v3 = c.family == "deepseek_v3"
        scoring = c.raw.get("scoring_func", "sigmoid" if v3 else "softmax")
        if scoring not in ("sigmoid", "softmax"):
            raise MoelabError(f"config.json ({c.family}): field 'scoring_func' must be sigmoid or softmax")
        topk_method = c.raw.get("topk_method", "noaux_tc" if v3 else "greedy")
        grouped = topk_method in ("noaux_tc", "group_limited_greedy")
        n_shared = c.int("n_shared_experts", None, optional=True) or 0
        moe = MoESpec(
            n_experts=n_experts,
            top_k=c.int("num_experts_per_tok"),
            expert_ffn=c.int("moe_intermediate_size"),
            n_shared=n_shared,
            shared_ffn=c.int("moe_intermediate_size"),
            router="sigmoid" if scoring == "sigmoid" else "softmax_topk",
            norm_topk_prob=c.bool("norm_topk_prob", v3),
            n_group=(c.int("n_group", 1, optional=True) or 1) if grouped else 1,
            topk_group=(c.int("topk_group", 1, optional=True) or 1) if grouped else 1,
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


def spec_from_config(raw: Any, name: str = "model") -> ModelSpec:
    """Build a ModelSpec from a parsed config.json dict."""
    if not isinstance(raw, dict):
        raise MoelabError("config.json: the top level must be a JSON object")
    family = raw.get("model_type")
    if family is None:
        raise MoelabError("config.json: missing field 'model_type'")
    if family not in READERS:
        raise MoelabError(f"config.json: unknown model_type {family!r} (known: {', '.join(sorted(READERS))})")
    c = _Config(raw, family)
    act = raw.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise MoelabError(f"config.json ({family}): hidden_act {act!r} is not a SwiGLU activation")
    return READERS[family](c, name)


def spec_from_file(path: str | Path) -> ModelSpec:
    """Read a config.json (or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise MoelabError(f"no such file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MoelabError(f"{path}: not valid JSON ({e})") from None
    name = path.parent.name if path.name == "config.json" else path.stem
    return spec_from_config(raw, name=name)
