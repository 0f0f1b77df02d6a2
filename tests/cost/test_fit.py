"""moelab.cost.fit: least squares on log time recovers hardware values that made the measurements.

The measurements are made by the engine itself (cost.measurement.predict) on a hardware spec with known values,
so the truth is exact and independent of the fit's starting point (the preset's values, which change as the
presets are fitted: no default value is pinned here, only the truth the test sets)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from moelab.cost import fit as fitmod
from moelab.cost.fit import PARAMETERS, fit, value_of, with_values
from moelab.cost.measurement import Measurement, predict
from moelab.errors import MoelabError
from moelab.spec.hardware import load_hardware
from moelab.spec.presets import load_model

MODELS = {"llama-3-8b": "tp1", "mixtral-8x7b": "tp2"}
# The truth, as factors of the preset's value (step_overhead_us: added µs), so that it differs from the start
# whatever the presets' values become.
SHIFT = {"gemm_efficiency.bf16": 0.75, "gemm_half_rows": 2.5, "bandwidth_efficiency": 0.8,
         "step_overhead_us": 350.0, "attention_efficiency": 0.7, "moe_gemm_efficiency": 0.65}


@pytest.fixture(scope="module")
def specs():
    return {name: load_model(name) for name in MODELS}


@pytest.fixture(scope="module")
def hw():
    return load_hardware("H100-SXM")


def _truth(hw, keys=SHIFT):
    out = {}
    for key in keys:
        start = value_of(hw, PARAMETERS[key])
        out[key] = start + SHIFT[key] if key == "step_overhead_us" else start * SHIFT[key]
        assert PARAMETERS[key].low < out[key] < PARAMETERS[key].high
    return out


@pytest.fixture(scope="module")
def truth(hw):
    return _truth(hw)


def _points(specs, truth_hw, noise=None):
    """Static TTFT and TPOT over batches and prompts, measured on `truth_hw`; `noise(i)`: a factor per point."""
    out = []
    for model, plan in MODELS.items():
        for batch in (1, 8, 64, 256):
            for prompt in (128, 2048, 16384):
                for metric in ("ttft_ms", "tpot_ms"):
                    m = Measurement(model=model, hardware="H100-SXM", plan=plan, dtype="bf16", kv_dtype="bf16",
                                    input=prompt, output=128, mode="static", metric=metric, value=1.0, batch=batch,
                                    name=f"{model}-b{batch}-p{prompt}-{metric}")
                    value = predict(m, specs[model], truth_hw) * (noise(len(out)) if noise else 1.0)
                    out.append(replace(m, value=value))
    return out


def test_parameters_name_hardware_file_keys_within_bounds(hw):
    for key, p in PARAMETERS.items():
        assert p.low < p.high
        assert not p.log or p.low > 0
        hw2 = with_values(hw, {key: (p.low + p.high) / 2})
        assert value_of(hw2, p) == pytest.approx((p.low + p.high) / 2)
    assert "moe_block_rows" not in PARAMETERS  # an integer tile: not fitted


def test_recovers_known_values_without_noise(specs, hw, truth):
    truth_hw = with_values(hw, truth)
    result = fit(_points(specs, truth_hw), hw, list(truth), specs)
    assert result.converged
    for key, value in truth.items():
        assert result.before[key] == pytest.approx(value_of(hw, PARAMETERS[key]))
        assert result.values[key] == pytest.approx(value, rel=0.01), key
    assert result.median_after < 1e-3 < result.median_before
    # the fitted hardware predicts what the truth did
    m = _points(specs, truth_hw)[5]
    assert predict(m, specs[m.model], result.hardware["H100-SXM"]) == pytest.approx(m.value, rel=1e-3)


def test_recovers_within_tolerance_with_5_percent_noise(specs, hw, truth):
    truth_hw = with_values(hw, truth)
    factors = [1.05, 0.95, 1.03, 0.97, 1.0, 1.04, 0.96, 1.02]  # deterministic, +-5%, mean about 1
    points = _points(specs, truth_hw, noise=lambda i: factors[(i * 3) % len(factors)])
    result = fit(points, hw, list(truth), specs)
    assert result.median_after <= 0.05
    for key in ("gemm_efficiency.bf16", "gemm_half_rows", "bandwidth_efficiency", "attention_efficiency",
                "moe_gemm_efficiency"):
        assert result.values[key] == pytest.approx(truth[key], rel=0.1), key  # measured: within 3%
    # a fixed cost under long prefills is the least determined: measured 35% off
    assert result.values["step_overhead_us"] == pytest.approx(truth["step_overhead_us"], rel=0.5)


def test_deterministic(specs, hw, truth):
    points = _points(specs, with_values(hw, truth))[:12]
    a = fit(points, hw, ["gemm_efficiency.bf16", "bandwidth_efficiency"], specs)
    b = fit(points, hw, ["gemm_efficiency.bf16", "bandwidth_efficiency"], specs)
    assert a.values == b.values and a.iterations == b.iterations


def test_refuses_fewer_points_than_parameters(specs, hw, truth):
    points = _points(specs, with_values(hw, truth))[:3]
    with pytest.raises(MoelabError, match="3 usable points for 4 parameters"):
        fit(points, hw, ["gemm_efficiency.bf16", "bandwidth_efficiency", "gemm_half_rows", "step_overhead_us"],
            specs)


def test_refuses_unknown_and_silent_parameters(specs, hw):
    dense = [m for m in _points(specs, hw) if m.model == "llama-3-8b"]
    with pytest.raises(MoelabError, match="did you mean gemm_half_rows"):
        fit(dense, hw, ["gemm_half_row"], specs)
    with pytest.raises(MoelabError, match="moe_gemm_efficiency changes no prediction"):
        fit(dense, hw, ["moe_gemm_efficiency", "bandwidth_efficiency"], specs)
    # by default, parameters the points do not inform are left out rather than refused
    result = fit(dense, hw, None, specs)
    assert "moe_gemm_efficiency" not in result.params and "moe_layer_overhead_us" not in result.params
    assert "gemm_efficiency.bf16" in result.params
    assert "intra_node_latency_us" not in result.params  # tp1: no collective


def test_a_point_that_cannot_be_predicted_is_reported(specs, hw, truth, monkeypatch):
    points = _points(specs, with_values(hw, truth))[:8]
    big = load_model("llama-3-70b")
    too_big = replace(points[0], model="llama-3-70b", plan="tp1", name="70b-on-one-gpu")  # 140 GB of bf16 weights
    result = fit(points + [too_big], hw, ["gemm_efficiency.bf16"], {**specs, "llama-3-70b": big})
    assert [p.name for p in result.failed] == ["70b-on-one-gpu"]
    assert "does not fit tp1 on H100-SXM" in result.failed[0].failed
    assert len(result.fitted) == 8

    real = fitmod.predict

    def refusing(m, spec, hw_):
        if m.name == points[1].name:
            raise MoelabError("no such thing")
        return real(m, spec, hw_)

    monkeypatch.setattr(fitmod, "predict", refusing)
    result = fit(points, hw, ["gemm_efficiency.bf16"], specs)
    assert [(p.name, p.failed) for p in result.failed] == [(points[1].name, "no such thing")]


def test_several_base_gpus_share_the_fitted_values(specs, hw):
    h200 = load_hardware("H200")
    truth = _truth(hw, ("gemm_efficiency.bf16", "bandwidth_efficiency"))
    points = []
    for name, base in (("H100-SXM", hw), ("H200", h200)):
        for m in _points(specs, with_values(base, truth))[:8]:
            points.append(replace(m, hardware=name, name=f"{name}:{m.name}"))
    result = fit(points, {"H100-SXM": hw, "H200": h200}, list(truth), specs)
    for key, value in truth.items():
        assert result.values[key] == pytest.approx(value, rel=0.01)
    assert result.hardware["H200"].memory_bandwidth == h200.memory_bandwidth  # each keeps its own datasheet
    assert math.isclose(result.hardware["H200"].bandwidth_efficiency, result.values["bandwidth_efficiency"])


def test_refuses_an_eager_cpu_spec(specs, hw):
    eager = replace(hw, execution="eager", elementwise_bandwidth=1e10)
    with pytest.raises(MoelabError, match="eager CPU model"):
        fit(_points(specs, hw)[:4], eager, ["bandwidth_efficiency"], specs)


def test_soft_l1_is_not_pulled_by_an_outlier(specs, hw):
    truth = _truth(hw, ("gemm_efficiency.bf16", "bandwidth_efficiency"))
    points = _points(specs, with_values(hw, truth))[:16]
    points[3] = replace(points[3], value=points[3].value * 8)  # a figure the model cannot explain
    keys = list(truth)
    squared = fit(points, hw, keys, specs)
    robust = fit(points, hw, keys, specs, loss="soft_l1", loss_scale=0.05)
    worst = max(abs(squared.values[k] / truth[k] - 1) for k in keys)
    assert worst > 0.05  # least squares moves to meet the outlier halfway
    for k in keys:
        assert robust.values[k] == pytest.approx(truth[k], rel=0.02), k
    with pytest.raises(MoelabError, match="loss must be one of"):
        fit(points, hw, keys, specs, loss="huber")
