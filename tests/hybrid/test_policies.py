"""Hybrid policies composed from a hand-made table of per-query results: the extremes are each model alone (or both
costs), an intermediate threshold is counted by hand, accuracy carries a Wilson interval, escalation its share."""

import pytest
from hybrid_table import DENSE_F, DENSE_S, MOE_F, MOE_S, ROUTER_S, TABLE

from moelab.eval.score import wilson
from moelab.hybrid import policies


def _mean(values):
    return sum(values) / len(values)


def test_dense_and_moe_alone():
    d, m = policies.dense(TABLE), policies.moe(TABLE)
    assert (d.correct, d.n, d.escalation_rate) == (2, 4, 0.0)
    assert (m.correct, m.n, m.escalation_rate) == (2, 4, 1.0)
    assert d.latency_s_mean == pytest.approx(_mean(DENSE_S)) and m.latency_s_mean == pytest.approx(_mean(MOE_S))
    assert d.flops_per_query == pytest.approx(_mean(DENSE_F)) and m.flops_per_query == pytest.approx(_mean(MOE_F))
    assert (d.ci_low, d.ci_high) == pytest.approx(wilson(2, 4))
    assert d.sets["knowledge"]["correct"] == 1 and d.sets["reasoning"]["correct"] == 1
    assert m.sets["knowledge"]["correct"] == 2 and m.sets["reasoning"]["correct"] == 0


def test_cascade_at_zero_is_dense_alone():
    c, d = policies.cascade(TABLE, 0.0), policies.dense(TABLE)
    assert (c.correct, c.latency_s_mean, c.flops_per_query, c.escalation_rate) == \
        (d.correct, d.latency_s_mean, d.flops_per_query, 0.0)


def test_cascade_at_one_pays_both_and_answers_with_the_moe():
    c, m = policies.cascade(TABLE, 1.0), policies.moe(TABLE)  # every dense confidence in TABLE is below 1
    assert c.correct == m.correct and c.escalation_rate == 1.0
    assert c.latency_s_mean == pytest.approx(_mean([a + b for a, b in zip(DENSE_S, MOE_S, strict=True)]))
    assert c.flops_per_query == pytest.approx(_mean([a + b for a, b in zip(DENSE_F, MOE_F, strict=True)]))


def test_cascade_in_between_counted_by_hand():
    # dense confidences 0.30, 0.90, 0.55, 0.10: below 0.5 are k1 and r2, which the MoE answers (right, wrong);
    # k2 and r1 keep the dense answers (right, right): 3 of 4
    c = policies.cascade(TABLE, 0.5)
    assert c.correct == 3 and c.escalation_rate == 0.5
    assert c.latency_s_mean == pytest.approx((1 + 3 + 2 + 1 + 3 + 5) / 4)
    assert c.flops_per_query == pytest.approx((10 + 20 + 10 + 12 + 14 + 28) / 4)
    assert (c.ci_low, c.ci_high) == pytest.approx(wilson(3, 4))
    # a confidence equal to the threshold is not escalated (strictly below)
    assert policies.cascade(TABLE, 0.55).escalation_rate == 0.5


def test_route_extremes_are_each_model_plus_the_router():
    r0, r1 = policies.route(TABLE, 0.0), policies.route(TABLE, 1.0)
    m, d = policies.moe(TABLE), policies.dense(TABLE)
    assert r0.correct == m.correct and r0.escalation_rate == 1.0
    assert r0.latency_s_mean == pytest.approx(m.latency_s_mean + _mean(ROUTER_S))
    assert r0.flops_per_query == pytest.approx(m.flops_per_query)
    assert r1.correct == d.correct and r1.escalation_rate == 0.0
    assert r1.latency_s_mean == pytest.approx(d.latency_s_mean + _mean(ROUTER_S))


def test_route_in_between_and_by_domain():
    # P >= 0.5: k1, k2 to the MoE (right, right); r1, r2 to dense (right, wrong): 3 of 4, no wasted attempt
    r = policies.route(TABLE, 0.5)
    assert r.correct == 3 and r.escalation_rate == 0.5 and r.router == "classifier"
    assert r.latency_s_mean == pytest.approx((3 + 4 + 1 + 3) / 4 + _mean(ROUTER_S))
    assert r.flops_per_query == pytest.approx((20 + 20 + 12 + 14) / 4)
    dom = policies.route_by_domain(TABLE)  # facts to the MoE, math to dense: the same choice here
    assert (dom.correct, dom.escalation_rate, dom.threshold, dom.router) == (3, 0.5, None, "domain")
    assert dom.latency_s_mean == pytest.approx((3 + 4 + 1 + 3) / 4)  # the rule reads a label: no router time


def test_compose_refuses_mismatched_choices():
    with pytest.raises(ValueError):
        policies.compose("route", 0.5, TABLE, [True])
    with pytest.raises(ValueError):
        policies.compose("route", 0.5, [], [])
