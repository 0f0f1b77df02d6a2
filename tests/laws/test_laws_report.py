"""The report's scaling-law section and summary.json figures, on a study whose laws come from known synthetic
laws: the numbers shown are the fits', the held-out point is marked, a stage that did not run says so."""

import numpy as np
import pytest

from moelab.laws.fits import fit_sweep
from moelab.report.html import _Page
from moelab.report.laws_section import figures, section


def _study():
    rows = []
    for kind, alpha in (("dense", 0.2), ("moe", 0.25)):
        for s in (100_000, 200_000, 400_000, 800_000, 1_600_000):
            c = 6.0 * s * 204_800
            rows.append({"name": f"{kind}-{s}", "kind": kind, "axis": "size", "size": s, "params_active": s,
                         "compute": c, "experts": 8 if kind == "moe" else 0, "tokens": 204_800,
                         "final_val": float(2 + 300 * c ** -alpha) * (1.01 if s == 1_600_000 else 1.0)})
    for n in (4, 16):
        c = 6.0 * 400_000 * 204_800
        rows.append({"name": f"moe-400k-e{n}", "kind": "moe", "axis": "experts", "size": 400_000,
                     "params_active": 400_000, "compute": c, "experts": n, "tokens": 204_800,
                     "final_val": float(2 + 300 * (c * n / 8) ** -0.25)})
    sweep = {"rows": rows, "token_budget": 204_800, "config": {"steps": 100, "batch_size": 16, "seq_len": 128,
                                                               "seed": 0}}
    fitted = fit_sweep(sweep)
    return {"laws": {"sweep": sweep, "fits": fitted["fits"], "notes": fitted["notes"], "token_budget": 204_800,
                     "seconds": 12.0, "failures": [], "skipped": None}}


def test_section_shows_the_fits_and_the_held_out_point():
    study, page = _study(), _Page()
    html = section(study, page)
    assert page.figures == 1 and "<svg" in html and "fig-laws" in html
    headers, rows = page.csvs["laws_fits"]
    assert [r[0] for r in rows] == ["dense", "MoE, 8 experts top-2", "MoE over the expert axis"]
    fits = study["laws"]["fits"]
    for row, name in zip(rows, ("dense", "moe", "moe_experts"), strict=True):
        f = fits[name]
        key = f["exponent_name"]
        assert row[headers.index("exponent")] == f[key]
        assert row[headers.index("seeds' exponent (pure power law)")] == (0.076 if key == "alpha" else 0.084)
        assert row[headers.index("held-out run")] == f["holdout"]["name"]
    dense = rows[0]
    assert dense[headers.index("held-out run")] == "dense-1600000"
    assert dense[headers.index("prediction error")] == f"{fits['dense']['holdout']['rel_error']:+.2%}"
    # the largest was measured 1% above the law its smaller points follow: predicted = law, error ~ -1%
    assert fits["dense"]["holdout"]["rel_error"] == pytest.approx(1 / 1.01 - 1, abs=1e-4)
    assert len(page.csvs["laws_runs"][1]) == 12
    assert "C = 6 N D varies through the model" in html


def test_figures_are_the_fits_numbers():
    study = _study()
    kf = figures(study)
    f = study["laws"]["fits"]
    assert kf["laws_dense_alpha"] == f["dense"]["alpha"] == pytest.approx(0.2, rel=1e-3)
    assert kf["laws_moe_alpha_ci"] == f["moe"]["alpha_ci"]
    assert kf["laws_moe_experts_beta"] == pytest.approx(0.25, rel=1e-3)
    assert kf["laws_moe_experts_beta_pure"] == f["moe_experts"]["pure"]["beta"]
    assert kf["laws_dense_holdout_rel_error"] == f["dense"]["holdout"]["rel_error"]
    assert (kf["laws_seeds_alpha"], kf["laws_seeds_beta"]) == (0.076, 0.084)
    assert np.isfinite(kf["laws_dense_alpha_pure"])


def test_not_run_skipped_and_broken_input():
    page = _Page()
    assert "Not run" in section({}, page) and "predates" in section({}, page)
    skipped = {"laws": {"skipped": "the sweep did not finish: disk full"}}
    assert "the sweep did not finish: disk full" in section(skipped, page)
    html = section({"laws": {"fits": {}, "failures": ["fit-laws: dense has 2 scored run(s)"]}}, page)
    assert "warning" in html and "dense has 2 scored" in html and "No scaling law was fitted" in html
    for broken in ({"laws": None}, {"laws": {"fits": []}}, {"laws": {"fits": {"dense": {"exponent_name": "alpha"}}}}):
        section(broken, _Page())  # renders without raising
        figures(broken)
    assert figures({})["laws_seeds_alpha"] == 0.076


def test_seeds_come_from_laws_fits(monkeypatch):
    """One source: the report's seeds are moelab.laws.fits.SEEDS (patched here, the report follows)."""
    from moelab.laws import fits as fits_module

    monkeypatch.setattr(fits_module, "SEEDS", {"alpha": 0.5, "beta": 0.25})
    kf = figures(_study())
    assert (kf["laws_seeds_alpha"], kf["laws_seeds_beta"]) == (0.5, 0.25)
    assert "alpha (0.5) and beta (0.25) are compared with this sweep" in section(_study(),
                                                                                   _Page())


def test_no_power_law_and_open_intervals_are_said():
    """A flat dense sweep: A = 0 is "no power law", its open interval "uninformative", never a number alone."""
    rows = [{"name": f"dense-{s}", "kind": "dense", "axis": "size", "size": s, "params_active": s,
             "compute": 6.0 * s * 1000, "experts": 0, "tokens": 1000, "final_val": 3.0}
            for s in (10_000, 20_000, 40_000, 80_000, 160_000)]
    sweep = {"rows": rows, "token_budget": 1000, "config": {}}
    fitted = fit_sweep(sweep)
    page = _Page()
    html = section({"laws": {"sweep": sweep, "fits": fitted["fits"], "failures": [], "skipped": None}}, page)
    headers, table = page.csvs["laws_fits"]
    assert table[0][headers.index("exponent")] == "no power law (A = 0)"
    assert "uninformative" in table[0][headers.index("95% interval (profile)")]
    assert "A = 0: no power law" in html and "uninformative" in html
