"""The engine's CPU terms that calibration feeds: eager op classes add up; GPU presets are unchanged."""

import pytest
from bench_hardware import FIXED_HW

from moelab.cost.roofline import Workload, decode_step, eager_elements_per_token, prefill
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
