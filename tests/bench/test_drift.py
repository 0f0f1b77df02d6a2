"""moelab.bench.drift: the calibration scaled by how much slower or faster the reference probes run now."""

from dataclasses import replace

import pytest

from moelab.bench.drift import Drift, drift, scaled
from moelab.cost.roofline import Workload, decode_step, prefill
from moelab.spec.hardware import load_hardware
from moelab.spec.presets import load_model


def cpu():
    return replace(load_hardware("H100-SXM"), name="cpu", execution="eager", elementwise_bandwidth=2e10,
                   attention_flops=1e11, attention_bandwidth=1e10, gemv_bandwidth=2e10, step_overhead_s=1e-4,
                   layer_overhead_s=5e-5, moe_layer_overhead_s=1e-4, expert_overhead_s=2e-5,
                   attention_head_overhead_s=1e-6)


def test_drift_is_the_ratio_of_medians_and_none_without_a_reference():
    now = {"compute": [2.0, 2.2, 1.8], "overhead": [0.5, 0.6, 0.4]}
    d = drift({"compute_s": 1.0, "overhead_s": 1.0}, now)
    assert (d.compute, d.overhead) == (2.0, 0.5) and d.largest == 1.0
    assert drift(None, now) is None and drift({"compute_s": 1.0}, now) is None


def test_a_machine_twice_as_slow_everywhere_predicts_twice_the_time():
    spec, hw = load_model("mixtral-8x7b"), cpu()
    wl = Workload(batch=4, prompt=64, gen=16)
    slow = scaled(hw, Drift(2.0, 2.0))
    for phase in (prefill, decode_step):
        assert phase(spec, slow, wl).seconds == pytest.approx(2 * phase(spec, hw, wl).seconds, rel=1e-9)


def test_compute_and_overhead_ratios_act_on_their_own_terms():
    hw = cpu()
    s = scaled(hw, Drift(2.0, 3.0))
    assert s.peak_flops["bf16"] == hw.peak_flops["bf16"] / 2 and s.memory_bandwidth == hw.memory_bandwidth / 2
    assert s.step_overhead_s == 3 * hw.step_overhead_s and s.expert_overhead_s == 3 * hw.expert_overhead_s
    assert scaled(hw, Drift(1.0, 1.0)) == hw
