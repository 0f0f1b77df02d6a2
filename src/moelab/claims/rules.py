"""The verdict rules: how a seed's figure and moelab's value become confirmed, contradicted or not_reproducible,
each with its tolerance stated in words, and the parser that reads a seed's figure out of its quoted text.

Tolerances (relative to the seed's figure unless said otherwise):

- EXACT: equal (a count read off a config.json, a binomial coefficient).
- ARITH 2%: the seed's own arithmetic on its own figures (a total of its table, a rate), which it rounds.
- ROUNDED 5%: a figure stated to two or three significant figures ("46.7 billion", "47B", "14 GB").
- APPROX 10%: a figure the seed marks as approximate ("~90B", "≈ 0.076", "~32%"), or a memory total that
  depends on a context the seed does not state; and a multi-GPU speedup (bounded by the GPU count, a wider band
  would confirm any reasonable speedup).
- ROUGH 25%: a figure the seed hedges in words ("roughly", "half its total size").
- MODELLED 30%: a step time, throughput, energy, training time or cost the engine models under assumptions the
  seed does not state: twice the engine's holdout median |error| against published GPU measurements
  (15-17%, README "Median |error| of the engine's prediction").
- Sign: a direction measured at tiny scale (magnitudes do not transfer across a thousandfold in size): confirmed
  when moelab's difference has the seed's sign by more than its noise (a 95% interval, an evaluation interval or
  the machine's timing drift), contradicted when it has the other sign by more than that, else not_reproducible.
  A difference of two accuracies carries Newcombe's interval (moelab.eval.score.difference) instead of a noise,
  and a probe set both models answer at the floor (moelab.eval.score.at_floor) gives no verdict.
- Interval: a fitted exponent's 95% interval holds the seed's figure; no verdict when the interval is not
  informative (it spans zero or more than a factor Interval.max_ratio) or the fit found no power law.
- Paired: two policies answering the same queries, compared by the exact McNemar test on their discordant
  answers (Q. McNemar, Psychometrika 12 (1947) 153-157), not by two independent intervals.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

CONFIRMED, CONTRADICTED, NOT_REPRODUCIBLE, OUT_OF_SCOPE = "confirmed", "contradicted", "not_reproducible", \
    "out_of_scope"
VERDICTS = (CONFIRMED, CONTRADICTED, NOT_REPRODUCIBLE, OUT_OF_SCOPE)

_WORDS = {"one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "five": 5.0, "six": 6.0, "seven": 7.0,
          "eight": 8.0, "half": 0.5, "single": 1.0}
_NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?"
_RANGE = re.compile(rf"({_NUMBER})\s*[-–]\s*({_NUMBER})")
_PRODUCT = re.compile(rf"({_NUMBER})\s*[×x]\s*({_NUMBER})$")


def _float(text: str) -> float:
    return float(text.replace(",", ""))


def parse_number(token: str) -> float:
    """The number a quoted figure states, as written (no unit scaling): "~13 billion" -> 13, "$110,592" ->
    110592, "2.4e24" -> 2.4e24, "+50%" -> 50, "4096×8" -> 32768, "eight" -> 8. ValueError when it states none."""
    text = token.strip().lower()
    product = _PRODUCT.search(text)
    if product:
        return _float(product.group(1)) * _float(product.group(2))
    match = re.search(_NUMBER, text)
    if match:
        return _float(match.group(0))
    for word, value in _WORDS.items():
        if re.search(rf"\b{word}\b", text):
            return value
    raise ValueError(f"no number in {token!r}")


def parse_range(token: str) -> tuple[float, float]:
    """(low, high) of a quoted range: "1.5–1.9×" -> (1.5, 1.9), "2-3ms" -> (2, 3)."""
    match = _RANGE.search(token)
    if not match:
        raise ValueError(f"no range in {token!r}")
    return _float(match.group(1)), _float(match.group(2))


def table_cells(line: str) -> list[str]:
    """The cells of one quoted Markdown table row, stripped: "| MMLU | 63.2 | 68.7 |" -> ["MMLU", "63.2", "68.7"]."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def table_column(lines: tuple[str, ...] | list[str], column: int) -> list[float]:
    """Column `column` (0: the row's name) of quoted Markdown table rows, each cell read by `quoted`."""
    return [quoted(table_cells(line)[column], line) for line in lines]


def quoted(token: str, text: str) -> float:
    """A seed figure read from the quoted `text`: `token` must occur in it (the tests check `text` against the
    seed file), so no seed number is typed twice."""
    if token not in text:
        raise ValueError(f"{token!r} does not occur in {text!r}")
    return parse_number(token)


def quoted_range(token: str, text: str) -> tuple[float, float]:
    """A seed range read from the quoted `text` (see `quoted`)."""
    if token not in text:
        raise ValueError(f"{token!r} does not occur in {text!r}")
    return parse_range(token)


@dataclass(frozen=True)
class Check:
    """What a checker found: moelab's value (None: none for this setting), why, and what the rules need.

    `values`: every value the claim must hold for (e.g. at batch 1 and at batch 32; default: `value` alone);
    `interval`: a fitted value's 95% interval; `noise`: the absolute size of a difference moelab cannot tell from
    zero (Sign); `setting`: replaces the claim's stated setting when the checker chose one (a plan, a batch)."""

    value: float | None
    why: str
    values: tuple[float, ...] = ()
    interval: tuple[float, float] | None = None
    noise: float = 0.0
    setting: str | None = None
    cis: tuple[tuple[float, float], ...] = ()  # each value's own 95% interval (Sign reads it instead of noise)
    discordant: tuple[int, int] | None = None  # (b, c): queries only the first / only the second answered right
    no_verdict: str | None = None  # why no verdict can be given (a floor, an open fit): not_reproducible

    @property
    def all_values(self) -> tuple[float, ...]:
        return self.values or ((self.value,) if self.value is not None else ())


@dataclass(frozen=True)
class Rule:
    """A verdict rule. `judge(seed, check)` returns the verdict; `text` states it."""

    text: str

    def judge(self, seed, check: Check) -> str:  # pragma: no cover - every rule overrides it
        raise NotImplementedError


EPS = 1e-9  # a boundary value is inside the tolerance (105 vs 100 at ±5%: 1.05 - 1 is 0.05000000000000004)


def _ok(flag: bool) -> str:
    return CONFIRMED if flag else CONTRADICTED


@dataclass(frozen=True)
class Exact(Rule):
    text: str = "confirmed only if equal"

    def judge(self, seed, check: Check) -> str:
        return _ok(all(v == seed for v in check.all_values))


@dataclass(frozen=True)
class Within(Rule):
    """|value / seed - 1| <= tol for every value; `expected` stands for the seed's figure where the claim states
    one in words only ("linear": 1, "similar": 1)."""

    tol: float = 0.05
    expected: float | None = None

    def judge(self, seed, check: Check) -> str:
        target = self.expected if self.expected is not None else seed
        if target == 0:
            return _ok(all(abs(v) <= self.tol + EPS for v in check.all_values))
        return _ok(all(abs(v / target - 1.0) <= self.tol + EPS for v in check.all_values))


@dataclass(frozen=True)
class RatioWithin(Rule):
    """A seed's change in percent ("+50%") against moelab's: the ratios 1 + change/100 within tol."""

    tol: float = 0.3

    def judge(self, seed, check: Check) -> str:
        return _ok(all(abs((1 + v / 100) / (1 + seed / 100) - 1.0) <= self.tol + EPS for v in check.all_values))


@dataclass(frozen=True)
class InRange(Rule):
    """Every value inside the seed's range widened by tol at both ends."""

    tol: float = 0.0

    def judge(self, seed, check: Check) -> str:
        lo, hi = seed
        return _ok(all(lo * (1 - self.tol) * (1 - EPS) <= v <= hi * (1 + self.tol) * (1 + EPS)
                       for v in check.all_values))


@dataclass(frozen=True)
class Above(Rule):
    """Every value above `threshold` (default: the seed's figure, or the top of its range)."""

    threshold: float | None = None

    def judge(self, seed, check: Check) -> str:
        limit = self.threshold if self.threshold is not None else (seed[1] if isinstance(seed, tuple) else seed)
        return _ok(all(v > limit for v in check.all_values))


@dataclass(frozen=True)
class AtMost(Rule):
    """Every value at most `threshold` (default: the seed's figure)."""

    threshold: float | None = None

    def judge(self, seed, check: Check) -> str:
        limit = self.threshold if self.threshold is not None else seed
        return _ok(all(v <= limit for v in check.all_values))


@dataclass(frozen=True)
class Sign(Rule):
    """The sign of a measured difference against the seed's (`expect`: +1 or -1; None: the seed figure's own
    sign), beyond the check's noise."""

    expect: int | None = None

    def judge(self, seed, check: Check) -> str:
        sign = self.expect if self.expect is not None else (1 if seed > 0 else -1)
        if check.cis:  # each value's own interval, turned to the seed's sign: it must exclude zero
            bounds = [sorted((sign * lo, sign * hi)) for lo, hi in check.cis]
            if all(lo > 0 for lo, _ in bounds):
                return CONFIRMED
            if any(hi < 0 for _, hi in bounds):
                return CONTRADICTED
            return NOT_REPRODUCIBLE
        signed = [sign * v for v in check.all_values]
        if all(v > check.noise for v in signed):
            return CONFIRMED
        if any(v < -check.noise for v in signed):
            return CONTRADICTED
        return NOT_REPRODUCIBLE


@dataclass(frozen=True)
class Interval(Rule):
    """The seed's figure inside the check's 95% interval; no verdict when the interval is uninformative: it
    reaches zero or below, or its ends differ by more than a factor `max_ratio` (a 4-point fit's profile interval
    of [0.001, 3] holds any exponent)."""

    max_ratio: float = 3.0

    def judge(self, seed, check: Check) -> str:
        if check.interval is None:
            return NOT_REPRODUCIBLE
        lo, hi = check.interval
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            return NOT_REPRODUCIBLE
        if lo <= 0 < hi or (lo > 0 and hi / lo > self.max_ratio):
            return NOT_REPRODUCIBLE
        return _ok(lo <= seed <= hi)


def mcnemar_p(b: int, c: int) -> float:
    """The exact two-sided McNemar p-value of b against c discordant pairs: twice the smaller binomial tail of
    Binomial(b + c, 1/2), at most 1 (1 when there is no discordant pair)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


ALPHA_TEST = 0.05  # the two-sided level of the paired test (a 95% statement, like every interval here)


@dataclass(frozen=True)
class Paired(Rule):
    """A policy against a reference on the same queries: `check.discordant` = (b, c), the queries only the
    policy / only the reference answered right. Contradicted when the policy is worse by the exact McNemar test
    (c > b, p < ALPHA_TEST); confirmed when it loses no more than it gains (c <= b); else not_reproducible (worse
    by a margin the test cannot tell from chance)."""

    def judge(self, seed, check: Check) -> str:
        if check.discordant is None:
            return NOT_REPRODUCIBLE
        b, c = check.discordant
        if c > b and mcnemar_p(b, c) < ALPHA_TEST:
            return CONTRADICTED
        return CONFIRMED if c <= b else NOT_REPRODUCIBLE


@dataclass(frozen=True)
class Fixed(Rule):
    """No comparison: the verdict is fixed (out of scope, or not reproducible with moelab's nearest figure shown)."""

    verdict: str = OUT_OF_SCOPE

    def judge(self, seed, check: Check) -> str:
        return self.verdict


EXACT = Exact()
ARITH = Within("confirmed within ±2% (the seed's own arithmetic, rounded)", 0.02)
ROUNDED = Within("confirmed within ±5% (a figure stated to 2-3 significant figures)", 0.05)
APPROX = Within("confirmed within ±10% (an approximate figure)", 0.10)
ROUGH = Within("confirmed within ±25% (a figure hedged in words)", 0.25)
MODELLED = Within("confirmed within ±30% (twice the engine's holdout median error)", 0.30)
MODELLED_CHANGE = RatioWithin("confirmed if the ratios (1 + change) agree within ±30% (twice the engine's holdout "
                              "median error)", 0.30)
APPROX_CHANGE = RatioWithin("confirmed if the ratios (1 + change) agree within ±10% (arithmetic of modelled "
                             "counts)", 0.10)
MODELLED_RANGE = InRange("confirmed inside the seed's range widened by 30% at each end (twice the engine's "
                         "holdout median error)", 0.30)
APPROX_RANGE = InRange("confirmed inside the seed's range widened by 10% at each end", 0.10)
ARITH_RANGE = InRange("confirmed if every value lies inside the seed's range", 0.0)
SIGN = Sign("confirmed if moelab's measured difference has the seed's sign beyond its noise; contradicted if the "
            "other sign beyond it; else not_reproducible")
GREATER = Sign("confirmed if moelab's difference is positive beyond its noise (its 95% interval above zero); "
               "contradicted if negative beyond it; else not_reproducible (also when both models sit at the floor)",
               1)
INTERVAL = Interval("confirmed if the seed's figure lies inside moelab's fitted 95% interval (the seeds' pure power "
                    "law); not_reproducible when that interval reaches zero, spans more than a factor 3, or the "
                    "fit with an irreducible loss found no power law (A = 0)")
PAIRED = Paired("on the same queries, exact McNemar test (95%): contradicted if the cascade answers fewer right "
                "than the MoE alone (p < 0.05), confirmed if it loses no more queries than it gains, else "
                "not_reproducible")
OUT = Fixed("out of scope: moelab neither models nor measures this", OUT_OF_SCOPE)
NOT_REPRO = Fixed("not reproducible: the seed's setting is not one moelab can compute or run; moelab's nearest "
                  "figure is shown", NOT_REPRODUCIBLE)


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
