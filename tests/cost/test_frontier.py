"""cost.frontier: the plans searched, the concurrency ladder, and the Pareto frontier (non-dominated, fitting),
each checked against an independent brute force over cost.serving's points and cost.capacity's limits."""

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moelab.cost.capacity import capacity
from moelab.cost.frontier import (
    KEYS,
    FrontierPoint,
    best_at,
    candidate_plans,
    frontier,
    ladder,
    pareto,
    serving_points,
)
from moelab.cost.parallel import candidate_plans as search
from moelab.cost.parallel import plan_problem
from moelab.cost.plan import Plan
from moelab.errors import MoelabError
from moelab.spec import load_hardware, load_model

HW = load_hardware("H100-SXM")
INPUT, OUTPUT = 512, 128


def _dominates(a, b) -> bool:
    ua, ga = a.tokens_per_second_per_user, a.tokens_per_second_per_gpu
    ub, gb = b.tokens_per_second_per_user, b.tokens_per_second_per_gpu
    return ua >= ub and ga >= gb and (ua > ub or ga > gb)


@pytest.fixture(scope="module")
def mixtral():
    spec = load_model("mixtral-8x7b")
    return spec, serving_points(spec, HW, 8, INPUT, OUTPUT), frontier(spec, HW, 8, INPUT, OUTPUT)


def test_frontier_points_are_non_dominated_and_cover_every_fitting_point(mixtral):
    _, points, front = mixtral
    fitting = [FrontierPoint.of(sp) for sp in points if sp.fits]
    assert len(front) >= 3 and len(fitting) > 2 * len(front)
    for f in front:  # no fitting point beats a frontier point in both
        assert not any(_dominates(p, f) for p in fitting), f
    for p in fitting:  # every fitting point is on the frontier or beaten by (or equal to) a frontier point
        assert any(f.tokens_per_second_per_user >= p.tokens_per_second_per_user
                   and f.tokens_per_second_per_gpu >= p.tokens_per_second_per_gpu for f in front), p
    # along the frontier, interactivity falls exactly as throughput rises
    users = [f.tokens_per_second_per_user for f in front]
    gpus = [f.tokens_per_second_per_gpu for f in front]
    assert users == sorted(users, reverse=True) and gpus == sorted(gpus) and len(set(gpus)) == len(gpus)


def test_frontier_points_fit_and_match_the_serving_model(mixtral):
    spec, points, front = mixtral
    by_key = {(sp.plan, sp.concurrency): sp for sp in points}
    for f in front:
        plan = Plan.parse(f.plan)
        assert plan.gpus == 8
        assert capacity(spec, HW, plan, "bf16", "bf16", INPUT + OUTPUT).fits(f.concurrency)  # recomputed here
        sp = by_key[(f.plan, f.concurrency)]
        assert f.tpot_ms == sp.tpot_ms and f.ttft_ms == sp.ttft_ms
        assert f.tokens_per_second_per_user == pytest.approx(1000 / f.tpot_ms, rel=1e-12)
        assert f.tokens_per_second_per_gpu == pytest.approx(sp.output_tokens_per_second / 8, rel=1e-12)
    # points beyond a plan's KV limit are priced but marked, and never on the frontier
    over = [sp for sp in points if not sp.fits]
    assert all(sp.concurrency > sp.max_concurrency for sp in over)
    assert not {(sp.plan, sp.concurrency) for sp in over} & {(f.plan, f.concurrency) for f in front}
    assert list(front[0].to_dict()) == list(KEYS)


def test_candidate_plans_are_the_plan_search_on_exactly_the_gpus():
    mixtral, llama = load_model("mixtral-8x7b"), load_model("llama-3-70b")
    for spec in (mixtral, llama):
        plans = candidate_plans(spec, HW, 8)
        assert all(p.gpus == 8 for p in plans) and len({p.name for p in plans}) == len(plans)
        assert all(plan_problem(spec, p) is None for p in plans)  # none the plan rules refuse
        assert {p.name for p in plans} == {p.name for p in search(spec, HW, 8, batch=8)}
        assert all(spec.attention.n_heads % p.tp == 0 for p in plans)
    names = {p.name for p in candidate_plans(mixtral, HW, 8)}
    assert {"tp8", "ep8", "tp2ep4", "tp4x2", "tp1x8"} <= names
    assert all(p.ep == 1 for p in candidate_plans(llama, HW, 8))  # a dense model has no experts to split
    assert {"tp1x8", "tp2x4", "tp4x2", "tp8"} <= {p.name for p in candidate_plans(llama, HW, 8)}  # replicas
    # every tp x ep x replicas = 8 that splits no expert is offered (pp only past a node of 8)
    expected = {(1, tp, ep, x) for tp, ep, x in itertools.product([1, 2, 4, 8], repeat=3)
                if tp * ep * x == 8 and mixtral.moe.n_experts % ep == 0}
    assert {(p.pp, p.tp, p.ep, p.replicas) for p in candidate_plans(mixtral, HW, 8)} == expected
    # 6 GPUs: tp 3 or 6 does not divide 32 heads, ep 3 or 6 does not divide 8 experts
    assert all(p.tp in (1, 2) and p.ep in (1, 2) for p in candidate_plans(mixtral, HW, 6))
    assert any(p.pp > 1 for p in candidate_plans(llama, HW, 16))  # a replica past one node may pipeline


def test_ladder():
    assert ladder(0) == []
    assert ladder(1) == [1]
    assert ladder(8) == [1, 2, 4, 8]
    assert ladder(100) == [1, 2, 4, 8, 16, 32, 64, 100]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 1e4), st.floats(0.1, 1e4)), min_size=1, max_size=30))
def test_pareto_matches_brute_force(pairs):
    pts = [FrontierPoint("tp1", i + 1, u, g, 1.0, 1000 / u) for i, (u, g) in enumerate(pairs)]
    kept = pareto(pts)
    brute = [p for p in pts if not any(_dominates(q, p) for q in pts)]
    # equal points: one of each is kept
    assert sorted({(p.tokens_per_second_per_user, p.tokens_per_second_per_gpu) for p in kept}) == sorted(
        {(p.tokens_per_second_per_user, p.tokens_per_second_per_gpu) for p in brute})
    assert len(kept) == len({(p.tokens_per_second_per_user, p.tokens_per_second_per_gpu) for p in brute})


def test_no_plan_fits_is_empty_and_bad_input_is_one_line():
    v3 = load_model("deepseek-v3")
    assert frontier(v3, HW, 1, INPUT, OUTPUT) == []  # 671B parameters on one 80 GB GPU
    spec = load_model("mistral-7b")
    for kwargs in ({"gpus": 0}, {"gpus": True}, {"input": 0}, {"dtype": "fp7"}, {"kv_dtype": "int3"}):
        args = {"gpus": 1, "input": INPUT, "output": OUTPUT} | kwargs
        with pytest.raises(MoelabError):
            frontier(spec, HW, args.pop("gpus"), args.pop("input"), args.pop("output"), **args)
    with pytest.raises(MoelabError):
        serving_points(spec, HW, 1, INPUT, OUTPUT, concurrencies=[0])


def test_best_at_meets_the_limits_with_the_most_throughput(mixtral):
    spec, points, _ = mixtral
    at = [sp for sp in points if sp.concurrency == 64 and sp.fits]
    free = best_at(spec, HW, 8, 64, INPUT, OUTPUT)
    assert free.output_tokens_per_second_per_gpu == max(sp.output_tokens_per_second_per_gpu for sp in at)
    # a TPOT limit between the plans' own figures: the best plan meeting it, from the points themselves
    tpots = sorted(sp.tpot_ms for sp in at)
    limit = (tpots[0] + tpots[1]) / 2 if tpots[1] > tpots[0] else tpots[0]
    best = best_at(spec, HW, 8, 64, INPUT, OUTPUT, tpot_ms=limit)
    meeting = [sp for sp in at if sp.tpot_ms <= limit]
    assert best.tpot_ms <= limit
    assert best.output_tokens_per_second_per_gpu == max(sp.output_tokens_per_second_per_gpu for sp in meeting)
    # a limit no plan meets: the closest plan, which misses it
    closest = best_at(spec, HW, 8, 64, INPUT, OUTPUT, tpot_ms=tpots[0] / 2)
    assert closest.tpot_ms == tpots[0] and closest.tpot_ms > tpots[0] / 2
    assert best_at(spec, HW, 8, 10 ** 6, INPUT, OUTPUT) is None  # a million sequences' KV fits nowhere
    assert math.isfinite(free.ttft_ms)


def test_the_study_report_shows_the_frontier_pairs_modelled_not_measured(tmp_path):
    import csv

    from moelab.decide import default_workload
    from moelab.report import write_report
    from moelab.study.plan import FRONTIER_PAIRS
    from moelab.study.run import serving_frontier_stage

    wl = default_workload()
    sf = serving_frontier_stage(wl, HW)
    assert sf["pairs"] == [list(p) for p in FRONTIER_PAIRS] and sf["gpus"] == wl.gpus
    for name, m in sf["models"].items():  # the study's frontier is the library's, point for point
        assert m["points"] == [p.to_dict() for p in frontier(load_model(name), HW, wl.gpus, wl.prompt, wl.gen)]
    assert sf["models"]["deepseek-v3"]["points"] == []  # 671B in bf16 does not fit 8 x 80 GB
    report = write_report({"frontier": {"hardware": HW.name, "serving": sf}}, tmp_path)
    text = report.read_text()
    section = text[text.index("<section id='serving'>"):]
    section = section[:section.index("</section>")]
    assert "<figure class='plot' id='fig-serving-frontier' data-basis='modelled'>" in section
    assert "not measurements" in section and "No plan on" in section and "deepseek-v3" in section
    rows = list(csv.DictReader((tmp_path / "serving_frontier.csv").open()))
    assert len(rows) == sum(len(m["points"]) for m in sf["models"].values())
    first = sf["models"]["mixtral-8x7b"]["points"][0]
    row = next(r for r in rows if r["model"] == "mixtral-8x7b")
    assert float(row["tok/s/user"]) == first["tokens_per_second_per_user"] and row["plan"] == first["plan"]
    pairs = list(csv.DictReader((tmp_path / "serving_pairs.csv").open()))
    assert [(r["dense"], r["MoE"]) for r in pairs] == list(FRONTIER_PAIRS)
