"""The study's laws stage: its result has the keys the report and the claims table read, a rerun skips finished
runs, and a failure is recorded, never raised (sizes and steps shrunk here; the corpus is the test corpus)."""

import pytest

from moelab.errors import MoelabError
from moelab.laws import sweep as sweep_module
from moelab.study import laws as stage
from moelab.study.plan import StudyPlan


@pytest.fixture
def tiny_stage(monkeypatch, corpus_dir):
    real = sweep_module.sweep_config
    monkeypatch.setattr(sweep_module, "sweep_config",
                        lambda **kw: real(**{**kw, "data": str(corpus_dir), "vocab_size": 300, "eval_tokens": 256}))
    monkeypatch.setattr(stage, "QUICK_SIZES", (10_000, 20_000, 40_000, 80_000))
    monkeypatch.setattr(stage, "QUICK_EXPERTS", (4, 8))
    monkeypatch.setattr(stage, "QUICK_EXPERTS_AT", 20_000)
    monkeypatch.setattr(stage, "QUICK_STEPS", 4)
    return StudyPlan.quick_plan()


def test_stage_result_has_the_contract_keys(tmp_path, tiny_stage):
    lines = []
    result = stage.laws_stage(tmp_path, tiny_stage, lines.append)
    assert result["basis"] == "measured at tiny scale" and result["seeds"] == {"alpha": 0.076, "beta": 0.084}
    assert result["skipped"] is None and result["failures"] == [] and result["seconds"] > 0
    assert result["folder"] == str(tmp_path / "laws-quick") and (tmp_path / "laws-quick" / "sweep.json").is_file()
    assert len(result["sweep"]["rows"]) == 9 and result["sweep"]["config"]["steps"] == 4
    assert result["sweep"]["config"]["batch_size"] == tiny_stage.batch_size
    for kind in ("dense", "moe"):
        f = result["fits"][kind]
        assert {"E", "A", "alpha", "alpha_ci", "points", "holdout"} <= set(f)
        assert set(f["holdout"]) >= {"size", "predicted", "measured", "rel_error"} and f["holdout"]["size"] == 80_000
    assert {"beta", "beta_ci", "E", "A", "holdout"} <= set(result["fits"]["moe_experts"])
    assert any("study: laws:" in line for line in lines)
    again = stage.laws_stage(tmp_path, tiny_stage, lines.append)
    assert {r["status"] for r in again["sweep"]["rows"]} == {"skipped (finished)"}
    assert again["fits"]["dense"]["alpha"] == result["fits"]["dense"]["alpha"]


def test_stage_failures_are_recorded_not_raised(tmp_path, tiny_stage, monkeypatch):
    def broken(*args, **kwargs):
        raise MoelabError("no space left on device")

    monkeypatch.setattr(sweep_module, "run_sweep", broken)
    result = stage.laws_stage(tmp_path, tiny_stage, lambda m: None)
    assert "no space left on device" in result["skipped"] and result["fits"] == {}
    assert result["failures"] == ["sweep: no space left on device"]
    monkeypatch.undo()
    monkeypatch.setattr(sweep_module, "run_sweep", lambda *a, **k: {"rows": [], "token_budget": 1})
    result = stage.laws_stage(tmp_path, StudyPlan.quick_plan(), lambda m: None)
    assert result["skipped"] is None and "no scored run" in result["failures"][0]


def test_any_exception_is_recorded_but_an_interrupt_is_not(tmp_path, monkeypatch):
    """A bug (not a MoelabError) in the sweep or the fit is a recorded failure with its type; a KeyboardInterrupt
    (a BaseException) still stops the study."""
    from moelab.laws import fits as fits_module

    def bug(*args, **kwargs):
        raise ValueError("bad shape")

    monkeypatch.setattr(sweep_module, "run_sweep", bug)
    result = stage.laws_stage(tmp_path, StudyPlan.quick_plan(), lambda m: None)
    assert result["failures"] == ["sweep: ValueError: bad shape"] and "ValueError" in result["skipped"]
    monkeypatch.setattr(sweep_module, "run_sweep", lambda *a, **k: {"rows": [], "token_budget": 1})
    monkeypatch.setattr(fits_module, "fit_sweep", bug)
    result = stage.laws_stage(tmp_path, StudyPlan.quick_plan(), lambda m: None)
    assert result["skipped"] is None and result["failures"] == ["ValueError: bad shape"] and result["fits"] == {}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module, "run_sweep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stage.laws_stage(tmp_path, StudyPlan.quick_plan(), lambda m: None)
