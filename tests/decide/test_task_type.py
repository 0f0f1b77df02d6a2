"""The task-type factor on the study's probe accuracies (study["task_type"]): a probe set counts where the
interval of the MoE-minus-dense difference (Newcombe, as the report's section has it) excludes 0; a difference
whose interval holds 0, or two models at the floor, leaves the seeds' prior for that set. Knowledge is read from
the iso-active pair, reasoning from the iso-total pair (the seeds' claims); the per-domain validation loss is the
fallback only when the study has no probes."""

from dataclasses import replace

import pytest
from evidence_parts import CLEAR, task_type, training_and_bench

from moelab.decide import default_workload, recommend
from moelab.decide.evidence import BASIS_PRIOR, BASIS_TINY, Accuracy, Comparison, Evidence
from moelab.decide.factors import task_type as task_factor
from moelab.decide.policy import POLICY
from moelab.eval.score import at_floor, difference, wilson

DEFAULT = default_workload()  # knowledge + multilingual 50%, reasoning 25%
REASONING = replace(DEFAULT, task_mix={"reasoning": 1.0, "knowledge": 0.0, "multilingual": 0.0, "code": 0.0})
KNOWLEDGE = replace(DEFAULT, task_mix={"reasoning": 0.2, "knowledge": 0.8, "multilingual": 0.0, "code": 0.0})


def _row(wl, part: dict, training: bool = False) -> dict:
    evidence = {"task_type": part} | (training_and_bench() if training else {})
    return task_factor(wl, Evidence.read(evidence), POLICY)


def _by(row: dict) -> dict:
    return {(c["pair"], c["set"]): c for c in row["numbers"]["measured_accuracy"]}


def test_clear_differences_are_evidence_weighted_by_the_mix():
    row = _row(DEFAULT, task_type(CLEAR))
    n = row["numbers"]
    assert (row["favours"], row["basis"], n["measured"]) == ("moe", BASIS_TINY, "exact-match accuracy")
    assert n["measured_sets"] == ["knowledge", "reasoning"]
    assert n["task_lean"] == pytest.approx(0.5 * 1 + 0.25 * -1)
    by = _by(row)
    assert {k: c["verdict"] for k, c in by.items()} == {
        ("iso_active", "knowledge"): "moe", ("iso_active", "reasoning"): "inside_ci",
        ("iso_total", "knowledge"): "moe", ("iso_total", "reasoning"): "dense"}
    assert {k for k, c in by.items() if c["used"]} == {("iso_active", "knowledge"), ("iso_total", "reasoning")}
    know = by[("iso_active", "knowledge")]
    assert (know["dense"], know["moe"], know["dense_accuracy"], know["moe_accuracy"]) == ("tiny-dense", "tiny-moe",
                                                                                          0.2, 0.6)
    assert know["dense_ci"] == list(wilson(20, 100)) and know["moe_n"] == 100
    assert row["basis_detail"].endswith("params") and "100 knowledge" in row["basis_detail"]
    # the same measurement on a reasoning-only mix: only the reasoning comparison counts, and it says dense
    row = _row(REASONING, task_type(CLEAR))
    assert (row["favours"], row["basis"], row["numbers"]["measured_sets"]) == ("dense", BASIS_TINY, ["reasoning"])
    assert row["numbers"]["task_lean"] == pytest.approx(-1.0)


def test_measured_evidence_can_overrule_the_prior():
    flipped = {"tiny-dense-wide": {"reasoning": (30, 100)}, "tiny-moe": {"reasoning": (70, 100)}}
    prior = task_factor(REASONING, Evidence(), POLICY)
    row = _row(REASONING, task_type(flipped))
    assert prior["favours"] == "dense" and prior["basis"] == BASIS_PRIOR and prior["numbers"]["measured"] is None
    assert (row["favours"], row["basis"]) == ("moe", BASIS_TINY)


def test_a_difference_inside_the_intervals_is_not_evidence():
    # the point estimates say MoE on reasoning; the difference's interval holds 0, so the prior (dense) decides
    close = {"tiny-dense-wide": {"reasoning": (45, 100)}, "tiny-moe": {"reasoning": (55, 100)}}
    row = _row(REASONING, task_type(close))
    assert (row["favours"], row["basis"], row["numbers"]["measured_sets"]) == ("dense", BASIS_PRIOR, [])
    assert _by(row)[("iso_total", "reasoning")]["verdict"] == "inside_ci"
    assert "basis_detail" not in row


def test_the_floor_is_not_evidence():
    # chance 0.3: both at or under it, though 12/40 vs 4/40 would separate the point estimates
    floor = {"tiny-dense-wide": {"reasoning": (12, 40)}, "tiny-moe": {"reasoning": (4, 40)}}
    row = _row(REASONING, task_type(floor, chance=0.3, floor_warnings=("reasoning: every model at the floor",)))
    assert _by(row)[("iso_total", "reasoning")]["verdict"] == "floor"
    assert (row["basis"], row["numbers"]["measured_sets"]) == (BASIS_PRIOR, [])
    assert row["numbers"]["floor_warnings"] == ["reasoning: every model at the floor"]
    # one model off the floor, clearly apart from the other, is evidence
    learned = {"tiny-dense-wide": {"reasoning": (2, 100)}, "tiny-moe": {"reasoning": (50, 100)}}
    row = _row(REASONING, task_type(learned, chance=0.05))
    assert (row["favours"], row["basis"]) == ("moe", BASIS_TINY)


def test_unmeasured_sets_keep_the_prior_sign():
    # knowledge within noise (50 vs 52 of 100), reasoning dense ahead (70 vs 30)
    part = task_type({"tiny-dense": {"knowledge": (50, 100)},
                      "tiny-moe": {"knowledge": (52, 100), "reasoning": (30, 100)},
                      "tiny-dense-wide": {"reasoning": (70, 100)}})
    row = _row(KNOWLEDGE, part)
    assert row["numbers"]["measured_sets"] == ["reasoning"]
    assert row["numbers"]["task_lean"] == pytest.approx(0.8 * 1 + 0.2 * -1)  # knowledge: prior +1
    assert (row["favours"], row["basis"]) == ("moe", BASIS_TINY)


def test_a_missing_pair_reads_the_other():
    part = task_type({k: v for k, v in CLEAR.items() if k != "tiny-dense-wide"})
    by = _by(_row(REASONING, part))
    assert set(by) == {("iso_active", "knowledge"), ("iso_active", "reasoning")}
    assert by[("iso_active", "reasoning")]["used"] and by[("iso_active", "reasoning")]["verdict"] == "inside_ci"


def test_loss_is_the_fallback_only_without_probes():
    loss = task_factor(DEFAULT, Evidence.read(training_and_bench()), POLICY)
    assert loss["numbers"]["measured"] == "validation loss" and loss["basis"] == BASIS_TINY
    assert loss["numbers"]["measured_val_loss"]["math"] == {"dense": 4.1, "moe": 3.9}
    probes = _row(DEFAULT, task_type(CLEAR), training=True)
    assert probes["numbers"]["measured"] == "exact-match accuracy" and "measured_val_loss" not in probes["numbers"]
    # a skipped stage is no measurement: the loss fallback again
    skipped = task_factor(DEFAULT, Evidence.read(training_and_bench() | {"task_type": {"skipped": "no runs"}}), POLICY)
    assert skipped["numbers"]["measured"] == "validation loss"


@pytest.mark.parametrize("k, n, chance", [(0, 0, 0.1), (5, 50, 0.1), (6, 50, 0.1), (10, 50, 0.1), (30, 50, 0.5),
                                          (40, 50, 0.5), (1, 3, 0.0), (50, 50, 1.0)])
def test_floor_matches_the_probe_scorer(k, n, chance):
    lo, hi = wilson(k, n)
    c = {"n": n, "correct": k, "accuracy": k / n if n else 0.0, "ci_low": lo, "ci_high": hi, "chance": chance}
    assert Accuracy(c["accuracy"], lo, hi, n, chance).at_floor == at_floor(c)


def _cell(k: int, n: int, chance: float = 0.0) -> Accuracy:
    lo, hi = wilson(k, n)
    return Accuracy(k / n, lo, hi, n, chance)


def test_the_difference_reproduces_newcombes_published_interval():
    """Newcombe (Stat. Med. 17 (1998) 873-890), Table II example (a): 56/70 - 48/80 = 0.2000, method 10 (hybrid
    score, no continuity correction) 95% interval 0.0524 to 0.3339."""
    c = Comparison("iso_total", "reasoning", "dense", "moe", _cell(48, 80), _cell(56, 70))
    gap, lo, hi = c.difference
    assert (round(gap, 4), round(lo, 4), round(hi, 4)) == (0.2, 0.0524, 0.3339)
    assert c.verdict == "moe"
    flipped = Comparison("iso_total", "reasoning", "dense", "moe", _cell(56, 70), _cell(48, 80))
    assert tuple(round(x, 4) for x in flipped.difference) == (-0.2, -0.3339, -0.0524) and flipped.verdict == "dense"


def test_the_floor_by_hand():
    # Wilson 95% lower bounds: 6/50 -> 0.056, 10/50 -> 0.112; chance 0.1
    assert _cell(6, 50, 0.1).at_floor and not _cell(10, 50, 0.1).at_floor
    assert _cell(5, 50, 0.1).at_floor  # accuracy == chance
    assert Accuracy(0.0, 0.0, 1.0, 0, 0.0).at_floor  # nothing scored
    both_low = Comparison("iso_active", "knowledge", "dense", "moe", _cell(0, 40, 0.15), _cell(6, 40, 0.15))
    assert both_low.verdict == "floor"  # 6/40 = chance: the review's P1-2 case is not evidence


def test_recommend_cites_the_probes():
    r = recommend(default_workload(), {"task_type": task_type(CLEAR)})
    row = next(f for f in r["factors"] if f["factor"] == "task_type")
    assert (row["favours"], row["basis"]) == ("moe", BASIS_TINY)
    assert r["evidence"] == {"training": False, "bench": False, "task_type": True, "hybrid": False}


@pytest.mark.parametrize("dense, moe", [((40, 100), (55, 100)), ((55, 100), (40, 100)), ((45, 100), (55, 100)),
                                        ((5, 20), (15, 20)), ((0, 30), (3, 30)), ((30, 30), (25, 30))])
def test_the_difference_is_the_reports(dense, moe):
    """Newcombe's interval as moelab.eval.score.difference (the report's test): 40 vs 55 of 100 overlap as
    intervals, yet their difference is evidence."""
    row = _row(REASONING, task_type({"tiny-dense-wide": {"reasoning": dense}, "tiny-moe": {"reasoning": moe}}))
    c = _by(row)[("iso_total", "reasoning")]
    dense_cell, moe_cell = (task_type({m: {"reasoning": x}})["models"][m]["scores"]["reasoning"]
                            for m, x in (("tiny-dense-wide", dense), ("tiny-moe", moe)))
    d = difference(moe_cell, dense_cell)
    assert c["difference"] == pytest.approx(d["difference"])
    assert c["difference_ci"] == pytest.approx([d["ci_low"], d["ci_high"]])
    if at_floor(dense_cell) and at_floor(moe_cell):
        assert c["verdict"] == "floor"
    else:
        assert c["verdict"] == ("moe" if d["ci_low"] > 0 else "dense" if d["ci_high"] < 0 else "inside_ci")
    if dense == (40, 100):
        assert c["verdict"] == "moe" and c["dense_ci"][1] > c["moe_ci"][0]
