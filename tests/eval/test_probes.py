"""Probe items: deterministic, distinct, strata as documented, held out by construction, chance right."""

from collections import Counter

import pytest

from moelab.data import facts
from moelab.data import math_problems as mp
from moelab.errors import MoelabError
from moelab.eval.probes import SETS, chance, knowledge_items, levels, probe_items, reasoning_items


def test_deterministic_and_distinct():
    a, b = probe_items(30), probe_items(30)
    assert a == b
    assert len({i.id for i in a}) == len(a) and len({i.prompt for i in a}) == len(a)
    assert probe_items(30, seed=5) != a
    assert [i for i in probe_items(10) if i.set == "reasoning" and i.level == "3"] == \
        [i for i in reasoning_items(10) if i.level == "3"]


def test_sets_levels_and_sizes():
    items = probe_items(25)
    assert {i.set for i in items} == set(SETS)
    counts = Counter((i.set, i.level) for i in items)
    for level in mp.LEVELS:
        assert counts[("reasoning", level)] == (10 if level == "1" else 25)
    for attribute in facts.ATTRIBUTES:
        pool = sum(a == attribute for _, a in facts.held_out_pairs())
        assert pool >= 5 and counts[("knowledge", attribute)] == min(25, pool)
    assert all(i.prompt.endswith(" A:") and i.answer and i.answer == i.answer.strip() for i in items)
    assert all((i.domain == "facts") == (i.set == "knowledge") for i in items)
    assert len([i for i in reasoning_items(500) if i.level == "1"]) == 10  # all the successors, no more
    assert len([i for i in reasoning_items(500) if i.level == "2"]) == 90
    assert len(knowledge_items(10_000)) == len(facts.held_out_pairs())


def test_held_out_by_construction():
    for item in probe_items(200):
        if item.set == "knowledge":
            person = facts.people()[int(item.id.rsplit("/", 1)[1])]
            assert facts.held_out(person.name, item.level) and item.answer == person.value(item.level)
            assert item.held_out
        elif item.level in mp.TRAINED_LEVELS:
            assert not item.held_out
        else:
            assert item.held_out and mp.reserved(item.prompt)


def test_chance_is_the_best_constant_answer():
    assert chance("reasoning", "1") == pytest.approx(0.10)  # ten distinct successors
    assert chance("reasoning", "2") == pytest.approx(0.10)  # sum 9: 9 of the 90 (b != 1) pairs
    for attribute in facts.ATTRIBUTES:
        answers = Counter(p.value(attribute) for p, a in facts.held_out_pairs() if a == attribute)
        assert chance("knowledge", attribute) == max(answers.values()) / sum(answers.values())
        assert chance("knowledge", attribute) >= 1 / len(facts.VALUES[attribute])
    for level in ("3", "4", "5"):
        assert 0 < chance("reasoning", level) < 0.1
    with pytest.raises(MoelabError):
        chance("reasoning", "6")
    with pytest.raises(MoelabError):
        levels("trivia")


@pytest.mark.parametrize("bad", [0, -3, 10_001, True, 2.5, "4"])
def test_bad_per_level(bad):
    with pytest.raises(MoelabError, match="--per-level"):
        probe_items(bad)
