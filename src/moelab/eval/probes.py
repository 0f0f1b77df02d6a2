"""The probe items: held-out questions with exact answers, a knowledge set (facts) and a reasoning set (math).

- knowledge: a person's attribute whose biography the study corpus holds (moelab.data.facts) but whose Q/A
  line it never holds; one stratum ("level") per attribute.
- reasoning: the math ladder's levels "1".."5" (moelab.data.math_problems.LEVEL_KINDS). Levels 3-5 are drawn
  from the reserved questions, which the study corpus leaves out, so they are held out (`held_out` True); levels
  1 and 2 have only 10 and 90 problems (one-digit successors and sums), all of them in training: their items say
  so (`held_out` False) and the probe measures whether they were learned, not generalised.
Both sets are deterministic functions of (per_level, seed). `chance` is the floor: the accuracy of the best
constant answer over the stratum's whole candidate pool.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from moelab.data import facts
from moelab.data import math_problems as mp
from moelab.errors import MoelabError

PROBE_SEED = 16
SETS = ("knowledge", "reasoning")
MAX_PER_LEVEL = 10_000
CHANCE_POOL = 2000  # reserved questions drawn per math level to measure its chance accuracy
_DRAWS_PER_ITEM = 200  # a level's generator is asked at most this many times per item it must return


@dataclass(frozen=True)
class ProbeItem:
    id: str
    set: str  # "knowledge" | "reasoning"
    level: str  # a stratum: the attribute name (knowledge) or "1".."5" (reasoning)
    domain: str  # "facts" | "math"
    prompt: str  # the text right before the answer, ending in "A:"
    answer: str  # the exact answer text
    held_out: bool = True  # False where the item's exact text is in the study corpus (reasoning levels 1-2)


def levels(item_set: str) -> tuple[str, ...]:
    """The strata of a set, in report order."""
    if item_set == "knowledge":
        return facts.ATTRIBUTES
    if item_set == "reasoning":
        return mp.LEVELS
    raise MoelabError(f"unknown probe set {item_set!r} (sets: {', '.join(SETS)})")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _knowledge_pool(attribute: str) -> list[ProbeItem]:
    out = []
    for person, attr in facts.held_out_pairs():
        if attr == attribute:
            prompt, answer = facts.question(person, attr)
            out.append(ProbeItem(f"knowledge/{attr}/{person.index:03d}", "knowledge", attr, "facts", prompt, answer))
    return out


def _math_item(level: str, line: str) -> ProbeItem:
    prompt, answer = mp.split_line(line)
    return ProbeItem(f"reasoning/{level}/{_digest(prompt)}", "reasoning", level, "math", prompt, answer,
                     held_out=level not in mp.TRAINED_LEVELS)


def _math_items(level: str, count: int, seed: int) -> list[ProbeItem]:
    """`count` distinct questions of a level (levels 1-2: at most their whole pool, shuffled; else reserved ones)."""
    rng = random.Random(f"{seed}/reasoning/{level}")
    if level in mp.TRAINED_LEVELS:
        pool = [_math_item(level, line) for line in mp.level_pool(level)]
        rng.shuffle(pool)
        return pool[:count]
    seen: set[str] = set()
    out: list[ProbeItem] = []
    for _ in range(count * _DRAWS_PER_ITEM):
        if len(out) == count:
            break
        item = _math_item(level, mp.level_problem(level, rng))
        if item.prompt not in seen and mp.reserved(item.prompt):
            seen.add(item.prompt)
            out.append(item)
    return out


def _check_per_level(per_level: object) -> int:
    if isinstance(per_level, bool) or not isinstance(per_level, int) or not 1 <= per_level <= MAX_PER_LEVEL:
        raise MoelabError(f"--per-level must be an integer between 1 and {MAX_PER_LEVEL:,}, got {per_level!r}")
    return per_level


def knowledge_items(per_level: int, seed: int = PROBE_SEED) -> list[ProbeItem]:
    """Up to `per_level` held-out (person, attribute) questions per attribute (fewer where the pool is smaller)."""
    _check_per_level(per_level)
    out = []
    for attribute in facts.ATTRIBUTES:
        pool = _knowledge_pool(attribute)
        random.Random(f"{seed}/knowledge/{attribute}").shuffle(pool)
        out.extend(pool[:per_level])
    return out


def reasoning_items(per_level: int, seed: int = PROBE_SEED) -> list[ProbeItem]:
    """`per_level` questions per ladder level (levels 1 and 2: at most their 10 and 90)."""
    _check_per_level(per_level)
    return [item for level in mp.LEVELS for item in _math_items(level, per_level, seed)]


def probe_items(per_level: int, seed: int = PROBE_SEED) -> list[ProbeItem]:
    """Both sets, knowledge first; the same list for the same arguments."""
    return knowledge_items(per_level, seed) + reasoning_items(per_level, seed)


def best_constant(answers: list[str]) -> float:
    """The accuracy of always giving the most common answer (0.0 for no answers)."""
    return max(Counter(answers).values()) / len(answers) if answers else 0.0


@lru_cache(maxsize=32)
def chance(item_set: str, level: str) -> float:
    """The floor of a stratum: the best constant answer's accuracy over its candidate pool (knowledge: every
    held-out pair of the attribute; levels 1-2: their whole pools; levels 3-5: CHANCE_POOL reserved questions)."""
    if level not in levels(item_set):
        raise MoelabError(f"unknown level {level!r} of probe set {item_set} (levels: {', '.join(levels(item_set))})")
    if item_set == "knowledge":
        pool = _knowledge_pool(level)
    else:
        pool = _math_items(level, CHANCE_POOL, PROBE_SEED + 1)
    return best_constant([item.answer for item in pool])
