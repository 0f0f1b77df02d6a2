"""The claims registry: each checkable claim of the two seeds is a `Claim` (its quote, the part of it that states
the seed's figure, the unit, the verdict rule, the setting moelab assumes, the basis) registered with its checker
by the `claim` decorator; `run` evaluates one into a row of the claims table.

A checker takes the study's `Evidence` and returns a `Check` (moelab's value and why); a claim about a measured
figure raises `NoEvidence` when the study lacks it, and becomes not_reproducible with that reason. Seed figures
are parsed from the quoted text (`Claim.seed_value`), never typed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from moelab.basis import BASIS_MODELLED, BASIS_TINY
from moelab.claims.evidence import Evidence, NoEvidence
from moelab.claims.rules import NOT_REPRODUCIBLE, OUT, VERDICTS, Check, Fixed, Rule, parse_number, parse_range

SEEDS = {"000": "000_e0ad07d7178a7373.txt", "001": "001_054ffe56a0c424e4.txt"}  # ../shared/seeds/
# The claims' own bases beside moelab.basis' (modelled; measured at tiny scale).
BASIS_EXACT, BASIS_ARITH, BASIS_NONE = "exact", "arithmetic on the seed's own figures", "none"
BASES = (BASIS_EXACT, BASIS_ARITH, BASIS_MODELLED, BASIS_TINY, BASIS_NONE)
ROW_KEYS = ("id", "seed", "quote", "setting", "moelab_value", "verdict", "why", "seed_value", "unit", "rule",
            "basis", "moelab_values", "moelab_interval")


@dataclass(frozen=True)
class Claim:
    """One claim. `claimed` is the part of `quote` that states the seed's figure (None: the claim states a
    direction or a kind, not a number); the figure is `parse_number(claimed) * scale` in `unit`, or a range when
    `is_range`; with `over` (another part of the quote) it is the ratio of the two figures (the seed's MoE
    figure over its dense one). `sources` are further exact excerpts of the same seed the checker reads figures
    from."""

    id: str
    seed: str
    quote: str
    claimed: str | None
    unit: str
    rule: Rule
    setting: str
    basis: str
    check: Callable[[Evidence], Check] | None = None
    scale: float = 1.0
    is_range: bool = False
    over: str | None = None
    sources: tuple[str, ...] = ()
    why: str = ""  # a claim with no checker: why not

    @property
    def seed_value(self) -> float | tuple[float, float] | None:
        if self.claimed is None:
            return None
        if self.is_range:
            lo, hi = parse_range(self.claimed)
            return lo * self.scale, hi * self.scale
        if self.over is not None:
            return parse_number(self.claimed) / parse_number(self.over)
        return parse_number(self.claimed) * self.scale


REGISTRY: dict[str, Claim] = {}
SETUP_QUOTES: list[tuple[str, str]] = []  # (seed, text): setup excerpts the engine settings are parsed from


def register(c: Claim) -> Claim:
    """Add a claim; one id once, a known seed and basis, `claimed` inside the quote."""
    if c.id in REGISTRY:
        raise ValueError(f"claim {c.id!r} registered twice")
    if c.seed not in SEEDS or c.basis not in BASES:
        raise ValueError(f"claim {c.id!r}: unknown seed {c.seed!r} or basis {c.basis!r}")
    for part in (c.claimed, c.over):
        if part is not None and part not in c.quote:
            raise ValueError(f"claim {c.id!r}: {part!r} is not in its quote")
    if c.check is None and not isinstance(c.rule, Fixed):
        raise ValueError(f"claim {c.id!r}: a comparing rule needs a checker")
    REGISTRY[c.id] = c
    return c


def claim(id: str, seed: str, quote: str, claimed: str | None, unit: str, rule: Rule, setting: str, basis: str,
          **extra) -> Callable:
    """Decorator: register the function below as the checker of this claim."""
    def wrap(fn: Callable[[Evidence], Check]) -> Callable[[Evidence], Check]:
        register(Claim(id, seed, quote, claimed, unit, rule, setting, basis, check=fn, **extra))
        return fn
    return wrap


def out_of_scope(id: str, seed: str, quote: str, why: str, claimed: str | None = None, unit: str = "") -> None:
    """Register a claim moelab neither models nor measures."""
    register(Claim(id, seed, quote, claimed, unit, OUT, "none", BASIS_NONE, why=why))


def setup_quote(seed: str, text: str) -> str:
    """Record a setup excerpt (checked against the seed by the tests) and return it."""
    SETUP_QUOTES.append((seed, text))
    return text


# Garbled study values (a list where a dict belongs, a string for a number, a number that overflows) on a
# measured claim: that claim is not_reproducible with the reason; the other rows stand.
_GARBLED = (TypeError, KeyError, AttributeError, ValueError, IndexError, ArithmeticError)


def run(c: Claim, ev: Evidence) -> dict:
    """One row of the claims table (keys ROW_KEYS)."""
    seed_value = c.seed_value
    if c.check is None:
        check = Check(None, c.why)
    else:
        try:
            check = c.check(ev)
        except NoEvidence as e:
            check = Check(None, str(e))
        except _GARBLED as e:
            if c.basis == BASIS_TINY:
                check = Check(None, f"the study's figures for this claim are not in the expected shape ({e})"[:300])
            else:
                check = Check(None, f"checker error {type(e).__name__}: {e}"[:300])
        except Exception as e:  # noqa: BLE001 - one checker's failure is its row's, never the table's
            check = Check(None, f"checker error {type(e).__name__}: {e}"[:300])
    if isinstance(c.rule, Fixed):
        verdict = c.rule.verdict
    elif check.no_verdict is not None:
        verdict = NOT_REPRODUCIBLE
    elif check.value is None:
        verdict = NOT_REPRODUCIBLE
    else:
        verdict = c.rule.judge(seed_value, check)
    assert verdict in VERDICTS
    return {
        "id": c.id,
        "seed": c.seed,
        "quote": c.quote,
        "setting": check.setting or c.setting,
        "moelab_value": check.value,
        "verdict": verdict,
        "why": check.why,
        "seed_value": list(seed_value) if isinstance(seed_value, tuple) else seed_value,
        "unit": c.unit,
        "rule": c.rule.text,
        "basis": c.basis,
        "moelab_values": list(check.values),
        "moelab_interval": list(check.interval) if check.interval else None,
    }
