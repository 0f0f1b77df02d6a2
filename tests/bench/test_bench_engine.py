"""The engine's CPU terms that calibration feeds: eager op classes add up; GPU presets are unchanged."""

import pytest
from bench_hardware import FIXED_HW

from moelab.cost.eager import eager_elements_per_token
from moelab.cost.roofline import Workload, decode_step, prefill
from moelab.spec import load_hardware
from moelab.spec.hardware import hardware_from_dict
from moelab.train.presets import tiny_dense, tiny_moe


def test_eager_phase_adds_op_classes():
    hw = hardware_from_dict("cpu", FIXED_HW)
    spec = tiny_dense()
    wl = Workload(batch=4, prompt=64, gen=8, dtype="fp32", kv_dtype="fp32")
    pre = prefill(spec, hw, wl)
    # op classes run one after another: compute + memory + fixed overheads, nothing overlapped
    assert pre.seconds == pytest.approx(pre.compute_seconds + pre.memory_seconds + pre.overhead_seconds)
    elementwise = 4 * 64 * eager_elements_per_token(spec) * 4 / hw.elementwise_bandwidth
    assert pre.memory_seconds > elementwise
    one = decode_step(spec, hw, Workload(batch=1, prompt=64, gen=8, dtype="fp32", kv_dtype="fp32"))
    assert one.overhead_seconds == pytest.approx(hw.step_overhead_s + 4 * hw.layer_overhead_s
                                                 + 1 * 4 * 4 * hw.attention_head_overhead_s)


def test_moe_overhead_counts_touched_experts():
    hw = hardware_from_dict("cpu", FIXED_HW)
    spec = tiny_moe()
    steps = {b: decode_step(spec, hw, Workload(batch=b, prompt=64, gen=8, dtype="fp32", kv_dtype="fp32"))
             for b in (1, 16)}
    for b, d in steps.items():
        heads = b * 4 * 4 * hw.attention_head_overhead_s
        assert d.overhead_seconds == pytest.approx(
            hw.step_overhead_s + 4 * hw.layer_overhead_s + heads
            + 4 * (hw.moe_layer_overhead_s + d.distinct_experts_per_layer * hw.expert_overhead_s))
    assert steps[1].distinct_experts_per_layer == pytest.approx(2.0)


def test_gpu_presets_take_the_operator_model_not_the_eager_one():
    """A GPU preset's step is its operators' sum (cost.gpu); the eager CPU figures do not enter it."""
    from dataclasses import replace

    hw = load_hardware("H100-SXM")
    assert hw.execution == "gpu" and hw.elementwise_bandwidth == 0
    wl = Workload(batch=8)
    d = decode_step(tiny_moe(), hw, wl)
    assert d.operators and d.seconds == pytest.approx(sum(op.seconds for op in d.operators))
    eagerish = replace(hw, elementwise_bandwidth=1e9, attention_head_overhead_s=1.0, fresh_page_bandwidth=1e9)
    assert decode_step(tiny_moe(), eagerish, wl).seconds == pytest.approx(d.seconds)
    assert not decode_step(tiny_moe(), replace(hw, execution="eager", elementwise_bandwidth=1e9), wl).operators


def test_fresh_page_faults_charge_activation_tensors_above_the_threshold():
    from moelab.train.presets import TRAIN_PRESETS

    spec = TRAIN_PRESETS["tiny-dense-wide"]()  # ffn_dim 2048: tokens x 2048 fp32 tensors pass 32 MB at 4096 tokens
    plain = hardware_from_dict("cpu", FIXED_HW)
    assert plain.fresh_page_bandwidth == 0  # off unless calibrated
    hw = hardware_from_dict("cpu", {**FIXED_HW, "fresh_page_mb": 32.5, "fresh_page_bandwidth_gbps": 4})
    for batch, faulting in ((16, 0.0), (64, 4 * 4 * 64 * 128 * 2048 * 4.0)):  # 4 layers x gate, up, silu, product
        wl = Workload(batch=batch, prompt=128, gen=8, dtype="fp32", kv_dtype="fp32")
        extra = prefill(spec, hw, wl).seconds - prefill(spec, plain, wl).seconds
        assert extra == pytest.approx(faulting / 4e9)
        assert decode_step(spec, hw, wl).seconds == pytest.approx(decode_step(spec, plain, wl).seconds)


def test_gpu_presets_have_no_fresh_page_term():
    for name in ("H100-SXM",):
        hw = load_hardware(name)
        assert hw.fresh_page_bandwidth == 0 and hw.fresh_page_bytes == 0


def test_expert_row_shares_are_the_binomial_probabilities():
    """Each routed expert's rows are Binomial(tokens, k/E); the shares are of the touched experts (rows >= 1)."""
    from math import comb

    from moelab.cost.eager import SMALL_GEMM_ROWS, _row_shares

    moe = tiny_moe().moe  # 8 experts, top-2: q = 1/4
    q = moe.top_k / moe.n_experts
    for tokens in (1, 3, 16, 64, 128):
        pmf = [comb(tokens, r) * q ** r * (1 - q) ** (tokens - r) for r in range(tokens + 1)]
        touched = 1 - pmf[0]
        one, few = _row_shares(moe, tokens)
        assert one == pytest.approx(pmf[1] / touched, rel=1e-9, abs=1e-15)
        assert few == pytest.approx(sum(pmf[2:SMALL_GEMM_ROWS + 1]) / touched, rel=1e-9, abs=1e-15)
    assert _row_shares(moe, 1) == pytest.approx((1.0, 0.0))


def test_few_row_products_read_weights_at_the_few_row_bandwidth():
    """Decode weights stream at gemv_bandwidth for one row, at memory_bandwidth (measured at 2-8 rows) up to
    SMALL_GEMM_ROWS rows, and at the packed-GEMM rate (here the cache's, the weights fit) beyond: the weight
    term of a dense decode step moves by exactly weights * (1/b1 - 1/b2) between regimes."""
    from moelab.cost.eager import SMALL_GEMM_ROWS
    from moelab.cost.memory import model_weight_bytes

    raw = {**FIXED_HW, "cache_bandwidth_gbps": 5, "elementwise_bandwidth_gbps": 15}
    hw = hardware_from_dict("cpu", raw)
    spec = tiny_dense()
    weights = model_weight_bytes(spec, "fp32").always_read

    def weight_seconds(bandwidth_gbps: float) -> float:
        return weights / (bandwidth_gbps * 1e9)

    def memory(batch: int, **changes) -> float:
        h = hardware_from_dict("cpu", {**raw, **changes})
        return decode_step(spec, h, Workload(batch=batch, prompt=64, gen=8, dtype="fp32",
                                             kv_dtype="fp32")).memory_seconds

    for batch, bandwidth in ((1, raw["gemv_bandwidth_gbps"]), (4, raw["memory_bandwidth_gbps"]),
                             (SMALL_GEMM_ROWS + 1, raw["cache_bandwidth_gbps"])):
        # doubling the regime's bandwidth removes half of its weight time, and nothing else
        key = {1: "gemv_bandwidth_gbps", 4: "memory_bandwidth_gbps"}.get(batch, "cache_bandwidth_gbps")
        saved = memory(batch) - memory(batch, **{key: 2 * bandwidth})
        assert saved == pytest.approx(weight_seconds(bandwidth) / 2, rel=1e-6), batch
    assert hw.cache_bytes > weights  # the regime above SMALL_GEMM_ROWS is the in-cache rate
