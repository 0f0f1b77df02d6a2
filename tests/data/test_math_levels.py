"""The math ladder: levels' problems are right, reserved questions never reach the study corpus, the default
corpus's math is untouched, and the reasoning probe's held-out items are disjoint from training."""

import random
import re
from fractions import Fraction

import pytest

from moelab.data import default_corpus
from moelab.data import math_problems as mp
from moelab.eval.probes import reasoning_items


def _study_math(cap):
    return [d for d in default_corpus(cap, "study") if d.domain == "math"]


def test_level_problems_are_right():
    rng = random.Random(0)
    for _ in range(300):
        prompt, answer = mp.split_line(mp.level_problem("1", rng))
        a = int(re.fullmatch(r"Q: (\d) \+ 1 = \? A:", prompt).group(1))
        assert int(answer) == a + 1
        prompt, answer = mp.split_line(mp.level_problem("2", rng))
        a, b = map(int, re.fullmatch(r"Q: (\d) \+ (\d) = \? A:", prompt).groups())
        assert int(answer) == a + b and b != 1
        prompt, answer = mp.split_line(mp.level_problem("3", rng))
        a, op, b = re.fullmatch(r"Q: (\d\d) ([+-]) (\d\d) = \? A:", prompt).groups()
        assert int(answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))


def test_enumerated_levels_are_whole_and_disjoint():
    one, two = mp.level_pool("1"), mp.level_pool("2")
    assert len(one) == len(set(one)) == 10 and len(two) == len(set(two)) == 90 and not set(one) & set(two)
    rng = random.Random(5)
    drawn = {lv: {mp.level_problem(lv, rng) for _ in range(3000)} for lv in mp.TRAINED_LEVELS}
    assert drawn["1"] == set(one) and drawn["2"] == set(two)
    with pytest.raises(ValueError):
        mp.level_pool("3")


def test_split_line_round_trips_every_kind():
    rng = random.Random(1)
    for level in mp.LEVELS:
        for _ in range(50):
            line = mp.level_problem(level, rng)
            prompt, answer = mp.split_line(line)
            assert prompt.endswith(" A:") and f"{prompt} {answer}" == line and answer == answer.strip()


def test_reserved_share_and_determinism():
    rng = random.Random(2)
    prompts = {mp.split_line(mp.level_problem("3", rng))[0] for _ in range(4000)}
    share = sum(map(mp.reserved, prompts)) / len(prompts)
    assert abs(share - mp.RESERVED_FRACTION) < 0.03
    assert all(mp.reserved(p) == mp.reserved(p) for p in list(prompts)[:50])


def test_study_math_has_the_ladder_and_no_reserved_question():
    docs = _study_math(200_000)
    lines = [line for d in docs for line in d.text.splitlines()]
    assert lines and not any(mp.reserved(mp.split_line(line)[0]) for line in lines)
    one = [line for line in lines if re.fullmatch(r"Q: \d \+ 1 = \? A: \d+", line)]
    two = [line for line in lines if re.fullmatch(r"Q: \d \+ [02-9] = \? A: \d+", line)]
    three = [line for line in lines if re.fullmatch(r"Q: \d\d [+-] \d\d = \? A: -?\d+", line)]
    # (a two-leaf expression of the default kinds can read as a one-digit sum too: a little over the share)
    assert abs(len(one) / len(lines) - mp.LADDER_SHARE["1"]) < 0.03
    assert abs(len(two) / len(lines) - mp.LADDER_SHARE["2"]) < 0.03
    assert abs(len(three) / len(lines) - mp.LADDER_SHARE["3"]) < 0.02
    assert set(one) == set(mp.level_pool("1")) and set(two) == set(mp.level_pool("2"))  # every one trains


def test_default_math_untouched_by_the_ladder():
    docs = [d for d in default_corpus(100_000) if d.domain == "math"]
    assert docs == [d for _, d in zip(range(len(docs)), mp.math_documents(), strict=False)]
    lines = [line for d in docs for line in d.text.splitlines()]
    # a two-leaf expression can read as a one-digit sum, but the default math has no ladder share of them
    assert sum(bool(re.fullmatch(r"Q: \d \+ \d = \? A: \d+", line)) for line in lines) < 0.01 * len(lines)


@pytest.mark.parametrize("cap", [200_000, 1_500_000])
def test_held_out_reasoning_items_never_in_training(cap):
    text = "".join(d.text for d in _study_math(cap))
    items = reasoning_items(200)
    for item in items:
        if item.level in mp.TRAINED_LEVELS:
            assert not item.held_out and f"{item.prompt} {item.answer}\n" in text
        else:
            assert item.held_out and item.prompt not in text, item
    levels = {lv: [i for i in items if i.level == lv] for lv in mp.LEVELS}
    assert len(levels["1"]) == 10 and len(levels["2"]) == 90
    assert all(len(levels[lv]) == 200 for lv in ("3", "4", "5"))


def test_level_answers_are_exact_numbers():
    for item in reasoning_items(100):
        if item.answer.startswith("x = "):
            Fraction(item.answer[4:])
        else:
            Fraction(item.answer)
