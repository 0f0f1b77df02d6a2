"""The report's "Served with vLLM" section: the seeds' latency (concurrency 1) and throughput (concurrency 32)
tables carry the serving rows' own numbers, their CSVs are written, MoE / dense is computed from the rows, a
predicted figure is never headed as a percentile; a skipped stage, a failed model, a missing level and an older
study.json without "serving" each say so."""

import copy
import csv
import json
import re

import pytest
from study_fixture import synthetic_serving

from moelab.report.html import _num, _Page, _served, key_figures

FIGURES = ("params-memory", "crossover", "serving-frontier", "training", "expert-load", "bench", "prediction-error",
           "served", "candidates")
SERVED_CSVS = ("served_latency", "served_throughput", "served_moe_vs_dense", "served")


def _section(text: str, sid: str) -> str:
    start = text.index(f"<section id='{sid}'>")
    return text[start:text.index("</section>", start)]


def _table(text: str, name: str) -> str:
    start = text.index(f"<table id='table-{name}'>")
    return text[start:text.index("</table>", start)]


def _headers(text: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th>(.*?)</th>", text)]


def _cells(row_html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row_html)]


def _body_rows(table_html: str) -> list[list[str]]:
    body = table_html[table_html.index("<tbody>"):]
    return [_cells(r) for r in re.findall(r"<tr>(.*?)</tr>", body)]


def _csv(folder, name: str) -> list[dict]:
    return list(csv.DictReader((folder / f"{name}.csv").open()))


def _at(rows: list[dict], model: str, concurrency: int) -> dict:
    return next(r for r in rows if r["model"] == model and r["concurrency"] == concurrency)


LATENCY = {"measured TTFT p50 (ms)": "ttft_ms_p50", "measured TTFT p95 (ms)": "ttft_ms_p95",
           "measured TTFT p99 (ms)": "ttft_ms_p99", "measured TPOT p50 (ms)": "tpot_ms_p50",
           "measured TPOT p95 (ms)": "tpot_ms_p95", "measured TPOT p99 (ms)": "tpot_ms_p99",
           "measured E2E p50 (ms)": "e2e_ms_p50", "measured E2E p99 (ms)": "e2e_ms_p99",
           "predicted mean TTFT (ms)": "predicted_ttft_ms", "TTFT error": "rel_error_ttft_ms",
           "predicted mean TPOT (ms)": "predicted_tpot_ms", "TPOT error": "rel_error_tpot_ms"}
THROUGHPUT = {"measured output tok/s": "output_tokens_per_second", "measured requests/s": "requests_per_second",
              "measured TTFT p50 (ms)": "ttft_ms_p50", "measured TTFT p99 (ms)": "ttft_ms_p99",
              "measured TPOT p50 (ms)": "tpot_ms_p50", "measured TPOT p99 (ms)": "tpot_ms_p99",
              "predicted mean output tok/s": "predicted_output_tokens_per_second",
              "output tok/s error": "rel_error_output_tokens_per_second"}


@pytest.mark.parametrize(("name", "concurrency", "columns"), [("served_latency", 1, LATENCY),
                                                               ("served_throughput", 32, THROUGHPUT)])
def test_tables_carry_the_rows_numbers(served_report_dir, served_study, name, concurrency, columns):
    rows = served_study["serving"]["rows"]
    table = list(csv.DictReader((served_report_dir / f"{name}.csv").open()))
    assert [t["model"] for t in table] == ["tiny-dense", "tiny-moe"]
    html_rows = _body_rows(_table((served_report_dir / "report.html").read_text(), name))
    headers = _headers(_table((served_report_dir / "report.html").read_text(), name))
    for line, shown in zip(table, html_rows, strict=True):
        row = _at(rows, line["model"], concurrency)
        assert line["kind"] == row["kind"]
        for header, key in columns.items():
            assert float(line[header]) == row[key], (line["model"], header)  # the CSV: the exact number
            cell = shown[headers.index(header)]
            expected = f"{row[key]:+.0%}" if "error" in header else _num(row[key])
            assert cell == expected, (line["model"], header, cell)  # the page: the same number, formatted
    if name == "served_throughput":
        assert [t["completed"] for t in table] == ["96/96", "96/96"]


def test_moe_over_dense_is_computed_from_the_rows(served_report_dir, served_study):
    rows = served_study["serving"]["rows"]
    d1, m1 = _at(rows, "tiny-dense", 1), _at(rows, "tiny-moe", 1)
    d32, m32 = _at(rows, "tiny-dense", 32), _at(rows, "tiny-moe", 32)
    ratios = {r["quantity"]: r for r in _csv(served_report_dir, "served_moe_vs_dense")}
    tpot = ratios["measured TPOT p50 at concurrency 1 (ms)"]
    assert float(tpot["dense"]) == d1["tpot_ms_p50"] and float(tpot["MoE"]) == m1["tpot_ms_p50"]
    assert float(tpot["MoE / dense"]) == pytest.approx(m1["tpot_ms_p50"] / d1["tpot_ms_p50"], rel=1e-12)
    tok = ratios["measured output tok/s at concurrency 32"]
    assert float(tok["MoE / dense"]) == pytest.approx(m32["output_tokens_per_second"] /
                                                      d32["output_tokens_per_second"], rel=1e-12)
    pred = ratios["predicted mean output tok/s at concurrency 32"]
    assert float(pred["MoE / dense"]) == pytest.approx(m32["predicted_output_tokens_per_second"] /
                                                       d32["predicted_output_tokens_per_second"], rel=1e-12)
    # MoE decodes slower here (its fused-MoE step), so the ratio is above 1: the report does not invert it
    assert float(tpot["MoE / dense"]) > 1.2
    text = _section((served_report_dir / "report.html").read_text(), "served")
    assert f"{m1['tpot_ms_p50'] / d1['tpot_ms_p50']:.2f}× the dense model's at concurrency 1" in text
    kf = json.loads((served_report_dir / "summary.json").read_text())["key_figures"]
    assert kf["served_dense_tpot_ms_p50"] == d1["tpot_ms_p50"] and kf["served_moe_tpot_ms_p50"] == m1["tpot_ms_p50"]
    assert kf["served_moe_output_tokens_per_second"] == m32["output_tokens_per_second"]
    assert kf["served_moe_over_dense_tpot_p50"] == pytest.approx(m1["tpot_ms_p50"] / d1["tpot_ms_p50"], rel=1e-12)
    assert (kf["served_latency_concurrency"], kf["served_throughput_concurrency"]) == (1, 32)
    assert kf["served_skipped"] is None and kf["served_greedy_ok"] is True


def test_every_level_is_in_served_csv_and_every_table_is_listed(served_report_dir, served_study):
    summary = json.loads((served_report_dir / "summary.json").read_text())
    for name in SERVED_CSVS:
        assert f"{name}.csv" in summary["files"], name
        lines = list(csv.reader((served_report_dir / f"{name}.csv").open()))
        assert len(lines) >= 3 and all(len(r) == len(lines[0]) for r in lines), name
    rows = served_study["serving"]["rows"]
    every = _csv(served_report_dir, "served")
    assert [(e["model"], int(e["concurrency"])) for e in every] == [(r["model"], r["concurrency"]) for r in rows]
    for e, r in zip(every, rows, strict=True):
        assert float(e["measured TTFT p99 (ms)"]) == r["ttft_ms_p99"]
        assert float(e["measured TPOT mean (ms)"]) == r["tpot_ms_mean"]
        assert float(e["TPOT rel. error"]) == r["rel_error_tpot_ms"]
        assert float(e["predicted mean requests/s"]) == r["predicted_requests_per_second"]
    text = _section((served_report_dir / "report.html").read_text(), "served")
    assert "<details><summary>All 8 served levels (served.csv)</summary>" in text


def test_no_percentile_header_on_a_predicted_column(served_report_dir):
    text = (served_report_dir / "report.html").read_text()
    headers = _headers(_section(text, "served"))
    headers += [h for name in SERVED_CSVS for h in next(csv.reader((served_report_dir / f"{name}.csv").open()))]
    predicted = [h for h in headers if "predicted" in h]
    assert predicted and all("mean" in h for h in predicted), predicted
    assert not [h for h in predicted if re.search(r"p\d\d", h)]
    percentiles = [h for h in headers if re.search(r"\bp(50|95|99)\b", h)]
    assert percentiles and all(h.startswith("measured ") for h in percentiles), percentiles
    ratio_labels = [r["quantity"] for r in _csv(served_report_dir, "served_moe_vs_dense")]
    assert all(q.startswith("measured ") or q.startswith("predicted mean ") for q in ratio_labels)
    assert all(("p50" not in q) or q.startswith("measured ") for q in ratio_labels)


def test_figure_and_badges_say_measured_with_vllm_on_cpu_at_tiny_scale(served_report_dir):
    text = (served_report_dir / "report.html").read_text()
    figs = re.findall(r"<figure class='plot' id='fig-([\w-]+)' data-basis='(\w+)'>", text)
    assert [f for f, _ in figs] == list(FIGURES)
    section = _section(text, "served")
    fig = section[section.index("<figure class='plot' id='fig-served'"):section.index("</figure>")]
    assert "modelled + measured at tiny scale" in fig and "(vLLM 0.32.0, CPU, 1.57M-3.94M params)" in fig
    assert "measured p50" in fig and "predicted mean" in fig and "measured p99" in fig
    for name in ("served_latency", "served_throughput", "served_moe_vs_dense", "served"):
        caption = _table(section, name)
        caption = caption[:caption.index("</caption>")]
        assert "<span class='badge tiny'>measured at tiny scale</span>" in caption, name
        assert "vLLM 0.32.0, CPU, 1.57M-3.94M params" in caption, name
    ids = [i for i in re.findall(r'\sid="([^"]+)"', text) if not i.startswith("DejaVu")]
    assert len(ids) == len(set(ids))


def test_servers_greedy_check_and_notes(served_report_dir, served_study):
    section = _section((served_report_dir / "report.html").read_text(), "served")
    assert "vLLM&#x27;s greedy token ids equal moelab&#x27;s on 8/8 prompts (0 parted at a near-tie below 0.01 " \
           "logits, 0 mismatched; 256 tokens compared" in section
    assert "on 7/8 prompts (1 parted at a near-tie below 0.01 logits" in section
    assert "vLLM 0.32.0 on cpu, torch 2.9.0+cpu, fp32; ready after 70.1 s" in section
    assert "badge warning" not in section
    assert "predicted / measured - 1; the prediction is the engine&#x27;s modelled mean" in section


@pytest.mark.parametrize("reason", ["--quick: the vLLM stage runs in the full study only",
                                    "no vLLM here: .venv-serve is missing (run scripts/setup-serve.sh)"])
def test_a_skipped_stage_says_why(study, reason):
    skipped = {**study, "serving": {**synthetic_serving(), "skipped": reason, "rows": [], "servers": []}}
    page = _Page()
    out = _served(skipped, page)
    assert out.startswith("<div class='notrun'><b>Not run.</b> The vLLM stage did not run: ")
    assert reason.replace("'", "&#x27;") in out
    assert page.figures == 0 and not page.csvs
    kf = key_figures(skipped)
    assert kf["served_skipped"] == reason and kf["served_dense_tpot_ms_p50"] is None


def test_an_older_study_without_serving_renders(report_dir, study, served_study):
    assert "serving" not in study
    text = (report_dir / "report.html").read_text()
    section = _section(text, "served")
    assert "Not run." in section and "predates it" in section and "could not be rendered" not in section
    assert not (report_dir / "served_latency.csv").exists()
    old = json.loads((report_dir / "summary.json").read_text())["key_figures"]
    assert old["served_skipped"] == "no serving stage in this study"
    # the served keys are added beside the existing ones, which do not change (but the seeds' claims table, which
    # reads the served figures as evidence)
    new = key_figures(served_study)
    apart = ("served_", "claims_")
    assert {k: v for k, v in new.items() if not k.startswith(apart)} == \
        {k: v for k, v in key_figures(study).items() if not k.startswith(apart)}
    assert new["claims_verdicts"] != key_figures(study)["claims_verdicts"]
    assert "model_usd_per_mtok" in new and "measured_decode_median_abs_rel_error" in new


def test_a_failed_model_is_a_warning_and_the_other_still_shows(study):
    serving = synthetic_serving()
    serving["rows"] = [r for r in serving["rows"] if r["model"] == "tiny-dense"]
    serving["servers"] = serving["servers"][:1]
    serving["failures"] = ["tiny-moe: vLLM exited before it was ready (see serve/tiny-moe/server.log)"]
    page = _Page()
    out = _served({**study, "serving": serving}, page)
    assert "<span class='badge warning'>warning</span>" in out
    assert "failed: tiny-moe: vLLM exited before it was ready" in out
    assert [r[0] for r in page.csvs["served_latency"][1]] == ["tiny-dense"]
    assert "served_moe_vs_dense" not in page.csvs  # no ratio without both kinds
    assert page.figures == 1


def test_failed_requests_and_a_failed_greedy_check_are_warnings(study):
    serving = copy.deepcopy(synthetic_serving())
    row = _at(serving["rows"], "tiny-moe", 32)
    row.update(completed=90, failed=6, first_error="HTTP 500: engine dead")
    serving["servers"][1]["greedy"].update(ok=False, matched=6, mismatches=[
        {"prompt": 3, "step": 11, "moelab": 417, "served": 88, "margin": 0.9}])
    out = _served({**study, "serving": serving}, _Page())
    assert "tiny-moe at concurrency 32: 6 of 96 requests failed (HTTP 500: engine dead)" in out
    assert "<span class='badge warning'>greedy check failed</span><b>tiny-moe</b>" in out
    assert "the first mismatch at prompt 3, step 11: moelab 417, vLLM 88" in out
    assert "90/96" in out
    assert key_figures({**study, "serving": serving})["served_greedy_ok"] is False


def test_without_level_32_the_highest_level_is_used_and_said(study):
    serving = synthetic_serving(concurrency=(2, 4, 16))
    page = _Page()
    out = _served({**study, "serving": serving}, page)
    assert "Throughput at concurrency 16 (no level 32 was run: the highest, 16)" in out
    assert "Latency at concurrency 2 (no level 1 was run: the lowest, 2)" in out
    headers, rows = page.csvs["served_throughput"]
    column = headers.index("measured output tok/s")
    assert [r[column] for r in rows] == [_at(serving["rows"], m, 16)["output_tokens_per_second"]
                                         for m in ("tiny-dense", "tiny-moe")]
    kf = key_figures({**study, "serving": serving})
    assert kf["served_throughput_concurrency"] == 16 and kf["served_latency_concurrency"] == 2
