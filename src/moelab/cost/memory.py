"""Memory: weights per dtype, KV cache (GQA and MLA), activations, and training state under ZeRO and EP."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from moelab.cost.dtypes import (
    COMPONENTS,
    EXPERT_STORAGE_BYTES,
    KV_BYTES,
    WEIGHT_BYTES,
    activation_bytes,
    component_dtype,
    components_key,
    high_precision_bytes,
)
from moelab.cost.params import ParamBreakdown, count_params
from moelab.errors import MoelabError
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import AttentionSpec, FFNSpec, LayerSpec, ModelSpec


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of the weights at a dtype: linear layers quantized, embeddings/lm_head/norms/routers not (unless the
    embeddings component is given its own dtype). The per-component fields sum to `total` with `other` (norms and
    routers, always at high precision)."""

    total: float
    routed_experts: float
    expert: float  # one routed expert
    always_read: float  # what a decode step streams besides routed experts (no embedding table)
    shared_experts: float = 0.0
    attention: float = 0.0
    dense_ffn: float = 0.0
    embeddings: float = 0.0  # the embedding table and lm_head
    other: float = 0.0  # norms and routers
    dtypes: tuple[tuple[str, str], ...] = ()  # (component, dtype) of every component in COMPONENTS

    def by_component(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in COMPONENTS}

    def to_dict(self) -> dict:
        return {"total": self.total, "by_component": self.by_component(), "other": self.other,
                "dtypes": dict(self.dtypes), "one_expert": self.expert, "always_read": self.always_read}


def expert_param_bytes(dtype: str, expert_storage: str | None = None) -> float:
    """Bytes per routed-expert parameter at `dtype`, or at the smaller size a checkpoint stores them in
    (`expert_storage`, e.g. gpt-oss's MXFP4: a quantized dtype smaller than that, int4, wins)."""
    q = WEIGHT_BYTES[dtype]
    return min(q, EXPERT_STORAGE_BYTES[expert_storage]) if expert_storage else q


def routed_expert_bytes(dtype: str, expert_storage: str | None = None, components=None) -> float:
    """Bytes per routed-expert parameter: at the routed_experts component's dtype when one is given, else at
    `dtype`; either way no larger than the checkpoint's own storage (`expert_storage`)."""
    return expert_param_bytes(component_dtype(dtype, components, "routed_experts"), expert_storage)


def component_dtypes(dtype: str, components=None) -> dict[str, str]:
    """Every component's weight dtype: the one given, else `dtype` (embeddings: high precision, see
    dtypes.high_precision_bytes, shown as fp32 or bf16)."""
    given = dict(components_key(components))
    hp = "fp32" if high_precision_bytes(dtype) == 4.0 else "bf16"
    return {name: given.get(name, hp if name == "embeddings" else dtype) for name in COMPONENTS}


def weight_bytes(p: ParamBreakdown, dtype: str, expert_storage: str | None = None,
                 components: dict[str, str] | tuple[tuple[str, str], ...] | None = None) -> WeightBytes:
    """Bytes at `dtype`, routed experts at `routed_expert_bytes`; `components` ({component: dtype}, names from
    dtypes.COMPONENTS) sets a component's own dtype. Unnamed components keep the rule: attention, dense FFNs and
    shared experts at `dtype`, embeddings and lm_head (and always norms and routers) at high precision."""
    dtypes = component_dtypes(dtype, components)
    hp = high_precision_bytes(dtype)
    e = routed_expert_bytes(dtype, expert_storage, components)
    attention = p.attention * WEIGHT_BYTES[dtypes["attention"]]
    dense = p.dense_ffn * WEIGHT_BYTES[dtypes["dense_ffn"]]
    shared = p.shared_experts * WEIGHT_BYTES[dtypes["shared_experts"]]
    embed_b = WEIGHT_BYTES[dtypes["embeddings"]] if "embeddings" in dict(components or {}) else hp
    embeddings = (p.embedding + p.lm_head) * embed_b
    other = (p.norms + p.routers) * hp
    routed = p.routed_experts * e
    total = attention + dense + shared + embeddings + other + routed
    return WeightBytes(total=total, routed_experts=routed, expert=p.expert_size * e,
                       always_read=total - routed - p.embedding * embed_b, shared_experts=shared,
                       attention=attention, dense_ffn=dense, embeddings=embeddings, other=other,
                       dtypes=tuple(dtypes.items()))


def model_weight_bytes(spec: ModelSpec, dtype: str, components=None) -> WeightBytes:
    """weight_bytes of the spec's parameters at `dtype` (and per-component dtypes), its experts at no more than
    their stored size."""
    return weight_bytes(count_params(spec), dtype, spec.expert_storage, components)


def _kv_width(a: AttentionSpec) -> int:
    """Cached elements per token of one softmax-attention layer: K and V (GQA) or MLA's latent + rope key."""
    if a.kind == "mla":
        return a.kv_lora_rank + a.qk_rope_head_dim
    return 2 * a.n_kv_heads * a.head_dim if a.softmax else 0


def linear_state_elements(a: AttentionSpec) -> int:
    """Per sequence, the fixed state of a linear-attention layer: the d_k x d_v matrix of every value head,
    plus the causal conv's last kernel-1 inputs of q, k and v: the least a decode step needs (transformers'
    Qwen3-Next cache allocates kernel columns and reads the last kernel-1; moelab.nn keeps kernel-1)."""
    lin = a.linear
    if lin is None:
        return 0
    conv = (2 * lin.n_k_heads * lin.k_head_dim + lin.n_v_heads * lin.v_head_dim) * (lin.conv_kernel - 1)
    return lin.n_v_heads * lin.k_head_dim * lin.v_head_dim + conv


def kv_bytes_per_token(spec: ModelSpec, kv_dtype: str) -> float:
    """KV cache per token over all softmax layers: 2*n_kv*head_dim (GQA) or kv_lora_rank + rope dim (MLA)."""
    return sum(n * _kv_width(layer.attention) for layer, n in spec.layer_groups) * KV_BYTES[kv_dtype]


def kv_cache_bytes(spec: ModelSpec, kv_dtype: str, batch: int, context: int) -> float:
    """KV cache of `batch` sequences of `context` tokens, layer by layer: a sliding window or a chunk keeps
    only its last positions; a linear-attention layer keeps its fixed state instead."""
    per_sequence = sum(n * (_kv_width(layer.attention) * layer.attention.cached(context)
                            + linear_state_elements(layer.attention)) for layer, n in spec.layer_groups)
    return batch * per_sequence * KV_BYTES[kv_dtype]


def kv_read_bytes(spec: ModelSpec, kv_dtype: str, batch: int, context: float) -> float:
    """KV bytes one decode step of `batch` sequences reads at `context`, layer by layer: the positions the
    query attends to (AttentionSpec.attended: a sliding window, or the part of its chunk before it, half a
    chunk on average past the first, as the attention FLOPs count them) rather than those cached, plus a
    linear-attention layer's fixed state, which the step reads whole."""
    per_sequence = sum(n * (_kv_width(layer.attention) * layer.attention.attended(context)
                            + linear_state_elements(layer.attention)) for layer, n in spec.layer_groups)
    return batch * per_sequence * KV_BYTES[kv_dtype]


def _ffn_width(layer: LayerSpec) -> int:
    """The FFN intermediate a token produces in a layer: dense width, or its top-k experts plus shared ones."""
    if isinstance(layer.ffn, FFNSpec):
        return layer.ffn.width
    m = layer.ffn
    return m.top_k * m.expert_ffn + m.n_shared * m.shared_ffn


def ffn_width_per_token(spec: ModelSpec) -> int:
    """The widest FFN intermediate a token produces in any layer."""
    return max(_ffn_width(layer) for layer, _ in spec.layer_groups)


def _qkv_width(a: AttentionSpec) -> int:
    if a.kind == "mla":
        return a.n_heads * a.qk_head_dim * 2 + a.n_heads * a.v_head_dim
    if a.kind == "linear":
        lin = a.linear
        return 2 * (lin.n_k_heads * lin.k_head_dim + lin.n_v_heads * lin.v_head_dim)
    return (a.n_heads * (2 if a.output_gate else 1) + 2 * a.n_kv_heads) * a.head_dim


def prefill_activation_bytes(spec: ModelSpec, dtype: str, batch: int, prompt: int) -> float:
    """Peak live activations of an unchunked prefill: residual, normed input, the widest intermediate
    (q/k/v or gate/up), plus fp32 logits of the last positions."""
    qkv = max(_qkv_width(layer.attention) for layer, _ in spec.layer_groups)
    width = 2 * spec.d_model + max(qkv, 2 * ffn_width_per_token(spec))
    return batch * prompt * width * activation_bytes(dtype) + batch * spec.vocab_size * 4.0


@dataclass(frozen=True)
class InferenceMemory:
    weights_bytes: float
    kv_cache_bytes: float
    activation_bytes: float
    overhead_bytes: float  # runtime overhead on every GPU, min_gpus of them
    total_bytes: float
    min_gpus: int
    per_gpu_bytes: float  # on min_gpus GPUs, sharded evenly

    def to_dict(self) -> dict:
        return asdict(self)


def min_gpus_for(sharded_bytes: float, hw: HardwareSpec) -> int:
    """Fewest GPUs whose usable memory holds `sharded_bytes` spread evenly plus each GPU's runtime overhead."""
    usable = hw.memory_bytes * hw.memory_utilization - hw.runtime_overhead_bytes
    if usable <= 0:
        raise MoelabError(f"hardware {hw.name}: runtime overhead exceeds usable memory")
    return max(1, math.ceil(sharded_bytes / usable))


def inference_memory(spec: ModelSpec, hw: HardwareSpec, dtype: str, kv_dtype: str, batch: int,
                     prompt: int, gen: int, components=None) -> InferenceMemory:
    """Serving memory of `batch` sequences of prompt + gen tokens (weights at per-component dtypes if given)."""
    weights = model_weight_bytes(spec, dtype, components).total
    kv = kv_cache_bytes(spec, kv_dtype, batch, prompt + gen)
    act = prefill_activation_bytes(spec, dtype, batch, prompt)
    sharded = weights + kv + act
    gpus = min_gpus_for(sharded, hw)
    overhead = gpus * hw.runtime_overhead_bytes
    return InferenceMemory(weights, kv, act, overhead, sharded + overhead, gpus, sharded / gpus
                           + hw.runtime_overhead_bytes)


# --- training ---------------------------------------------------------------------------------------------

WEIGHT_16, GRAD_16, ADAM_32 = 2.0, 2.0, 12.0  # bf16 weights, bf16 grads, fp32 master + m + v


def layer_activation_bytes_per_token(spec: ModelSpec, layer: LayerSpec) -> float:
    """Bytes a layer saves for backward per token in bf16 with flash attention and no dropout.

    Attention: norm input and output, q, k, v, attention output (also o_proj's input), fp32 softmax stats
    (linear attention: its projections, conv outputs and gates instead).
    FFN: norm input and output, gate and up outputs, silu(gate) and the product (down's input): 8f bytes.
    MoE: fp32 router logits and probabilities, then per selected expert a dispatched copy of the input and
    8*f_e; shared experts as dense FFNs.
    """
    d, a = spec.d_model, layer.attention
    if a.kind == "linear":
        attention = 2 * (2 * d + 2 * _qkv_width(a)) + 4 * 2 * a.linear.n_v_heads
    else:
        q = a.n_heads * a.qk_head_dim
        kv = 2 * a.n_kv_heads * a.head_dim if a.kind == "gqa" else a.n_heads * (a.qk_head_dim + a.v_head_dim)
        out = a.n_heads * a.v_head_dim
        attention = 2 * (2 * d + q + kv + out) + 4 * a.n_heads
    if isinstance(layer.ffn, FFNSpec):
        return attention + 2 * 2 * d + 8 * layer.ffn.width
    m = layer.ffn
    routed = m.top_k * (2 * d + 8 * m.expert_ffn) + 2 * 4 * m.n_experts
    return attention + 2 * 2 * d + routed + m.n_shared * 8 * m.shared_ffn


@dataclass(frozen=True)
class TrainingMemory:
    """Per-GPU bytes of one training rank."""

    weights_bytes: float
    gradients_bytes: float
    optimizer_bytes: float
    activation_bytes: float
    total_bytes: float
    fits: bool

    def to_dict(self) -> dict:
        return asdict(self)


def training_memory(spec: ModelSpec, hw: HardwareSpec, micro_batch: int, seq: int, dp: int = 1,
                    zero: int = 0, ep: int = 1, recompute: bool = False) -> TrainingMemory:
    """Mixed-precision Adam on `dp` data-parallel ranks, ZeRO stage 0-3, experts sharded over `ep` ranks.

    Expert parameters are split over the EP group and their states ZeRO-sharded over the dp/ep ranks that
    hold the same experts; all other parameters are ZeRO-sharded over all dp ranks.
    """
    if zero not in (0, 1, 2, 3):
        raise MoelabError(f"ZeRO stage must be 0-3, got {zero}")
    if min(micro_batch, seq, dp, ep) <= 0 or dp % ep:
        raise MoelabError("training: micro-batch, sequence and ranks must be positive, and ep must divide dp")
    p = count_params(spec)
    expert_params = p.routed_experts / ep
    other_params = p.total - p.routed_experts
    shard = {"expert": dp // ep, "other": dp}

    def per_rank(bytes_per_param: float, sharded: bool) -> float:
        if not sharded:
            return bytes_per_param * (expert_params + other_params)
        return bytes_per_param * (expert_params / shard["expert"] + other_params / shard["other"])

    weights = per_rank(WEIGHT_16, zero >= 3)
    grads = per_rank(GRAD_16, zero >= 2)
    optimizer = per_rank(ADAM_32, zero >= 1)
    tokens = micro_batch * seq
    layers = [(layer_activation_bytes_per_token(spec, layer), n) for layer, n in spec.layer_groups]
    logits = tokens * spec.vocab_size * (2 + 4)  # bf16 logits and fp32 copy for the loss
    if recompute:  # keep each layer's input; rebuild one layer at a time in backward
        act = tokens * (spec.n_layers * 2 * spec.d_model + max(b for b, _ in layers)) + logits
    else:
        act = tokens * sum(b * n for b, n in layers) + logits
    total = weights + grads + optimizer + act
    return TrainingMemory(weights, grads, optimizer, act, total,
                          total + hw.runtime_overhead_bytes <= hw.memory_bytes)
