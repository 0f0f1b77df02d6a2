"""The GPU operator model: one engine step on one replica as a sum of operators, each its own roofline.

Per GPU of the replica, every operator costs max(FLOPs / achieved FLOP/s, bytes / achieved bandwidth) plus its
fixed cost (kernel launches, a collective's per-call latency); the step is their sum, as kernels of one stream
run one after another (CUDA graphs remove the host gaps, not the kernels). Achieved FLOP/s follows the operator's
shape (cost.gemm): GEMM rows are the step's tokens on this GPU; a routed expert's rows are the tokens routed to it,
from U(T) touched experts (cost.routing) with the skew. Operators, per layer (l) or per step (s):

    qkv_proj, o_proj (l)        attention projections (MLA's low-rank path; Gated DeltaNet's in/out projections)
    attention_prefill (l)       causal attention of the prompt chunk over the cached past, FlashAttention rate
    attention_decode (l)        one query per sequence over its KV cache: bandwidth-bound (MLA: absorbed, latent)
    ffn (l, dense layers)       gate/up and down GEMMs
    router (l, MoE)             the d -> E scores, top-k and the fixed routing / permutation kernels
    experts (l, MoE)            the grouped GEMMs of the touched local experts, rows padded to the kernel tile
    shared_experts (l, MoE)     dense GEMMs every token runs
    elementwise (l)             fused norms, residual adds, rotary, activation products (bandwidth-bound)
    lm_head, sampling (s)       logits for one position per sequence, then sampling
    allreduce (l), alltoall (MoE l), logits_gather, pipeline_send (s): collectives (cost.collectives)
    step (s)                    the engine's fixed cost per step (scheduler, input preparation)

Plans (cost.plan): tp splits heads (KV heads no finer than one per GPU; MLA's latent cache is replicated),
FFNs and every expert's matrices; ep runs attention data-parallel over ep groups and holds E / ep experts per
group, with a dispatch and a combine all-to-all per MoE layer; pp splits the layers into stages and the batch
into pp micro-batches, so a token's latency is the whole model at 1 / pp of the batch plus the stage sends.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from moelab.cost.collectives import (
    allgather_seconds,
    allreduce_algorithm,
    allreduce_seconds,
    alltoall_seconds,
    p2p_seconds,
)
from moelab.cost.dtypes import (
    COMPUTE_DTYPE,
    KV_BYTES,
    WEIGHT_BYTES,
    activation_bytes,
    component_compute_dtype,
    component_dtype,
    high_precision_bytes,
)
from moelab.cost.flops import _causal_positions, _per_position, _state_flops
from moelab.cost.gemm import attention_flops_per_second, expert_flops_per_second, gemm_flops_per_second, padded_rows
from moelab.cost.memory import _kv_width, linear_state_elements, routed_expert_bytes
from moelab.cost.params import attention_params, expert_params, moa_expert_params, swiglu_params
from moelab.cost.plan import Plan
from moelab.cost.routing import distinct_experts
from moelab.cost.step import OpCost, StepLoad
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import AttentionSpec, LayerSpec, ModelSpec

LAUNCHES = {  # kernels per operator call (fused as vLLM runs them)
    "qkv_proj": 1, "o_proj": 1, "attention_prefill": 2, "attention_decode": 2, "ffn": 3, "router": 2,
    "experts": 3, "shared_experts": 3, "elementwise": 3, "lm_head": 1, "sampling": 3,
}


@dataclass
class _Ops:
    """Operator totals as they accumulate over layers."""

    hw: HardwareSpec
    totals: dict = field(default_factory=lambda: defaultdict(lambda: [0.0, 0.0, 0.0, 0.0, 0.0, 0]))
    details: dict = field(default_factory=dict)

    def add(self, name: str, flops: float, nbytes: float, compute_s: float, calls: float = 1.0,
            fixed_s: float = 0.0, launches: int | None = None) -> None:
        t = self.totals[name]
        n_launch = (LAUNCHES.get(name, 1) if launches is None else launches) * calls
        t[0] += flops * calls
        t[1] += nbytes * calls
        t[2] += compute_s * calls
        t[3] += nbytes * calls / self.hw.bandwidth
        t[4] += n_launch * self.hw.kernel_launch_s + fixed_s * calls
        t[5] += round(n_launch)

    def gemm(self, name: str, rows: float, params: float, weight_bytes: float, dtype: str,
             calls: float = 1.0) -> None:
        """rows x params GEMM (params = N * K of this GPU's shard), weights read once."""
        if rows <= 0 or params <= 0:
            return
        flops = 2.0 * rows * params
        nbytes = params * weight_bytes
        self.add(name, flops, nbytes, flops / gemm_flops_per_second(self.hw, dtype, rows), calls)

    def comm(self, name: str, seconds: float, nbytes: float, calls: float, detail: str = "") -> None:
        if seconds <= 0:
            return
        t = self.totals[name]
        t[1] += nbytes * calls
        t[4] += seconds * calls
        t[5] += round(calls)
        if detail:
            self.details[name] = detail

    def result(self) -> tuple[OpCost, ...]:
        return tuple(OpCost(name, *t[:5], launches=int(t[5]), detail=self.details.get(name, ""))
                     for name, t in self.totals.items())


def kv_shards(a: AttentionSpec, tp: int) -> int:
    """Tensor parallelism splits KV heads, no finer than one per GPU; MLA's shared latent is replicated."""
    if a.kind == "mla":
        return 1
    if a.kind == "linear":
        return min(tp, a.linear.n_v_heads)
    return min(tp, a.n_kv_heads)


def _o_params(d: int, a: AttentionSpec) -> float:
    if a.kind == "linear":
        return a.linear.n_v_heads * a.linear.v_head_dim * d
    return a.n_heads * a.v_head_dim * d


def _decode_attention_flops(a: AttentionSpec, attended: float) -> float:
    """One query over `attended` positions; MLA decodes in the absorbed form (scores and values on the latent)."""
    if a.kind == "mla":
        return 2.0 * a.n_heads * (2 * a.kv_lora_rank + a.qk_rope_head_dim) * attended
    return _per_position(a) * attended


def _attention(ops: _Ops, a: AttentionSpec, load: StepLoad, plan: Plan, n: int, cdtype: str, kv_b: float,
               act: float) -> None:
    """The attention core of `n` layers: prefill chunks and decode queries of this GPU's data-parallel group
    (`load` is that group's share)."""
    shards = kv_shards(a, plan.tp)
    heads_share = 1.0 / plan.tp
    if load.prefill_seqs and load.prefill_tokens:
        seqs = load.prefill_seqs
        chunk, past = load.prefill_tokens, load.prefill_past
        if a.linear is not None:
            state = linear_state_elements(a) * kv_b / shards
            flops = seqs * chunk * _state_flops(a) * heads_share
            ops.add("attention_prefill", flops, seqs * 2 * state,
                    flops / gemm_flops_per_second(ops.hw, cdtype, seqs * chunk), n)
        else:
            pairs = _causal_positions(a, int(round(past + chunk))) - _causal_positions(a, int(round(past)))
            flops = seqs * pairs * _per_position(a) * heads_share
            cached = _kv_width(a) * kv_b / shards
            nbytes = seqs * cached * (a.attended(past) + chunk) + seqs * chunk * 2 * act * a.n_heads * a.head_dim \
                * heads_share
            context = pairs / chunk
            ops.add("attention_prefill", flops, nbytes, flops / attention_flops_per_second(ops.hw, cdtype, context), n)
    if load.decode_seqs:
        seqs = load.decode_seqs
        if a.linear is not None:
            state = linear_state_elements(a) * kv_b / shards
            flops = seqs * _state_flops(a) * heads_share
            ops.add("attention_decode", flops, seqs * 2 * state,
                    flops / gemm_flops_per_second(ops.hw, cdtype, seqs), n)
        else:
            attended = a.attended(load.decode_context + 1)
            flops = seqs * _decode_attention_flops(a, attended) * heads_share
            nbytes = seqs * _kv_width(a) * kv_b / shards * attended
            ops.add("attention_decode", flops, nbytes,
                    flops / attention_flops_per_second(ops.hw, cdtype, attended), n)


def _moe(ops: _Ops, spec: ModelSpec, layer: LayerSpec, load: StepLoad, rows: float, plan: Plan, n: int, dtype: str,
         skew: float, act: float, components: tuple = ()) -> float:
    """Router, routed experts and shared experts of `n` MoE layers, for the replica's `load` (whose token-slots
    spread over every expert group) and `rows` tokens of this GPU's attention group; returns the touched
    experts per layer. Routed and shared experts read their weights at their component's dtype and compute in
    its compute dtype (int4: W4A16)."""
    m, d, cdtype = layer.moe, spec.d_model, COMPUTE_DTYPE[dtype]
    routed_dt = component_dtype(dtype, components, "routed_experts")
    shared_dt = component_dtype(dtype, components, "shared_experts")
    router_flops = 2.0 * rows * m.n_experts * d
    ops.add("router", router_flops, m.n_experts * d * high_precision_bytes(dtype),
            router_flops / gemm_flops_per_second(ops.hw, cdtype, rows), n, fixed_s=ops.hw.moe_layer_overhead_s)
    touched = distinct_experts(m.n_experts, m.top_k, load.tokens, skew)
    local = touched / plan.ep  # touched experts this GPU holds (a 1 / tp slice of each)
    slots = load.tokens * m.top_k / plan.ep  # routed token-slots this group's experts compute
    per_expert = slots / local if local else 0.0
    shard = expert_params(d, m) / plan.tp
    issued = 2.0 * local * padded_rows(ops.hw, per_expert) * shard
    nbytes = local * shard * routed_expert_bytes(dtype, spec.expert_storage, components)
    if spec.mlp_bias and not m.n_shared:  # the MoE output's own bias (JetMoE), read with the experts
        nbytes += d * WEIGHT_BYTES[dtype]
    ecdtype = component_compute_dtype(dtype, routed_dt)
    ops.add("experts", 2.0 * slots * shard, nbytes, issued / expert_flops_per_second(ops.hw, ecdtype, per_expert), n)
    ops.details["experts"] = f"{per_expert:.1f} tokens per touched expert"
    if m.n_shared:
        shared = (swiglu_params(d, m.n_shared * m.shared_ffn) + d * m.shared_gate) / plan.tp
        ops.gemm("shared_experts", rows, shared, WEIGHT_BYTES[shared_dt], component_compute_dtype(dtype, shared_dt), n)
    if plan.ep > 1:  # dispatch and combine of this GPU's token-slots (its 1 / tp lane of the group's tokens)
        nbytes = rows * m.top_k * d * act / plan.tp
        ranks = plan.ep * plan.tp
        ops.comm("alltoall", alltoall_seconds(ops.hw, ranks, nbytes), nbytes, 2 * n)
    return touched


def _attention_experts(ops: _Ops, spec: ModelSpec, a: AttentionSpec, load: StepLoad, rows: float, plan: Plan, n: int,
                       dtype: str, skew: float, components: tuple = ()) -> None:
    """JetMoE's mixture of attention heads in `n` layers: the shared kv_proj and the router read whole, then each
    token's top-k (n_heads / n_kv_heads) attention experts (q_proj and o_proj), a grouped GEMM over the experts
    the step touches."""
    d = spec.d_model
    att_dt = component_dtype(dtype, components, "attention")
    shared = (2 * d * a.n_kv_heads * a.head_dim + d * a.moa_experts + d * a.o_bias) / plan.tp
    ops.gemm("qkv_proj", rows, shared, WEIGHT_BYTES[att_dt], component_compute_dtype(dtype, att_dt), n)
    # the attention experts are routed weights (ParamBreakdown.routed_experts): the routed_experts dtype
    routed_dt = component_dtype(dtype, components, "routed_experts")
    cdtype, wb = component_compute_dtype(dtype, routed_dt), routed_expert_bytes(dtype, None, components)
    k = a.n_heads // a.n_kv_heads
    touched = distinct_experts(a.moa_experts, k, load.tokens, skew)
    per_expert = load.tokens * k / touched if touched else 0.0
    shard = moa_expert_params(d, a) / plan.tp
    issued = 2.0 * touched * padded_rows(ops.hw, per_expert) * shard
    ops.add("attention_experts", 2.0 * load.tokens * k * shard, touched * shard * wb,
            issued / expert_flops_per_second(ops.hw, cdtype, per_expert), n, launches=3)


def step(spec: ModelSpec, hw: HardwareSpec, plan: Plan, load: StepLoad, dtype: str = "bf16",
         kv_dtype: str = "bf16", skew: float = 0.0, components: tuple = ()) -> tuple[tuple[OpCost, ...], float]:
    """(operators, touched routed experts per MoE layer) of one step of one replica, per GPU. The operators'
    seconds add up to a token's latency through the step; with pp > 1 they are the whole model at one
    micro-batch. `components`: per-component weight dtypes (cost.dtypes.COMPONENTS), the rest at `dtype`."""
    micro = plan.pp if load.sequences >= plan.pp else 1  # pipeline micro-batches
    load = load.busiest(micro)
    group = load.busiest(plan.ep)  # what the busiest data-parallel attention group runs
    ops = _Ops(hw)
    d, act = spec.d_model, activation_bytes(dtype)
    cdtype, kv_b = COMPUTE_DTYPE[dtype], KV_BYTES[kv_dtype]
    att_dt, ffn_dt = component_dtype(dtype, components, "attention"), component_dtype(dtype, components, "dense_ffn")
    wb, acdtype = WEIGHT_BYTES[att_dt], component_compute_dtype(dtype, att_dt)
    rows = group.tokens
    touched = 0.0
    for layer, n in spec.layer_groups:
        a = layer.attention
        if a.moa_experts:
            _attention_experts(ops, spec, a, load, rows, plan, n, dtype, skew, components)
        else:
            o = _o_params(d, a)
            ops.gemm("qkv_proj", rows, (attention_params(d, a) - o) / plan.tp, wb, acdtype, n)
            ops.gemm("o_proj", rows, o / plan.tp, wb, acdtype, n)
        _attention(ops, a, group, plan, n, cdtype, kv_b, act)
        if layer.moe is None:
            ops.gemm("ffn", rows, swiglu_params(d, layer.ffn.width) / plan.tp, WEIGHT_BYTES[ffn_dt],
                     component_compute_dtype(dtype, ffn_dt), n)
            width = layer.ffn.width
        else:
            touched += n * _moe(ops, spec, layer, load, rows, plan, n, dtype, skew, act, components)
            width = layer.moe.top_k * layer.moe.expert_ffn + layer.moe.n_shared * layer.moe.shared_ffn
        q = a.n_heads * a.head_dim if a.softmax else 0
        ops.add("elementwise", 0.0, rows * (12 * d + 3 * width / plan.tp + 2 * q / plan.tp) * act, 0.0, n,
                fixed_s=hw.layer_overhead_s)
        if plan.tp > 1:
            nbytes = rows * d * act
            ops.comm("allreduce", allreduce_seconds(hw, plan.tp, nbytes), nbytes, 2 * n,
                     allreduce_algorithm(hw, plan.tp, nbytes))
    logits = group.logit_rows
    emb = dict(components).get("embeddings")
    head_b = WEIGHT_BYTES[emb] if emb else high_precision_bytes(dtype)
    ops.gemm("lm_head", logits, spec.vocab_size * d / plan.tp, head_b,
             component_compute_dtype(dtype, emb) if emb else cdtype)
    ops.add("sampling", 0.0, logits * spec.vocab_size * 4 / plan.tp, 0.0)
    if plan.tp > 1:
        nbytes = logits * spec.vocab_size * 4
        ops.comm("logits_gather", allgather_seconds(hw, plan.tp, nbytes), nbytes, 1)
    if plan.pp > 1:
        nbytes = rows * d * act
        across = plan.gpus_per_replica > hw.gpus_per_node
        ops.comm("pipeline_send", p2p_seconds(hw, nbytes, across), nbytes, plan.pp - 1)
    ops.comm("step", hw.step_overhead_s, 0.0, 1)
    return ops.result(), touched / spec.n_moe_layers if spec.n_moe_layers else 0.0
