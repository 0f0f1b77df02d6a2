"""write_report: every file, parseable CSVs, summary.json, self-contained HTML, graceful partial studies."""

import csv
import json
import re
import statistics

import pytest
from study_fixture import build_parts, study

from moelab.report import write_report
from moelab.report.html import render
from moelab.spec.presets import load_model

CSVS = ("factors", "candidates", "training", "bench", "frontier", "errors", "flips", "pairs", "workload", "hardware",
        "serving_frontier", "serving_pairs")
FIGURES = ("params-memory", "crossover", "serving-frontier", "training", "expert-load", "bench", "prediction-error",
           "candidates")


def test_writes_report_summary_and_every_table(report_dir, study):
    summary = json.loads((report_dir / "summary.json").read_text())
    for name in CSVS:
        path = report_dir / f"{name}.csv"
        assert path.is_file(), name
        rows = list(csv.reader(path.open()))
        assert len(rows) >= 2 and all(len(r) == len(rows[0]) for r in rows), name
        assert f"{name}.csv" in summary["files"]
    assert (report_dir / "report.html").is_file()
    assert summary["recommendation"]["choice"] == "moe"
    kf = summary["key_figures"]
    assert kf["model"] == "mixtral-8x7b" and kf["alternative"] != kf["model"]
    assert not load_model(kf["alternative"]).is_moe  # the dense candidate it was weighed against
    assert kf["model_usd_per_mtok"] > 0 and kf["alternative_usd_per_mtok"] > 0
    # the headline error is the median |error| of the decode rows, recomputed here from the rows themselves
    rows = study["bench"]["rows"]
    median = {p: statistics.median(abs(r["rel_error"]) for r in rows if r["phase"] == p) for p in ("prefill", "decode")}
    assert f"{median['prefill']:.0%}" != f"{median['decode']:.0%}"  # a report that took the prefill figure shows
    assert kf["measured_decode_median_abs_rel_error"] == pytest.approx(median["decode"], rel=1e-12)
    assert f"<div class='value'>{median['decode']:.0%}</div>" in (report_dir / "report.html").read_text()
    # errors.csv and bench.csv carry every row's exact numbers (bench.csv in milliseconds)
    errors = list(csv.DictReader((report_dir / "errors.csv").open()))
    bench = list(csv.DictReader((report_dir / "bench.csv").open()))
    assert len(errors) == len(bench) == len(rows)
    for r, e, b in zip(rows, errors, bench, strict=True):
        assert (e["model"], e["phase"], int(e["batch"])) == (b["model"], b["phase"], int(b["batch"])) == (
            r["model"], r["phase"], r["batch"])
        assert [float(e[k]) for k in ("measured_s", "predicted_s", "rel_error")] == [
            r["measured_s"], r["predicted_s"], r["rel_error"]]
        assert float(b["measured (ms)"]) == pytest.approx(r["measured_s"] * 1e3, rel=1e-12)
        assert float(b["predicted (ms)"]) == pytest.approx(r["predicted_s"] * 1e3, rel=1e-12)
        assert float(b["rel. error"]) == r["rel_error"] and float(b["tokens/s"]) == r["tokens_per_second"]
    assert summary["figures"] == len(FIGURES) and summary["flips"]


def test_csv_numbers_match_the_study(report_dir, study):
    bench = list(csv.DictReader((report_dir / "errors.csv").open()))
    assert len(bench) == len(study["bench"]["rows"])
    assert float(bench[0]["rel_error"]) == pytest.approx(study["bench"]["rows"][0]["rel_error"])
    factors = list(csv.DictReader((report_dir / "factors.csv").open()))
    assert [f["factor"] for f in factors] == [f["factor"] for f in study["decision"]["factors"]]
    assert json.loads(factors[0]["numbers"]) == study["decision"]["factors"][0]["numbers"]


def test_html_is_self_contained(report_dir):
    text = (report_dir / "report.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", text)
    outside = [r[:60] for r in refs if not r.startswith(("#", "data:"))]  # heatmaps are inline data: PNGs
    assert outside == []
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
    assert "@import" not in text and "<script" not in text
    assert all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", text))
    assert "<link" not in text and "<iframe" not in text


def test_every_figure_is_marked_measured_or_modelled(report_dir):
    text = (report_dir / "report.html").read_text()
    figs = re.findall(r"<figure class='plot' id='fig-([\w-]+)' data-basis='(\w+)'>", text)
    assert [f for f, _ in figs] == list(FIGURES)
    assert {b for _, b in figs} <= {"measured", "modelled"}
    assert text.count("<svg") >= len(FIGURES)
    # each SVG carries its own salted ids: no id is defined twice across figures
    ids = re.findall(r'\sid="([^"]+)"', text)
    clip_ids = [i for i in ids if not i.startswith("DejaVu")]
    assert len(clip_ids) == len(set(clip_ids))


@pytest.mark.parametrize("drop", ["training", "bench", "calibration", "frontier", "decision", "machine", "workload"])
def test_partial_studies_render_not_run(study, drop, tmp_path):
    partial = {k: v for k, v in study.items() if k != drop}
    report = write_report(partial, tmp_path)
    text = report.read_text()
    assert "Not run" in text or drop == "machine"
    assert "could not be rendered" not in text
    json.loads((tmp_path / "summary.json").read_text())


def test_empty_study_renders():
    text, page = render({})
    assert text.count("Not run") >= 5 and page.figures == 0


@pytest.mark.slow
def test_live_study_with_real_training(tmp_path, monkeypatch):
    """The whole fixture built live: a real tiny train_compare, the engine, recommend, the report."""
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MOELAB_CACHE", str(tmp_path / "cache"))
    live = study(build_parts(steps=12))
    report = write_report(live, tmp_path / "out")
    text = report.read_text()
    assert text.count("<figure class='plot'") == len(FIGURES)
    assert {f["basis"] for f in live["decision"]["factors"] if f["factor"] == "training"} == {"measured at tiny scale"}
