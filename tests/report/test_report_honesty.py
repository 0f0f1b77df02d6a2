"""The report says what each number is: a modelled mean against a p99 target, a measured percentile, a
measurement at tiny scale on this machine (with device, steps and parameters), a model that does not fit; and a
busy-machine warning from bench.json reaches the headline tile and the benchmark section."""

import copy
import json
import re
from dataclasses import replace

import pytest

from moelab.decide import default_workload, recommend
from moelab.decide.recommend import BASES, BASIS_TINY
from moelab.report import write_report
from moelab.report.html import render

BUSY = ("the machine was busy (load average 5.3 on 2 cores): other processes inflate the measurements; rerun on a "
        "quiet machine")


def _headline(text: str) -> str:
    return text[text.index("<div class='headline"):text.index('<nav class="toc">')]


def _section(text: str, sid: str) -> str:
    start = text.index(f"<section id='{sid}'>")
    return text[start:text.index("</section>", start)]


def _headers(text: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th>(.*?)</th>", text)]


def test_headline_latency_is_a_modelled_mean_against_a_p99_target(report_dir):
    head = _headline((report_dir / "report.html").read_text())
    assert "p99 per output token" not in head
    assert "modelled mean per-token latency" in head and "vs a p99 target of 50 ms" in head
    kf = json.loads((report_dir / "summary.json").read_text())["key_figures"]
    assert kf["model_latency_label"] == "modelled mean per-token latency"


def test_every_p99_label_is_a_target_or_a_measurement(report_dir):
    text = (report_dir / "report.html").read_text()
    p99 = [h for h in _headers(text) if "p99" in h]
    assert p99, "the bench and candidate tables have p99 columns"
    assert all("measured" in h or "target" in h for h in p99), p99
    assert "measured p50 (ms)" in _headers(text) and "measured p99 (ms)" in _headers(text)
    objective = _section(text, "objective")
    assert "p99 latency target per output token" in objective


def test_tiny_measurements_are_labelled_with_device_steps_and_params(study, report_dir):
    factors = {f["factor"]: f for f in study["decision"]["factors"]}
    assert {f["basis"] for f in factors.values()} <= set(BASES)
    steps = study["training"]["config"]["steps"]
    for name in ("training", "task_type"):
        assert factors[name]["basis"] == BASIS_TINY, factors[name]
        assert factors[name]["basis_detail"].startswith(f"CPU, {steps} steps, ")
        assert factors[name]["basis_detail"].endswith("params")
    assert factors["batch_throughput"]["basis"] == "modelled + measured at tiny scale"
    assert "measured" not in {f["basis"] for f in factors.values()}  # nothing here ran at the candidates' scale
    text = (report_dir / "report.html").read_text()
    table = text[text.index("<table id='table-factors'>"):]
    table = table[:table.index("</table>")]
    assert table.count("measured at tiny scale</span>") >= 2
    assert f"(CPU, {steps} steps, " in table
    # figures keep a coarse data-basis, their badge says tiny scale
    for fig in ("training", "expert-load", "bench", "prediction-error"):
        block = text[text.index(f"<figure class='plot' id='fig-{fig}'"):]
        block = block[:block.index("</figure>")]
        assert "data-basis='measured'" in block and "measured at tiny scale" in block, fig


def test_busy_machine_warning_reaches_the_headline_and_the_benchmark(study, tmp_path):
    quiet, _ = render(study)
    assert "badge warning" not in quiet
    busy = copy.deepcopy(study)
    busy["bench"]["warnings"] = [BUSY]
    write_report(busy, tmp_path)
    text = (tmp_path / "report.html").read_text()
    head = _headline(text)
    error_tile = next(t for t in head.split("<div class='tile") if "median decode prediction error" in t)
    assert "badge warning" in error_tile and "the machine was busy (load average 5.3 on 2 cores)" in error_tile
    assert "badge warning" in _section(text, "benchmark") and "rerun on a quiet machine" in _section(text, "benchmark")
    assert json.loads((tmp_path / "summary.json").read_text())["key_figures"]["measurement_warnings"] == [BUSY]


def test_busy_warning_reaches_the_throughput_factor(study):
    evidence = {"training": study["training"], "bench": {**study["bench"], "warnings": [BUSY]}}
    factor = next(f for f in recommend(default_workload(), evidence)["factors"] if f["factor"] == "batch_throughput")
    assert factor["numbers"]["measurement_warnings"] == [BUSY]
    assert "measurement warning: the machine was busy" in factor["why"]


@pytest.fixture(scope="module")
def tight(study):
    """The study decided again under a 1 GB memory budget: nothing fits, the closest is reported."""
    wl = replace(default_workload(), memory_budget_gb=1.0)
    evidence = {"training": study["training"], "bench": study["bench"]}
    return {**study, "workload": wl.to_dict(), "decision": recommend(wl, evidence)}


def test_memory_that_does_not_fit_is_marked(tight, tmp_path):
    write_report(tight, tmp_path)
    text = (tmp_path / "report.html").read_text()
    head = _headline(text)
    memory_tile = next(t for t in head.split("<div class='tile") if "per replica" in t)
    assert "DOES NOT FIT" in memory_tile
    table = text[text.index("<table id='table-candidates'>"):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    for cand, row in zip(tight["decision"]["candidates"], rows, strict=True):
        assert ("DOES NOT FIT" in row) == (not cand["fits"]), cand["name"]
    assert not any(c["fits"] for c in tight["decision"]["candidates"])


def test_frontier_table_shows_memory_per_gpu(report_dir, study):
    text = (report_dir / "report.html").read_text()
    assert "memory/GPU (GB)" in _headers(text)
    pairs = study["frontier"]["pairs"]
    stepped = [f for p in pairs for f in p.get("flips") or [] if f.get("gpus_changed")]
    assert stepped, "the default frontier pairs flip where a GPU count steps"
    table = text[text.index("<table id='table-pairs'>"):]
    assert stepped[0]["note"] in table[:table.index("</table>")]
