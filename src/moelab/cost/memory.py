"""Memory: weights per dtype, KV cache (GQA and MLA), activations, and training state under ZeRO and EP."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from moelab.cost.dtypes import EXPERT_STORAGE_BYTES, KV_BYTES, WEIGHT_BYTES, activation_bytes, high_precision_bytes
from moelab.cost.params import ParamBreakdown, count_params
from moelab.errors import MoelabError
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import AttentionSpec, FFNSpec, LayerSpec, ModelSpec


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of the weights at a dtype: linear layers quantized, embeddings/lm_head/norms/routers not."""

    total: float
    routed_experts: float
    expert: float  # one routed expert
    always_read: float  # what a decode step streams besides routed experts (no embedding table)


def expert_param_bytes(dtype: str, expert_storage: str | None = None) -> float:
    """Bytes per routed-expert parameter at `dtype`, or at the smaller size a checkpoint stores them in
    (`expert_storage`, e.g. gpt-oss's MXFP4)."""
    q = WEIGHT_BYTES[dtype]
    return min(q, EXPERT_STORAGE_BYTES[expert_storage]) if expert_storage else q


def weight_bytes(p: ParamBreakdown, dtype: str, expert_storage: str | None = None) -> WeightBytes:
    """Bytes at `dtype`, routed experts at `expert_param_bytes`."""
    q, hp = WEIGHT_BYTES[dtype], high_precision_bytes(dtype)
    e = expert_param_bytes(dtype, expert_storage)
    quantized = p.attention + p.dense_ffn + p.shared_experts
    kept = p.embedding + p.lm_head + p.norms + p.routers
    total = quantized * q + p.routed_experts * e + kept * hp
    return WeightBytes(total=total, routed_experts=p.routed_experts * e, expert=p.expert_size * e,
                       always_read=total - p.routed_experts * e - p.embedding * hp)


def model_weight_bytes(spec: ModelSpec, dtype: str) -> WeightBytes:
    """weight_bytes of the spec's parameters at `dtype`, its experts at their stored size."""
    return weight_bytes(count_params(spec), dtype, spec.expert_storage)


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
                     prompt: int, gen: int) -> InferenceMemory:
    """Serving memory of `batch` sequences of prompt + gen tokens."""
    weights = model_weight_bytes(spec, dtype).total
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
