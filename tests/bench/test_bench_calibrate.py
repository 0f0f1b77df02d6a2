"""Calibration: plausible measured figures, a file the engine accepts, and the per-machine cache."""

import json
import statistics

import pytest

from moelab.bench import calibrate as cal
from moelab.cli import main
from moelab.spec import load_hardware
from moelab.spec.hardware import hardware_from_dict


def load_hardware_dict(hw):
    return hardware_from_dict("t", {k: v for k, v in hw.items() if k != "measurements"})


def test_quick_calibration_is_plausible(calibrated):
    hw = calibrated
    assert 1e-3 < hw["peak_tflops"]["fp32"] < 10  # 1 GFLOP/s .. 10 TFLOP/s
    assert hw["peak_tflops"]["bf16"] > 1e-3
    assert 1 < hw["memory_bandwidth_gbps"] < 1000
    assert 1 < statistics.median(hw["measurements"]["stream_bandwidth_gbps"]) < 1000
    for key in ("step_overhead_us", "layer_overhead_us", "moe_layer_overhead_us", "expert_overhead_us"):
        assert 0 <= hw[key] < 1e6, key  # under a second, even on a busy machine
    assert hw["layer_overhead_us"] > 1  # a decoder layer is a few dozen torch ops, each a microsecond or more
    assert hw["bandwidth_efficiency"] == hw["link_efficiency"] == 1.0  # measured achievable figures
    assert hw["memory_gb"] > 1 and hw["measurements"]["quick"] is True
    assert hw["execution"] == "eager" and load_hardware_dict(hw).execution == "eager"  # said, not inferred
    share = hw["measurements"]["others_cpu_share"]
    assert share is None or 0 <= share <= 1
    assert bool(hw["measurements"]["warnings"]) == (share is not None and share > cal.CONTENDED_SHARE)
    a2a = hw["measurements"]["alltoall"]
    if "error" not in a2a:
        assert a2a["latency_s"] > 0 and a2a["bandwidth"] > 0
        assert hw["intra_node_gbps"] == pytest.approx(a2a["bandwidth"] / 1e9)
    for key in ("elementwise_bandwidth_gbps", "attention_bandwidth_gbps", "gemv_bandwidth_gbps",
                "cache_bandwidth_gbps"):
        assert 0.01 < hw[key] < 1000, key
    assert 1e-4 < hw["attention_tflops"] < 10 and 0 < hw["compute_efficiency"] <= 1
    for key in ("peak_tflops", "memory_bandwidth_gbps", "gemv_bandwidth_gbps", "layer_overhead_us",
                "moe_layer_overhead_us", "expert_overhead_us", "elementwise_bandwidth_gbps", "attention_tflops",
                "intra_node_gbps" if "error" not in hw["measurements"]["alltoall"] else "memory_gb"):
        assert "measured" in hw["sources"][key], key
    if "fresh_page_bandwidth_gbps" in hw:  # an allocator that maps large tensors fresh (glibc)
        assert 0.1 < hw["fresh_page_bandwidth_gbps"] < 1000 and 0 <= hw["fresh_page_mb"] < 1e3
        assert "measured" in hw["sources"]["fresh_page_bandwidth_gbps"]
    assert "assumed" in hw["sources"]["tdp_watts"] and "assumed" in hw["sources"]["usd_per_hour"]
    # How long it took is recorded, not asserted (speed belongs in benchmarks/; about 15 s on a quiet machine).
    assert isinstance(hw["measurements"]["seconds"], float) and hw["measurements"]["seconds"] > 0


def test_calibrated_file_loads_and_drives_estimate(calibrated, tmp_path, capsys):
    path = cal.write_hardware(calibrated, tmp_path / "me.json")
    spec = load_hardware(str(path))
    eff = calibrated["compute_efficiency"]
    assert spec.flops("fp32") == pytest.approx(calibrated["peak_tflops"]["fp32"] * 1e12 * eff)
    assert spec.layer_overhead_s == pytest.approx(calibrated["layer_overhead_us"] * 1e-6)
    assert spec.expert_overhead_s == pytest.approx(calibrated["expert_overhead_us"] * 1e-6)
    assert main(["estimate", "mixtral-8x7b", "--hardware", str(path), "--dtype", "fp32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hardware"] == calibrated["name"] and out["decode"]["step_seconds"] > 0


def test_calibrated_hardware_is_cached_per_machine(monkeypatch, tmp_path, calibrated):
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(cal, "calibrate", lambda device="cpu", quick=False, progress=False: calls.append(quick)
                        or calibrated)
    first = cal.calibrated_hardware(quick=True)
    again = cal.calibrated_hardware(quick=True)
    assert first == again and calls == [True] and first.is_relative_to(tmp_path)
    assert cal.machine_key("cpu") in first.name
    cal.calibrated_hardware(quick=True, refresh=True)
    assert calls == [True, True]
    full = cal.calibrated_hardware(quick=False)  # no full calibration cached yet: measures one
    assert calls == [True, True, False] and cal.calibrated_hardware(quick=True) == full


def test_cli_calibrate_writes_out(monkeypatch, tmp_path, calibrated, capsys):
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path))
    monkeypatch.setattr(cal, "calibrate", lambda device="cpu", quick=False, progress=False: calibrated)
    out = tmp_path / "hw.json"
    assert main(["calibrate", "--quick", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["name"] == calibrated["name"] and load_hardware(str(out)).name == calibrated["name"]
    assert main(["calibrate", "--quick"]) == 0
    assert "overheads" in capsys.readouterr().out


def test_fresh_pages_probe_finds_the_threshold_and_the_fault_rate(monkeypatch):
    from moelab.bench import probes

    def fake(fn, device, **kw):  # an allocator mapping outputs above 32 MiB fresh, faulting at 4 GB/s
        x, *rest = fn.__defaults__
        out = x.numel() * 4
        fresh = len(rest) == 1 and out >= 32 * 2**20
        return 3 * out / 40e9 + (out / 4e9 if fresh else 0.0)

    monkeypatch.setattr(probes, "median_time", fake)
    monkeypatch.setattr(probes.torch, "randn", lambda n, device=None: probes.torch.empty(n))
    got = probes.fresh_pages("cpu", sizes_mib=(4, 16, 31, 32, 33, 64))
    assert got["threshold_bytes"] == 31 * 2**20 and got["bandwidth"] == pytest.approx(4e9)
    monkeypatch.setattr(probes, "median_time", lambda fn, device, **kw: fn.__defaults__[0].numel() * 12 / 40e9)
    assert probes.fresh_pages("cpu", sizes_mib=(4, 16, 64))["bandwidth"] == 0.0  # a caching allocator: no term


def test_others_cpu_share_counts_the_busy_time_that_is_not_ours():
    # 1000 ticks elapsed, 700 of them busy, 300 of those ours (threads and children): others used 40%
    assert cal.others_cpu_share((5000, 20000, 100), (5700, 21000, 400)) == pytest.approx(0.4)
    assert cal.others_cpu_share((5000, 20000, 100), (5300, 21000, 400)) == 0.0  # only us
    assert cal.others_cpu_share(None, (1, 2, 3)) is None and cal.others_cpu_share((1, 2, 3), (1, 2, 3)) is None
    now = cal.cpu_ticks()
    if now is not None:  # Linux: busy <= total, ours <= busy is not guaranteed per tick, but all are counts
        assert 0 <= now[0] <= now[1] and now[2] >= 0


def test_moe_overheads_fit_recovers_layer_and_expert_costs():
    from moelab.bench.probes import fit_overheads

    layer, expert, n = 4e-4, 1.3e-4, 4
    touched = [2.0, 5.47, 7.92, 8.0, 8.0]
    measured = [5e-3, 8e-3, 11e-3, 19e-3, 22e-3]
    points = [(n * (layer + u * expert), n, u, m) for u, m in zip(touched, measured, strict=True)]
    assert fit_overheads(points) == pytest.approx((layer, expert), rel=1e-9)
    # residuals that fall as more experts are touched: no negative per-expert cost, the layer term takes it
    falling = [(n * (1e-3 - u * 5e-5), n, u, m) for u, m in zip(touched, measured, strict=True)]
    fitted_layer, fitted_expert = fit_overheads(falling)
    assert fitted_expert == 0.0 and 0 < fitted_layer < 1e-3
    assert fit_overheads([(-1e-3, n, 2.0, 5e-3), (-2e-3, n, 8.0, 9e-3)]) == (0.0, 0.0)


@pytest.mark.parametrize("shares, expect", [([0.1], "try1"), ([0.6, 0.2], "try2"), ([0.4, 0.7], "try1")])
def test_a_contended_probe_is_measured_again_and_the_quietest_try_kept(monkeypatch, shares, expect):
    readings = []
    for share in shares:  # before/after tick readings giving others' share `share` over 1000 ticks
        readings += [(0, 0, 0), (int(share * 1000), 1000, 0)]
    monkeypatch.setattr(cal, "cpu_ticks", lambda: readings.pop(0))
    tries = iter(["try1", "try2"])
    log = {}
    assert cal.least_contended(lambda: next(tries), 1, log, "probe") == expect
    assert log["probe"] == pytest.approx(shares)
