"""Hybrid policies composed from per-query measurements: dense alone, MoE alone, the cascade and the route.

- dense / moe: that model answers every query; its cost per query is its own.
- cascade(t): the dense model answers; when its confidence (exp of the mean token log-probability of its answer)
  is below t the MoE answers instead, and that query costs both attempts (the dense answer is wasted). t = 0
  escalates nothing (dense alone); t = 1 escalates every query whose dense confidence is below 1.
- route(t): before generating, the router's probability that the MoE is needed (moelab.hybrid.router) sends
  the query to the MoE when it is at least t, else to the dense model; one model answers, plus the router's own
  time. t = 0 sends every query to the MoE, t = 1 none (the probability is clipped below 1).
- route by domain: the seeds' rule (knowledge to the MoE, reasoning to dense), no threshold.

Accuracy is exact match over every scored query, with a Wilson 95% interval and n; latency is the mean of the
composed per-query seconds; FLOPs per query the mean of the composed per-query FLOPs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from moelab.hybrid.table import Query

POLICIES = ("dense", "moe", "cascade", "route")
MOE_DOMAINS = ("facts",)  # the seeds' rule: knowledge to the MoE, reasoning (math) to the dense model


@dataclass(frozen=True)
class Point:
    policy: str
    threshold: float | None
    router: str | None  # route points: "classifier" or "domain"
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    latency_s_mean: float
    flops_per_query: float
    escalation_rate: float  # share of queries the MoE answers
    sets: dict = field(default_factory=dict)  # {set: {"n", "correct", "accuracy", "ci_low", "ci_high"}}
    pareto: bool = False  # no other point is at least as accurate and at most as slow (measured latency)
    pareto_flops: bool = False  # the same against FLOPs per query

    def to_dict(self) -> dict:
        return asdict(self)


def _accuracy(correct: int, n: int) -> dict:
    from moelab.eval.score import wilson

    lo, hi = wilson(correct, n)
    return {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0, "ci_low": lo, "ci_high": hi}


def compose(policy: str, threshold: float | None, queries: Sequence[Query], use_moe: Sequence[bool],
            both: Sequence[bool] = (), router: str | None = None) -> Point:
    """The point where query i is answered by the MoE when use_moe[i] (else the dense model), costs both models
    when both[i] (a cascade's escalation), and pays the router's seconds when `router` is "classifier"."""
    both = list(both) or [False] * len(queries)
    if not (len(queries) == len(use_moe) == len(both)) or not queries:
        raise ValueError("compose: one choice per query, and at least one query")
    seconds, flops, right = [], [], []
    sets: dict[str, list[bool]] = {}
    for q, moe, twice in zip(queries, use_moe, both, strict=True):
        answer = q.moe if moe else q.dense
        s, f = answer.seconds, answer.flops
        if twice:  # the wasted first attempt
            s, f = s + q.dense.seconds, f + q.dense.flops
        if router == "classifier":
            s += q.router_seconds
        seconds.append(s)
        flops.append(f)
        right.append(answer.correct)
        sets.setdefault(q.set, []).append(answer.correct)
    n = len(queries)
    acc = _accuracy(sum(right), n)
    return Point(policy=policy, threshold=threshold, router=router, n=n, correct=acc["correct"],
                 accuracy=acc["accuracy"], ci_low=acc["ci_low"], ci_high=acc["ci_high"],
                 latency_s_mean=sum(seconds) / n, flops_per_query=sum(flops) / n,
                 escalation_rate=sum(map(bool, use_moe)) / n,
                 sets={s: _accuracy(sum(v), len(v)) for s, v in sorted(sets.items())})


def dense(queries: Sequence[Query]) -> Point:
    return compose("dense", None, queries, [False] * len(queries))


def moe(queries: Sequence[Query]) -> Point:
    return compose("moe", None, queries, [True] * len(queries))


def cascade(queries: Sequence[Query], threshold: float) -> Point:
    escalate = [q.dense.confidence < threshold for q in queries]
    return compose("cascade", threshold, queries, escalate, escalate)


def route(queries: Sequence[Query], threshold: float) -> Point:
    return compose("route", threshold, queries, [q.p_moe >= threshold for q in queries], router="classifier")


def route_by_domain(queries: Sequence[Query], moe_domains: Sequence[str] = MOE_DOMAINS) -> Point:
    return compose("route", None, queries, [q.domain in moe_domains for q in queries], router="domain")
