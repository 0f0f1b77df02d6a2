"""The GPU calibration's fits recover known curves from synthetic points (no GPU needed); its probes run on
small shapes on the CPU; on a CUDA machine the whole calibration writes a file the engine loads."""

import json
import math
import random

import pytest
import torch

from moelab.bench import gpu_curves as gc
from moelab.spec.hardware import hardware_from_dict, hardware_from_file, load_hardware

PEAKS = {"bf16": 989e12, "fp8": 1979e12}
SHAPES = ((4096, 4096), (28672, 4096), (8192, 8192))


def synthetic_gemms(share, half, bandwidth, noise=0.0, seed=0):
    """Points whose times follow max(FLOPs / (peak * share * M / (M + half)), weight bytes / bandwidth)."""
    rng = random.Random(seed)
    points = []
    for dt, s in share.items():
        size = 1 if dt == "fp8" else 2
        for n, k in SHAPES:
            for m in gc.GEMM_ROWS:
                flops, nbytes = 2.0 * m * n * k, float(n * k * size)
                t = max(flops * (m + half) / (PEAKS[dt] * s * m), nbytes / bandwidth)
                points.append(gc.Point(dt, float(m), flops, nbytes, t * math.exp(rng.gauss(0, noise))))
    return points


def test_fit_recovers_known_shares_and_half_rows():
    truth = {"bf16": 0.72, "fp8": 0.48}
    fit = gc.fit_curve(synthetic_gemms(truth, 300.0, 4.0e12), PEAKS, 4.0e12)
    for dt, s in truth.items():
        assert fit["share"][dt] == pytest.approx(s, rel=0.01)
    assert fit["half"] == pytest.approx(300.0, rel=0.03)
    assert fit["rms_log_error"] < 0.01


def test_fit_is_robust_to_timing_noise():
    truth = {"bf16": 0.65, "fp8": 0.5}
    fit = gc.fit_curve(synthetic_gemms(truth, 120.0, 4.0e12, noise=0.05, seed=3), PEAKS, 4.0e12)
    for dt, s in truth.items():
        assert fit["share"][dt] == pytest.approx(s, rel=0.06)
    assert fit["half"] == pytest.approx(120.0, rel=0.35)
    assert 0.02 < fit["rms_log_error"] < 0.08  # the noise it was given


def test_memory_bound_rows_do_not_bend_the_curve():
    """A slower memory only moves the small-M points, which the roofline explains: the curve is unchanged."""
    truth = {"bf16": 0.7}
    fast = gc.fit_curve(synthetic_gemms(truth, 200.0, 4.0e12), PEAKS, 4.0e12)
    slow = gc.fit_curve(synthetic_gemms(truth, 200.0, 1.0e12), PEAKS, 1.0e12)
    assert slow["share"]["bf16"] == pytest.approx(fast["share"]["bf16"], rel=0.02)
    assert slow["half"] == pytest.approx(fast["half"], rel=0.05)


def test_curve_seconds_is_the_engines_gemm_time():
    """The fit's model is cost.gemm's curve under cost.gpu's roofline, for the same hardware values."""
    hw = hardware_from_dict("t", {**load_hardware("H100-SXM").to_dict(), "gemm_efficiency": {"bf16": 0.6},
                                  "gemm_half_rows": 90.0, "sources": {}})
    for m in (1, 64, 4096):
        p = gc.Point("bf16", float(m), 2.0 * m * 4096 * 4096, 4096 * 4096 * 2.0, 1.0)
        assert gc.curve_seconds(p, hw.peak("bf16")[1], 0.6, 90.0, hw.bandwidth) == pytest.approx(gc.gemm_seconds(hw, p))


def test_moe_efficiency_recovered_against_the_padded_dense_curve():
    hw = hardware_from_dict("t", {**load_hardware("H100-SXM").to_dict(), "gemm_efficiency": {"bf16": 0.7},
                                  "gemm_half_rows": 64.0, "moe_block_rows": 16, "sources": {}})
    points = []
    for r in gc.MOE_ROWS:
        params = 2 * gc.MOE_FFN * gc.MOE_D
        padded = 16 * math.ceil(r / 16)
        p = gc.Point("bf16", float(r), 2.0 * gc.MOE_EXPERTS * r * params, gc.MOE_EXPERTS * params * 2.0, 1.0,
                     issued=2.0 * gc.MOE_EXPERTS * padded * params)
        points.append(gc.Point(p.dtype, p.x, p.flops, p.nbytes, gc.moe_seconds(hw, p, 0.43), issued=p.issued))
    fit = gc.fit_scale(points, lambda p, e: gc.moe_seconds(hw, p, e))
    # The smallest rows are memory-bound (any efficiency fits them); the rest pin it.
    assert fit["value"] == pytest.approx(0.43, rel=0.01)


def test_curve_error_reports_ratio_of_model_to_measurement():
    pts = [gc.Point("bf16", 1.0, 1.0, 1.0, 1.0), gc.Point("bf16", 2.0, 1.0, 1.0, 2.0),
           gc.Point("fp8", 3.0, 1.0, 1.0, 4.0)]
    err = gc.curve_error(pts, lambda p: 2.0)  # 2x, 1x, 0.5x of the measured times
    assert err["all"]["median_abs_rel_error"] == pytest.approx(0.5)
    assert err["all"]["max_abs_rel_error"] == pytest.approx(1.0)
    assert err["all"]["geomean_ratio"] == pytest.approx(1.0)
    assert err["bf16"]["n"] == 2 and err["fp8"]["geomean_ratio"] == pytest.approx(0.5)


@pytest.mark.parametrize("name, preset", [("NVIDIA H100 80GB HBM3", "H100-SXM"), ("NVIDIA H100 PCIe", "H100-PCIe"),
                                          ("NVIDIA H200", "H200"), ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
                                          ("NVIDIA A100-SXM4-40GB", "A100-40GB"), ("NVIDIA GeForce RTX 4090",
                                                                                  "RTX-4090"),
                                          ("Tesla T4", None)])
def test_device_names_match_presets(name, preset):
    assert gc.matching_preset(name) == preset
    if preset:
        load_hardware(preset)


def test_probes_run_on_small_cpu_shapes():
    """The measuring code itself (timing, operand rotation, FLOP and byte counts), on the CPU."""
    pts = gc.gemm_points("cpu", ["fp32"], rows=(1, 32), shapes=((64, 96),), l2_bytes=64 * 96 * 4 * 3,
                         min_time=0.0)
    assert [(p.x, p.flops, p.nbytes, p.shape) for p in pts] == [(1.0, 2.0 * 64 * 96, 64 * 96 * 4.0, "64x96"),
                                                                (32.0, 2.0 * 32 * 64 * 96, 64 * 96 * 4.0, "64x96")]
    assert all(p.seconds > 0 for p in pts)
    attn = gc.attention_points("cpu", "fp32", contexts=(16, 32), tokens=64, heads=2, head_dim=16, min_time=0.0)
    assert [a.x for a in attn] == [8.5, 16.5]
    assert attn[0].flops == 4 * 16 * 17 / 2 * 4.0 * 2 * 16  # 4 sequences x 136 causal pairs x 4 h d
    moe, how = gc.grouped_points("cpu", "fp32", rows=(1, 4), experts=4, d=32, ffn=16, block=16, min_time=0.0)
    assert how in ("grouped_mm", "loop")
    assert [p.issued for p in moe] == [2.0 * 4 * 16 * 2 * 16 * 32] * 2  # both padded to one 16-row tile
    assert [p.flops for p in moe] == [2.0 * 4 * r * 2 * 16 * 32 for r in (1, 4)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_calibration_writes_a_gpu_file(tmp_path):
    from moelab.bench.calibrate import calibrate, write_hardware

    hw = calibrate("cuda", quick=True)
    path = write_hardware(hw, tmp_path / "gpu.yaml")
    spec = hardware_from_file(path)
    assert spec.execution == "gpu" and json.loads(path.read_text())["execution"] == "gpu"
    assert 0 < spec.gemm_share("bf16") <= 1 and 0 < spec.moe_gemm_efficiency <= 1
    assert hw["measurements"]["gemm"] and hw["measurements"]["fit"]["gemm"]["rms_log_error"] < 0.5
    if hw["measurements"]["preset"]:
        assert hw["measurements"]["preset_error"]["gemm"]["all"]["n"] == len(hw["measurements"]["gemm"])


def test_gpu_calibration_assembles_a_loadable_file_from_its_probes(monkeypatch, tmp_path):
    """calibrate_gpu on synthetic probe results (no GPU): the file loads, carries the fitted curves, and its
    preset_error is the bundled preset's error on the same points."""
    from types import SimpleNamespace

    from moelab.bench.calibrate import write_hardware

    truth = {"bf16": 0.68, "fp16": 0.66, "fp8": 0.45}
    peaks = {dt: load_hardware("H100-SXM").peak_flops[dt] for dt in truth}
    gemms = [p for p in synthetic_gemms({"bf16": 0.68, "fp8": 0.45}, 250.0, 3.0e12)]
    gemms += [gc.Point("fp16", p.x, p.flops, p.nbytes, p.seconds * 0.68 / 0.66) for p in gemms if p.dtype == "bf16"]
    attn = [gc.Point("bf16", (t + 1) / 2, 1e12, 1e6, 1e12 * ((t + 1) / 2 + 700) / (peaks["bf16"] * 0.55 * (t + 1) / 2))
            for t in gc.ATTENTION_CONTEXTS]
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(L2_cache_size=50 * 2**20,
                                                                                       total_memory=80e9))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (9, 0))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(gc, "fp8_available", lambda device: True)
    monkeypatch.setattr(gc, "copy_bandwidth", lambda device, nbytes: 3.0e12)
    monkeypatch.setattr(gc, "launch_seconds", lambda: 2.5e-6)
    monkeypatch.setattr(gc, "gemm_points", lambda *a, **k: gemms)
    monkeypatch.setattr(gc, "attention_points", lambda *a, **k: attn)
    hw_truth = hardware_from_dict("t", {**load_hardware("H100-SXM").to_dict(), "gemm_efficiency": truth,
                                        "gemm_half_rows": 250.0, "bandwidth_efficiency": 3.0 / 3.35, "sources": {}})
    moe = []
    for r in gc.MOE_ROWS:
        params = 2 * gc.MOE_FFN * gc.MOE_D
        p = gc.Point("bf16", float(r), 2.0 * gc.MOE_EXPERTS * r * params, gc.MOE_EXPERTS * params * 2.0, 1.0,
                     issued=2.0 * gc.MOE_EXPERTS * 16 * math.ceil(r / 16) * params)
        moe.append(gc.Point("bf16", p.x, p.flops, p.nbytes, gc.moe_seconds(hw_truth, p, 0.35), issued=p.issued))
    monkeypatch.setattr(gc, "grouped_points", lambda *a, **k: (moe, "grouped_mm"))
    steps = []
    hw = gc.calibrate_gpu(quick=True, say=steps.append)
    spec = hardware_from_file(write_hardware(hw, tmp_path / "gpu.yaml"))
    assert spec.execution == "gpu" and spec.peak_flops == load_hardware("H100-SXM").peak_flops
    for dt, s in truth.items():
        assert spec.gemm_share(dt) == pytest.approx(s, rel=0.01)
    assert spec.gemm_half_rows == pytest.approx(250.0, rel=0.03)
    assert spec.attention_efficiency == pytest.approx(0.55, rel=0.01)
    assert spec.attention_half_context == pytest.approx(700.0, rel=0.03)
    assert spec.moe_gemm_efficiency == pytest.approx(0.35, rel=0.02)
    assert spec.bandwidth == pytest.approx(3.0e12) and spec.kernel_launch_s == pytest.approx(2.5e-6)
    err = hw["measurements"]["preset_error"]
    preset = load_hardware("H100-SXM")
    assert err["preset"] == "H100-SXM"
    assert err["gemm"]["all"] == gc.curve_error(gemms, lambda p: gc.gemm_seconds(preset, p))["all"]
    assert hw["measurements"]["fit"]["fitted_error"]["gemm"]["all"]["median_abs_rel_error"] < 0.01
    assert len(steps) == gc.gpu_steps(quick=True) - 2 * 3  # the GEMM steps are said by gemm_points (replaced)
