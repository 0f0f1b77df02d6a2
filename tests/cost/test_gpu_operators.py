"""The GPU operator model (cost.gpu) against a hand model of each operator, on a small dense and a small MoE spec.

The reference below is written from the model's documented rules (cost.gpu's and cost.gemm's docstrings), not
from its code: a GEMM of M rows against an N x K weight costs 2*M*N*K FLOPs at peak * share * M / (M + half)
and streams its N*K weights once; routed experts touch U(B) = E(1 - (1 - k/E)^B) experts, each with B*k/U rows
padded up to moe_block_rows, at moe_gemm_efficiency of the curve at the padded rows; decode attention streams
the KV it attends to; an operator costs max(compute, memory) + launches * kernel_launch_s. Every hardware value
is chosen here (dataclasses.replace of a preset), never a default, so the expectations are the test's own.
Collective seconds use cost.collectives' functions (tested in test_collectives.py) as the reference.
"""

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moelab.cost import gpu as gpu_model
from moelab.cost.collectives import allgather_seconds, allreduce_seconds, alltoall_seconds, p2p_seconds
from moelab.cost.gemm import expert_flops_per_second, gemm_flops_per_second, padded_rows
from moelab.cost.plan import Plan
from moelab.cost.roofline import Workload, decode_step, prefill, step_cost
from moelab.cost.step import StepLoad
from moelab.errors import MoelabError
from moelab.spec import AttentionSpec, MoESpec, build_spec, load_hardware
from moelab.spec.model import map_attention

# --- the small models, counted by hand -------------------------------------------------------------------
V, D, L = 1000, 512, 4
HEADS, KV_HEADS, HD = 8, 2, 64
F_DENSE, E, K, F_EXPERT = 2048, 8, 2, 1024
MOE_LAYERS = (1, 2, 3)  # layer 0 is dense
N_MOE = len(MOE_LAYERS)
N_DENSE = L - N_MOE

QKV = D * (HEADS * HD + 2 * KV_HEADS * HD)  # per layer
O_PROJ = HEADS * HD * D
FFN = 3 * D * F_DENSE
EXPERT = 3 * D * F_EXPERT
SHARED = EXPERT  # one shared expert of the routed width, no shared gate
ROUTER = E * D
KV_WIDTH = 2 * KV_HEADS * HD  # K and V elements per cached position, per layer
PER_POSITION = 4 * HEADS * HD  # QK^T and PV FLOPs for one query and one attended position, per layer

# chosen hardware values (round, and unlike any preset's)
PEAK, BW, BW_EFF = 100e12, 1e12, 0.8
SHARE, HALF = 0.75, 50.0
MOE_EFF, BLOCK = 0.6, 16
ATT_EFF, ATT_HALF = 0.45, 300.0
LAUNCH, MOE_FIXED, STEP_FIXED, LAYER_FIXED = 2e-6, 5e-6, 30e-6, 7e-6


def moe_model(shared: int = 1):
    moe = MoESpec(n_experts=E, top_k=K, expert_ffn=F_EXPERT, n_shared=shared, shared_ffn=F_EXPERT if shared else 0)
    return build_spec(name="small-moe", family="qwen2_moe", vocab_size=V, d_model=D, n_layers=L, ffn_dim=F_DENSE,
                      attention=AttentionSpec(n_heads=HEADS, n_kv_heads=KV_HEADS, head_dim=HD), moe=moe,
                      moe_layers=MOE_LAYERS)


def dense_model():
    return build_spec(name="small-dense", family="llama", vocab_size=V, d_model=D, n_layers=L, ffn_dim=F_DENSE,
                      attention=AttentionSpec(n_heads=HEADS, n_kv_heads=KV_HEADS, head_dim=HD))


def hardware(**overrides):
    fields = dict(name="chosen", peak_flops={"bf16": PEAK}, memory_bandwidth=BW, bandwidth_efficiency=BW_EFF,
                  execution="gpu", gemm_efficiency={"bf16": SHARE}, gemm_half_rows=HALF,
                  moe_gemm_efficiency=MOE_EFF, moe_block_rows=BLOCK, attention_efficiency=ATT_EFF,
                  attention_half_context=ATT_HALF, kernel_launch_s=LAUNCH, moe_layer_overhead_s=MOE_FIXED,
                  layer_overhead_s=LAYER_FIXED,
                  step_overhead_s=STEP_FIXED, compute_efficiency=0.9)
    fields.update(overrides)
    return replace(load_hardware("H100-SXM"), **fields)


# --- the hand reference ----------------------------------------------------------------------------------

def rate(rows: float) -> float:
    return PEAK * SHARE * rows / (rows + HALF)


def attention_rate(context: float) -> float:
    return PEAK * ATT_EFF * context / (context + ATT_HALF)


def op(flops: float, nbytes: float, compute_s: float, launches: float, fixed_s: float = 0.0) -> dict:
    memory_s = nbytes / (BW * BW_EFF)
    launch_s = launches * LAUNCH + fixed_s
    return dict(flops=flops, bytes=nbytes, compute_seconds=compute_s, memory_seconds=memory_s,
                launch_seconds=launch_s, seconds=max(compute_s, memory_s) + launch_s)


def gemm(rows: float, params: float, layers: int, launches: int) -> dict:
    """`layers` GEMMs of rows x params (bf16 weights read once per layer)."""
    flops = 2 * rows * params * layers
    return op(flops, 2 * params * layers, flops / rate(rows), launches * layers)


def touched(tokens: float) -> float:
    return E * (1 - (1 - K / E) ** tokens)


def hand_ops(moe: bool, tokens: float, logit_rows: float, attention: dict) -> dict:
    """Every operator of one tp1 step over `tokens` tokens; `attention` is the attention operator's entry."""
    ops = {"qkv_proj": gemm(tokens, QKV, L, 1), "o_proj": gemm(tokens, O_PROJ, L, 1)}
    ops.update(attention)
    dense_layers = N_DENSE if moe else L
    ops["ffn"] = gemm(tokens, FFN, dense_layers, 3)
    width = {"dense": F_DENSE, "moe": K * F_EXPERT + F_EXPERT}
    elementwise = dense_layers * tokens * (12 * D + 3 * width["dense"] + 2 * HEADS * HD) * 2
    if moe:
        flops = 2 * tokens * ROUTER * N_MOE
        ops["router"] = op(flops, 2 * ROUTER * N_MOE, flops / rate(tokens), 2 * N_MOE, MOE_FIXED * N_MOE)
        u = touched(tokens)
        per_expert = tokens * K / u
        padded = BLOCK * math.ceil(per_expert / BLOCK - 1e-9)
        issued = 2 * u * padded * EXPERT * N_MOE
        ops["experts"] = op(2 * tokens * K * EXPERT * N_MOE, 2 * u * EXPERT * N_MOE,
                            issued / (rate(padded) * MOE_EFF), 3 * N_MOE)
        ops["shared_experts"] = gemm(tokens, SHARED, N_MOE, 3)
        elementwise += N_MOE * tokens * (12 * D + 3 * width["moe"] + 2 * HEADS * HD) * 2
    ops["elementwise"] = op(0.0, elementwise, 0.0, 3 * L, L * LAYER_FIXED)
    ops["lm_head"] = gemm(logit_rows, V * D, 1, 1)
    ops["sampling"] = op(0.0, logit_rows * V * 4, 0.0, 3)
    ops["step"] = op(0.0, 0.0, 0.0, 0, STEP_FIXED)
    return ops


def hand_decode(moe: bool, batch: float, context: float) -> dict:
    attended = context + 1  # the new token attends to the cache and itself
    flops = batch * PER_POSITION * attended * L
    attention = op(flops, batch * KV_WIDTH * 2 * attended * L, flops / attention_rate(attended), 2 * L)
    return hand_ops(moe, batch, batch, {"attention_decode": attention})


def hand_prefill(moe: bool, batch: float, prompt: int) -> dict:
    pairs = prompt * (prompt + 1) / 2  # token t attends to positions 1..t
    flops = batch * pairs * PER_POSITION * L
    nbytes = batch * prompt * (KV_WIDTH * 2 + 2 * 2 * HEADS * HD) * L  # KV written, q in and out
    attention = op(flops, nbytes, flops / attention_rate(pairs / prompt), 2 * L)
    return hand_ops(moe, batch * prompt, batch, {"attention_prefill": attention})


def by_name(phase) -> dict:
    return {o.name: o for o in phase.operators}


def assert_ops(phase, expected: dict, rel: float = 1e-9) -> None:
    got = by_name(phase)
    assert set(got) == set(expected)
    for name, want in expected.items():
        o = got[name]
        for key, value in want.items():
            assert getattr(o, key) == pytest.approx(value, rel=rel, abs=1e-18), (name, key)
    assert phase.seconds == pytest.approx(sum(w["seconds"] for w in expected.values()), rel=rel)
    assert phase.flops == pytest.approx(sum(w["flops"] for w in expected.values()), rel=rel)


# --- tp1: each operator by hand --------------------------------------------------------------------------

@pytest.mark.parametrize("moe", [False, True])
@pytest.mark.parametrize("batch,context", [(1, 128), (7, 1000), (64, 128), (300, 50)])
def test_decode_step_operators_by_hand(moe, batch, context):
    spec = moe_model() if moe else dense_model()
    phase = decode_step(spec, hardware(), Workload(batch=batch, prompt=96, gen=64), context=context)
    assert_ops(phase, hand_decode(moe, batch, context))
    assert phase.comm_seconds == 0
    if moe:
        assert phase.distinct_experts_per_layer == pytest.approx(touched(batch), rel=1e-12)


@pytest.mark.parametrize("moe", [False, True])
@pytest.mark.parametrize("batch,prompt", [(1, 16), (1, 512), (8, 256)])
def test_prefill_operators_by_hand(moe, batch, prompt):
    spec = moe_model() if moe else dense_model()
    phase = prefill(spec, hardware(), Workload(batch=batch, prompt=prompt, gen=8))
    assert_ops(phase, hand_prefill(moe, batch, prompt))
    if moe:
        assert phase.distinct_experts_per_layer == pytest.approx(touched(batch * prompt), rel=1e-12)


def test_workload_decode_context_is_prompt_plus_half_the_generation():
    hw, wl = hardware(), Workload(batch=3, prompt=96, gen=64)
    assert decode_step(moe_model(), hw, wl).seconds == decode_step(moe_model(), hw, wl, context=128).seconds
    assert_ops(decode_step(moe_model(), hw, wl), hand_decode(True, 3, 128))


def test_expert_rows_are_padded_to_the_kernel_tile():
    """At batch 1 each of the k touched experts has one token, computed as a whole 16-row tile: the issued
    FLOPs are 16x the useful ones, at the curve's rate for 16 rows times moe_gemm_efficiency."""
    hw = hardware()
    experts = by_name(decode_step(moe_model(), hw, Workload(batch=1), context=10))["experts"]
    assert experts.flops == pytest.approx(2 * K * EXPERT * N_MOE)
    assert experts.compute_seconds == pytest.approx(2 * K * BLOCK * EXPERT * N_MOE / (rate(BLOCK) * MOE_EFF))
    assert padded_rows(hw, 1) == BLOCK and padded_rows(hw, BLOCK) == BLOCK and padded_rows(hw, BLOCK + 0.5) == 32
    assert padded_rows(hw, 0) == 0
    assert expert_flops_per_second(hw, "bf16", 17) == pytest.approx(rate(32) * MOE_EFF)
    # a coarser tile wastes more: 64-row tiles at batch 1 cost 4x the 16-row ones' compute
    coarse = by_name(decode_step(moe_model(), hardware(moe_block_rows=64), Workload(batch=1), context=10))
    assert coarse["experts"].compute_seconds == pytest.approx(
        2 * K * 64 * EXPERT * N_MOE / (rate(64) * MOE_EFF))


def test_shared_experts_and_top_k_change_only_their_operators():
    hw, wl = hardware(), Workload(batch=4)
    with_shared = by_name(decode_step(moe_model(shared=1), hw, wl, context=100))
    without = by_name(decode_step(moe_model(shared=0), hw, wl, context=100))
    assert "shared_experts" not in without
    assert with_shared["shared_experts"].flops == pytest.approx(2 * 4 * SHARED * N_MOE)
    for name in ("qkv_proj", "o_proj", "attention_decode", "router", "experts", "lm_head"):
        assert with_shared[name].seconds == without[name].seconds


@pytest.mark.parametrize("moe", [False, True])
def test_batch_one_decode_is_memory_bound_operator_by_operator(moe):
    """At batch 1 every GEMM streams its weights for one row. (The routed experts are the exception the
    padding makes: one token per expert computes a whole 16-row tile at the curve's 16-row rate.)"""
    phase = decode_step(moe_model() if moe else dense_model(), hardware(), Workload(batch=1, prompt=96, gen=64))
    assert phase.bound == "memory"
    for o in phase.operators:
        assert o.bound in ("memory", "overhead") or o.name == "experts", o.name


def test_long_prefill_is_compute_bound():
    phase = prefill(moe_model(), hardware(), Workload(batch=8, prompt=512))
    assert phase.bound == "compute"
    assert by_name(phase)["ffn"].bound == "compute"


def test_kernel_launches_and_fixed_costs():
    """With rates so high that compute and memory vanish, a step costs its launches and fixed costs alone."""
    hw = hardware(peak_flops={"bf16": 1e30}, memory_bandwidth=1e30, bandwidth_efficiency=1.0)
    phase = decode_step(moe_model(), hw, Workload(batch=1), context=10)
    launches = {"qkv_proj": L, "o_proj": L, "attention_decode": 2 * L, "ffn": 3 * N_DENSE, "router": 2 * N_MOE,
                "experts": 3 * N_MOE, "shared_experts": 3 * N_MOE, "elementwise": 3 * L, "lm_head": 1,
                "sampling": 3}
    got = by_name(phase)
    for name, n in launches.items():
        assert got[name].launches == n, name
    assert phase.seconds == pytest.approx(sum(launches.values()) * LAUNCH + N_MOE * MOE_FIXED + L * LAYER_FIXED
                                          + STEP_FIXED, rel=1e-6)
    no_fixed = decode_step(moe_model(), replace(hw, kernel_launch_s=0.0, moe_layer_overhead_s=0.0,
                                                layer_overhead_s=0.0, step_overhead_s=0.0),
                           Workload(batch=1), context=10)
    assert no_fixed.seconds < 1e-12
    assert "step" not in by_name(no_fixed)


def test_fp8_runs_at_the_fp8_peak_and_share_and_streams_one_byte_weights():
    hw = hardware(peak_flops={"bf16": PEAK, "fp8": 2 * PEAK}, gemm_efficiency={"bf16": SHARE, "fp8": 0.5})
    wl = Workload(batch=64, dtype="fp8", kv_dtype="bf16")
    ffn = by_name(decode_step(dense_model(), hw, wl, context=10))["ffn"]
    assert ffn.bytes == pytest.approx(FFN * L)  # one byte per weight
    assert ffn.compute_seconds == pytest.approx(2 * 64 * FFN * L / (2 * PEAK * 0.5 * 64 / (64 + HALF)))
    assert gemm_flops_per_second(hw, "fp8", 64) == pytest.approx(2 * PEAK * 0.5 * 64 / (64 + HALF))
    # a dtype without its own share falls back to compute_efficiency, one without its own peak to bf16's
    assert gemm_flops_per_second(hardware(gemm_efficiency={}), "bf16", 1e12) == pytest.approx(PEAK * 0.9)
    assert gemm_flops_per_second(hw, "int8", 1e12) == pytest.approx(PEAK * SHARE)


def test_fp8_kv_cache_halves_the_decode_attention_read():
    hw, wl = hardware(), Workload(batch=4)
    bf16 = by_name(decode_step(dense_model(), hw, wl, context=500))["attention_decode"]
    fp8 = by_name(decode_step(dense_model(), hw, replace(wl, kv_dtype="fp8"), context=500))["attention_decode"]
    assert fp8.bytes == pytest.approx(bf16.bytes / 2)
    assert bf16.bytes == pytest.approx(4 * KV_WIDTH * 2 * 501 * L)


# --- attention variants ----------------------------------------------------------------------------------

def test_sliding_window_limits_the_kv_read_and_the_flops():
    windowed = map_attention(dense_model(), lambda a: replace(a, sliding_window=64))
    att = by_name(decode_step(windowed, hardware(), Workload(batch=3), context=1000))["attention_decode"]
    assert att.bytes == pytest.approx(3 * KV_WIDTH * 2 * 64 * L)
    assert att.flops == pytest.approx(3 * PER_POSITION * 64 * L)
    assert att.compute_seconds == pytest.approx(att.flops / attention_rate(64))
    short = by_name(decode_step(windowed, hardware(), Workload(batch=3), context=20))["attention_decode"]
    assert short.bytes == pytest.approx(3 * KV_WIDTH * 2 * 21 * L)  # inside the window: everything
    # prefill: token t attends to min(t, 64) positions
    pre = by_name(prefill(windowed, hardware(), Workload(batch=1, prompt=300)))["attention_prefill"]
    assert pre.flops == pytest.approx(sum(min(t, 64) for t in range(1, 301)) * PER_POSITION * L)


LORA, NOPE, ROPE, MLA_V = 128, 32, 16, 64


def mla_model():
    a = AttentionSpec(kind="mla", n_heads=HEADS, n_kv_heads=HEADS, head_dim=MLA_V, kv_lora_rank=LORA,
                      qk_nope_head_dim=NOPE, qk_rope_head_dim=ROPE)
    return build_spec(name="small-mla", family="deepseek_v3", vocab_size=V, d_model=D, n_layers=L,
                      ffn_dim=F_DENSE, attention=a)


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_mla_decode_reads_the_latent_replicated_over_tp(tp):
    """Absorbed MLA decode: scores against the latent + rope key, values from the latent; every tp rank keeps
    the whole latent cache and computes its 1 / tp of the heads."""
    att = by_name(decode_step(mla_model(), hardware(), Workload(batch=5, gpus=tp), context=999))["attention_decode"]
    assert att.bytes == pytest.approx(5 * (LORA + ROPE) * 2 * 1000 * L)
    assert att.flops == pytest.approx(5 * 2 * HEADS * (2 * LORA + ROPE) * 1000 * L / tp)


# --- tensor parallel -------------------------------------------------------------------------------------

@pytest.mark.parametrize("tp", [2, 4, 8])
def test_tp_splits_every_gemm_and_adds_two_allreduces_per_layer(tp):
    hw, batch, context = hardware(), 16, 200
    one = by_name(decode_step(moe_model(), hw, Workload(batch=batch), context=context))
    got = by_name(decode_step(moe_model(), hw, Workload(batch=batch, gpus=tp, plan="tp"), context=context))
    for name in ("qkv_proj", "o_proj", "ffn", "shared_experts", "lm_head"):
        assert got[name].flops == pytest.approx(one[name].flops / tp), name
        assert got[name].bytes == pytest.approx(one[name].bytes / tp), name
        assert got[name].compute_seconds == pytest.approx(one[name].compute_seconds / tp), name  # same rows
    assert got["experts"].bytes == pytest.approx(one["experts"].bytes / tp)  # each expert's matrices split
    assert got["router"].flops == pytest.approx(one["router"].flops)  # every rank routes every token
    att = got["attention_decode"]
    assert att.flops == pytest.approx(one["attention_decode"].flops / tp)  # query heads split tp ways
    assert att.bytes == pytest.approx(one["attention_decode"].bytes / min(tp, KV_HEADS))  # no finer than a head
    assert gpu_model.kv_shards(moe_model().layers[0].attention, tp) == min(tp, KV_HEADS)
    nbytes = batch * D * 2  # bf16 activations of the step's tokens
    assert got["allreduce"].launches == 2 * L
    assert got["allreduce"].seconds == pytest.approx(2 * L * allreduce_seconds(hw, tp, nbytes), rel=1e-12)
    assert got["logits_gather"].seconds == pytest.approx(allgather_seconds(hw, tp, batch * V * 4), rel=1e-12)
    phase = decode_step(moe_model(), hw, Workload(batch=batch, gpus=tp, plan="tp"), context=context)
    assert phase.comm_seconds == pytest.approx(got["allreduce"].seconds + got["logits_gather"].seconds)


def test_tp1_has_no_collectives():
    for plan in ("tp", "ep"):
        phase = decode_step(moe_model(), hardware(), Workload(batch=8, gpus=1, plan=plan))
        assert phase.comm_seconds == 0
        assert not {"allreduce", "alltoall", "logits_gather", "pipeline_send"} & set(by_name(phase))


# --- expert parallel -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ep", [2, 4, 8])
def test_ep_runs_attention_data_parallel_and_splits_the_experts(ep):
    hw, batch, context = hardware(), 32, 200
    got = by_name(decode_step(moe_model(), hw, Workload(batch=batch, gpus=ep, plan="ep"), context=context))
    local = batch / ep  # tokens of this GPU's attention group
    ref = hand_decode(True, local, context)
    for name in ("qkv_proj", "o_proj", "attention_decode", "ffn", "shared_experts", "lm_head", "elementwise"):
        assert got[name].flops == pytest.approx(ref[name]["flops"], rel=1e-12), name
        assert got[name].bytes == pytest.approx(ref[name]["bytes"], rel=1e-12), name
    u = touched(batch)  # the whole batch routes over all experts; this GPU holds 1 / ep of them
    assert got["experts"].bytes == pytest.approx(2 * u / ep * EXPERT * N_MOE)
    assert got["experts"].flops == pytest.approx(2 * batch * K / ep * EXPERT * N_MOE)
    padded = BLOCK * math.ceil(batch * K / u / BLOCK - 1e-9)  # rows per expert as at ep1
    assert got["experts"].compute_seconds == pytest.approx(
        2 * u / ep * padded * EXPERT * N_MOE / (rate(padded) * MOE_EFF))
    nbytes = local * K * D * 2  # dispatch (and combine) of this GPU's token-slots
    assert got["alltoall"].launches == 2 * N_MOE
    assert got["alltoall"].seconds == pytest.approx(2 * N_MOE * alltoall_seconds(hw, ep, nbytes), rel=1e-12)
    assert "allreduce" not in got


@pytest.mark.parametrize("spec,plan", [(dense_model(), "ep2"), (moe_model(), "ep3"), (moe_model(), "ep16")])
def test_ep_that_splits_no_expert_or_an_expert_is_refused(spec, plan):
    with pytest.raises(MoelabError):
        decode_step(spec, hardware(), Workload(batch=8, gpus=Plan.parse(plan).gpus, plan=plan))


def test_tp_inside_ep_groups():
    hw, batch = hardware(), 32
    got = by_name(decode_step(moe_model(), hw, Workload(batch=batch, gpus=8, plan="tp2ep4"), context=100))
    local = batch / 4
    assert got["qkv_proj"].flops == pytest.approx(2 * local * QKV * L / 2)
    assert got["experts"].bytes == pytest.approx(2 * touched(batch) / 4 * EXPERT / 2 * N_MOE)
    assert got["allreduce"].seconds == pytest.approx(2 * L * allreduce_seconds(hw, 2, local * D * 2))
    assert got["alltoall"].seconds == pytest.approx(
        2 * N_MOE * alltoall_seconds(hw, 8, local * K * D * 2 / 2))


def test_replicas_split_the_batch():
    """tp2x4: four replicas of TP2, each with a quarter of the sequences (per-GPU costs of one replica)."""
    hw = hardware()
    four = decode_step(moe_model(), hw, Workload(batch=64, gpus=8, plan="tp2x4"), context=100)
    one = decode_step(moe_model(), hw, Workload(batch=16, gpus=2, plan="tp2"), context=100)
    assert four.seconds == pytest.approx(one.seconds)


# --- pipeline parallel -----------------------------------------------------------------------------------

@pytest.mark.parametrize("pp,batch", [(2, 16), (4, 64)])
def test_pp_latency_is_the_model_at_a_micro_batch_plus_the_sends(pp, batch):
    hw, wl = hardware(), Workload(batch=batch, gpus=pp, plan=f"pp{pp}")
    got = decode_step(moe_model(), hw, wl, context=100)
    micro = decode_step(moe_model(), hw, Workload(batch=batch // pp), context=100)
    sends = by_name(got)["pipeline_send"]
    assert sends.launches == pp - 1
    assert sends.seconds == pytest.approx((pp - 1) * p2p_seconds(hw, batch / pp * D * 2, False), rel=1e-12)
    assert got.seconds == pytest.approx(micro.seconds + sends.seconds, rel=1e-9)


def test_pp_across_nodes_sends_over_the_network():
    hw = hardware()
    got = by_name(decode_step(moe_model(), hw, Workload(batch=16, gpus=16, plan="pp2tp8"), context=100))
    assert got["pipeline_send"].seconds == pytest.approx(p2p_seconds(hw, 8 * D * 2, True), rel=1e-12)


# --- step_cost: a mixed step ---------------------------------------------------------------------------------

def test_mixed_step_adds_prefill_tokens_to_the_gemm_rows():
    hw = hardware()
    load = StepLoad(decode_seqs=10, decode_context=300, prefill_seqs=1, prefill_tokens=200, prefill_past=0)
    got = by_name(step_cost(moe_model(), hw, Workload(), load))
    assert got["qkv_proj"].flops == pytest.approx(2 * 210 * QKV * L)
    assert got["qkv_proj"].compute_seconds == pytest.approx(2 * 210 * QKV * L / rate(210))
    assert got["lm_head"].flops == pytest.approx(2 * 11 * V * D)  # one logit row per decoding seq and per chunk
    assert got["attention_decode"].bytes == pytest.approx(10 * KV_WIDTH * 2 * 301 * L)
    assert got["attention_prefill"].flops == pytest.approx(200 * 201 / 2 * PER_POSITION * L)


def test_chunk_over_a_cached_past_attends_to_it():
    hw = hardware()
    load = StepLoad(prefill_seqs=1, prefill_tokens=100, prefill_past=400)
    att = by_name(step_cost(dense_model(), hw, Workload(), load))["attention_prefill"]
    pairs = sum(range(401, 501))
    assert att.flops == pytest.approx(pairs * PER_POSITION * L)
    assert att.bytes == pytest.approx((KV_WIDTH * 2 * 500 + 100 * 2 * 2 * HEADS * HD) * L)
    assert att.compute_seconds == pytest.approx(att.flops / attention_rate(pairs / 100))


# --- the efficiency curve and properties -----------------------------------------------------------------

@given(rows=st.floats(0.01, 1e7), more=st.floats(1.001, 100.0))
def test_gemm_curve_is_below_its_share_and_rises_with_rows(rows, more):
    hw = hardware()
    low, high = gemm_flops_per_second(hw, "bf16", rows), gemm_flops_per_second(hw, "bf16", rows * more)
    assert 0 < low < high <= PEAK * SHARE
    assert low == pytest.approx(PEAK * SHARE * rows / (rows + HALF))


wl_batches = st.integers(1, 2048)
contexts = st.integers(0, 32768)


@settings(max_examples=40, deadline=None)
@given(batch=wl_batches, context=contexts, moe=st.booleans(), plan=st.sampled_from(["tp1", "tp2", "ep4", "tp2ep2"]))
def test_decode_step_monotone_in_batch_and_context(batch, context, moe, plan):
    spec = moe_model() if moe else dense_model()
    if not moe and "ep" in plan:
        plan = "tp2"
    hw = hardware()
    gpus = Plan.parse(plan).gpus
    base = decode_step(spec, hw, Workload(batch=batch, gpus=gpus, plan=plan), context=context).seconds
    assert decode_step(spec, hw, Workload(batch=batch + 1, gpus=gpus, plan=plan), context=context).seconds >= base
    assert decode_step(spec, hw, Workload(batch=batch, gpus=gpus, plan=plan), context=context + 7).seconds >= base


@settings(max_examples=40, deadline=None)
@given(prompt=st.integers(1, 16384), batch=st.integers(1, 16), moe=st.booleans())
def test_prefill_monotone_in_prompt(prompt, batch, moe):
    spec, hw = (moe_model() if moe else dense_model()), hardware()
    a = prefill(spec, hw, Workload(batch=batch, prompt=prompt)).seconds
    assert prefill(spec, hw, Workload(batch=batch, prompt=prompt + 1)).seconds >= a


@settings(max_examples=40, deadline=None)
@given(decode=st.integers(0, 512), context=contexts, chunk=st.integers(0, 4096), past=st.integers(0, 8192),
       plan=st.sampled_from(["tp1", "tp4", "ep2", "pp2tp2"]), launch=st.floats(0, 1e-5))
def test_operators_sum_to_the_phase_and_cost_at_least_their_launches(decode, context, chunk, past, plan, launch):
    if decode + chunk == 0:
        decode = 1
    load = StepLoad(decode_seqs=decode, decode_context=context, prefill_seqs=1 if chunk else 0,
                    prefill_tokens=chunk, prefill_past=past if chunk else 0)
    hw = hardware(kernel_launch_s=launch)
    phase = step_cost(moe_model(), hw, Workload(gpus=Plan.parse(plan).gpus, plan=plan), load)
    assert phase.seconds == pytest.approx(sum(o.seconds for o in phase.operators), rel=1e-12)
    for o in phase.operators:
        assert o.seconds >= o.launch_seconds >= 0
        assert o.launch_seconds >= o.launches * launch * (1 - 1e-12) or o.name in (
            "allreduce", "alltoall", "logits_gather", "pipeline_send", "step")
        assert o.flops >= 0 and o.bytes >= 0


def test_compute_bound_share_rises_with_batch():
    hw, spec = hardware(), dense_model()

    def share(batch: int) -> float:
        ph = decode_step(spec, hw, Workload(batch=batch), context=64)
        return sum(o.seconds for o in ph.operators if o.bound == "compute") / ph.seconds

    shares = [share(b) for b in (1, 4, 16, 64, 256, 1024, 4096)]
    assert all(a <= b + 1e-12 for a, b in zip(shares, shares[1:], strict=False)), shares
    assert shares[0] < 0.05 and shares[-1] > 0.5


# --- eager execution stays the eager model ---------------------------------------------------------------

def test_eager_hardware_uses_the_eager_model():
    """A hardware with execution="eager" is priced by cost.eager: no GPU operators, and kernel_launch_s
    (a GPU field) changes nothing."""
    hw = hardware(execution="eager", elementwise_bandwidth=20e9)
    wl = Workload(batch=2, prompt=64, gen=8)
    ph = decode_step(moe_model(), hw, wl)
    assert ph.operators == () and ph.seconds > 0
    assert decode_step(moe_model(), replace(hw, kernel_launch_s=1.0), wl).seconds == ph.seconds
    assert prefill(moe_model(), hw, wl).seconds > 0
