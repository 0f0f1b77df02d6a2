"""Generated arithmetic and algebra problems with exact answers ("math" domain), one problem per line.

Every line reads "Q: <question> A: <answer>"; answers are exact integers or fractions in lowest terms.

The difficulty ladder of the reasoning probe (moelab.eval.probes) is defined here too: level 1 one-digit
successors (a + 1), 2 the other one-digit sums, 3 two-digit sums and differences, 4 the single-operation kinds of
the default domain, 5 its multi-step kinds (expressions, linear equations, polynomials, fractions). The default
corpus's math (math_documents) is unchanged; the study corpus's math (ladder_documents) mixes levels 1-3 into it
and leaves out every reserved question (`reserved`, a hash of the question): the probe's held-out items of levels
3-5 are reserved ones, so they are never in that corpus verbatim. Levels 1 and 2 have only 10 and 90 problems,
all of them in training (TRAINED_LEVELS; their items say so).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable, Iterator
from fractions import Fraction

from moelab.data.document import Document

SEED = 20240917
PROBLEMS_PER_DOC = 50


def fmt(q: Fraction | int) -> str:
    """An exact number as text: "7", "-3/4"."""
    q = Fraction(q)
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def _binary(rng: random.Random) -> str:
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(2, 99), rng.randint(2, 999)
        return f"Q: {a} * {b} = ? A: {a * b}"
    a, b = rng.randint(1, 9999), rng.randint(1, 9999)
    return f"Q: {a} {op} {b} = ? A: {a + b if op == '+' else a - b}"


def _expr(rng: random.Random, depth: int, leaf_ok: bool = True) -> tuple[str, int]:
    """A random integer expression over + - * with parentheses, and its value."""
    if depth == 0 or (leaf_ok and rng.random() < 0.3):
        n = rng.randint(1, 20)
        return str(n), n
    op = rng.choice("+-*")
    (ls, lv), (rs, rv) = _expr(rng, depth - 1), _expr(rng, depth - 1)
    value = lv + rv if op == "+" else lv - rv if op == "-" else lv * rv
    return f"({ls} {op} {rs})", value


def _expression(rng: random.Random) -> str:
    text, value = _expr(rng, 3, leaf_ok=False)
    if text.startswith("("):  # the outermost pair wraps the whole expression
        text = text[1:-1]
    return f"Q: {text} = ? A: {value}"


def _division(rng: random.Random) -> str:
    a, b = rng.randint(10, 99999), rng.randint(2, 97)
    if rng.random() < 0.5:
        return f"Q: {a} // {b} = ? A: {a // b}"
    return f"Q: {a} mod {b} = ? A: {a % b}"


def _fraction(rng: random.Random) -> str:
    x = Fraction(rng.randint(1, 12), rng.randint(2, 12))
    y = Fraction(rng.randint(1, 12), rng.randint(2, 12))
    op = rng.choice("+-*/")
    value = {"+": x + y, "-": x - y, "*": x * y, "/": x / y}[op]
    left, right = (f"({fmt(x)})", f"({fmt(y)})") if op == "/" else (fmt(x), fmt(y))  # 1/5 / 9/5 would be ambiguous
    return f"Q: {left} {op} {right} = ? A: {fmt(value)}"


def _signed(n: int) -> str:
    return f"+ {n}" if n >= 0 else f"- {-n}"


def _linear(rng: random.Random) -> str:
    a = rng.choice([n for n in range(-12, 13) if n != 0])
    b, c = rng.randint(-60, 60), rng.randint(-60, 60)
    x = Fraction(c - b, a)
    return f"Q: Solve for x: {a}*x {_signed(b)} = {c}. A: x = {fmt(x)}"


def _polynomial_text(coeffs: list[int]) -> str:
    """Coefficients, highest degree first, as "2*x^2 - x + 3"."""
    degree = len(coeffs) - 1
    parts: list[str] = []
    for i, c in enumerate(coeffs):
        power = degree - i
        if c == 0:
            continue
        mag = abs(c)
        var = "" if power == 0 else "x" if power == 1 else f"x^{power}"
        body = str(mag) if not var else var if mag == 1 else f"{mag}*{var}"
        sign = ("-" if c < 0 else "") if not parts else ("- " if c < 0 else "+ ")
        parts.append(sign + body)
    return " ".join(parts) if parts else "0"


def _polynomial(rng: random.Random) -> str:
    degree = rng.randint(1, 3)
    coeffs = [rng.choice([n for n in range(-9, 10) if n != 0])] + [rng.randint(-9, 9) for _ in range(degree)]
    x = rng.randint(-6, 6)
    value = sum(c * x ** (degree - i) for i, c in enumerate(coeffs))
    return f"Q: If p(x) = {_polynomial_text(coeffs)}, what is p({x})? A: {value}"


def _gcd_lcm(rng: random.Random) -> str:
    k = rng.randint(1, 30)
    a, b = k * rng.randint(1, 40), k * rng.randint(1, 40)
    if rng.random() < 0.5:
        return f"Q: gcd({a}, {b}) = ? A: {math.gcd(a, b)}"
    return f"Q: lcm({a}, {b}) = ? A: {a * b // math.gcd(a, b)}"


def _modpow(rng: random.Random) -> str:
    base, exp, mod = rng.randint(2, 50), rng.randint(2, 40), rng.randint(3, 97)
    return f"Q: {base}^{exp} mod {mod} = ? A: {pow(base, exp, mod)}"


def _power(rng: random.Random) -> str:
    base, exp = rng.randint(2, 15), rng.randint(2, 6)
    return f"Q: {base}^{exp} = ? A: {base ** exp}"


def _percent(rng: random.Random) -> str:
    p, n = rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 50, 75, 120]), rng.randint(1, 400)
    return f"Q: What is {p}% of {n}? A: {fmt(Fraction(p * n, 100))}"


KINDS: tuple[Callable[[random.Random], str], ...] = (
    _binary, _expression, _division, _fraction, _linear, _polynomial, _gcd_lcm, _modpow, _power, _percent)


def math_documents(seed: int = SEED, per_doc: int = PROBLEMS_PER_DOC) -> Iterator[Document]:
    """Endless "math" documents of `per_doc` problems each ("math-00000", ...), reproducible from `seed`."""
    rng = random.Random(seed)
    index = 0
    while True:
        lines = [rng.choice(KINDS)(rng) for _ in range(per_doc)]
        yield Document("math", f"math-{index:05d}", "\n".join(lines) + "\n")
        index += 1


# --- the difficulty ladder --------------------------------------------------------------------------------

LADDER_SEED = 20261203
LEVELS = ("1", "2", "3", "4", "5")
TRAINED_LEVELS = ("1", "2")  # so few problems that all of them train: nothing to hold out
RESERVED_FRACTION = 0.2  # of questions (levels 3-5): kept out of the study corpus, the probe draws from them
# Of the study corpus's math lines (the rest are the default kinds). Measured (300 steps of 16 x 128 tokens,
# tiny-dense): with one-digit sums as the easiest level at 20% and then 50% of the lines, the model answered
# every sum with the same number ("10"), at the floor; a one-operand successor is what the budget teaches.
LADDER_SHARE = {"1": 0.4, "2": 0.25, "3": 0.1}


def _successor(rng: random.Random) -> str:
    a = rng.randint(0, 9)
    return f"Q: {a} + 1 = ? A: {a + 1}"


def _one_digit_sum(rng: random.Random) -> str:
    a, b = rng.randint(0, 9), rng.choice((0, 2, 3, 4, 5, 6, 7, 8, 9))  # b = 1 is level 1
    return f"Q: {a} + {b} = ? A: {a + b}"


def _two_digit(rng: random.Random) -> str:
    a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-")
    return f"Q: {a} {op} {b} = ? A: {a + b if op == '+' else a - b}"


LEVEL_KINDS: dict[str, tuple[Callable[[random.Random], str], ...]] = {
    "1": (_successor,),
    "2": (_one_digit_sum,),
    "3": (_two_digit,),
    "4": (_binary, _division, _gcd_lcm, _modpow, _power, _percent),
    "5": (_expression, _linear, _polynomial, _fraction),
}
LEVEL_NAMES = {"1": "one-digit successors (a + 1)", "2": "one-digit sums", "3": "two-digit sums and differences",
               "4": "single operations (default math kinds)",
               "5": "multi-step (expressions, equations, polynomials, fractions)"}


def level_pool(level: str) -> list[str]:
    """Every problem line of a level of TRAINED_LEVELS (level 1: 10, level 2: 90)."""
    if level == "1":
        return [f"Q: {a} + 1 = ? A: {a + 1}" for a in range(10)]
    if level == "2":
        return [f"Q: {a} + {b} = ? A: {a + b}" for a in range(10) for b in range(10) if b != 1]
    raise ValueError(f"level {level} is not enumerated (levels {', '.join(TRAINED_LEVELS)} are)")


def split_line(line: str) -> tuple[str, str]:
    """(prompt ending in "A:", answer) of a "Q: ... A: answer" line."""
    head, answer = line.rsplit(" A: ", 1)
    return f"{head} A:", answer


_ONE_DIGIT_SUM = re.compile(r"Q: \d \+ \d = \? A:")


def reserved(prompt: str) -> bool:
    """Whether a question is kept out of the study corpus (a held-out probe candidate); a one-digit sum (levels 1
    and 2) never is."""
    if _ONE_DIGIT_SUM.fullmatch(prompt):
        return False
    digest = hashlib.sha256(f"moelab-math\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < RESERVED_FRACTION


def level_problem(level: str, rng: random.Random) -> str:
    """One problem line of a ladder level."""
    return rng.choice(LEVEL_KINDS[level])(rng)


def _ladder_line(rng: random.Random) -> str:
    u = rng.random()
    if u < LADDER_SHARE["1"]:
        return _successor(rng)  # levels 1 and 2: every problem trains (nothing to hold out)
    if u < LADDER_SHARE["1"] + LADDER_SHARE["2"]:
        return _one_digit_sum(rng)
    kind = _two_digit if u < sum(LADDER_SHARE.values()) else rng.choice(KINDS)
    while True:
        line = kind(rng)
        if not reserved(split_line(line)[0]):
            return line


def ladder_documents(seed: int = LADDER_SEED, per_doc: int = PROBLEMS_PER_DOC) -> Iterator[Document]:
    """Endless "math" documents of the study corpus: the default kinds with the ladder's levels 1-3 mixed in
    (LADDER_SHARE), no reserved question among them; reproducible from `seed`."""
    rng = random.Random(seed)
    index = 0
    while True:
        lines = [_ladder_line(rng) for _ in range(per_doc)]
        yield Document("math", f"math-{index:05d}", "\n".join(lines) + "\n")
        index += 1
