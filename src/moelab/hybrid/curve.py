"""The threshold sweep and its cost-quality curve: every policy point, its Pareto flags, the best of each policy.

A point is Pareto-optimal (`pareto`) when no other point is at least as accurate at no more measured latency per
query, and strictly better in one of the two; `pareto_flops` is the same against FLOPs per query. Points with
equal accuracy and cost do not dominate each other. The best cascade (route) is the most accurate cascade (route)
point, ties going to the lower latency, then the lower FLOPs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from moelab.hybrid import policies
from moelab.hybrid.policies import Point
from moelab.hybrid.table import Query


def pareto_flags(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (accuracy, cost) pairs: True where no other pair dominates (higher or equal accuracy at lower or
    equal cost, strictly better in one)."""
    out = []
    for i, (acc, cost) in enumerate(points):
        dominated = any(a >= acc and c <= cost and (a > acc or c < cost)
                        for j, (a, c) in enumerate(points) if j != i)
        out.append(not dominated)
    return out


def sweep(queries: Sequence[Query], thresholds: Sequence[float]) -> list[Point]:
    """dense, moe, the cascade and the classifier route at every threshold, and the domain route; flagged."""
    points = [policies.dense(queries), policies.moe(queries)]
    points += [policies.cascade(queries, t) for t in thresholds]
    points += [policies.route(queries, t) for t in thresholds]
    points.append(policies.route_by_domain(queries))
    latency = pareto_flags([(p.accuracy, p.latency_s_mean) for p in points])
    flops = pareto_flags([(p.accuracy, p.flops_per_query) for p in points])
    return [replace(p, pareto=a, pareto_flops=b) for p, a, b in zip(points, latency, flops, strict=True)]


def best(points: Sequence[Point], policy: str, router: str | None = None) -> Point | None:
    """The most accurate point of `policy` (and `router`, when given); ties: lower latency, then lower FLOPs."""
    mine = [p for p in points if p.policy == policy and (router is None or p.router == router)]
    return min(mine, key=lambda p: (-p.accuracy, p.latency_s_mean, p.flops_per_query), default=None)
