"""Eager execution (a CPU calibration): one forward pass as op classes that run one after another.

A CPU runs PyTorch's eager kernels one at a time, so matmuls, attention and the unfused elementwise ops add up
rather than overlap; `moelab calibrate` measures each class's rate in situ (see bench.probes). The GPU model, where
fused kernels each meet their own roofline, is cost.gpu; the hardware spec's `execution` picks one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from moelab.cost.dtypes import COMPUTE_DTYPE, activation_bytes, components_key
from moelab.cost.gpu import kv_shards
from moelab.cost.memory import model_weight_bytes, routed_expert_bytes
from moelab.cost.params import count_params, expert_params, moa_expert_params
from moelab.cost.routing import distinct_experts
from moelab.errors import MoelabError
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import AttentionSpec, ModelSpec

if TYPE_CHECKING:
    from moelab.cost.roofline import Phase, Workload


def allreduce_seconds(hw: HardwareSpec, gpus: int, nbytes: float) -> float:
    """Ring all-reduce: 2(G-1) latency hops and 2(G-1)/G of the bytes over the link."""
    if gpus == 1:
        return 0.0
    bw, lat = hw.link(gpus)
    return 2 * (gpus - 1) * lat + 2 * (gpus - 1) / gpus * nbytes / bw


def alltoall_seconds(hw: HardwareSpec, gpus: int, nbytes: float) -> float:
    """All-to-all of `nbytes` per GPU: (G-1)/G of it crosses the link, after one latency."""
    if gpus == 1:
        return 0.0
    bw, lat = hw.link(gpus)
    return lat + (gpus - 1) / gpus * nbytes / bw


def _qkv_widths(a: AttentionSpec) -> tuple[int, int]:
    """(query width, cached KV width per token) of one attention layer: MLA caches its latent and rope key;
    linear attention has no per-token cache (its q/k/v widths stand in for both)."""
    if a.kind == "linear":
        lin = a.linear
        return lin.n_k_heads * lin.k_head_dim, lin.n_k_heads * lin.k_head_dim + lin.n_v_heads * lin.v_head_dim
    kv = a.kv_lora_rank + a.qk_rope_head_dim if a.kind == "mla" else a.n_kv_heads * a.head_dim
    return a.n_heads * a.qk_head_dim, kv


def _moe_elements(d: int, m) -> float:
    return m.top_k * (8 * d + 5 * m.expert_ffn) + 10 * m.n_experts + d + (
        5 * m.n_shared * m.shared_ffn + 3 * d if m.n_shared else 0)


def eager_elements_per_token(spec: ModelSpec) -> float:
    """Activation elements an eager (unfused) forward reads and writes per token outside matmuls and attention:
    RMSNorm ~7d each, residual adds 3d each, rotary ~10 per q/k element, KV cache copy, the attention output
    copy, SwiGLU's silu and product 5f; a MoE layer's gather, combine and scatter ~8d and 5f_e per routed slot,
    softmax/top-k/statistics ~10E, shared experts 5 f_s. Summed layer by layer."""
    d, total = spec.d_model, 7.0 * spec.d_model
    for layer, n in spec.layer_groups:
        q, kv = _qkv_widths(layer.attention)
        ffn = 5 * layer.ffn.width if layer.moe is None else _moe_elements(d, layer.moe)
        total += n * (20 * d + 12 * q + 14 * kv + ffn)
    return total


def activation_tensors_per_token(spec: ModelSpec) -> list[tuple[float, float]]:
    """The activation tensors an eager forward allocates, as (tensors per token-step, width): per layer 10 of
    d_model (two RMSNorms' three each, o_proj, the MLP output, two residual adds), 6 of the query width
    (q_proj, rotary, attention output) and 6 of the KV width; a dense MLP's gate, up, silu and product (4 of
    ffn_dim); a MoE layer's router logits, scores and masks (3 of n_experts), gather, expert outputs and
    weighted outputs (3 of top_k*d), combine (2 of d), each expert's gate, up, silu and product (4 of its
    rows: top_k*f_e/E per token) and the shared experts' (4 of n_shared*f_s)."""
    d = spec.d_model
    out: list[tuple[float, float]] = [(1, d)]
    for layer, n in spec.layer_groups:
        q, kv = _qkv_widths(layer.attention)
        tensors = [(10, d), (6, q), (6, kv)]
        m = layer.moe
        if m is None:
            tensors.append((4, layer.ffn.width))
        else:
            tensors += [(3, m.n_experts), (3, m.top_k * d), (2, d), (4, m.top_k * m.expert_ffn / m.n_experts)]
            if m.n_shared:
                tensors.append((4, m.n_shared * m.shared_ffn))
        out += [(count * n, width) for count, width in tensors]
    return out


def fresh_page_bytes(spec: ModelSpec, hw: HardwareSpec, tokens: float, act: float) -> float:
    """Bytes of the step's activation tensors that are larger than the allocator's fresh-page threshold
    (`hw.fresh_page_bytes`: glibc maps such allocations from the OS each time, and every 4 KiB page faults on
    first touch); 0 where the hardware has no fresh-page figures."""
    if not hw.fresh_page_bandwidth:
        return 0.0
    return sum(count * tokens * width * act for count, width in activation_tensors_per_token(spec)
               if tokens * width * act > hw.fresh_page_bytes)


# Rows up to which a CPU matmul runs the small-M path that reads the weights as they are; from more rows on it
# packs them into blocks first (oneDNN / MKL sgemm). Measured with moelab's expert path on the 2-core machine
# (d=128, f=256, 2 threads): 40 us at 1 row, 48 us at 4, 41 us at 8 (1 thread), 150 us at 16 and at 64.
SMALL_GEMM_ROWS = 8


def _row_shares(moe, tokens: float) -> tuple[float, float]:
    """(share with exactly one row, share with 2..SMALL_GEMM_ROWS rows) of the touched routed experts, when
    `tokens` tokens route uniformly (each expert's rows Binomial(tokens, top_k / E))."""
    q = moe.top_k / moe.n_experts
    if tokens <= 0 or q <= 0:
        return 0.0, 0.0
    if q >= 1:
        return (1.0, 0.0) if tokens <= 1 else ((0.0, 1.0) if tokens <= SMALL_GEMM_ROWS else (0.0, 0.0))
    n = max(tokens, 1.0)
    touched = 1.0 - (1.0 - q) ** n
    pmf = [math.exp(math.lgamma(n + 1) - math.lgamma(r + 1) - math.lgamma(n - r + 1) + r * math.log(q)
                    + (n - r) * math.log1p(-q)) if r <= n else 0.0 for r in range(1, SMALL_GEMM_ROWS + 1)]
    return pmf[0] / touched, sum(pmf[1:]) / touched


def _weight_seconds(nbytes: float, one_row: float, few_rows: float, gemm_bandwidth: float,
                    hw: HardwareSpec) -> float:
    """Seconds to stream weights through matmuls: a one-row product (GEMV) at gemv_bandwidth; 2..SMALL_GEMM_ROWS
    rows on the small-M path at the few-row GEMM bandwidth (`memory_bandwidth`, measured at 2-8 rows), or at
    `gemm_bandwidth` if that is faster; more rows at `gemm_bandwidth` (on CPUs the weights are packed every
    call; in the cache: the in-situ rate at 16 rows)."""
    gemv = hw.gemv_bandwidth or gemm_bandwidth
    few = max(hw.bandwidth, gemm_bandwidth)
    return nbytes * (one_row / gemv + few_rows / few + (1.0 - one_row - few_rows) / gemm_bandwidth)


# A weight stored int8 or int4 by moelab.mitigate.quantize is dequantized on every call, without kernels
# (Format.dequantize, unpack_int4), into the compute dtype of c bytes an element (activation_bytes: 4 in fp32,
# 2 in bf16); the matmul then reads that float copy. Bytes the unfused elementwise ops read and write per
# parameter, as (fixed bytes, bytes per c):
# - int8: values.to(dtype) reads 1 B and writes c; * scale reads c and writes c: 1 + 3c (13 B in fp32).
# - int4, per packed byte (two parameters): the low nibble's & 0x0F, .to(int8) and - 8 and the high one's >> 4,
#   .to(int8) and - 8 each read 1 B and write 1 B (12 B); torch.stack reads both halves and writes them (4 B;
#   flatten and view are views): 8 B per parameter; then .to(dtype) 1 + c and * scale 2c: 9 + 3c (21 B in fp32).
# The scales' own reads (one per row or per group of 128: under c / 128 B a parameter) are left out.
DEQUANT_BYTES = {"int8": (1.0, 3.0), "int4": (9.0, 3.0)}
# The quantized bytes per stored element an embedding lookup gathers (qweight[ids]: read and written) first.
QUANT_ELEMENT_BYTES = {"int8": 1.0, "int4": 0.5}


def dequant_bytes_per_param(dtype: str, model_dtype: str) -> float:
    """Bytes one parameter's on-the-fly dequantization moves (DEQUANT_BYTES) in a model served at
    `model_dtype`; 0 for a weight dtype moelab does not dequantize (the matmul reads it as stored)."""
    if dtype not in DEQUANT_BYTES:
        return 0.0
    fixed, per_c = DEQUANT_BYTES[dtype]
    return fixed + per_c * activation_bytes(model_dtype)


def dequantized(components) -> dict[str, str]:
    """The components whose weights the eager model dequantizes on every call (int8, int4: DEQUANT_BYTES)."""
    return {c: d for c, d in components_key(components) if d in DEQUANT_BYTES}


def streamed_components(components) -> tuple[tuple[str, str], ...]:
    """The per-component dtypes a CPU matmul streams: a dequantized component's weights are read as the float
    copy the dequantization writes (at the model's dtype), the others as stored."""
    return tuple((c, d) for c, d in components_key(components) if d not in DEQUANT_BYTES)


def dequant_params(spec: ModelSpec, wl: Workload, tokens: float) -> dict[str, float]:
    """Per dequantized component, the parameters the step dequantizes (whole system). Each forward dequantizes
    every quantized attention, dense FFN and shared-expert linear whole; the distinct routed experts its `tokens`
    touch, U(B) per MoE layer (moelab's store computes expert by expert); for embeddings, the lm_head's whole
    table (untied or tied, the head reads the whole table) and the `tokens` looked-up rows."""
    p = count_params(spec)
    out = {}
    for component in dequantized(wl.components):
        if component == "routed_experts":
            out[component] = sum(n * distinct_experts(layer.moe.n_experts, layer.moe.top_k, tokens, wl.skew)
                                 * expert_params(spec.d_model, layer.moe)
                                 for layer, n in spec.layer_groups if layer.moe is not None)
        elif component == "embeddings":
            out[component] = spec.vocab_size * spec.d_model + tokens * spec.d_model
        else:
            out[component] = float({"attention": p.attention, "dense_ffn": p.dense_ffn,
                                    "shared_experts": p.shared_experts}[component])
    return out


def dequant_seconds(spec: ModelSpec, hw: HardwareSpec, wl: Workload, tokens: float) -> float:
    """Seconds one GPU (eager: one process) spends dequantizing this step's weights: DEQUANT_BYTES per
    parameter at the elementwise bandwidth; under ep each GPU dequantizes 1/g of the routed experts and a whole
    replica of the rest, under tp 1/g of everything. 0 without int8 / int4 components."""
    params = dequant_params(spec, wl, tokens)
    if not params:
        return 0.0
    g = wl.gpus
    moe = spec.is_moe
    nbytes = 0.0
    for component, n in params.items():
        split = g if component == "routed_experts" or not (wl.plan_kind == "ep" and moe) else 1
        dtype = dict(wl.components)[component]
        per = dequant_bytes_per_param(dtype, wl.dtype)
        if component == "embeddings":  # the looked-up rows are gathered (read and written) before dequantizing
            per_row = 2 * QUANT_ELEMENT_BYTES[dtype] * tokens * spec.d_model
            nbytes += (n * per + per_row) / split
        else:
            nbytes += n * per / split
    return nbytes / (hw.elementwise_bandwidth or hw.bandwidth)


def _touched_experts(spec: ModelSpec, wl: Workload, tokens: float, components=None) -> tuple[float, float]:
    """(bytes, count) of the distinct routed experts `tokens` tokens touch, summed over the MoE layers (each
    layer with its own expert count, top-k and expert size; uniform routing skewed by wl.skew); their bytes at
    `components`' routed_experts dtype (default wl.components)."""
    per_param = routed_expert_bytes(wl.dtype, spec.expert_storage,
                                    wl.components if components is None else components)
    nbytes = count = 0.0
    for layer, n in spec.layer_groups:
        a, m = layer.attention, layer.moe
        if a.moa_experts:  # JetMoE's attention experts are routed weights too (their bytes; not in the count)
            moa = distinct_experts(a.moa_experts, a.n_heads // a.n_kv_heads, tokens, wl.skew)
            nbytes += n * moa * moa_expert_params(spec.d_model, a) * per_param
        if m is None:
            continue
        touched = distinct_experts(m.n_experts, m.top_k, tokens, wl.skew)
        nbytes += n * touched * expert_params(spec.d_model, m) * per_param
        count += n * touched
    return nbytes, count


def _softmax_heads(spec: ModelSpec) -> int:
    """Attention heads over all softmax layers (each a per-head kernel launch in an eager forward)."""
    return sum(n * layer.attention.n_heads for layer, n in spec.layer_groups if layer.attention.softmax)


def prices(plan) -> bool:
    """The plans the eager model prices: all GPUs tensor- or expert-parallel (no pipeline, no replicas)."""
    return plan.pp == 1 and plan.replicas == 1 and (plan.tp == 1 or plan.ep == 1)


def phase(spec: ModelSpec, hw: HardwareSpec, wl: Workload, tokens: int, flops: float, kv_read: float,
          kv_write: float, attn_flops: float = 0.0) -> Phase:
    """Cost of processing `tokens` tokens (whole system) whose FLOPs are `flops`, split over the plan.

    Kernels run one after another, so the op classes add up: matmuls (FLOPs / FLOP/s + weight bytes / bandwidth:
    Hockney's r_inf, n_1/2 model of a GEMM; one-row products at the GEMV bandwidth), attention (its own measured
    FLOP/s and KV-read bandwidth) and unfused elementwise traffic (plus the page faults of activation tensors
    above the allocator's fresh-page threshold); fixed overheads per step, layer, MoE layer and touched expert.
    Per-component dtypes (wl.components) change the weight bytes streamed, and every matmul computes at wl.dtype's
    compute dtype. An int8 or int4 component is moelab's kernel-free quantization: each call dequantizes the
    weights it touches into the model's dtype (an elementwise term, dequant_seconds: DEQUANT_BYTES per parameter)
    and the matmul streams that float copy (the model's dtype, not the stored bytes); other component dtypes
    (bf16 in an fp32 model, fp8) stream as stored. cost.gpu instead prices fused W4A16/W8A8 kernels that read
    the quantized bytes."""
    if not prices(wl.parallel):
        raise MoelabError(f"plan {wl.parallel.name}: the eager (CPU) model prices tpN or epN plans only, not "
                          "pipeline stages, replicas or tp x ep")
    streamed = streamed_components(wl.components)
    wb = model_weight_bytes(spec, wl.dtype, streamed)
    g, act = wl.gpus, activation_bytes(wl.dtype)
    moe = spec.moe if spec.is_moe else None
    expert_bytes, touched_all = _touched_experts(spec, wl, tokens, streamed)
    touched = touched_all / spec.n_moe_layers if moe else 0.0  # the mean per MoE layer
    experts_split = g if wl.plan_kind == "ep" and moe else 1
    if wl.plan_kind == "ep" and moe:  # each GPU: a replica of the non-expert weights, 1/g of sequences and experts
        weights = wb.always_read + expert_bytes / g
        kv = (kv_read + kv_write) / g
        dispatched = tokens / g * moe.top_k * spec.d_model * act
        # per MoE layer: the per-expert counts (int64), then the rows out and back (moelab.nn.alltoall; Megatron's
        # MoEAlltoAllTokenDispatcher exchanges its counts the same way)
        counts = alltoall_seconds(hw, g, moe.n_experts * 8)
        comm = spec.n_moe_layers * (counts + 2 * alltoall_seconds(hw, g, dispatched))
    else:
        weights = (wb.always_read + expert_bytes) / g
        kv = (kv_read + kv_write) / kv_shards(spec.attention, g)
        comm = 2 * spec.n_layers * allreduce_seconds(hw, g, tokens * spec.d_model * act)
    nbytes = weights + kv
    per_gpu_flops = flops / g
    overhead = (hw.step_overhead_s + spec.n_layers * hw.layer_overhead_s
                + spec.n_moe_layers * hw.moe_layer_overhead_s + touched_all / experts_split * hw.expert_overhead_s)
    attn = attn_flops / g
    mm_compute = (per_gpu_flops - attn) / hw.flops(COMPUTE_DTYPE[wl.dtype])
    gemm_bw = hw.bandwidth_for(nbytes)  # resident only if the step's weights and KV fit
    local_experts = expert_bytes / g
    # under ep an expert's rows come from every GPU's sequences (all `tokens`), and each GPU runs 1/g of the experts
    one, few = _row_shares(moe, tokens if experts_split > 1 else tokens / g) if moe else (0.0, 0.0)
    rows = tokens / g
    dense_one, dense_few = (1.0, 0.0) if rows <= 1 else ((0.0, 1.0) if rows <= SMALL_GEMM_ROWS else (0.0, 0.0))
    mm_memory = (_weight_seconds(weights - local_experts, dense_one, dense_few, gemm_bw, hw)
                 + _weight_seconds(local_experts, one, few, gemm_bw, hw))
    at_compute = attn / (hw.attention_flops or hw.flops(COMPUTE_DTYPE[wl.dtype]))
    at_memory = kv_read / g / (hw.attention_bandwidth or hw.bandwidth)
    heads = wl.batch / g * _softmax_heads(spec) * hw.attention_head_overhead_s
    elementwise = tokens / g * eager_elements_per_token(spec) * act / (hw.elementwise_bandwidth or hw.bandwidth)
    if hw.fresh_page_bandwidth:  # page faults of tensors the allocator maps fresh from the OS
        elementwise += fresh_page_bytes(spec, hw, tokens / g, act) / hw.fresh_page_bandwidth
    elementwise += dequant_seconds(spec, hw, wl, tokens)  # int8 / int4 weights dequantized on the fly
    compute_s, memory_s = mm_compute + at_compute, mm_memory + at_memory + elementwise
    overhead += heads
    seconds = mm_compute + mm_memory + max(at_compute, at_memory) + elementwise + comm + overhead
    from moelab.cost.roofline import Phase

    return Phase(
        seconds=seconds,
        flops=per_gpu_flops,
        bytes=nbytes,
        compute_seconds=compute_s,
        memory_seconds=memory_s,
        comm_seconds=comm,
        overhead_seconds=overhead,
        bound="compute" if compute_s >= memory_s else "memory",
        distinct_experts_per_layer=touched,
    )
