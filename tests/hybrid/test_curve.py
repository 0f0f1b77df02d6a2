"""Pareto flags of the cost-quality curve, and the sweep over a hand-made table (see test_policies.TABLE)."""

from hybrid_table import TABLE

from moelab.hybrid import curve


def test_pareto_flags_by_hand():
    # (accuracy, cost): B dominates A (more accurate, cheaper); C is the most accurate; D ties B exactly;
    # E is cheapest; F is as accurate as B but dearer
    pts = [(0.5, 2.0), (0.6, 1.5), (0.9, 4.0), (0.6, 1.5), (0.1, 0.5), (0.6, 3.0)]
    assert curve.pareto_flags(pts) == [False, True, True, True, True, False]
    assert curve.pareto_flags([(0.5, 1.0)]) == [True]


def test_sweep_points_flags_and_best():
    points = curve.sweep(TABLE, [0.0, 0.5, 1.0])
    kinds = [(p.policy, p.threshold, p.router) for p in points]
    assert kinds == [("dense", None, None), ("moe", None, None), ("cascade", 0.0, None), ("cascade", 0.5, None),
                     ("cascade", 1.0, None), ("route", 0.0, "classifier"), ("route", 0.5, "classifier"),
                     ("route", 1.0, "classifier"), ("route", None, "domain")]
    by = {k: p for k, p in zip(kinds, points, strict=True)}
    # dense: 2/4 at 1.75 s; cascade 0.5: 3/4 at 3.75 s; route by domain 3/4 at 2.75 s (dominates the cascade)
    assert by[("dense", None, None)].pareto
    assert by[("route", None, "domain")].pareto
    assert not by[("cascade", 0.5, None)].pareto
    assert not by[("moe", None, None)].pareto  # 2/4 at 3.5 s: dense is as accurate and faster
    for p in points:  # the flag agrees with the definition
        dominated = any(q.accuracy >= p.accuracy and q.latency_s_mean <= p.latency_s_mean
                        and (q.accuracy > p.accuracy or q.latency_s_mean < p.latency_s_mean) for q in points)
        assert p.pareto == (not dominated)
    best = curve.best(points, "cascade")
    assert (best.threshold, best.correct) == (0.5, 3)
    assert curve.best(points, "route", "classifier").threshold == 0.5
    assert curve.best(points, "nothing") is None
