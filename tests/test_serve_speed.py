"""serve-bench's machine-speed guard: the reference probes timed around each served model, and the warnings."""

from moelab.serve.bench import Report, _speed_warnings

BASE = {"compute_s": 0.002, "overhead_s": 0.0005}


def scaled(compute: float, overhead: float) -> dict:
    return {"compute_s": BASE["compute_s"] * compute, "overhead_s": BASE["overhead_s"] * overhead}


def test_a_steady_machine_gives_no_warning():
    report = Report()
    _speed_warnings("dense", {"before": BASE, "after": scaled(1.05, 0.97)}, report)
    assert report.warnings == []


def test_a_machine_that_slowed_during_a_model_is_said():
    report = Report()
    _speed_warnings("dense", {"before": BASE, "after": scaled(1.0, 1.25)}, report)
    (line,) = report.warnings
    assert line.startswith("dense:") and "25% slower" in line


def test_two_models_served_at_different_speeds_are_said():
    report = Report()
    report.servers.append({"model": "dense", "machine_speed": {"before": BASE, "after": BASE}})
    _speed_warnings("moe", {"before": scaled(0.7, 0.8), "after": scaled(0.7, 0.8)}, report)
    (line,) = report.warnings
    assert "30% faster than dense" in line and "comparison" in line
