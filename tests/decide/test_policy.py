"""The choice rule (policy.choose) on hand-made assessed candidates, each rule reached and each threshold of
ChoicePolicy moving the decision; and recommend() carrying the policy it was given."""

from dataclasses import FrozenInstanceError, asdict, fields, replace

import pytest

from moelab.decide import default_workload, recommend
from moelab.decide.factors import vote
from moelab.decide.policy import CHOICES, POLICY, RULES, ChoicePolicy, choose

MIXED = replace(default_workload(), task_mix={"reasoning": 0.4, "knowledge": 0.4, "multilingual": 0.0, "code": 0.2},
                gpus=8, memory_budget_gb=640.0, batches=(1, 8, 64, 512))
FLIP = {"batch": 64, "from": "d", "to": "m"}


def cand(name: str, kind: str, usd: float, gpus: int = 2, memory: float = 100.0, violations=()) -> dict:
    return {"name": name, "kind": kind, "usd_per_million_tokens": usd, "gpus_per_replica": gpus,
            "memory_gb": memory, "violations": list(violations), "feasible": not violations}


def test_the_policy_is_frozen_and_every_field_is_a_number():
    with pytest.raises(FrozenInstanceError):
        POLICY.margin = 0.5
    for f in fields(ChoicePolicy):
        value = getattr(POLICY, f.name)
        assert all(isinstance(v, int | float) and v >= 0 for v in (value if isinstance(value, tuple) else [value]))


def test_cascade_needs_a_split_vote_a_mixed_workload_a_cheaper_dense_and_room_for_both():
    d, m = cand("d", "dense", 1.0), cand("m", "moe", 2.0)
    ch = choose([d, m], 1, None, MIXED)
    assert (ch.rule, ch.choice, ch.first, ch.second, ch.model) == ("cascade", CHOICES[4], d, m, "d → m")
    assert choose([d, m], 2, None, MIXED).rule == "vote"  # |vote| > cascade_vote_max
    assert choose([d, m], 1, None, MIXED, replace(POLICY, cascade_vote_max=0)).rule == "vote"
    cheap_moe = cand("m", "moe", 0.5)
    assert choose([d, cheap_moe], 0, None, MIXED).rule == "vote"  # a dense-first cascade would cost more
    big = cand("m", "moe", 2.0, gpus=8)
    assert choose([d, big], 0, None, MIXED).rule == "vote"  # 2 + 8 GPUs > 8
    heavy = cand("m", "moe", 2.0, memory=560.0)
    assert choose([d, heavy], 0, None, MIXED).rule == "vote"  # 100 + 560 GB > 640
    reasoning = replace(MIXED, task_mix={"reasoning": 0.8, "knowledge": 0.1, "multilingual": 0.0, "code": 0.1})
    assert choose([d, m], 0, None, reasoning).rule == "vote"
    assert choose([d, m], 0, None, reasoning, replace(POLICY, cascade_knowledge_min=0.1)).rule == "cascade"


def test_route_needs_a_flip_inside_the_sweep_and_a_split_vote():
    d, m = cand("d", "dense", 1.0), cand("m", "moe", 2.0)
    ch = choose([d, m], -2, FLIP, MIXED)
    assert (ch.rule, ch.choice, ch.model) == ("route", CHOICES[3], "d + m")
    assert choose([d, m], -3, FLIP, MIXED).rule == "vote"
    assert choose([d, m], -3, FLIP, MIXED, replace(POLICY, route_vote_max=3)).rule == "route"
    assert choose([d, m], -2, {**FLIP, "batch": 1024}, MIXED).rule != "route"  # outside 1-512
    assert choose([d, cand("m", "moe", 2.0, gpus=8)], -2, FLIP, MIXED).rule != "route"


def test_the_vote_decides_otherwise_and_a_tie_goes_to_the_cheaper():
    d, m = cand("d", "dense", 1.0), cand("m", "moe", 2.0)
    reasoning = replace(MIXED, task_mix={"reasoning": 1.0, "knowledge": 0.0, "multilingual": 0.0, "code": 0.0})
    assert (choose([d, m], 3, None, MIXED).pick, choose([d, m], -3, None, MIXED).pick) == (m, d)
    assert choose([d, m], 0, None, reasoning).pick is d
    assert choose([d, cand("m", "moe", 0.9)], 0, None, reasoning).pick["name"] == "m"


def test_one_kind_feasible_and_the_dense_backbone():
    d = cand("d", "dense", 1.0)
    m = cand("m", "moe", 2.0, violations=["memory"])
    knowledge = replace(MIXED, task_mix={"reasoning": 0.2, "knowledge": 0.5, "multilingual": 0.1, "code": 0.2})
    ch = choose([d, m], 0, None, knowledge)
    assert (ch.rule, ch.model, ch.second) == ("backbone_head", "d + MoE head", m)
    assert choose([d, m], 0, None, MIXED).rule == "only_feasible"  # knowledge + multilingual 40% < 50%
    assert choose([d, m], 0, None, MIXED, replace(POLICY, backbone_knowledge_min=0.4)).rule == "backbone_head"
    slow = cand("m", "moe", 2.0, violations=["memory", "latency"])
    ch = choose([d, slow], 0, None, knowledge)
    assert (ch.rule, ch.pick, ch.second) == ("only_feasible", d, slow)


def test_nothing_feasible_is_the_closest():
    a = cand("a", "dense", 1.0, violations=["memory", "latency"])
    b = cand("b", "moe", 3.0, violations=["latency"])
    c = cand("c", "moe", 2.0, violations=["quality"])
    ch = choose([a, b, c], 0, None, MIXED)
    assert (ch.rule, ch.pick, ch.feasible) == ("closest", c, False)
    assert ch.rule in RULES


def test_votes_are_weighted_by_the_policy():
    rows = [{"factor": "batch_throughput", "favours": "moe"}, {"factor": "training", "favours": "dense"},
            {"factor": "vram", "favours": "dense"}, {"factor": "scale", "favours": "neutral"}]
    scratch, tune = replace(MIXED, training="scratch"), replace(MIXED, training="fine-tune")
    assert (vote(rows, scratch), vote(rows, tune)) == (2 - 2 - 1, 2 - 1 - 1)
    assert vote(rows, scratch, replace(POLICY, throughput_weight=5, scratch_training_weight=1)) == 5 - 1 - 1


def test_recommend_uses_and_reports_the_policy_it_is_given():
    wl = default_workload()
    policy = replace(POLICY, scale_moe_from=1e15)  # Mixtral's 46.7B is then under "tens of billions"
    r = recommend(wl, policy=policy)
    scale = {f["factor"]: f for f in r["factors"]}["scale"]
    assert scale["favours"] == "neutral" and scale["numbers"]["moe_from"] == 1e15
    assert r["policy"] == asdict(policy)
    assert {f["factor"]: f for f in recommend(wl)["factors"]}["scale"]["favours"] == "moe"


def test_the_task_mix_lean_has_its_own_margin():
    """The default mix leans 0.50 - 0.25 = +0.25 to the MoE (knowledge + multilingual minus reasoning): the task
    factor goes neutral at task_lean_margin 0.3, and does not move with the engine's `margin` (review P5-20)."""
    from moelab.decide.evidence import Evidence
    from moelab.decide.factors import task_type

    wl = default_workload()
    row = task_type(wl, Evidence(), POLICY)
    assert row["numbers"]["knowledge_multilingual_minus_reasoning"] == pytest.approx(0.25)
    assert row["favours"] == "moe"
    assert task_type(wl, Evidence(), replace(POLICY, margin=0.3))["favours"] == "moe"
    assert task_type(wl, Evidence(), replace(POLICY, task_lean_margin=0.3))["favours"] == "neutral"
    assert task_type(wl, Evidence(), replace(POLICY, task_lean_margin=0.24))["favours"] == "moe"
    assert recommend(wl)["policy"]["task_lean_margin"] == POLICY.task_lean_margin == 0.10
