"""The model spec: one frozen description of a dense or MoE transformer, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from moelab import limits
from moelab.errors import MoelabError
from moelab.validation import format_errors, show_value

ROUTERS = ("topk_softmax", "softmax_topk", "sigmoid")
QK_NORMS = ("none", "head", "full")


class _Checks:
    """Field checks of one spec: every type and bound error is collected, then raised on one line."""

    def __init__(self, owner: str, bounded: bool = True) -> None:
        self.owner, self.errors, self.bounded = owner, [], bounded

    def count(self, name: str, value: Any, high: int, low: int = 1, optional: bool = False) -> None:
        """An integer in [low, high] (None allowed when optional; `high` not checked when unbounded)."""
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors.append(f"{name} must be an integer, got {show_value(value)}")
        elif value < low:
            self.errors.append(f"{name} must be {'a positive integer' if low == 1 else f'at least {low}'}, "
                               f"got {value}")
        elif self.bounded and value > high:
            self.errors.append(f"{name} must be at most {high}, got {show_value(value)}")

    def number(self, name: str, value: Any, high: float) -> None:
        """A finite number in (0, high] (limits.number_problem, as config.json's reader checks it)."""
        problem = limits.number_problem(value, 0, high if self.bounded else None, low_open=True)
        if problem:
            self.errors.append(f"{name} {problem}")

    def flags(self, **values: Any) -> None:
        for name, value in values.items():
            if not isinstance(value, bool):
                self.errors.append(f"{name} must be true or false, got {show_value(value)}")

    def raise_any(self) -> None:
        if self.errors:
            raise MoelabError(format_errors(self.owner, self.errors))


@dataclass(frozen=True)
class AttentionSpec:
    """Grouped-query attention (kind="gqa") or DeepSeek multi-head latent attention (kind="mla")."""

    n_heads: int
    n_kv_heads: int
    head_dim: int  # GQA head size; for MLA the value head size v_head_dim
    kind: str = "gqa"
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: str = "none"  # "head": RMSNorm(head_dim) (Qwen3); "full": RMSNorm(heads*head_dim) (OLMoE)
    sliding_window: int | None = None
    # MLA only
    q_lora_rank: int | None = None  # None: a plain q_proj
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0

    def __post_init__(self) -> None:
        check = _Checks("attention")
        check.count("n_heads", self.n_heads, limits.MAX_HEADS)
        check.count("n_kv_heads", self.n_kv_heads, limits.MAX_HEADS)
        check.count("head_dim", self.head_dim, limits.MAX_WIDTH)
        check.count("sliding_window", self.sliding_window, limits.MAX_POSITIONS, optional=True)
        if self.kind == "mla":
            check.count("q_lora_rank", self.q_lora_rank, limits.MAX_WIDTH, optional=True)
            for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim"):
                check.count(name, getattr(self, name), limits.MAX_WIDTH)
        check.flags(qkv_bias=self.qkv_bias, o_bias=self.o_bias)
        check.raise_any()
        if self.kind not in ("gqa", "mla"):
            raise MoelabError(f"attention: kind must be 'gqa' or 'mla', got {show_value(self.kind)}")
        if self.qk_norm not in QK_NORMS:
            raise MoelabError(f"attention: qk_norm must be one of {QK_NORMS}, got {show_value(self.qk_norm)}")
        if self.kind == "gqa" and self.n_heads % self.n_kv_heads:
            raise MoelabError(
                f"attention: num_attention_heads ({self.n_heads}) must be a multiple of "
                f"num_key_value_heads ({self.n_kv_heads})"
            )

    @property
    def qk_head_dim(self) -> int:
        """Size of one head's query/key vectors (MLA: nope + rope parts)."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim if self.kind == "mla" else self.head_dim

    @property
    def v_head_dim(self) -> int:
        return self.head_dim


@dataclass(frozen=True)
class MoESpec:
    """The routed experts of a MoE layer, its shared experts and its router."""

    n_experts: int
    top_k: int
    expert_ffn: int  # intermediate size of one routed expert
    n_shared: int = 0  # shared experts, each of width shared_ffn
    shared_ffn: int = 0
    shared_gate: bool = False  # Qwen2-MoE: shared output scaled by sigmoid(Linear(d -> 1))
    router: str = "softmax_topk"  # "topk_softmax" (Mixtral), "softmax_topk" (Qwen, OLMoE), "sigmoid" (DS-V3)
    norm_topk_prob: bool = True
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0
    selection_bias: bool = False  # DeepSeek-V3 e_score_correction_bias (a buffer, not a parameter)

    def __post_init__(self) -> None:
        check = _Checks("moe")
        for name in ("n_experts", "top_k", "n_group", "topk_group"):
            check.count(name, getattr(self, name), limits.MAX_EXPERTS)
        check.count("n_shared", self.n_shared, limits.MAX_EXPERTS, low=0)
        check.count("expert_ffn", self.expert_ffn, limits.MAX_FFN)
        check.count("shared_ffn", self.shared_ffn, limits.MAX_FFN, low=0)
        check.number("routed_scaling_factor", self.routed_scaling_factor, limits.MAX_ROUTER_SCALE)
        check.flags(shared_gate=self.shared_gate, norm_topk_prob=self.norm_topk_prob,
                    selection_bias=self.selection_bias)
        check.raise_any()
        if self.top_k > self.n_experts:
            raise MoelabError(f"moe: top_k ({self.top_k}) exceeds the number of experts ({self.n_experts})")
        if self.router not in ROUTERS:
            raise MoelabError(f"moe: router must be one of {ROUTERS}, got {show_value(self.router)}")
        if self.n_shared < 0 or self.shared_ffn < 0 or (self.n_shared and self.shared_ffn <= 0):
            raise MoelabError("moe: shared experts need a positive count and width")
        if self.n_experts % self.n_group:
            raise MoelabError(f"moe: n_group ({self.n_group}) must divide the expert count ({self.n_experts})")
        if self.topk_group > self.n_group:
            raise MoelabError(f"moe: topk_group ({self.topk_group}) exceeds n_group ({self.n_group})")
        if self.n_group > 1 and self.top_k > self.topk_group * (self.n_experts // self.n_group):
            raise MoelabError("moe: top_k exceeds the experts left in the kept groups")


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer: which layers are MoE, and everything that decides its cost."""

    name: str
    family: str
    vocab_size: int
    d_model: int
    n_layers: int
    ffn_dim: int  # intermediate size of the dense FFN layers (0 if there are none)
    attention: AttentionSpec
    moe: MoESpec | None = None
    moe_layers: tuple[int, ...] = ()  # indices of the layers whose FFN is a MoE
    tie_embeddings: bool = False
    mlp_bias: bool = False
    max_position: int | None = None
    # numerics that do not change the cost but do change the forward pass
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    rope_scaling: tuple[tuple[str, Any], ...] = ()  # sorted items of HF rope_scaling (yarn), () for plain RoPE
    rope_interleave: bool = False  # DeepSeek-V3: rotary pairs are interleaved (x0, x1), (x2, x3), ...
    notes: tuple[str, ...] = field(default=(), compare=False)
    # False only for specs moelab derives itself (the dense twins of cost.equivalent): the upper bounds of
    # moelab.limits are for what a user gives, and a derived width may lawfully pass them. Never read from a file.
    bounded: bool = field(default=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        check = _Checks(str(self.name), bounded=self.bounded is not False)
        check.count("vocab_size", self.vocab_size, limits.MAX_VOCAB)
        check.count("d_model", self.d_model, limits.MAX_WIDTH)
        check.count("n_layers", self.n_layers, limits.MAX_LAYERS)
        check.count("ffn_dim", self.ffn_dim, limits.MAX_FFN, low=0)
        check.count("max_position", self.max_position, limits.MAX_POSITIONS, optional=True)
        check.number("rope_theta", self.rope_theta, limits.MAX_ROPE_THETA)
        check.number("norm_eps", self.norm_eps, limits.MAX_NORM_EPS)
        check.flags(tie_embeddings=self.tie_embeddings, mlp_bias=self.mlp_bias, rope_interleave=self.rope_interleave)
        if not isinstance(self.attention, AttentionSpec):
            check.errors.append("attention must be an attention spec")
        if self.moe is not None and not isinstance(self.moe, MoESpec):
            check.errors.append("moe must be a MoE spec or absent")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in self.moe_layers):
            check.errors.append("moe_layers must be a list of layer indices")
        elif len(set(self.moe_layers)) != len(self.moe_layers):
            check.errors.append("moe_layers lists a layer twice")
        for key, value in self.rope_scaling:
            if not isinstance(key, str) or not isinstance(value, str | int | float | bool):
                check.errors.append(f"rope_scaling {show_value(key)} must be a string, number or boolean")
            elif isinstance(value, float) and not math.isfinite(value):
                check.errors.append(f"rope_scaling {key} must be a finite number, got {value}")
        check.raise_any()
        if self.moe is None and self.moe_layers:
            raise MoelabError(f"{self.name}: MoE layers listed but no MoE spec")
        if any(i < 0 or i >= self.n_layers for i in self.moe_layers):
            raise MoelabError(f"{self.name}: a MoE layer index is outside 0..{self.n_layers - 1}")
        if self.n_dense_layers and self.ffn_dim <= 0:
            raise MoelabError(f"{self.name}: dense layers need a positive intermediate_size")

    @property
    def is_moe(self) -> bool:
        return self.moe is not None and bool(self.moe_layers)

    @property
    def n_moe_layers(self) -> int:
        return len(self.moe_layers)

    @property
    def n_dense_layers(self) -> int:
        return self.n_layers - len(self.moe_layers)


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """A JSON-ready dict of the spec (the inverse of `spec_from_dict`)."""
    from dataclasses import asdict

    out = asdict(spec)
    out["rope_scaling"] = dict(spec.rope_scaling)
    out["moe_layers"] = list(spec.moe_layers)
    out.pop("notes", None)
    out.pop("bounded", None)
    return out


def spec_from_dict(raw: dict[str, Any]) -> ModelSpec:
    """Rebuild a spec written by `spec_to_dict` (validated like any other)."""
    try:
        fields = dict(raw)
        fields.pop("bounded", None)  # a spec read back is user input: always bounded
        fields["attention"] = AttentionSpec(**fields["attention"])
        fields["moe"] = MoESpec(**fields["moe"]) if fields.get("moe") else None
        fields["moe_layers"] = tuple(fields.get("moe_layers", ()))
        fields["rope_scaling"] = tuple(sorted(dict(fields.get("rope_scaling") or {}).items()))
        return ModelSpec(**fields)
    except MoelabError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise MoelabError(f"not a moelab model spec ({str(e)[:160]})") from None
