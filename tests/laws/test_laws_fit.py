"""The fitter (moelab.laws.fit) against laws it did not make: exact recovery, the interval's coverage under noise
(checked over many draws, not one), the profile interval beside the Wald interval from a numerical Jacobian, the
bounds, and the sweep-level fits (held-out error, the (C*E)^-beta axis, too few points)."""

import math

import numpy as np
import pytest

from moelab.errors import MoelabError
from moelab.laws.fit import ALPHA_MAX, fit_power_law, fit_pure_power_law, prediction_range, t975
from moelab.laws.fits import fit_sweep

C = np.geomspace(1e12, 1e15, 8)


def law(c, e=2.0, a=300.0, alpha=0.2):
    return e + a * np.asarray(c, dtype=float) ** -alpha


@pytest.mark.parametrize("e,a,alpha", [(2.0, 300.0, 0.2), (0.5, 40.0, 0.076), (3.1, 9e4, 0.4), (0.0, 60.0, 0.1)])
def test_exact_points_are_recovered(e, a, alpha):
    f = fit_power_law(C, law(C, e, a, alpha))
    assert f.alpha == pytest.approx(alpha, rel=1e-5)
    assert f.E == pytest.approx(e, abs=1e-6)
    assert f.A == pytest.approx(a, rel=1e-4)
    assert f.predict(3e15) == pytest.approx(law(3e15, e, a, alpha), rel=1e-7)
    assert f.alpha_ci[0] <= alpha * (1 + 1e-9) and alpha * (1 - 1e-9) <= f.alpha_ci[1]


def test_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    truth = law(C)
    trials, covered, widths = 300, 0, []
    for _ in range(trials):
        f = fit_power_law(C, truth + rng.normal(0, 0.01, len(C)))
        covered += f.alpha_ci[0] <= 0.2 <= f.alpha_ci[1]
        widths.append(f.alpha_ci[1] - f.alpha_ci[0])
    # binomial sd at 95% of 300 is 1.3%: a nominal interval lands in [0.90, 0.99]; a too-narrow one does not
    assert 0.90 <= covered / trials <= 0.99
    assert 0.02 < float(np.median(widths)) < 0.5  # informative, not the whole search range


def test_profile_interval_is_close_to_wald_interval_when_well_determined():
    """Wald: alpha +- t * sqrt(s^2 (J^T J)^-1)[alpha] with J the Jacobian of E + A c^-alpha in (E, log A, alpha),
    computed here by central differences: an independent route to the same interval."""
    rng = np.random.default_rng(3)
    y = law(C) + rng.normal(0, 0.002, len(C))
    f = fit_power_law(C, y)

    def model(p):
        return p[0] + math.exp(p[1]) * C ** -p[2]

    p = np.array([f.E, math.log(f.A), f.alpha])
    jac = np.empty((len(C), 3))
    for k in range(3):
        h = np.zeros(3)
        h[k] = 1e-6 * max(1.0, abs(p[k]))
        jac[:, k] = (model(p + h) - model(p - h)) / (2 * h[k])
    s2 = float(((y - model(p)) ** 2).sum()) / (len(C) - 3)
    se = math.sqrt(s2 * np.linalg.inv(jac.T @ jac)[2, 2])
    half = t975(len(C) - 3) * se
    lo, hi = f.alpha_ci
    assert lo == pytest.approx(f.alpha - half, rel=0.15)
    assert hi == pytest.approx(f.alpha + half, rel=0.15)


def test_bounds_and_open_intervals():
    # a rising loss: the best decreasing law is flat (A = 0, E = mean), said so
    f = fit_power_law(C[:5], [3.0, 3.1, 3.2, 3.3, 3.4])
    assert f.A == 0.0 and "A=0" in f.at_bound and f.E == pytest.approx(3.2)
    # a pure power law: E sits on its bound 0 and alpha is still recovered
    f = fit_power_law(C, 5 * C ** -0.08)
    assert f.E == pytest.approx(0.0, abs=1e-6) and f.alpha == pytest.approx(0.08, rel=1e-4)
    # four noisy points: one residual degree of freedom, the interval may reach the search limit and says so
    rng = np.random.default_rng(1)
    f = fit_power_law(C[:4], law(C[:4]) + rng.normal(0, 0.05, 4))
    assert f.alpha_ci is not None
    assert ("high" in f.ci_open) == (f.alpha_ci[1] == pytest.approx(ALPHA_MAX))
    assert fit_power_law(C[:3], law(C[:3])).alpha_ci is None  # no degrees of freedom: no interval


def test_refuses_bad_points():
    with pytest.raises(MoelabError, match="3 distinct"):
        fit_power_law([1e12, 1e12, 1e13], [3.0, 3.0, 2.9])
    with pytest.raises(MoelabError, match="positive finite"):
        fit_power_law([1e12, 1e13, float("nan")], [3.0, 2.9, 2.8])
    with pytest.raises(MoelabError, match="positive finite"):
        fit_power_law([1e12, 1e13, 1e14], [3.0, -2.9, 2.8])


def test_hostile_magnitudes_are_one_line_not_overflow():
    """The review's case: exp(intercept) or x^-alpha past a float's range is a MoelabError, never an
    OverflowError or an inf in the result."""
    with pytest.raises(MoelabError, match="overflowed"):  # slope ~ -5e6 on a narrow x: exp(intercept) = inf
        fit_pure_power_law([1e10, 1.0001e10, 1.0002e10], [1e-300, 1.0, 1e99])
    with pytest.raises(MoelabError, match="overflowed"):  # exp(intercept) underflows to A = 0
        fit_pure_power_law([1, 2, 3], [1e-300, 1e-300, 1e99])
    for x, y in (([1e-300, 1.0, 1e300], [1.0, 2.0, 3.0]), ([1e12, 1e13, 1e14], [1e308, 2.0, 3.0])):
        with pytest.raises(MoelabError, match="within a factor"):
            fit_power_law(x, y)
        with pytest.raises(MoelabError, match="within a factor"):
            fit_pure_power_law(x, y)


def test_flat_losses_are_no_power_law_and_never_negative_zero():
    f = fit_power_law(C[:5], [3.0] * 5)
    assert f.A == 0.0 and "A=0" in f.at_bound and f.ci_open == ["low", "high"]
    pure = fit_pure_power_law(C[:5], [3.0] * 5)
    assert pure["alpha"] == 0.0 and math.copysign(1.0, pure["alpha"]) == 1.0
    assert all(math.copysign(1.0, v) == 1.0 for v in pure["alpha_ci"])


def test_pure_power_law_slope_and_interval():
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(200):
        y = 40 * C ** -0.076 * np.exp(rng.normal(0, 0.01, len(C)))
        r = fit_pure_power_law(C, y)
        covered += r["alpha_ci"][0] <= 0.076 <= r["alpha_ci"][1]
    assert 0.90 <= covered / 200 <= 0.99
    r = fit_pure_power_law(C, 40 * C ** -0.076)
    assert r["alpha"] == pytest.approx(0.076, rel=1e-9) and r["A"] == pytest.approx(40, rel=1e-9)


def test_prediction_range_brackets_the_point_prediction():
    rng = np.random.default_rng(2)
    y = law(C[:6]) + rng.normal(0, 0.01, 6)
    f = fit_power_law(C[:6], y)
    lo, hi = prediction_range(C[:6], y, f, float(C[-1]))
    assert lo <= f.predict(float(C[-1])) <= hi


def _rows(kind, sizes, loss, tokens=409_600, experts=0):
    rows = []
    for s in sizes:
        c = 6.0 * s * tokens
        rows.append({"name": f"{kind}-{s}-e{experts}", "kind": kind, "axis": "size", "size": s, "params_active": s,
                     "compute": c, "experts": experts, "tokens": tokens, "final_val": float(loss(c, experts))})
    return rows


SIZES = [500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000]


def test_sweep_fit_holds_out_the_largest_and_scores_it():
    rows = _rows("dense", SIZES, lambda c, _: law(c, 2.0, 300.0, 0.2))
    rows[-1]["final_val"] = 2.5  # the largest run measured off the law: the error is against it
    out = fit_sweep({"rows": rows, "token_budget": 409_600})
    d = out["fits"]["dense"]
    truth = float(law(rows[-1]["compute"], 2.0, 300.0, 0.2))
    assert d["points"] == 4 and d["fit_rows"] == [r["name"] for r in rows[:-1]]
    assert d["alpha"] == pytest.approx(0.2, rel=1e-4) and d["E"] == pytest.approx(2.0, abs=1e-4)
    h = d["holdout"]
    assert h["name"] == rows[-1]["name"] and h["measured"] == 2.5
    assert h["predicted"] == pytest.approx(truth, rel=1e-6)
    assert h["rel_error"] == pytest.approx((truth - 2.5) / 2.5, rel=1e-5)
    assert [p["held_out"] for p in d["data"]] == [False] * 4 + [True]
    assert "moe" not in out["fits"] and "moe_experts" not in out["fits"]


def test_sweep_fit_recovers_beta_over_the_expert_axis():
    beta_law = lambda c, e: float(law(c * e, 1.5, 200.0, 0.15))  # noqa: E731
    rows = _rows("moe", SIZES, beta_law, experts=8)
    for n in (4, 16):
        rows += [dict(r, name=f"moe-2M-e{n}", axis="experts", experts=n, final_val=beta_law(r["compute"], n))
                 for r in _rows("moe", [2_000_000], beta_law, experts=n)]
    out = fit_sweep({"rows": rows})
    m = out["fits"]["moe_experts"]
    assert m["beta"] == pytest.approx(0.15, rel=1e-4) and m["points"] == 6  # 7 points, the largest C*E held out
    assert m["holdout"]["name"] == "moe-8000000-e8" and abs(m["holdout"]["rel_error"]) < 1e-6
    assert out["fits"]["moe"]["points"] == 4  # the size axis alone
    assert out["seeds"] == {"alpha": 0.076, "beta": 0.084}
    assert m["uninformative"] == [] and out["fits"]["moe"]["uninformative"] == []  # exact points: bounded


def test_uninformative_reasons():
    rows = _rows("dense", SIZES, lambda c, _: 3.0 + 0 * c)  # flat: no power law, the interval spans the range
    d = fit_sweep({"rows": rows})["fits"]["dense"]
    assert any("A = 0" in w for w in d["uninformative"]) and any("search range" in w for w in d["uninformative"])
    three = fit_sweep({"rows": _rows("dense", SIZES[:3], lambda c, _: law(c))})["fits"]["dense"]
    assert any("no interval" in w for w in three["uninformative"])


def test_sweep_fit_needs_three_points_per_kind():
    rows = _rows("dense", SIZES, lambda c, _: law(c)) + _rows("moe", SIZES[:2], lambda c, _: law(c), experts=8)
    with pytest.raises(MoelabError, match="moe has 2 scored"):
        fit_sweep({"rows": rows})
    three = fit_sweep({"rows": _rows("dense", SIZES[:3], lambda c, _: law(c))})["fits"]["dense"]
    assert three["holdout"] is None and three["points"] == 3 and "none held out" in three["holdout_note"]


def test_expert_axis_alone_is_the_slope_in_experts_at_fixed_compute():
    pure = lambda c, e: float(40 * (c * e) ** -0.084)  # noqa: E731 - the seeds' form, exactly
    rows = _rows("moe", SIZES, pure, experts=8)
    for n in (4, 16):
        rows += [dict(r, name=f"moe-2M-e{n}", axis="experts", experts=n, final_val=pure(r["compute"], n))
                 for r in _rows("moe", [2_000_000], pure, experts=n)]
    m = fit_sweep({"rows": rows})["fits"]["moe_experts"]
    only = m["expert_axis_only"]
    assert only["size"] == 2_000_000 and only["experts"] == [4, 8, 16] and only["points"] == 3
    assert only["beta"] == pytest.approx(0.084, rel=1e-9) and m["pure"]["beta"] == pytest.approx(0.084, rel=1e-9)
    rows = [r for r in rows if r["experts"] != 16]  # two counts at one size: no slope of its own
    assert fit_sweep({"rows": rows})["fits"]["moe_experts"]["expert_axis_only"] is None


def test_row_numbers_past_a_float_are_refused_not_overflowed():
    from moelab.laws.fits import _check_row

    row = {"name": "dense-10k", "kind": "dense", "size": 10_000, "params_active": 10_000, "compute": 6e10,
           "experts": 0, "tokens": 1000, "final_val": 3.0}
    _check_row(row, "row")
    for key, value in (("compute", 10**400), ("size", 10**400), ("final_val", 10**400)):
        with pytest.raises(MoelabError, match=f"{key} must be a positive"):
            _check_row(dict(row, **{key: value}), "row")
