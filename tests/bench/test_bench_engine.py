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


def test_gpu_presets_keep_the_plain_roofline():
    hw = load_hardware("H100-SXM")
    assert hw.elementwise_bandwidth == 0 and hw.step_overhead_s == 0 and hw.expert_overhead_s == 0
    d = decode_step(tiny_moe(), hw, Workload(batch=8))
    assert d.seconds == pytest.approx(max(d.compute_seconds, d.memory_seconds) + d.overhead_seconds)


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
