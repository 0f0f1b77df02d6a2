"""The model spec: one frozen description of a dense or MoE transformer, layer by layer, validated on construction.

A ModelSpec carries a tuple of LayerSpecs, one per decoder layer: its attention (kind, window, rope or no rope,
linear attention) and its FFN (a dense FFNSpec of width f, or a MoESpec). `uniform_layers` builds the common
case of one attention everywhere and MoE on some layers. The properties `attention`, `moe`, `moe_layers` and
`ffn_dim` summarise the layers for code that asks about the model as a whole.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from moelab import limits
from moelab.errors import MoelabError
from moelab.validation import format_errors, show_value

ROUTERS = ("topk_softmax", "softmax_topk", "sigmoid", "sparsemixer", "topk_sigmoid")
GROUP_SCORES = ("top2_sum", "max")
QK_NORMS = ("none", "head", "full", "l2")
ATTENTION_KINDS = ("gqa", "mla", "linear")
ACTIVATIONS = ("silu", "gelu_tanh", "gelu", "clamped_swiglu")
NORMS = ("rms", "rms_offset", "layer", "layer_nobias")  # rms_offset: Gemma's x * (1 + w)
NORM_PLACEMENTS = ("pre", "post", "sandwich")  # post: OLMo 2 (norm after each sublayer); sandwich: Gemma 2/3
EXPERT_STORAGE = ("mxfp4",)  # formats a checkpoint stores routed experts in (gpt-oss: MXFP4)


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

    def number(self, name: str, value: Any, high: float | None, optional: bool = False) -> None:
        """A finite number in (0, high] (limits.number_problem, as config.json's reader checks it)."""
        if value is None and optional:
            return
        problem = limits.number_problem(value, 0, high if self.bounded else None, low_open=True)
        if problem:
            self.errors.append(f"{name} {problem}")

    def flags(self, **values: Any) -> None:
        for name, value in values.items():
            if not isinstance(value, bool):
                self.errors.append(f"{name} must be true or false, got {show_value(value)}")

    def choice(self, name: str, value: Any, allowed: tuple[str, ...]) -> None:
        if not isinstance(value, str) or value not in allowed:
            self.errors.append(f"{name} must be one of {', '.join(allowed)}, got {show_value(value)}")

    def scaling(self, name: str, items: Any) -> None:
        """Sorted (key, value) items of a rope_scaling: scalars, or tuples of numbers (LongRoPE's factors)."""
        if not isinstance(items, tuple):
            self.errors.append(f"{name} must be a list of items")
            return
        for item in items:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                self.errors.append(f"{name} must hold (key, value) pairs")
                return
            key, value = item
            numbers = value if isinstance(value, tuple) else (value,)
            if not all(isinstance(v, str | int | float | bool) for v in numbers):
                self.errors.append(f"{name} {show_value(key)} must be a string, number, boolean or list of numbers")
            elif any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                self.errors.append(f"{name} {key} must be finite, got {show_value(value)}")

    def raise_any(self) -> None:
        if self.errors:
            raise MoelabError(format_errors(self.owner, self.errors))


def _cached_hash(spec) -> int:
    """The hash of a frozen spec from its fields, kept on the instance after the first call."""
    cached = spec.__dict__.get("_hash")
    if cached is None:
        cached = hash(tuple(getattr(spec, f) for f in spec.__dataclass_fields__))
        object.__setattr__(spec, "_hash", cached)
    return cached


@dataclass(frozen=True)
class LinearAttentionSpec:
    """Gated DeltaNet linear attention (Qwen3-Next): a causal depthwise conv over q/k/v, then a delta-rule
    recurrence whose state (per value head: key_dim x value_dim) replaces the KV cache. Source: transformers'
    models/qwen3_next/modeling_qwen3_next.py (Qwen3NextGatedDeltaNet)."""

    n_k_heads: int
    n_v_heads: int
    k_head_dim: int
    v_head_dim: int
    conv_kernel: int = 4

    def __post_init__(self) -> None:
        check = _Checks("linear attention")
        for name in ("n_k_heads", "n_v_heads"):
            check.count(name, getattr(self, name), limits.MAX_HEADS)
        for name in ("k_head_dim", "v_head_dim"):
            check.count(name, getattr(self, name), limits.MAX_WIDTH)
        check.count("conv_kernel", self.conv_kernel, limits.MAX_POSITIONS)
        check.raise_any()
        if self.n_v_heads % self.n_k_heads:
            raise MoelabError(f"linear attention: value heads ({self.n_v_heads}) must be a multiple of key heads "
                              f"({self.n_k_heads})")


@dataclass(frozen=True)
class AttentionSpec:
    """One layer's token mixer: grouped-query attention ("gqa"), DeepSeek multi-head latent attention ("mla"),
    or linear attention ("linear", with `linear` set)."""

    n_heads: int
    n_kv_heads: int
    head_dim: int  # GQA head size; for MLA the value head size v_head_dim
    kind: str = "gqa"
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: str = "none"  # "head": RMSNorm(head_dim) (Qwen3); "full": over all heads (OLMoE); "l2": no weight
    sliding_window: int | None = None  # attend to the last `sliding_window` positions
    chunk_size: int | None = None  # attend within aligned chunks of this many positions (Llama 4)
    rope: bool = True  # False: a no-position (NoPE) layer
    rotary_fraction: float = 1.0  # share of each head's dims that rotate (GLM-4.5: 0.5)
    rope_theta: float | None = None  # this layer's RoPE base when it differs from the model's (Gemma 3 local)
    rope_scaling: tuple[tuple[str, Any], ...] | None = None  # this layer's rope_scaling, None: the model's
    sinks: bool = False  # gpt-oss: one learned logit per head joins the softmax (n_heads parameters)
    softcap: float | None = None  # Gemma 2: scores = cap * tanh(scores / cap)
    scale: float | None = None  # softmax scale when not 1/sqrt(qk head dim) (Gemma, Granite)
    output_gate: bool = False  # Qwen3-Next: q_proj also yields a sigmoid gate on the attention output
    clip_qkv: float | None = None  # OLMoE, DBRX: q, k, v clamped to [-clip, clip]
    temperature_tuning: tuple[float, float] | None = None  # Llama 4 NoPE layers: (floor_scale, attn_scale)
    # JetMoE's mixture of attention heads (MoA): q_proj and o_proj are `moa_experts` experts of n_kv_heads
    # heads each, a token uses n_heads // n_kv_heads of them (top-k of a router d -> moa_experts, softmax over
    # the kept) and shares one kv_proj; 0: plain attention. Source: transformers models/jetmoe (JetMoeMoA).
    moa_experts: int = 0
    # MLA only
    q_lora_rank: int | None = None  # None: a plain q_proj
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    # linear attention only
    linear: LinearAttentionSpec | None = None

    def __hash__(self) -> int:
        return _cached_hash(self)

    def __post_init__(self) -> None:
        check = _Checks("attention")
        check.count("n_heads", self.n_heads, limits.MAX_HEADS)
        check.count("n_kv_heads", self.n_kv_heads, limits.MAX_HEADS)
        check.count("head_dim", self.head_dim, limits.MAX_WIDTH)
        check.count("sliding_window", self.sliding_window, limits.MAX_POSITIONS, optional=True)
        check.count("chunk_size", self.chunk_size, limits.MAX_POSITIONS, optional=True)
        check.count("moa_experts", self.moa_experts, limits.MAX_EXPERTS, low=0)
        check.number("rotary_fraction", self.rotary_fraction, 1.0)
        check.number("rope_theta", self.rope_theta, limits.MAX_ROPE_THETA, optional=True)
        check.number("softcap", self.softcap, limits.MAX_SOFTCAP, optional=True)
        check.number("scale", self.scale, limits.MAX_SOFTCAP, optional=True)
        check.number("clip_qkv", self.clip_qkv, limits.MAX_SOFTCAP, optional=True)
        if self.temperature_tuning is not None:
            if not (isinstance(self.temperature_tuning, tuple) and len(self.temperature_tuning) == 2):
                check.errors.append("temperature_tuning must be (floor_scale, attn_scale)")
            else:
                check.number("temperature_tuning floor_scale", self.temperature_tuning[0], limits.MAX_POSITIONS)
                check.number("temperature_tuning attn_scale", self.temperature_tuning[1], limits.MAX_SOFTCAP)
        if self.rope_scaling is not None:
            check.scaling("rope_scaling", self.rope_scaling)
        if self.kind == "mla":
            check.count("q_lora_rank", self.q_lora_rank, limits.MAX_WIDTH, optional=True)
            for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim"):
                check.count(name, getattr(self, name), limits.MAX_WIDTH)
        check.flags(qkv_bias=self.qkv_bias, o_bias=self.o_bias, rope=self.rope, sinks=self.sinks,
                    output_gate=self.output_gate)
        check.choice("kind", self.kind, ATTENTION_KINDS)
        check.choice("qk_norm", self.qk_norm, QK_NORMS)
        check.raise_any()
        if (self.kind == "linear") != (self.linear is not None):
            raise MoelabError("attention: linear attention needs its linear spec (and only it has one)")
        if self.linear is not None and not isinstance(self.linear, LinearAttentionSpec):
            raise MoelabError("attention: linear must be a linear attention spec")
        if self.moa_experts and not (self.kind == "gqa" and not self.qkv_bias and not self.output_gate
                                     and self.n_heads % self.n_kv_heads == 0
                                     and self.n_heads // self.n_kv_heads <= self.moa_experts):
            raise MoelabError("attention: a mixture of attention heads is grouped-query attention without q/k/v "
                              "biases or gates, its n_heads // n_kv_heads (top-k) at most moa_experts")
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

    @property
    def softmax(self) -> bool:
        """Whether the layer attends with a softmax over cached positions (not linear attention)."""
        return self.kind != "linear"

    def attended(self, context: float) -> float:
        """Positions one query attends to at `context`: all of them, its sliding window, or the part of its
        chunk before it (past the first chunk, half a chunk on average over where in its chunk the query
        falls); a linear layer attends to none, it reads its fixed-size state instead."""
        if not self.softmax:
            return 0.0
        if self.sliding_window:
            return min(context, self.sliding_window)
        if self.chunk_size:
            return context if context <= self.chunk_size else self.chunk_size / 2
        return context

    def cached(self, context: float) -> float:
        """Positions this layer must keep cached at `context`: a window or a chunk needs only its last ones."""
        if not self.softmax:
            return 0.0
        span = self.sliding_window or self.chunk_size
        return min(context, span) if span else context


@dataclass(frozen=True)
class FFNSpec:
    """A dense gated FFN (SwiGLU, or GeGLU under a gelu activation) of intermediate width `width`."""

    width: int

    def __post_init__(self) -> None:
        check = _Checks("ffn", bounded=False)  # bounded by the ModelSpec (a derived dense twin may be wider)
        check.count("width", self.width, limits.MAX_FFN)
        check.raise_any()


@dataclass(frozen=True)
class MoESpec:
    """The routed experts of a MoE layer, its shared experts and its router."""

    n_experts: int
    top_k: int
    expert_ffn: int  # intermediate size of one routed expert
    n_shared: int = 0  # shared experts, each of width shared_ffn
    shared_ffn: int = 0
    shared_gate: bool = False  # Qwen2-MoE: shared output scaled by sigmoid(Linear(d -> 1))
    # "topk_softmax" (Mixtral, gpt-oss), "softmax_topk" (Qwen, OLMoE), "sigmoid" (DS-V3), "sparsemixer"
    # (Phi-3.5-MoE), "topk_sigmoid" (Llama 4: sigmoid of the kept logits)
    router: str = "softmax_topk"
    norm_topk_prob: bool = True
    n_group: int = 1
    topk_group: int = 1
    group_score: str = "top2_sum"  # GROUP_SCORES: how groups rank (DeepSeek-V3/GLM: top-2 sum; V2: best score)
    routed_scaling_factor: float = 1.0
    selection_bias: bool = False  # DeepSeek-V3 e_score_correction_bias (a buffer, not a parameter)
    router_bias: bool = False  # gpt-oss: the router Linear has a bias
    expert_bias: bool = False  # gpt-oss: every expert projection has a bias
    weighted_input: bool = False  # Llama 4: the routing weight scales each expert's input, not its output
    # Phi-3.5-MoE: sparsemixer's jitter_eps (config router_jitter_noise); eval routing masks the experts whose
    # logit gap to the best, relative to max(|logit|, best), exceeds 2 * eps (0: only the best one)
    sparsemixer_eps: float = 0.0

    def __post_init__(self) -> None:
        check = _Checks("moe")
        for name in ("n_experts", "top_k", "n_group", "topk_group"):
            check.count(name, getattr(self, name), limits.MAX_EXPERTS)
        check.count("n_shared", self.n_shared, limits.MAX_EXPERTS, low=0)
        check.count("expert_ffn", self.expert_ffn, limits.MAX_FFN)
        check.count("shared_ffn", self.shared_ffn, limits.MAX_FFN, low=0)
        check.number("routed_scaling_factor", self.routed_scaling_factor, limits.MAX_ROUTER_SCALE)
        check.flags(shared_gate=self.shared_gate, norm_topk_prob=self.norm_topk_prob,
                    selection_bias=self.selection_bias, router_bias=self.router_bias, expert_bias=self.expert_bias,
                    weighted_input=self.weighted_input)
        problem = limits.number_problem(self.sparsemixer_eps, 0, limits.MAX_ROUTER_SCALE)
        if problem:
            check.errors.append(f"sparsemixer_eps {problem}")
        check.raise_any()
        if self.top_k > self.n_experts:
            raise MoelabError(f"moe: top_k ({self.top_k}) exceeds the number of experts ({self.n_experts})")
        if self.group_score not in GROUP_SCORES:
            raise MoelabError(f"moe: group_score must be one of {GROUP_SCORES}, got {show_value(self.group_score)}")
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
class LayerSpec:
    """One decoder layer: its attention and its FFN (dense or MoE)."""

    attention: AttentionSpec
    ffn: FFNSpec | MoESpec

    def __hash__(self) -> int:  # computed once: sums over layers hash every layer of every spec they price
        return _cached_hash(self)

    def __post_init__(self) -> None:
        if not isinstance(self.attention, AttentionSpec):
            raise MoelabError("layer: attention must be an attention spec")
        if not isinstance(self.ffn, FFNSpec | MoESpec):
            raise MoelabError("layer: ffn must be a dense FFN or a MoE spec")

    @cached_property
    def moe(self) -> MoESpec | None:
        return self.ffn if isinstance(self.ffn, MoESpec) else None


def uniform_layers(n_layers: int, attention: AttentionSpec, ffn_dim: int = 0, moe: MoESpec | None = None,
                   moe_layers: tuple[int, ...] | list[int] = ()) -> tuple[LayerSpec, ...]:
    """`n_layers` layers of one attention; MoE `moe` on `moe_layers`, a dense FFN of `ffn_dim` elsewhere."""
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or not 1 <= n_layers <= limits.MAX_LAYERS:
        raise MoelabError(f"n_layers must be an integer in 1..{limits.MAX_LAYERS}, got {show_value(n_layers)}")
    chosen = set(moe_layers)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in chosen):
        raise MoelabError("moe_layers must be a list of layer indices")
    if len(chosen) != len(tuple(moe_layers)):
        raise MoelabError("moe_layers lists a layer twice")
    if chosen and moe is None:
        raise MoelabError("MoE layers listed but no MoE spec")
    if any(i < 0 or i >= n_layers for i in chosen):
        raise MoelabError(f"a MoE layer index is outside 0..{n_layers - 1}")
    dense = FFNSpec(ffn_dim) if len(chosen) < n_layers else None
    if dense is None and ffn_dim:
        FFNSpec(ffn_dim)  # still validated
    return tuple(LayerSpec(attention, moe if i in chosen else dense) for i in range(n_layers))


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer: its layers, and everything else that decides its cost or its forward pass."""

    name: str
    family: str
    vocab_size: int
    d_model: int
    layers: tuple[LayerSpec, ...]
    tie_embeddings: bool = False
    mlp_bias: bool = False  # biases on the dense FFNs and shared experts (Llama's and DeepSeek-V2's mlp_bias)
    max_position: int | None = None
    norm: str = "rms"  # NORMS: what every norm of the model is
    norm_placement: str = "pre"  # NORM_PLACEMENTS
    lm_head_bias: bool = False  # Phi-3.5-MoE
    expert_storage: str | None = None  # EXPERT_STORAGE: routed experts stored smaller than the rest (gpt-oss)
    # numerics that do not change the cost but do change the forward pass
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    rope_scaling: tuple[tuple[str, Any], ...] = ()  # sorted items of HF rope_scaling, () for plain RoPE
    rope_interleave: bool = False  # DeepSeek-V3: rotary pairs are interleaved (x0, x1), (x2, x3), ...
    activation: str = "silu"  # ACTIVATIONS: the FFN gate's activation ("clamped_swiglu": gpt-oss)
    embedding_scale: float = 1.0  # embeddings times this (Gemma: sqrt(d_model); Granite: embedding_multiplier)
    residual_scale: float = 1.0  # each sublayer's output times this before the residual add (Granite)
    logits_scale: float = 1.0  # logits divided by this (Granite's logits_scaling)
    logits_softcap: float | None = None  # Gemma 2: logits = cap * tanh(logits / cap)
    notes: tuple[str, ...] = field(default=(), compare=False)
    # Why moelab.nn cannot build this spec as its config describes it (a switch its family's reader knows nn
    # does not implement), set by the config reader; the engine prices the spec all the same.
    unbuilt: tuple[str, ...] = field(default=(), compare=False, repr=False)
    # False only for specs moelab derives itself (the dense twins of cost.equivalent): the upper bounds of
    # moelab.limits are for what a user gives, and a derived width may lawfully pass them. Never read from a file.
    bounded: bool = field(default=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        check = _Checks(str(self.name), bounded=self.bounded is not False)
        check.count("vocab_size", self.vocab_size, limits.MAX_VOCAB)
        check.count("d_model", self.d_model, limits.MAX_WIDTH)
        check.count("max_position", self.max_position, limits.MAX_POSITIONS, optional=True)
        check.number("rope_theta", self.rope_theta, limits.MAX_ROPE_THETA)
        check.number("norm_eps", self.norm_eps, limits.MAX_NORM_EPS)
        for name in ("embedding_scale", "residual_scale", "logits_scale"):
            check.number(name, getattr(self, name), limits.MAX_SOFTCAP)
        check.number("logits_softcap", self.logits_softcap, limits.MAX_SOFTCAP, optional=True)
        check.flags(tie_embeddings=self.tie_embeddings, mlp_bias=self.mlp_bias, rope_interleave=self.rope_interleave,
                    lm_head_bias=self.lm_head_bias)
        check.choice("norm", self.norm, NORMS)
        check.choice("norm_placement", self.norm_placement, NORM_PLACEMENTS)
        check.choice("activation", self.activation, ACTIVATIONS)
        if self.expert_storage is not None:
            check.choice("expert_storage", self.expert_storage, EXPERT_STORAGE)
        check.scaling("rope_scaling", self.rope_scaling)
        if not isinstance(self.layers, tuple) or not self.layers:
            check.errors.append("layers must be a non-empty list of layer specs")
        elif not all(isinstance(layer, LayerSpec) for layer in self.layers):
            check.errors.append("layers must hold layer specs")
        else:
            check.count("n_layers", len(self.layers), limits.MAX_LAYERS)
            if self.bounded is not False:  # widths of derived specs (dense twins) may pass the user bounds
                for layer, _ in self.layer_groups:
                    if isinstance(layer.ffn, FFNSpec) and layer.ffn.width > limits.MAX_FFN:
                        check.errors.append(f"ffn width must be at most {limits.MAX_FFN}")
                        break
        check.raise_any()

    # --- the layers, summarised --------------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @cached_property
    def layer_groups(self) -> tuple[tuple[LayerSpec, int], ...]:
        """Each distinct layer once, with how many layers are it (first-seen order): what sums over layers
        iterate, so that a 61-layer model costs as much to price as its two or three kinds of layer."""
        by_object = Counter(map(id, self.layers))  # layers share objects: count by identity first (fast)
        first = {id(layer): layer for layer in self.layers}
        groups: Counter = Counter()
        for key, n in by_object.items():  # then merge equal layers held in distinct objects
            groups[first[key]] += n
        return tuple(groups.items())

    @cached_property
    def attention(self) -> AttentionSpec:
        """The model's main attention: the most common softmax attention (ties: the first), else the first."""
        counts: Counter = Counter()
        for layer, n in self.layer_groups:  # first-seen order: ties go to the first
            if layer.attention.softmax:
                counts[layer.attention] += n
        if not counts:
            return self.layers[0].attention
        best = max(counts.values())
        return next(a for a, n in counts.items() if n == best)

    @cached_property
    def moe_layers(self) -> tuple[int, ...]:
        """Indices of the layers whose FFN is a MoE."""
        return tuple(i for i, layer in enumerate(self.layers) if layer.moe is not None)

    @cached_property
    def moe(self) -> MoESpec | None:
        """The MoE of the first MoE layer (None for a dense model)."""
        return next((layer.moe for layer in self.layers if layer.moe is not None), None)

    @cached_property
    def ffn_dim(self) -> int:
        """Width of the first dense FFN layer (0 if every layer is MoE)."""
        return next((layer.ffn.width for layer in self.layers if isinstance(layer.ffn, FFNSpec)), 0)

    @cached_property
    def is_moe(self) -> bool:
        return any(layer.moe is not None for layer in self.layers)

    @cached_property
    def n_moe_layers(self) -> int:
        return len(self.moe_layers)

    @cached_property
    def n_dense_layers(self) -> int:
        return self.n_layers - self.n_moe_layers

    @cached_property
    def uniform_attention(self) -> bool:
        return len({layer.attention for layer in self.layers}) == 1

    def layer_rope(self, attention: AttentionSpec) -> tuple[float, tuple[tuple[str, Any], ...]]:
        """(theta, rope_scaling items) a layer rotates with: its own where it has them, else the model's."""
        theta = self.rope_theta if attention.rope_theta is None else attention.rope_theta
        scaling = self.rope_scaling if attention.rope_scaling is None else attention.rope_scaling
        return theta, scaling


# --- building and changing specs ------------------------------------------------------------------------


def build_spec(*, n_layers: int, attention: AttentionSpec, ffn_dim: int = 0, moe: MoESpec | None = None,
               moe_layers: tuple[int, ...] | list[int] = (), **fields: Any) -> ModelSpec:
    """A ModelSpec of uniform layers (see `uniform_layers`); `fields` are ModelSpec's other fields."""
    name = fields.get("name", "model")
    try:
        layers = uniform_layers(n_layers, attention, ffn_dim, moe, tuple(moe_layers))
    except MoelabError as e:
        raise MoelabError(f"{name}: {e}") from None
    return ModelSpec(layers=layers, **fields)


def map_attention(spec: ModelSpec, change) -> ModelSpec:
    """The spec with `change(attention)` applied to every layer's attention."""
    return replace(spec, layers=tuple(replace(layer, attention=change(layer.attention)) for layer in spec.layers))


def map_moe(spec: ModelSpec, change) -> ModelSpec:
    """The spec with `change(moe)` applied to every MoE layer's MoESpec."""
    return replace(spec, layers=tuple(replace(layer, ffn=change(layer.moe)) if layer.moe else layer
                                      for layer in spec.layers))


def with_ffns(spec: ModelSpec, moe: MoESpec | None, moe_layers: tuple[int, ...] | list[int],
              ffn_dim: int | None = None) -> ModelSpec:
    """The spec with MoE `moe` on `moe_layers` and a dense FFN of `ffn_dim` elsewhere (default: the spec's
    dense width; for a spec with no dense layer, one expert's width); each layer keeps its attention."""
    width = ffn_dim if ffn_dim is not None else spec.ffn_dim or (spec.moe.expert_ffn if spec.moe else 0)
    chosen = set(moe_layers)
    if chosen and moe is None:
        raise MoelabError(f"{spec.name}: MoE layers listed but no MoE spec")
    if any(not isinstance(i, int) or i < 0 or i >= spec.n_layers for i in chosen):
        raise MoelabError(f"{spec.name}: a MoE layer index is outside 0..{spec.n_layers - 1}")
    if len(chosen) < spec.n_layers and width <= 0:
        raise MoelabError(f"{spec.name}: dense layers need a positive intermediate_size")
    dense = FFNSpec(width) if len(chosen) < spec.n_layers else None
    built: dict[tuple, LayerSpec] = {}  # one LayerSpec per distinct (attention, ffn): layers share them
    layers = []
    for i, layer in enumerate(spec.layers):
        ffn = moe if i in chosen else dense
        key = (id(layer.attention), id(ffn))
        if key not in built:
            built[key] = LayerSpec(layer.attention, ffn)
        layers.append(built[key])
    return replace(spec, layers=tuple(layers))


def every_expert(spec: ModelSpec) -> ModelSpec:
    """DS-MoE's dense training: every MoE layer routes each token to all of its experts."""
    return map_moe(spec, lambda m: replace(m, top_k=m.n_experts, n_group=1, topk_group=1))


def select_layers(spec: ModelSpec, indices: list[int] | tuple[int, ...]) -> ModelSpec:
    """The spec with only the layers at `indices`, in that order (a shallower model of the same pattern)."""
    return replace(spec, layers=tuple(spec.layers[i] for i in indices))


# --- JSON ------------------------------------------------------------------------------------------------

_SPEC_FORMAT = 2  # 1: uniform fields (attention, moe, moe_layers, ffn_dim, n_layers); 2: per-layer


def _scaling_to_json(items: tuple | None) -> dict | None:
    return None if items is None else {k: list(v) if isinstance(v, tuple) else v for k, v in items}


def scaling_items(raw: Any) -> tuple[tuple[str, Any], ...]:
    """rope_scaling as sorted items, lists as tuples (the form specs hold)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in dict(raw or {}).items()))


def _attention_to_json(a: AttentionSpec) -> dict[str, Any]:
    from dataclasses import asdict

    out = asdict(a)
    out["rope_scaling"] = _scaling_to_json(a.rope_scaling)
    return out


def _ffn_to_json(ffn: FFNSpec | MoESpec) -> dict[str, Any]:
    from dataclasses import asdict

    return {"moe": asdict(ffn)} if isinstance(ffn, MoESpec) else {"dense": asdict(ffn)}


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """A JSON-ready dict of the spec (the inverse of `spec_from_dict`): each distinct attention and FFN once,
    and per layer the index of its own."""
    attentions = list(dict.fromkeys(layer.attention for layer in spec.layers))
    ffns = list(dict.fromkeys(layer.ffn for layer in spec.layers))
    out: dict[str, Any] = {"format": _SPEC_FORMAT}
    for f in spec.__dataclass_fields__:
        if f in ("layers", "notes", "bounded", "unbuilt"):
            continue
        out[f] = getattr(spec, f)
    out["rope_scaling"] = _scaling_to_json(spec.rope_scaling)
    out["attentions"] = [_attention_to_json(a) for a in attentions]
    out["ffns"] = [_ffn_to_json(f) for f in ffns]
    out["layers"] = [[attentions.index(layer.attention), ffns.index(layer.ffn)] for layer in spec.layers]
    return out


def _attention_from_json(raw: dict[str, Any]) -> AttentionSpec:
    fields = dict(raw)
    if fields.get("rope_scaling") is not None:
        fields["rope_scaling"] = scaling_items(fields["rope_scaling"])
    if fields.get("linear"):
        fields["linear"] = LinearAttentionSpec(**fields["linear"])
    if fields.get("temperature_tuning") is not None:
        fields["temperature_tuning"] = tuple(fields["temperature_tuning"])
    return AttentionSpec(**fields)


def _ffn_from_json(raw: dict[str, Any]) -> FFNSpec | MoESpec:
    if set(raw) == {"moe"}:
        return MoESpec(**raw["moe"])
    if set(raw) == {"dense"}:
        return FFNSpec(**raw["dense"])
    raise ValueError("an ffn must be {'dense': ...} or {'moe': ...}")


def _index(i: Any, table: list) -> int:
    """A per-layer index into the spec's table of attentions or FFNs (no negatives, no booleans)."""
    if type(i) is not int or not 0 <= i < len(table):
        raise ValueError(f"a layer's index {show_value(i)} is not in 0..{len(table) - 1}")
    return i


def spec_from_dict(raw: dict[str, Any]) -> ModelSpec:
    """Rebuild a spec written by `spec_to_dict`, of this format or the uniform one before it (validated like
    any other spec)."""
    try:
        fields = dict(raw)
        fields.pop("bounded", None)  # a spec read back is user input: always bounded
        fields["rope_scaling"] = scaling_items(fields.get("rope_scaling"))
        fmt = fields.pop("format", 1)
        if type(fmt) is not int or fmt not in (1, _SPEC_FORMAT):
            raise MoelabError(f"not a moelab model spec (unknown format {show_value(fmt)}; this moelab reads 1 "
                              f"and {_SPEC_FORMAT})")
        if fmt == 1:
            attention = AttentionSpec(**fields.pop("attention"))
            moe = fields.pop("moe", None)
            return build_spec(n_layers=fields.pop("n_layers"), attention=attention, ffn_dim=fields.pop("ffn_dim", 0),
                              moe=MoESpec(**moe) if moe else None, moe_layers=tuple(fields.pop("moe_layers", ())),
                              **fields)
        attentions = [_attention_from_json(a) for a in fields.pop("attentions")]
        ffns = [_ffn_from_json(f) for f in fields.pop("ffns")]
        fields["layers"] = tuple(LayerSpec(attentions[_index(a, attentions)], ffns[_index(f, ffns)])
                                 for a, f in fields["layers"])
        return ModelSpec(**fields)
    except MoelabError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise MoelabError(f"not a moelab model spec ({str(e)[:160]})") from None
