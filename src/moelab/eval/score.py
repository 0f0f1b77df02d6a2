"""Exact-match accuracy of generated answers, per probe set and level, with Wilson 95% intervals and the floor.

The Wilson score interval (E. B. Wilson, "Probable inference, the law of succession, and statistical
inference", JASA 22 (1927) 209-212) stays inside [0, 1] and keeps its coverage at small n and at accuracies near
0 or 1, where the normal approximation does not. The floor ("chance") of a group of items is the accuracy of
the best constant answer on those items: always answering the most common answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from moelab.errors import MoelabError
from moelab.eval.probes import ProbeItem, best_constant, levels

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials; (0.0, 1.0) when n is 0."""
    if n < 0 or not 0 <= k <= max(n, 0):
        raise MoelabError(f"wilson needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at k = 0 (k = n) the bound is exactly 0 (1); the formula's rounding would leave it a hair inside
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def exact_match(generated: str, answer: str) -> bool:
    """The generated answer is the answer, up to surrounding whitespace."""
    return generated.strip() == answer.strip()


def _cell(items: Sequence[ProbeItem], right: Sequence[bool]) -> dict:
    n, k = len(items), sum(right)
    lo, hi = wilson(k, n)
    return {"n": n, "correct": k, "accuracy": k / n if n else 0.0, "ci_low": lo, "ci_high": hi,
            "chance": best_constant([item.answer for item in items])}


def score(items: Sequence[ProbeItem], generations: Sequence) -> dict:
    """{set: {"n", "correct", "accuracy", "ci_low", "ci_high", "chance", "levels": {level: {same keys}}}} for the
    sets present; `generations[i]` (a Generation, or anything with .text) answers `items[i]`."""
    if len(items) != len(generations):
        raise MoelabError(f"{len(items)} items but {len(generations)} generations")
    right = [exact_match(g.text, item.answer) for item, g in zip(items, generations, strict=True)]
    out: dict[str, dict] = {}
    for item_set in dict.fromkeys(item.set for item in items):
        idx = [i for i, item in enumerate(items) if item.set == item_set]
        cell = _cell([items[i] for i in idx], [right[i] for i in idx])
        order = [lv for lv in levels(item_set) if any(items[i].level == lv for i in idx)]
        order += sorted({items[i].level for i in idx} - set(order))
        cell["levels"] = {}
        for level in order:
            sub = [i for i in idx if items[i].level == level]
            cell["levels"][level] = _cell([items[i] for i in sub], [right[i] for i in sub])
        out[item_set] = cell
    return out


def at_floor(cell: dict) -> bool:
    """Whether a score cell's accuracy is at chance or within its own interval of it (not evidence of learning)."""
    return cell["n"] == 0 or cell["accuracy"] <= cell["chance"] or cell["ci_low"] <= cell["chance"]


def difference(a: dict, b: dict) -> dict:
    """accuracy(a) - accuracy(b) of two score cells, with Newcombe's hybrid Wilson 95% interval (R. G. Newcombe,
    "Interval estimation for the difference between independent proportions", Stat. Med. 17 (1998) 873-890,
    method 10). The two models answer the same items, so this independent-samples interval is conservative."""
    p1, p2 = a["accuracy"], b["accuracy"]
    d = p1 - p2
    lo = d - math.sqrt((p1 - a["ci_low"]) ** 2 + (b["ci_high"] - p2) ** 2)
    hi = d + math.sqrt((a["ci_high"] - p1) ** 2 + (p2 - b["ci_low"]) ** 2)
    return {"difference": d, "ci_low": lo, "ci_high": hi, "n": min(a["n"], b["n"])}
