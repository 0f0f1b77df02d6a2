"""The study's hybrid stage (skips without runs, measures with moelab's engine on --quick, falls back from a failing
vLLM, never raises) and the report section (figure, table of every point, not-run cases, summary figures)."""

import shutil
from types import SimpleNamespace

import pytest

from moelab.errors import MoelabError
from moelab.eval.probes import probe_items
from moelab.hybrid import curve
from moelab.report import hybrid_section
from moelab.study import hybrid as stage


@pytest.fixture(scope="module")
def study_dir(dense_run, moe_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    shutil.copytree(dense_run, out / "runs" / "tiny-dense")
    shutil.copytree(moe_run, out / "runs" / "tiny-moe")
    return out


QUICK = SimpleNamespace(quick=True, hybrid_per_level=1)


def test_stage_skips_without_runs(tmp_path):
    got = stage.hybrid_stage(tmp_path, QUICK, lambda _m: None)
    assert got["skipped"] and "no trained run" in got["skipped"]


def test_stage_quick_measures_with_moelab(study_dir):
    lines = []
    got = stage.hybrid_stage(study_dir, QUICK, lines.append)
    assert got["skipped"] is None and got["engine"] == "moelab" and got["failures"] == []
    assert "--quick" in got["engine_note"] and got["scope"] == "quick"
    assert (study_dir / "hybrid" / "hybrid.json").is_file()
    assert got["items"] == len(probe_items(1)) and any(line.startswith("study: hybrid: ") for line in lines)


def test_stage_falls_back_from_vllm_and_never_raises(study_dir, monkeypatch):
    import moelab.hybrid.run as run

    real = run.run_hybrid
    calls = []

    def fake(dense, moe, out, engine, per_level, log):
        calls.append(engine)
        if engine == "vllm":
            raise MoelabError("vLLM serving dense exited before it was ready")
        return real(dense, moe, out, engine=engine, per_level=per_level, log=log, thresholds="0.5")

    monkeypatch.setattr(run, "run_hybrid", fake)
    engine = stage._engine
    monkeypatch.setattr(stage, "_engine", lambda plan: ("vllm", None))
    got = stage.hybrid_stage(study_dir, SimpleNamespace(quick=False, hybrid_per_level=1), lambda _m: None)
    assert calls == ["vllm", "moelab"] and got["engine"] == "moelab" and got["skipped"] is None
    assert got["failures"] and "exited before it was ready" in got["failures"][0]
    assert "vLLM failed" in got["engine_note"]

    def broken(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(run, "run_hybrid", broken)
    monkeypatch.setattr(stage, "_engine", engine)
    got = stage.hybrid_stage(study_dir, QUICK, lambda _m: None)
    assert got["skipped"] == "RuntimeError: a bug" and got["failures"] == ["RuntimeError: a bug"]


def _study():
    from hybrid_table import TABLE

    points = curve.sweep(TABLE, [0.0, 0.5, 1.0])
    best = {"cascade": curve.best(points, "cascade").to_dict(), "route": curve.best(points, "route", "classifier")
            .to_dict()}
    return {"hybrid": {"engine": "moelab", "engine_note": "moelab's own", "basis": "measured at tiny scale",
                       "items": 4, "per_level": 1, "points": [p.to_dict() for p in points], "best": best,
                       "router": {"kind": "logistic regression", "n": 4, "positives": 1},
                       "models": {"dense": {"name": "tiny-dense"}, "moe": {"name": "tiny-moe"}}}}


def test_section_and_figures():
    from moelab.report.html import _Page

    page = _Page()
    html = hybrid_section.section(_study(), page)
    assert "<svg" in html and "Figure 1." in html and page.figures == 1
    headers, rows = page.csvs["hybrid"]
    assert len(rows) == 9 and "ms per query (mean)" in headers
    assert [r[0] for r in rows][:3] == ["dense alone", "MoE alone", "cascade"]
    assert rows[0][4] == 0.5 and rows[0][7] == pytest.approx(1750.0)  # 2 of 4, 1.75 s mean
    fig = hybrid_section.figures(_study())
    assert fig["hybrid_dense_accuracy"] == 0.5 and fig["hybrid_best_cascade_threshold"] == 0.5
    assert fig["hybrid_best_cascade_latency_ms"] == pytest.approx(3750.0)


def test_section_not_run():
    from moelab.report.html import _Page

    assert "Not run" in hybrid_section.section({}, _Page())
    assert "no trained run" in hybrid_section.section({"hybrid": {"skipped": "no trained run at x"}}, _Page())
    assert hybrid_section.figures({"hybrid": {"skipped": "why"}}) == {"hybrid_skipped": "why"}
    assert hybrid_section.figures({}) == {}
