"""Wilson intervals against hand-computed and published values; exact-match scoring; chance as the best
constant answer."""

import math

import pytest

from moelab.errors import MoelabError
from moelab.eval.generate import Generation
from moelab.eval.probes import ProbeItem
from moelab.eval.score import at_floor, exact_match, score, wilson


def test_wilson_hand_computed():
    # k=7, n=20, z=1.96: p=0.35, centre=(0.35 + 1.96^2/40)/(1 + 1.96^2/20) = 0.374170,
    # half = 1.96/(1 + 1.96^2/20) * sqrt(0.35*0.65/20 + 1.96^2/1600) = 0.192980
    lo, hi = wilson(7, 20, z=1.96)
    assert lo == pytest.approx(0.374170 - 0.192980, abs=1e-5) and hi == pytest.approx(0.374170 + 0.192980, abs=1e-5)


def test_wilson_published_edges():
    # 0 of 10 and 10 of 10: the textbook Wilson bounds 0.2775 and 0.7225 (z = 1.96), i.e. z^2 / (n + z^2)
    assert wilson(0, 10, 1.96) == pytest.approx((0.0, 3.8416 / 13.8416), abs=1e-9)
    assert wilson(10, 10, 1.96) == pytest.approx((10 / 13.8416, 1.0), abs=1e-9)
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(50, 100)
    assert lo < 0.5 < hi and hi - 0.5 == pytest.approx(0.5 - lo)
    for bad in ((3, 2), (-1, 5), (1, -1)):
        with pytest.raises(MoelabError):
            wilson(*bad)


def test_wilson_narrows_with_n():
    widths = [wilson(n // 2, n)[1] - wilson(n // 2, n)[0] for n in (10, 100, 1000)]
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 1000), rel=0.01)


def _item(i, item_set, level, answer):
    return ProbeItem(f"{item_set}/{level}/{i}", item_set, level, "math" if item_set == "reasoning" else "facts",
                     f"Q: {i}? A:", answer)


def test_exact_match_is_exact():
    assert exact_match(" 7 ", "7") and exact_match("x = 3/2", "x = 3/2")
    for wrong in ("07", "7.0", "x=3/2", "Lyon.", "lyon", "7 8"):
        assert not exact_match(wrong, "7" if wrong[0] in "07" else "x = 3/2" if "x" in wrong else "Lyon")


def test_score_counts_levels_ci_and_chance():
    items = [_item(0, "reasoning", "1", "7"), _item(1, "reasoning", "1", "7"), _item(2, "reasoning", "1", "9"),
             _item(3, "reasoning", "2", "12"), _item(4, "knowledge", "birth_city", "Lyon"),
             _item(5, "knowledge", "birth_city", "Oslo")]
    gens = [Generation("7"), Generation("8"), Generation("9"), Generation("12 "), Generation("Lyon"),
            Generation("Lyon")]
    s = score(items, gens)
    assert list(s) == ["reasoning", "knowledge"]
    r = s["reasoning"]
    assert (r["n"], r["correct"], r["accuracy"]) == (4, 3, 0.75)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(wilson(3, 4))
    assert r["chance"] == 0.5  # "7" answers 2 of the 4
    assert list(r["levels"]) == ["1", "2"]
    assert r["levels"]["1"]["correct"] == 2 and r["levels"]["1"]["chance"] == pytest.approx(2 / 3)
    assert r["levels"]["2"] == {"n": 1, "correct": 1, "accuracy": 1.0, "ci_low": wilson(1, 1)[0], "ci_high": 1.0,
                                "chance": 1.0}
    k = s["knowledge"]
    assert (k["n"], k["correct"], k["chance"]) == (2, 1, 0.5) and list(k["levels"]) == ["birth_city"]
    with pytest.raises(MoelabError):
        score(items, gens[:-1])


def test_at_floor():
    assert at_floor({"n": 100, "accuracy": 0.12, "ci_low": 0.07, "ci_high": 0.2, "chance": 0.1})
    assert at_floor({"n": 100, "accuracy": 0.05, "ci_low": 0.02, "ci_high": 0.11, "chance": 0.1})
    assert not at_floor({"n": 100, "accuracy": 0.6, "ci_low": 0.5, "ci_high": 0.69, "chance": 0.1})
    assert at_floor({"n": 0, "accuracy": 0.0, "ci_low": 0.0, "ci_high": 1.0, "chance": 0.0})


def test_newcombe_difference_published_example():
    # Newcombe (1998), Table II example (a): 56/70 vs 48/80, method 10 interval 0.0524 to 0.3339
    from moelab.eval.score import difference

    a = {"n": 70, "accuracy": 56 / 70, **dict(zip(("ci_low", "ci_high"), wilson(56, 70, 1.96), strict=True))}
    b = {"n": 80, "accuracy": 48 / 80, **dict(zip(("ci_low", "ci_high"), wilson(48, 80, 1.96), strict=True))}
    d = difference(a, b)
    assert d["difference"] == pytest.approx(0.2)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((0.0524, 0.3339), abs=1e-4)
