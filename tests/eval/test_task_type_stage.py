"""The study's task-type stage on a study folder with two of its four runs (the others recorded as failures),
its floor warnings, and the report section and key figures built from its result."""

import shutil

import pytest

from moelab.eval.score import wilson
from moelab.report.task_type_section import figures, pair_differences, section
from moelab.study.plan import StudyPlan
from moelab.study.task_type import QUICK_PER_LEVEL, floor_warnings, task_type_stage


@pytest.fixture(scope="module")
def stage(study_run, moe_study_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    shutil.copytree(study_run, out / "runs" / "tiny-dense")
    shutil.copytree(moe_study_run, out / "runs" / "tiny-moe")
    (out / "runs" / "tiny-moe-fine").mkdir()  # a folder that is not a run
    lines = []
    return task_type_stage(out, StudyPlan.quick_plan(), lines.append), lines


def test_stage_keys_and_counts(stage):
    result, lines = stage
    assert set(result) == {"basis", "ci", "per_level", "items", "models", "pairs", "floor_warnings", "seconds",
                           "failures"}
    assert result["basis"] == "measured at tiny scale" and result["ci"] == "Wilson 95%"
    assert result["per_level"] == QUICK_PER_LEVEL
    assert result["items"] == {"knowledge": 5 * QUICK_PER_LEVEL, "reasoning": 5 * QUICK_PER_LEVEL}
    assert list(result["models"]) == ["tiny-dense", "tiny-moe"]
    dense, moe = result["models"]["tiny-dense"], result["models"]["tiny-moe"]
    assert dense["kind"] == "dense" and moe["kind"] == "moe"
    assert moe["params_total"] > moe["params_active"] and dense["params_total"] == dense["params_active"]
    for m in (dense, moe):
        assert {"n", "correct", "accuracy", "ci_low", "ci_high", "chance", "levels"} <= set(m["scores"]["knowledge"])
        assert m["scores"]["reasoning"]["n"] == result["items"]["reasoning"]
    assert result["pairs"] == {"iso_active": ["tiny-dense", "tiny-moe"], "iso_total": ["tiny-dense-wide", "tiny-moe"]}
    assert len(result["failures"]) == 2 and any("tiny-dense-wide" in f for f in result["failures"])
    assert any("skipped" in line for line in lines) and result["seconds"] > 0


def test_floor_warnings_rules():
    def cell(k, n, chance):
        lo, hi = wilson(k, n)
        return {"n": n, "correct": k, "accuracy": k / n, "ci_low": lo, "ci_high": hi, "chance": chance}

    low = {"knowledge": {**cell(3, 50, 0.1), "levels": {}},
           "reasoning": {**cell(4, 40, 0.05), "levels": {"1": cell(1, 10, 0.1)}}}
    high = {"knowledge": {**cell(3, 50, 0.1), "levels": {}},
            "reasoning": {**cell(30, 40, 0.05), "levels": {"1": cell(10, 10, 0.1)}}}
    warned = floor_warnings({"a": {"scores": low}, "b": {"scores": low}})
    assert len(warned) == 3 and "knowledge" in warned[0] and "reasoning set" in warned[1] and "level 1" in warned[2]
    warned = floor_warnings({"a": {"scores": low}, "b": {"scores": high}})
    assert len(warned) == 1 and "knowledge" in warned[0]
    assert floor_warnings({}) == ["no study model was probed: there is no task-type evidence"]


class _Page:
    def __init__(self):
        self.tables, self.figs = {}, []

    def table(self, name, headers, rows, basis=None, caption="", detail=""):
        self.tables[name] = (headers, rows)
        return f"<table {name}>"

    def figure(self, key, svg, caption, basis, missing, detail=""):
        self.figs.append((key, svg))
        return svg or missing


def test_report_section_and_figures(stage):
    result, _ = stage
    page = _Page()
    html = section({"task_type": result}, page)
    headers, rows = page.tables["task_type"]
    assert headers[:2] == ["model", "kind"] and len(rows) == 2 * (1 + 5 + 1 + 5)
    assert page.figs and page.figs[0][1].startswith("<svg")
    _, pair_rows = page.tables["task_type_pairs"]
    assert {r[0] for r in pair_rows} == {"iso-active"}  # iso-total's tiny-dense-wide is missing
    assert "level 1" in html and "failed:" in html
    diffs = pair_differences(result)
    d = next(x for x in diffs if x["set"] == "reasoning" and x["level"] == "all")
    dense = result["models"]["tiny-dense"]["scores"]["reasoning"]["accuracy"]
    moe = result["models"]["tiny-moe"]["scores"]["reasoning"]["accuracy"]
    assert d["difference"] == pytest.approx(dense - moe) and d["ci_low"] <= d["difference"] <= d["ci_high"]
    f = figures({"task_type": result})
    assert f["task_type_tiny_dense_knowledge_n"] == 5 * QUICK_PER_LEVEL
    assert f["task_type_iso_active_reasoning_difference"] == pytest.approx(dense - moe)
    assert f["task_type_floor_warnings"] == result["floor_warnings"]


def test_report_section_without_the_stage():
    page = _Page()
    assert "Not run" in section({}, page) and "Not run" in section({"task_type": {"skipped": "x"}}, page)
    assert "No study model" in section({"task_type": {"models": {}, "floor_warnings": ["w"]}}, page)
    assert figures({})["task_type_floor_warnings"] == []
