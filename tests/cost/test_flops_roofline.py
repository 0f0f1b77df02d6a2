"""Prefill and decode FLOPs, bytes and roofline times on a synthetic model and GPU, against a hand model.

The synthetic GPU has round numbers (100 TFLOP/s bf16, 1 TB/s, efficiencies 1, no overheads) so every time
is FLOPs / 1e14 or bytes / 1e12. The reference below is written from the DESIGN facts, not from moelab:
- a decode step streams every weight except the embedding table and the routed experts, plus U(B) routed
  experts per MoE layer (U(B) = E * (1 - (1 - k/E)^B)), plus the KV cache it reads and the KV it writes;
- a token's FLOPs are 2 * (active non-embedding matmul params) + 2*d*V (lm_head) + 4*L*ctx*(n_h*h_d).
"""

from dataclasses import replace

import pytest

from moelab.cost.flops import causal_attention_flops, token_flops, training_flops
from moelab.cost.params import count_params
from moelab.cost.roofline import Workload, crossover_batch, decode_step, prefill
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
                  runtime_overhead_bytes=0.0, layer_overhead_s=0.0, moe_layer_overhead_s=0.0)
    fields.update(overrides)
    return HardwareSpec(**fields)


def distinct(tokens: float) -> float:
    return E * (1 - (1 - K / E) ** tokens)


def weights_read(tokens: float) -> float:
    """bf16 bytes of the weights a step over `tokens` tokens streams."""
    return 2 * (TOTAL - EMB - ROUTED) + 2 * N_MOE * distinct(tokens) * EXPERT


def hand_decode(batch: int, context: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one decode step on one GPU."""
    flops = batch * (2 * MATMUL_ACTIVE + 2 * D * V + ATTN_FLOPS_PER_POSITION * context)
    nbytes = weights_read(batch) + batch * context * KV_PER_TOKEN + batch * KV_PER_TOKEN
    return flops, nbytes


def hand_prefill(batch: int, prompt: int) -> tuple[float, float]:
    causal_positions = prompt * (prompt + 1) / 2  # token t attends to positions 1..t
    flops = batch * (2 * MATMUL_ACTIVE * prompt + ATTN_FLOPS_PER_POSITION * causal_positions + 2 * D * V)
    nbytes = weights_read(batch * prompt) + batch * prompt * KV_PER_TOKEN
    return flops, nbytes


def test_hand_counts():
    p = count_params(model())
    assert p.total == TOTAL
    assert p.active == TOTAL - ROUTED + N_MOE * K * EXPERT
    assert TOTAL == 49_275_392


@pytest.mark.parametrize("batch", [1, 4, 64])
def test_decode_step_by_hand(batch):
    wl = Workload(batch=batch, prompt=96, gen=64)  # mean decode context 96 + 64/2 = 128
    flops, nbytes = hand_decode(batch, 128)
    ph = decode_step(model(), gpu(), wl)
    assert ph.flops == pytest.approx(flops, rel=1e-12)
    assert ph.bytes == pytest.approx(nbytes, rel=1e-12)
    assert ph.distinct_experts_per_layer == pytest.approx(distinct(batch), rel=1e-12)
    assert ph.compute_seconds == pytest.approx(flops / PEAK, rel=1e-12)
    assert ph.memory_seconds == pytest.approx(nbytes / BW, rel=1e-12)
    assert ph.comm_seconds == 0 and ph.overhead_seconds == 0
    assert ph.seconds == pytest.approx(max(flops / PEAK, nbytes / BW), rel=1e-12)
    assert ph.bound == ("compute" if flops / PEAK >= nbytes / BW else "memory")


def test_decode_batch1_reads_k_experts_and_is_memory_bound():
    ph = decode_step(model(), gpu(), Workload(batch=1, prompt=96, gen=64))
    assert ph.distinct_experts_per_layer == pytest.approx(K)
    # 2 bytes per always-read param + 2 experts per MoE layer, + 129 positions of KV
    assert ph.bytes == pytest.approx(2 * (TOTAL - EMB - ROUTED + N_MOE * K * EXPERT) + 129 * KV_PER_TOKEN)
    assert ph.bound == "memory"


def test_decode_explicit_context():
    ph = decode_step(model(), gpu(), Workload(batch=2, prompt=96, gen=64), context=1000)
    flops, nbytes = hand_decode(2, 1000)
    assert ph.flops == pytest.approx(flops, rel=1e-12)
    assert ph.bytes == pytest.approx(nbytes, rel=1e-12)


@pytest.mark.parametrize("batch,prompt", [(1, 16), (1, 512), (8, 256)])
def test_prefill_by_hand(batch, prompt):
    flops, nbytes = hand_prefill(batch, prompt)
    ph = prefill(model(), gpu(), Workload(batch=batch, prompt=prompt, gen=8))
    assert ph.flops == pytest.approx(flops, rel=1e-12)
    assert ph.bytes == pytest.approx(nbytes, rel=1e-12)
    assert ph.distinct_experts_per_layer == pytest.approx(distinct(batch * prompt), rel=1e-12)
    assert ph.seconds == pytest.approx(max(flops / PEAK, nbytes / BW), rel=1e-12)
    assert ph.bound == ("compute" if flops / PEAK >= nbytes / BW else "memory")


def test_long_prefill_is_compute_bound_short_decode_memory_bound():
    assert prefill(model(), gpu(), Workload(batch=8, prompt=512)).bound == "compute"
    assert decode_step(model(), gpu(), Workload(batch=1, prompt=512)).bound == "memory"


def test_overheads_are_added_per_layer():
    hw = gpu(layer_overhead_s=1e-6, moe_layer_overhead_s=3e-6)
    ph = decode_step(model(), hw, Workload(batch=1, prompt=96, gen=64))
    flops, nbytes = hand_decode(1, 128)
    assert ph.overhead_seconds == pytest.approx(L * 1e-6 + N_MOE * 3e-6)
    assert ph.seconds == pytest.approx(max(flops / PEAK, nbytes / BW) + L * 1e-6 + N_MOE * 3e-6, rel=1e-12)


def test_efficiencies_scale_the_ceilings():
    hw = gpu(compute_efficiency=0.5, bandwidth_efficiency=0.8)
    ph = decode_step(model(), hw, Workload(batch=4, prompt=96, gen=64))
    flops, nbytes = hand_decode(4, 128)
    assert ph.compute_seconds == pytest.approx(flops / (0.5 * PEAK), rel=1e-12)
    assert ph.memory_seconds == pytest.approx(nbytes / (0.8 * BW), rel=1e-12)


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


def brute_force_crossover(context: int, limit: int = 100_000) -> int:
    for batch in range(1, limit):
        flops, nbytes = hand_decode(batch, context)
        if flops / PEAK >= nbytes / BW:
            return batch
    raise AssertionError("no crossover")


def test_crossover_batch_against_brute_force():
    wl = Workload(batch=1, prompt=48, gen=32)  # mean context 64: short enough for compute to win
    expected = brute_force_crossover(64)
    assert 2 < expected < 10_000
    got = crossover_batch(model(), gpu(), wl)
    assert got == expected
    assert decode_step(model(), gpu(), replace(wl, batch=got - 1)).bound == "memory"
    assert decode_step(model(), gpu(), replace(wl, batch=got)).bound == "compute"


def test_crossover_none_when_attention_dominates():
    # at a long context the KV read per sequence (2048 B/position) outweighs its FLOPs (8192/position at
    # 100 FLOP/byte): memory-bound at any batch
    assert crossover_batch(model(), gpu(), Workload(prompt=8192, gen=2), limit=1 << 12) is None


# --- parallel plans --------------------------------------------------------------------------------------

def ring_allreduce(gpus: int, nbytes: float, bw: float, lat: float) -> float:
    return 2 * (gpus - 1) * lat + 2 * (gpus - 1) / gpus * nbytes / bw


def all_to_all(gpus: int, nbytes: float, bw: float, lat: float) -> float:
    return lat + (gpus - 1) / gpus * nbytes / bw


@pytest.mark.parametrize("gpus,bw,lat", [(2, 100e9, 1e-5), (4, 100e9, 1e-5), (16, 10e9, 5e-5)])
def test_tp_plan(gpus, bw, lat):
    batch = 8
    wl = Workload(batch=batch, prompt=96, gen=64, gpus=gpus, plan="tp")
    ph = decode_step(model(), gpu(), wl)
    flops, _ = hand_decode(batch, 128)
    kv = batch * 129 * KV_PER_TOKEN / min(gpus, KV_HEADS)  # KV heads split no finer than one per GPU
    # two all-reduces of the bf16 activations (batch x d) per layer
    comm = 2 * L * ring_allreduce(gpus, batch * D * 2, bw, lat)
    assert ph.flops == pytest.approx(flops / gpus, rel=1e-12)
    assert ph.bytes == pytest.approx(weights_read(batch) / gpus + kv, rel=1e-12)
    assert ph.comm_seconds == pytest.approx(comm, rel=1e-12)
    assert ph.seconds == pytest.approx(max(ph.flops / PEAK, ph.bytes / BW) + comm, rel=1e-12)


@pytest.mark.parametrize("gpus,bw,lat", [(2, 100e9, 1e-5), (8, 100e9, 1e-5), (16, 10e9, 5e-5)])
def test_ep_plan(gpus, bw, lat):
    batch = 32
    wl = Workload(batch=batch, prompt=96, gen=64, gpus=gpus, plan="ep")
    ph = decode_step(model(), gpu(), wl)
    flops, _ = hand_decode(batch, 128)
    # every GPU: all non-routed weights, 1/G of the experts the whole batch touches, 1/G of the sequences
    weights = 2 * (TOTAL - EMB - ROUTED) + 2 * N_MOE * distinct(batch) * EXPERT / gpus
    kv = batch * 129 * KV_PER_TOKEN / gpus
    # per MoE layer a dispatch and a combine of (batch/G) tokens x k x d in bf16
    comm = 2 * N_MOE * all_to_all(gpus, batch / gpus * K * D * 2, bw, lat)
    assert ph.flops == pytest.approx(flops / gpus, rel=1e-12)
    assert ph.bytes == pytest.approx(weights + kv, rel=1e-12)
    assert ph.comm_seconds == pytest.approx(comm, rel=1e-12)
    assert ph.seconds == pytest.approx(max(ph.flops / PEAK, ph.bytes / BW) + comm, rel=1e-12)


def test_single_gpu_has_no_communication():
    for plan in ("tp", "ep"):
        assert decode_step(model(), gpu(), Workload(batch=8, gpus=1, plan=plan)).comm_seconds == 0
