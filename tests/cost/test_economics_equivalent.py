"""Energy and dollars per token, training cost, and the two dense equivalents, against hand computations."""

from dataclasses import replace

import pytest

from moelab.cost.economics import serving_economics, training_cost
from moelab.cost.equivalent import dense_twin, heuristic_dense_equivalent, workload_dense_equivalent
from moelab.cost.params import count_params
from moelab.cost.roofline import Phase, Workload, decode_step
from moelab.errors import MoelabError
from moelab.spec import AttentionSpec, HardwareSpec, build_spec, load_hardware, load_model


def gpu(**overrides) -> HardwareSpec:
    fields = dict(name="round", peak_flops={"bf16": 100e12, "fp8": 200e12}, memory_bytes=80e9,
                  memory_bandwidth=1e12, intra_node_bandwidth=100e9, intra_node_latency_s=1e-5,
                  inter_node_bandwidth=10e9, inter_node_latency_s=5e-5, tdp_watts=500.0, usd_per_hour=3.6,
                  compute_efficiency=0.7)
    fields.update(overrides)
    return HardwareSpec(**fields)


def phase(seconds: float) -> Phase:
    return Phase(seconds=seconds, flops=1.0, bytes=1.0, compute_seconds=seconds, memory_seconds=0.0,
                 comm_seconds=0.0, overhead_seconds=0.0, bound="compute", distinct_experts_per_layer=0.0)


def test_serving_economics_by_hand():
    wl = Workload(batch=8, prompt=100, gen=100, gpus=2)
    out = serving_economics(gpu(), wl, phase(2.0), phase(0.05))
    # 2 s prefill + 100 steps of 0.05 s = 7 s on 2 GPUs of 500 W at $3.60/h each, for 8 * 100 = 800 tokens
    assert out["request_seconds"] == pytest.approx(7.0)
    assert out["output_tokens"] == 800
    assert out["joules_per_million_tokens"] == pytest.approx(2 * 500 * 7 * 1e6 / 800)  # 8.75e6 J
    assert out["kwh_per_million_tokens"] == pytest.approx(8.75e6 / 3.6e6)
    assert out["usd_per_million_tokens"] == pytest.approx(2 * 3.6 / 3600 * 7 * 1e6 / 800)  # $17.50
    assert out["usd_per_million_tokens"] == pytest.approx(17.5)
    assert out["watts"] == 1000
    assert out["usd_per_hour"] == pytest.approx(7.2)


def test_serving_cost_per_token_falls_with_batch_at_fixed_step_time():
    one = serving_economics(gpu(), Workload(batch=1, gen=10), phase(0.0), phase(0.01))
    many = serving_economics(gpu(), Workload(batch=10, gen=10), phase(0.0), phase(0.01))
    assert many["usd_per_million_tokens"] == pytest.approx(one["usd_per_million_tokens"] / 10)


# a small dense model counted by hand: V=1000, d=256, 2 layers, 4 heads of 64 (MHA), f=1024
V, D, L, F = 1000, 256, 2, 1024
SMALL = build_spec(name="small", family="llama", vocab_size=V, d_model=D, n_layers=L, ffn_dim=F,
                  attention=AttentionSpec(n_heads=4, n_kv_heads=4, head_dim=64))
SMALL_MATMUL = L * (4 * D * D + 3 * D * F)  # q, k, v, o and the SwiGLU FFN


def hand_training_flops(tokens: float, seq: int) -> float:
    # forward per token: 2 * (matmul params + lm_head) + attention over (seq + 1) / 2 positions on average,
    # each 4 * L * n_h * h_d FLOPs; backward twice the forward
    forward = 2 * (SMALL_MATMUL + D * V) + 4 * L * 4 * 64 * (seq + 1) / 2
    return 3 * forward * tokens


def test_training_cost_by_hand():
    tokens, seq, gpus, mfu = 1e9, 128, 8, 0.5
    out = training_cost(SMALL, gpu(), tokens, gpus, mfu=mfu, seq=seq)
    flops = hand_training_flops(tokens, seq)
    seconds = flops / (gpus * 100e12 * mfu)  # MFU is of the datasheet peak: compute_efficiency not applied
    assert out["flops"] == pytest.approx(flops, rel=1e-12)
    assert out["flops_per_token"] == pytest.approx(flops / tokens, rel=1e-12)
    assert out["seconds"] == pytest.approx(seconds, rel=1e-12)
    assert out["gpu_hours"] == pytest.approx(gpus * seconds / 3600, rel=1e-12)
    assert out["usd"] == pytest.approx(gpus * seconds / 3600 * 3.6, rel=1e-12)
    assert out["joules"] == pytest.approx(gpus * seconds * 500, rel=1e-12)


def test_training_cost_peak_by_dtype():
    tokens = 1e9
    bf16 = training_cost(SMALL, gpu(), tokens, 1, dtype="bf16")["seconds"]
    assert training_cost(SMALL, gpu(), tokens, 1, dtype="fp8")["seconds"] == pytest.approx(bf16 / 2)
    # int4 is weight-only: its matmuls run at the bf16 peak; int8 is absent here and falls back to bf16
    assert training_cost(SMALL, gpu(), tokens, 1, dtype="int4")["seconds"] == pytest.approx(bf16)
    assert training_cost(SMALL, gpu(), tokens, 1, dtype="int8")["seconds"] == pytest.approx(bf16)


def test_training_cost_of_a_moe_uses_active_params():
    spec = load_model("mixtral-8x7b")
    p = count_params(spec)
    out = training_cost(spec, gpu(), 1e9, 1, seq=4096)
    non_embedding_active = p.active - p.embedding
    # 6 * N_active * tokens within the attention term (about 2% for Mixtral at 4096)
    assert out["flops_per_token"] == pytest.approx(6 * non_embedding_active, rel=0.05)
    assert out["flops_per_token"] > 6 * non_embedding_active
    assert out["flops_per_token"] < 6 * (p.total - p.embedding) / 3


@pytest.mark.parametrize("kwargs", [dict(tokens=0, gpus=1), dict(tokens=1e9, gpus=0),
                                    dict(tokens=1e9, gpus=1, mfu=0.0), dict(tokens=1e9, gpus=1, mfu=1.5)])
def test_training_cost_rejects_bad_inputs(kwargs):
    with pytest.raises(MoelabError):
        training_cost(SMALL, gpu(), **kwargs)


# --- dense equivalents -----------------------------------------------------------------------------------

MIXTRAL_TOTAL, MIXTRAL_ACTIVE = 46_702_792_704, 12_879_925_248


def test_heuristic_dense_equivalent():
    assert heuristic_dense_equivalent(load_model("mixtral-8x7b")) == pytest.approx(
        MIXTRAL_TOTAL / (8 ** 0.44 / 2 ** 0.63), rel=1e-12)  # about 28.9B
    assert heuristic_dense_equivalent(load_model("llama-3-8b")) == 8_030_261_248


def test_dense_twin_shape():
    twin = dense_twin(load_model("mixtral-8x7b"), 20000)
    assert not twin.is_moe and twin.ffn_dim == 20000
    # Mixtral without its experts and routers, with a 20000-wide FFN in each of its 32 layers
    assert count_params(twin).total == MIXTRAL_TOTAL - 32 * 8 * 3 * 4096 * 14336 - 32 * 8 * 4096 + 32 * 3 * 4096 * 20000


@pytest.mark.parametrize("batch", [1, 64])
def test_workload_equivalent_of_a_dense_model_is_itself(batch):
    spec, hw = load_model("llama-3-8b"), load_hardware("H100-SXM")
    out = workload_dense_equivalent(spec, hw, Workload(batch=batch))
    one_ffn_step = 32 * 3 * 4096  # the params of one more unit of FFN width in every layer
    assert abs(out["params"] - 8_030_261_248) <= one_ffn_step
    assert abs(out["ffn_dim"] - 14336) <= 1


def mixtral_equivalent(batch: int, hw=None) -> float:
    return workload_dense_equivalent(load_model("mixtral-8x7b"), hw or load_hardware("H100-SXM"),
                                     Workload(batch=batch, prompt=512, gen=256))["params"]


def memory_bound_gpu():
    """An H100 with compute so fast that every decode operator is memory-bound at these batches."""
    return replace(load_hardware("H100-SXM"), peak_flops={"bf16": 1e18}, gemm_efficiency={"bf16": 1.0},
                   kernel_launch_s=0.0, moe_layer_overhead_s=0.0, step_overhead_s=0.0)


def compute_bound_gpu():
    """An H100 with memory so fast that every operator is compute-bound, and an ideal GEMM curve (full peak at
    any rows, expert rows unpadded): a step is its FLOPs / peak."""
    return replace(load_hardware("H100-SXM"), memory_bandwidth=1e18, gemm_efficiency={"bf16": 1.0},
                   gemm_half_rows=0.0, moe_gemm_efficiency=1.0, moe_block_rows=1, attention_efficiency=1.0,
                   attention_half_context=0.0, kernel_launch_s=0.0, moe_layer_overhead_s=0.0, step_overhead_s=0.0)


def test_mixtral_at_batch_1_costs_about_its_active_size():
    eq = mixtral_equivalent(1)
    assert MIXTRAL_ACTIVE < eq < MIXTRAL_TOTAL
    assert eq - MIXTRAL_ACTIVE < MIXTRAL_TOTAL - eq


def test_mixtral_at_batch_512_costs_nearer_its_total():
    """Memory-bound, batch 512 touches all 8 experts in every layer: the MoE streams its total size."""
    eq = mixtral_equivalent(512, memory_bound_gpu())
    assert MIXTRAL_ACTIVE < eq < MIXTRAL_TOTAL * 1.02
    assert MIXTRAL_TOTAL - eq < eq - MIXTRAL_ACTIVE


def test_workload_equivalent_grows_with_batch_while_memory_bound():
    """Each doubling of the batch touches more experts (7.2 of 8 at batch 8, all from 32): while the step is
    memory-bound the equivalent grows until it reaches the total. Past that it stays near the total, a little
    under it as the batch grows: the twin's one wide FFN moves more activation bytes per token than top-2 of
    8 experts (elementwise traffic scales with the FFN width a token runs through)."""
    hw = memory_bound_gpu()
    assert decode_step(load_model("mixtral-8x7b"), hw, Workload(batch=128, prompt=512, gen=256)).bound == "memory"
    values = [mixtral_equivalent(b, hw) for b in (1, 2, 4, 8, 16, 32)]
    assert all(a <= b for a, b in zip(values, values[1:], strict=False)), values
    assert values[0] < 0.35 * MIXTRAL_TOTAL
    for b in (32, 64, 128):
        assert mixtral_equivalent(b, hw) == pytest.approx(MIXTRAL_TOTAL, rel=0.03)


def test_workload_equivalent_is_the_active_size_when_both_are_compute_bound():
    """At a huge batch of short sequences both step times are FLOPs / peak: the twin matches the MoE's
    FLOPs per token, i.e. its active matmul params (the routers aside)."""
    spec, hw = load_model("mixtral-8x7b"), compute_bound_gpu()
    wl = Workload(batch=8192, prompt=32, gen=2)
    assert decode_step(spec, hw, wl).bound == "compute"
    out = workload_dense_equivalent(spec, hw, wl)
    assert out["params"] == pytest.approx(MIXTRAL_ACTIVE, rel=0.01)
    twin = dense_twin(spec, out["ffn_dim"])
    assert decode_step(twin, hw, replace(wl, plan="tp")).bound == "compute"


@pytest.mark.parametrize("name,batch", [("llama-3-8b", 1), ("mixtral-8x7b", 1), ("mixtral-8x7b", 16)])
def test_workload_equivalent_is_the_narrowest_twin_at_least_as_slow(name, batch):
    """The reported width w: the twin of width w takes at least the model's step time, a width 0.5% narrower
    (the bisection's tolerance) less."""
    spec, hw = load_model(name), load_hardware("H100-SXM")
    wl = Workload(batch=batch)
    out = workload_dense_equivalent(spec, hw, wl)
    target = decode_step(spec, hw, wl).seconds
    assert out["decode_step_seconds"] == target
    assert decode_step(dense_twin(spec, out["ffn_dim"]), hw, wl).seconds >= target
    narrower = out["ffn_dim"] - max(1, out["ffn_dim"] // 200)
    assert decode_step(dense_twin(spec, narrower), hw, wl).seconds < target
    assert out["params"] == count_params(dense_twin(spec, out["ffn_dim"])).total
