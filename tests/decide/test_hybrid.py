"""A hybrid recommendation carries its fleet (one replica of each model, modelled) at the escalation rate of the
best measured point of the same policy (study["hybrid"]): $/Mtok = dense + e x MoE for a cascade, (1 - e) x
dense + e x MoE for a route; memory and GPUs of both together. Checked against the candidates' own figures."""

import pytest
from evidence_parts import hybrid, queries, training_and_bench

from moelab.decide import default_workload, recommend
from moelab.decide.evidence import (
    BASIS_MODELLED,
    BASIS_MODELLED_TINY,
    LATENCY_MEAN,
    LATENCY_SCALED,
    read_hybrid,
)
from moelab.decide.workload import DEFAULT, workload_from_dict
from moelab.hybrid import curve, policies

CASCADE = workload_from_dict({**DEFAULT, "candidates": ["llama-3-8b", "qwen3-30b-a3b"], "training": "scratch",
                              "quality_floor_b": 0, "throughput_tokens_per_s": None,
                              "task_mix": {"reasoning": 0.4, "knowledge": 0.4, "code": 0.2}}, "w.yaml")
ROUTE = workload_from_dict({**DEFAULT, "gpus": 16, "candidates": ["llama-3-70b", "qwen3-235b-a22b"], "batch": 256,
                            "batches": [1, 2, 4, 8, 64, 256, 2048], "latency_p99_ms": 300, "quality_floor_b": 0,
                            "throughput_tokens_per_s": None, "training": "fine-tune",
                            "task_mix": {"reasoning": 0.5, "knowledge": 0.5}}, "w.yaml")


def _pair(r: dict) -> tuple[dict, dict]:
    by = {c["name"]: c for c in r["candidates"]}
    return by[r["hybrid"]["dense"]], by[r["hybrid"]["moe"]]


@pytest.fixture(scope="module")
def cascade():
    part = hybrid()
    return part, recommend(CASCADE, training_and_bench() | {"hybrid": part}), recommend(CASCADE, training_and_bench())


def test_cascade_fleet_at_the_measured_escalation_rate(cascade):
    part, r, _ = cascade
    assert r["recommendation"]["rule"] == "cascade" and r["evidence"]["hybrid"]
    h = r["hybrid"]
    d, m = _pair(r)
    assert (h["policy"], d["kind"], m["kind"]) == ("cascade", "dense", "moe")
    assert r["recommendation"]["model"] == f"{d['name']} → {m['name']}"  # the dense answers first
    e = part["best"]["cascade"]["escalation_rate"]
    assert 0 < e < 1 and h["escalation_rate"] == e
    assert h["usd_per_million_tokens"] == pytest.approx(d["usd_per_million_tokens"] + e * m["usd_per_million_tokens"],
                                                        abs=1e-4)
    assert h["latency_ms_mean"] == pytest.approx(d["step_ms"] + e * m["step_ms"], abs=1e-3)
    assert h["latency_ms_worst"] == pytest.approx(d["step_ms"] + m["step_ms"], abs=1e-3)
    # the bench ran on the study's CPU, not on the workload's H100: no tail applies, the tail figure is the worst
    assert not r["latency_tail"]["applied"] and h["latency_ms_tail"] == h["latency_ms_worst"]
    assert h["latency_ms_mean_label"] == LATENCY_MEAN and LATENCY_MEAN in h["latency_ms_tail_label"]
    breakeven = 1 - d["usd_per_million_tokens"] / m["usd_per_million_tokens"]  # where it costs what the MoE does
    assert h["breakeven_escalation_rate"] == pytest.approx(breakeven, abs=1e-4)
    assert h["memory_gb"] == pytest.approx(d["memory_gb"] + m["memory_gb"], abs=0.01)
    assert h["gpus"] == d["gpus_per_replica"] + m["gpus_per_replica"] <= h["gpus_available"] == CASCADE.gpus
    assert h["fits"] and h["basis"] == BASIS_MODELLED_TINY
    measured = h["measured"]
    assert measured["dense"]["accuracy"] == part["models"]["dense"]["accuracy"]
    assert measured["moe"]["flops_per_query"] == part["models"]["moe"]["flops_per_query"]
    assert (measured["dense"]["escalation_rate"], measured["moe"]["escalation_rate"]) == (0.0, 1.0)
    for key in ("accuracy", "ci_low", "ci_high", "latency_s_mean", "flops_per_query", "threshold", "escalation_rate"):
        assert measured["cascade"][key] == part["best"]["cascade"][key]
        assert measured["route"][key] == part["best"]["route"][key]


def test_without_a_measured_curve_the_rate_is_open(cascade):
    _, measured, plain = cascade
    h = plain["hybrid"]
    assert plain["recommendation"]["rule"] == "cascade" and not plain["evidence"]["hybrid"]
    assert (h["escalation_rate"], h["usd_per_million_tokens"], h["latency_ms_mean"], h["measured"]) == (None,) * 4
    assert h["basis"] == BASIS_MODELLED
    for key in ("gpus", "memory_gb", "fits", "breakeven_escalation_rate", "dense_usd_per_mtok", "moe_usd_per_mtok"):
        assert h[key] == measured["hybrid"][key]
    assert plain["candidates"] == measured["candidates"]  # the curve informs the hybrid, not the engine's figures


def test_route_fleet_mixes_by_the_measured_share():
    part = hybrid()
    r = recommend(ROUTE, {"hybrid": part})
    assert r["recommendation"]["rule"] == "route"
    h = r["hybrid"]
    d, m = _pair(r)
    e = part["best"]["route"]["escalation_rate"]
    assert h["policy"] == "route" and h["escalation_rate"] == e
    assert h["usd_per_million_tokens"] == pytest.approx((1 - e) * d["usd_per_million_tokens"]
                                                        + e * m["usd_per_million_tokens"], abs=1e-4)
    assert h["latency_ms_mean"] == pytest.approx((1 - e) * d["step_ms"] + e * m["step_ms"], abs=1e-3)
    assert h["latency_ms_worst"] == max(d["step_ms"], m["step_ms"])
    assert h["breakeven_escalation_rate"] is None
    assert h["gpus"] == d["gpus_per_replica"] + m["gpus_per_replica"] <= 16


@pytest.mark.parametrize("wl", [CASCADE, ROUTE], ids=["cascade", "route"])
def test_a_measured_tail_scales_the_tail_figure_not_the_mean(wl):
    """A bench on the workload's own hardware (p99/p50 = 1.2 in every decode row): the candidates' latency_ms is
    the modelled mean step x 1.2, the fleet's mean stays the mix of mean steps, and its tail figure is the
    slowest query at the scaled latencies (review P3-8: the mean was the p99-scaled one)."""
    ev = training_and_bench()
    ev["bench"]["hardware"] = {"name": wl.hardware}
    part = hybrid()
    r = recommend(wl, ev | {"hybrid": part})
    assert r["latency_tail"]["applied"] and r["latency_tail"]["ratio"] == pytest.approx(1.2)
    assert r["latency_label"] == LATENCY_SCALED
    h = r["hybrid"]
    d, m = _pair(r)
    for c in (d, m):
        assert c["latency_ms"] == pytest.approx(1.2 * c["step_ms"], rel=1e-3)
    e = part["best"][h["policy"]]["escalation_rate"]
    mix = (lambda a, b: a + e * b) if h["policy"] == "cascade" else (lambda a, b: (1 - e) * a + e * b)
    slow = (lambda a, b: a + b) if h["policy"] == "cascade" else max
    assert h["latency_ms_mean"] == pytest.approx(mix(d["step_ms"], m["step_ms"]), abs=1e-3)
    assert h["latency_ms_mean"] < mix(d["latency_ms"], m["latency_ms"]) - 1.0  # not the scaled figure
    assert h["latency_ms_worst"] == pytest.approx(slow(d["step_ms"], m["step_ms"]), abs=1e-3)
    assert h["latency_ms_tail"] == pytest.approx(slow(d["latency_ms"], m["latency_ms"]), abs=1e-3)
    assert h["latency_ms_tail"] == pytest.approx(1.2 * h["latency_ms_worst"], rel=1e-3)
    assert h["latency_ms_mean_label"] == LATENCY_MEAN and LATENCY_SCALED in h["latency_ms_tail_label"]


def test_no_hybrid_block_when_the_choice_is_one_model():
    r = recommend(default_workload(), {"hybrid": hybrid()})
    assert r["recommendation"]["rule"] == "only_feasible" and r["hybrid"] is None and r["evidence"]["hybrid"]


def test_a_route_whose_two_models_do_not_fit_together_is_not_recommended():
    # on 8 GPUs the throughput winner flips inside the sweep with a split vote, but the two replicas need 12 GPUs
    wl = workload_from_dict({**DEFAULT, "candidates": ["llama-3-70b", "mixtral-8x22b"], "quality_floor_b": 0,
                             "throughput_tokens_per_s": None,
                             "task_mix": {"reasoning": 0.4, "knowledge": 0.4, "code": 0.2}}, "w.yaml")
    r = recommend(wl)
    flip = r["throughput_flip"]
    by = {c["name"]: c for c in r["candidates"]}
    assert all(c["feasible"] for c in by.values()) and abs(r["vote"]) <= 2
    assert min(wl.batches) < flip["batch"] <= max(wl.batches)
    assert sum(c["gpus_per_replica"] for c in by.values()) > wl.gpus
    assert r["recommendation"]["rule"] == "vote" and r["hybrid"] is None


def test_the_reader_takes_the_hybrid_stage_as_it_is_written():
    qs = queries()
    ev = read_hybrid(hybrid())
    best = curve.best(curve.sweep(qs, (0.2, 0.5, 0.95)), "cascade")
    assert ev.best["cascade"].escalation_rate == best.escalation_rate == pytest.approx(14 / 40)
    assert ev.best["cascade"].threshold == best.threshold
    assert ev.dense.accuracy == policies.dense(qs).accuracy and ev.moe.accuracy == policies.moe(qs).accuracy
    assert (ev.dense_name, ev.moe_name, ev.engine, ev.items) == ("tiny-dense", "tiny-moe", "moelab", 40)
