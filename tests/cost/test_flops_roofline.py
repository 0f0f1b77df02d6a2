"""Prefill and decode FLOPs, bytes and roofline times on a synthetic model and GPU, against a hand model.

The synthetic GPU has round numbers (100 TFLOP/s bf16, 1 TB/s) and an ideal operator model (every GEMM and
attention at the full peak whatever its shape, expert rows padded to 1, no launch costs), so an operator's
compute time is its issued FLOPs / 1e14 and its memory time its bytes / 1e12; the step is the sum over operators
of max(compute, memory). The reference below is written from the DESIGN facts, not from moelab:
- a decode step streams every matmul weight except the embedding table and the routed experts, plus U(B) routed
  experts per MoE layer (U(B) = E * (1 - (1 - k/E)^B)), plus the KV cache it attends to (the new token's too);
- a token's FLOPs are 2 * (active non-embedding matmul params) + 2*d*V (lm_head) + 4*L*ctx*(n_h*h_d).
The operator-by-operator reference with realistic curves is tests/cost/test_gpu_operators.py.
"""

import math
from dataclasses import replace

import pytest

from moelab.cost.collectives import allgather_seconds, allreduce_seconds, alltoall_seconds
from moelab.cost.flops import causal_attention_flops, token_flops, training_flops
from moelab.cost.params import count_params
from moelab.cost.roofline import COMM_OPERATORS, Workload, crossover_batch, decode_step, prefill
from moelab.spec import AttentionSpec, HardwareSpec, ModelSpec, MoESpec, build_spec
from moelab.spec.model import map_attention

# --- the synthetic model, counted by hand ----------------------------------------------------------------
V, D, L = 1000, 512, 4
HEADS, KV_HEADS, HD = 8, 2, 64
F_DENSE, E, K, F_EXPERT = 2048, 8, 2, 1024
MOE_LAYERS = (1, 2, 3)  # layer 0 is dense
N_MOE = len(MOE_LAYERS)

EMB = V * D
ATTN = L * (D * HEADS * HD + 2 * D * KV_HEADS * HD + HEADS * HD * D)
DENSE_FFN = (L - N_MOE) * 3 * D * F_DENSE
EXPERT = 3 * D * F_EXPERT
SHARED = N_MOE * EXPERT  # one shared expert of the routed width per MoE layer
ROUTERS = N_MOE * E * D
NORMS = (2 * L + 1) * D
ROUTED = N_MOE * E * EXPERT
TOTAL = 2 * EMB + ATTN + DENSE_FFN + ROUTED + SHARED + ROUTERS + NORMS
MATMUL_ACTIVE = ATTN + DENSE_FFN + N_MOE * K * EXPERT + SHARED + ROUTERS  # lm_head counted apart
KV_PER_TOKEN = L * 2 * KV_HEADS * HD * 2  # bf16
ATTN_FLOPS_PER_POSITION = 4 * L * HEADS * HD  # QK^T and PV for one query and one attended position

PEAK, BW = 100e12, 1e12
GEMMS = ("qkv_proj", "o_proj", "ffn", "router", "experts", "shared_experts", "lm_head")


def model(shared: int = 1, top_k: int = K) -> ModelSpec:
    moe = MoESpec(n_experts=E, top_k=top_k, expert_ffn=F_EXPERT, n_shared=shared, shared_ffn=F_EXPERT if shared
                  else 0)
    return build_spec(name="synthetic", family="qwen2_moe", vocab_size=V, d_model=D, n_layers=L, ffn_dim=F_DENSE,
                     attention=AttentionSpec(n_heads=HEADS, n_kv_heads=KV_HEADS, head_dim=HD), moe=moe,
                     moe_layers=MOE_LAYERS)


def gpu(**overrides) -> HardwareSpec:
    fields = dict(name="round", peak_flops={"bf16": PEAK}, memory_bytes=80e9, memory_bandwidth=BW,
                  intra_node_bandwidth=100e9, intra_node_latency_s=1e-5, inter_node_bandwidth=10e9,
                  inter_node_latency_s=5e-5, tdp_watts=500.0, usd_per_hour=2.0, gpus_per_node=8,
                  compute_efficiency=1.0, bandwidth_efficiency=1.0, link_efficiency=1.0, memory_utilization=1.0,
                  runtime_overhead_bytes=0.0, layer_overhead_s=0.0, moe_layer_overhead_s=0.0, step_overhead_s=0.0,
                  execution="gpu", gemm_efficiency={"bf16": 1.0}, gemm_half_rows=0.0, moe_gemm_efficiency=1.0,
                  moe_block_rows=1, attention_efficiency=1.0, attention_half_context=0.0, kernel_launch_s=0.0)
    fields.update(overrides)
    return HardwareSpec(**fields)


def distinct(tokens: float) -> float:
    return E * (1 - (1 - K / E) ** tokens)


def weights_read(tokens: float) -> float:
    """bf16 bytes of the matmul weights a step over `tokens` tokens streams (norms are elementwise work)."""
    return 2 * (TOTAL - EMB - ROUTED - NORMS) + 2 * N_MOE * distinct(tokens) * EXPERT


def expert_padding_flops(tokens: float) -> float:
    """FLOPs the expert kernels issue beyond the useful ones: rows per expert rounded up to whole rows."""
    u = distinct(tokens)
    return 2 * N_MOE * EXPERT * u * (math.ceil(tokens * K / u - 1e-9) - tokens * K / u)


def hand_decode(batch: int, context: int) -> tuple[float, float]:
    """(FLOPs, KV bytes) of one decode step on one GPU: the query attends to `context` cached positions and
    itself."""
    flops = batch * (2 * MATMUL_ACTIVE + 2 * D * V + ATTN_FLOPS_PER_POSITION * (context + 1))
    return flops, batch * (context + 1) * KV_PER_TOKEN


def hand_prefill(batch: int, prompt: int) -> tuple[float, float]:
    causal_positions = prompt * (prompt + 1) / 2  # token t attends to positions 1..t
    flops = batch * (2 * MATMUL_ACTIVE * prompt + ATTN_FLOPS_PER_POSITION * causal_positions + 2 * D * V)
    return flops, batch * prompt * KV_PER_TOKEN


def ops(phase) -> dict:
    return {o.name: o for o in phase.operators}


def assert_roofline(phase) -> None:
    """The step is the sum of its operators' rooflines: between the max and the sum of the two totals."""
    assert phase.seconds == pytest.approx(sum(max(o.compute_seconds, o.memory_seconds) + o.launch_seconds
                                              for o in phase.operators), rel=1e-12)
    assert max(phase.compute_seconds, phase.memory_seconds) <= phase.seconds * (1 + 1e-12)
    assert phase.seconds <= (phase.compute_seconds + phase.memory_seconds + phase.overhead_seconds
                             + phase.comm_seconds) * (1 + 1e-12)


def test_hand_counts():
    p = count_params(model())
    assert p.total == TOTAL
    assert p.active == TOTAL - ROUTED + N_MOE * K * EXPERT
    assert TOTAL == 49_275_392


@pytest.mark.parametrize("batch", [1, 4, 64, 1000])
def test_decode_step_by_hand(batch):
    wl = Workload(batch=batch, prompt=96, gen=64)  # mean decode context 96 + 64/2 = 128
    flops, kv = hand_decode(batch, 128)
    ph = decode_step(model(), gpu(), wl)
    by = ops(ph)
    assert ph.flops == pytest.approx(flops, rel=1e-12)
    assert sum(by[n].bytes for n in GEMMS) == pytest.approx(weights_read(batch), rel=1e-12)
    assert by["attention_decode"].bytes == pytest.approx(kv, rel=1e-12)
    assert ph.distinct_experts_per_layer == pytest.approx(distinct(batch), rel=1e-12)
    assert ph.compute_seconds == pytest.approx((flops + expert_padding_flops(batch)) / PEAK, rel=1e-12)
    assert ph.memory_seconds == pytest.approx(ph.bytes / BW, rel=1e-12)
    assert ph.comm_seconds == 0 and ph.overhead_seconds == 0
    assert_roofline(ph)
    compute = sum(o.seconds for o in ph.operators if o.bound == "compute")
    assert ph.bound == ("compute" if compute >= ph.seconds - compute else "memory")


def test_decode_batch1_reads_k_experts_and_is_memory_bound():
    ph = decode_step(model(), gpu(), Workload(batch=1, prompt=96, gen=64))
    assert ph.distinct_experts_per_layer == pytest.approx(K)
    by = ops(ph)
    # 2 bytes per always-read matmul param + 2 experts per MoE layer; 129 positions of KV
    assert sum(by[n].bytes for n in GEMMS) == pytest.approx(2 * (TOTAL - EMB - ROUTED - NORMS + N_MOE * K * EXPERT))
    assert by["attention_decode"].bytes == pytest.approx(129 * KV_PER_TOKEN)
    assert ph.bound == "memory"
    assert all(o.bound == "memory" for o in ph.operators)


def test_decode_explicit_context():
    ph = decode_step(model(), gpu(), Workload(batch=2, prompt=96, gen=64), context=1000)
    flops, kv = hand_decode(2, 1000)
    assert ph.flops == pytest.approx(flops, rel=1e-12)
    assert ops(ph)["attention_decode"].bytes == pytest.approx(kv, rel=1e-12)


@pytest.mark.parametrize("batch,prompt", [(1, 16), (1, 512), (8, 256)])
def test_prefill_by_hand(batch, prompt):
    flops, kv = hand_prefill(batch, prompt)
    ph = prefill(model(), gpu(), Workload(batch=batch, prompt=prompt, gen=8))
    by = ops(ph)
    assert ph.flops == pytest.approx(flops, rel=1e-12)
    assert sum(by[n].bytes for n in GEMMS) == pytest.approx(weights_read(batch * prompt), rel=1e-12)
    # the chunk's KV written, plus its queries in and attention outputs out (bf16)
    assert by["attention_prefill"].bytes == pytest.approx(kv + batch * prompt * L * 2 * 2 * HEADS * HD, rel=1e-12)
    assert ph.distinct_experts_per_layer == pytest.approx(distinct(batch * prompt), rel=1e-12)
    assert ph.compute_seconds == pytest.approx((flops + expert_padding_flops(batch * prompt)) / PEAK, rel=1e-12)
    assert_roofline(ph)


def test_long_prefill_is_compute_bound_short_decode_memory_bound():
    assert prefill(model(), gpu(), Workload(batch=8, prompt=512)).bound == "compute"
    assert decode_step(model(), gpu(), Workload(batch=1, prompt=512)).bound == "memory"


def test_launch_and_moe_layer_overheads_are_added():
    hw = gpu(kernel_launch_s=1e-6, moe_layer_overhead_s=3e-6, step_overhead_s=20e-6)
    ph = decode_step(model(), hw, Workload(batch=1, prompt=96, gen=64))
    base = decode_step(model(), gpu(), Workload(batch=1, prompt=96, gen=64))
    launches = sum(o.launches for o in ph.operators if o.name != "step")
    assert launches == sum(o.launches for o in base.operators)
    assert ph.overhead_seconds == pytest.approx(launches * 1e-6 + N_MOE * 3e-6 + 20e-6)
    assert ph.seconds == pytest.approx(base.seconds + ph.overhead_seconds, rel=1e-12)


def test_efficiencies_scale_the_ceilings():
    base = decode_step(model(), gpu(), Workload(batch=4, prompt=96, gen=64))
    hw = gpu(gemm_efficiency={"bf16": 0.5}, attention_efficiency=0.25, bandwidth_efficiency=0.8)
    ph = decode_step(model(), hw, Workload(batch=4, prompt=96, gen=64))
    for name, o in ops(ph).items():
        scale = 4.0 if name == "attention_decode" else 2.0
        assert o.compute_seconds == pytest.approx(ops(base)[name].compute_seconds * scale, rel=1e-12), name
        assert o.memory_seconds == pytest.approx(ops(base)[name].memory_seconds / 0.8, rel=1e-12), name


def test_top_k_and_shared_experts_are_both_counted():
    """The known bug of a popular calculator: FLOPs that miss the top-k (or the shared) experts."""
    wl = Workload(batch=1, prompt=96, gen=64)
    base = decode_step(model(shared=1), gpu(), wl).flops
    no_shared = decode_step(model(shared=0), gpu(), wl).flops
    assert base - no_shared == pytest.approx(2 * EXPERT * N_MOE, rel=1e-12)
    top3 = decode_step(model(top_k=3), gpu(), wl).flops
    assert top3 - base == pytest.approx(2 * EXPERT * N_MOE, rel=1e-12)
    # per token: the two selected experts and the shared one in every MoE layer
    per_token = token_flops(model(), count_params(model()), 128)
    experts = 2 * (K + 1) * EXPERT * N_MOE
    assert per_token == pytest.approx(experts + 2 * (ATTN + DENSE_FFN + ROUTERS) + 2 * D * V
                                      + ATTN_FLOPS_PER_POSITION * 128, rel=1e-12)


def test_causal_attention_flops_brute_force():
    spec = model()
    brute = sum(ATTN_FLOPS_PER_POSITION * t for t in range(1, 301))
    assert causal_attention_flops(spec, 300) == pytest.approx(brute, rel=1e-12)
    windowed = map_attention(spec, lambda a: replace(a, sliding_window=64))
    brute = sum(ATTN_FLOPS_PER_POSITION * min(t, 64) for t in range(1, 301))
    assert causal_attention_flops(windowed, 300) == pytest.approx(brute, rel=1e-12)


def test_training_flops_are_three_forwards():
    spec, tokens, seq = model(), 4096 * 10, 4096
    forward_per_token = 2 * (MATMUL_ACTIVE + D * V) + ATTN_FLOPS_PER_POSITION * (seq + 1) / 2
    assert training_flops(spec, count_params(spec), tokens, seq) == pytest.approx(
        3 * forward_per_token * tokens, rel=1e-12)


def test_crossover_batch_against_brute_force():
    """The bisection finds the first batch of a linear scan at which the step turns compute-bound."""
    hw, wl = gpu(), Workload(batch=1, prompt=48, gen=32)  # mean context 64: short enough for compute to win
    bound = {b: decode_step(model(), hw, replace(wl, batch=b)).bound for b in range(1, 400)}
    expected = min(b for b, kind in bound.items() if kind == "compute")
    assert 2 < expected < 400
    assert all(kind == "memory" for b, kind in bound.items() if b < expected)
    assert crossover_batch(model(), hw, wl) == expected


def test_crossover_none_when_attention_dominates():
    # at a long context the KV read per sequence (2048 B/position) outweighs its FLOPs (8192/position at
    # 100 FLOP/byte): memory-bound at any batch
    assert crossover_batch(model(), gpu(), Workload(prompt=8192, gen=2), limit=1 << 12) is None


# --- parallel plans --------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpus", [2, 4, 8])  # tp must divide the 8 heads
def test_tp_plan(gpus):
    batch = 8
    hw = gpu()
    ph = decode_step(model(), hw, Workload(batch=batch, prompt=96, gen=64, gpus=gpus, plan="tp"))
    by = ops(ph)
    flops, kv = hand_decode(batch, 128)
    routers = 2 * batch * ROUTERS  # every rank routes every token
    assert ph.flops == pytest.approx((flops - routers) / gpus + routers, rel=1e-12)
    assert sum(by[n].bytes for n in GEMMS) == pytest.approx((weights_read(batch) - 2 * ROUTERS) / gpus
                                                            + 2 * ROUTERS, rel=1e-12)
    assert by["attention_decode"].bytes == pytest.approx(kv / min(gpus, KV_HEADS), rel=1e-12)  # one head at least
    # two all-reduces of the bf16 activations (batch x d) per layer, one gather of the fp32 logits
    comm = 2 * L * allreduce_seconds(hw, gpus, batch * D * 2) + allgather_seconds(hw, gpus, batch * V * 4)
    assert ph.comm_seconds == pytest.approx(comm, rel=1e-12)
    assert ph.seconds == pytest.approx(sum(o.seconds for o in ph.operators if o.name not in COMM_OPERATORS)
                                       + comm, rel=1e-12)


@pytest.mark.parametrize("gpus", [2, 8])
def test_ep_plan(gpus):
    batch = 32
    hw = gpu()
    ph = decode_step(model(), hw, Workload(batch=batch, prompt=96, gen=64, gpus=gpus, plan="ep"))
    by = ops(ph)
    flops, kv = hand_decode(batch, 128)
    # every GPU: all non-routed weights, 1/G of the experts the whole batch touches, 1/G of the sequences
    weights = 2 * (TOTAL - EMB - ROUTED - NORMS) + 2 * N_MOE * distinct(batch) * EXPERT / gpus
    assert sum(by[n].bytes for n in GEMMS) == pytest.approx(weights, rel=1e-12)
    assert by["attention_decode"].bytes == pytest.approx(kv / gpus, rel=1e-12)
    assert ph.flops == pytest.approx(flops / gpus, rel=1e-12)
    # per MoE layer a dispatch and a combine of (batch/G) tokens x k x d in bf16
    comm = 2 * N_MOE * alltoall_seconds(hw, gpus, batch / gpus * K * D * 2)
    assert ph.comm_seconds == pytest.approx(comm, rel=1e-12)


def test_single_gpu_has_no_communication():
    for plan in ("tp", "ep"):
        assert decode_step(model(), gpu(), Workload(batch=8, gpus=1, plan=plan)).comm_seconds == 0
