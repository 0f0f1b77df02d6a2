"""The default corpus: four domains, deterministic, capped; math answers are right; JSON records parse."""

import json
import math
import re
from collections import Counter
from fractions import Fraction

from moelab.data import DOMAINS, Document, corpus_hash, default_corpus
from moelab.data.document import cap_bytes
from moelab.data.interpreter import stdlib_sources


def _bytes_by_domain(docs):
    out = Counter()
    for doc in docs:
        out[doc.domain] += len(doc.text.encode("utf-8"))
    return out


def test_four_domains_deterministic_and_capped(small_docs, small_cap):
    assert [d for d in DOMAINS] == ["code", "prose", "math", "json"]
    assert {doc.domain for doc in small_docs} == set(DOMAINS)
    again = default_corpus(small_cap)
    assert again == small_docs and corpus_hash(again) == corpus_hash(small_docs)
    sizes = _bytes_by_domain(small_docs)
    for domain in DOMAINS:
        assert sizes[domain] <= small_cap
    # generated domains fill the cap to within one document
    for domain in ("math", "json"):
        biggest = max(len(d.text.encode()) for d in small_docs if d.domain == domain)
        assert sizes[domain] > small_cap - biggest
    names = [(d.domain, d.name) for d in small_docs]
    assert len(names) == len(set(names)), "document names are unique within a domain"
    assert all(doc.text for doc in small_docs)


def test_tiny_cap_truncates_only_a_first_oversized_document():
    docs = default_corpus(1000)
    sizes = _bytes_by_domain(docs)
    assert set(sizes) == set(DOMAINS)
    assert all(0 < size <= 1000 for size in sizes.values())
    assert Counter(d.domain for d in docs) == {d: 1 for d in DOMAINS}
    first_code = next(stdlib_sources())
    assert first_code.text.encode().startswith(docs[0].text.encode())


def test_cap_bytes_stops_at_first_overflow():
    docs = [Document("d", str(i), "é" * n) for i, n in enumerate([3, 4, 10, 1])]  # "é" is 2 bytes
    assert [d.name for d in cap_bytes(docs, 14)] == ["0", "1"]
    assert [d.text for d in cap_bytes(docs, 5)] == ["éé"]  # first document truncated at a character boundary
    assert list(cap_bytes([Document("d", "e", "")], 5)) == []


def test_code_is_stdlib_without_site_packages_or_tests(small_docs):
    code = [d for d in small_docs if d.domain == "code"]
    assert all(d.name.endswith(".py") and "site-packages" not in d.name for d in code)
    # a fixed shuffle samples the whole library: the capped set spans many top-level modules
    assert len({d.name.split("/")[0] for d in code}) >= 0.8 * len(code)
    assert [d.name for d in code] != sorted(d.name for d in code)
    prose = [d.name for d in small_docs if d.domain == "prose"]
    assert prose == sorted(prose)


def test_corpus_hash_depends_on_every_field():
    base = [Document("a", "b", "c")]
    variants = [[Document("x", "b", "c")], [Document("a", "x", "c")], [Document("a", "b", "x")],
                [Document("ab", "", "c")], base + base]
    hashes = {corpus_hash(v) for v in variants}
    assert len(hashes) == len(variants) and corpus_hash(base) not in hashes
    assert corpus_hash(base) == corpus_hash([Document("a", "b", "c")])


# --- math: every answer verified independently -------------------------------------------------------------------

def _eval_exact(expr: str) -> Fraction:
    """Evaluate an arithmetic question with Python on exact Fractions ("^" power, "mod" remainder)."""
    expr = expr.replace("^", "**").replace(" mod ", " % ")
    if re.search(r"\*\*\s*\d+\s*%", expr):  # a^b mod m: integers only
        return Fraction(eval(expr, {"__builtins__": {}}))
    fractioned = re.sub(r"\d+", lambda m: f"F({m.group()})", expr)
    return Fraction(eval(fractioned, {"__builtins__": {}, "F": Fraction,
                                       "gcd": lambda a, b: math.gcd(int(a), int(b)),
                                       "lcm": lambda a, b: math.lcm(int(a), int(b))}))


def _check_problem(line: str) -> str:
    """Assert the answer of one problem line; returns its kind."""
    q, answer_text = line.split(" A: ")
    assert q.startswith("Q: ")
    q = q[3:]
    if m := re.fullmatch(r"Solve for x: (-?\d+)\*x ([+-]) (\d+) = (-?\d+)\.", q):
        a, sign, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        assert answer_text.startswith("x = ")
        x = Fraction(answer_text[4:])
        assert str(x) == answer_text[4:], "lowest terms"
        assert a * x + (b if sign == "+" else -b) == c
        return "linear"
    answer = Fraction(answer_text)
    assert str(answer) == answer_text, f"{answer_text} is not in lowest terms"
    if m := re.fullmatch(r"If p\(x\) = (.+), what is p\((-?\d+)\)\?", q):
        assert eval(m[1].replace("^", "**"), {"__builtins__": {}, "x": int(m[2])}) == answer
        return "polynomial"
    if m := re.fullmatch(r"What is (\d+)% of (\d+)\?", q):
        assert Fraction(int(m[1]), 100) * int(m[2]) == answer
        return "percent"
    assert q.endswith(" = ?"), line
    expr = q[:-4]
    assert re.fullmatch(r"[\d\s()+\-*/^%a-z,]+", expr), line
    assert _eval_exact(expr) == answer, line
    return "gcd" if "gcd" in expr else "lcm" if "lcm" in expr else "mod" if "mod" in expr else "arith"


def test_math_answers_are_correct(small_docs):
    math_docs = [d for d in small_docs if d.domain == "math"]
    lines = [line for doc in math_docs[:8] for line in doc.text.splitlines()]
    assert len(lines) == 8 * 50
    kinds = Counter(_check_problem(line) for line in lines)
    assert set(kinds) == {"linear", "polynomial", "percent", "gcd", "lcm", "mod", "arith"}
    assert any("/" in line.split(" A: ")[1] for line in lines), "some answers are proper fractions"


def test_math_checker_catches_a_wrong_answer():
    for bad in ["Q: 37 * 48 = ? A: 1777", "Q: 1/2 + 1/3 = ? A: 5/7", "Q: Solve for x: 2*x + 1 = 4. A: x = 2",
                "Q: If p(x) = -x^2 + 1, what is p(2)? A: 5", "Q: 2^10 mod 7 = ? A: 3", "Q: 2/4 * 1 = ? A: 2/4"]:
        try:
            _check_problem(bad)
        except AssertionError:
            continue
        raise AssertionError(f"accepted a wrong answer: {bad}")


def test_json_records_parse_and_are_consistent(small_docs):
    json_docs = [d for d in small_docs if d.domain == "json"]
    assert json_docs
    kinds = Counter()
    for doc in json_docs:
        lines = doc.text.splitlines()
        assert len(lines) == 20
        for line in lines:
            record = json.loads(line)
            kinds[record["type"]] += 1
            if record["type"] == "order":
                assert record["total_cents"] == sum(i["qty"] * i["unit_cents"] for i in record["items"])
                assert isinstance(record["shipping"]["address"]["city"], str)
    assert set(kinds) == {"inventory", "user", "order"}
