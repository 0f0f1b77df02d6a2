"""cost.parallel: the plan search on G GPUs (pp x tp x ep x replicas), each plan's fit and KV-limited
concurrency, the best plan, and the estimate's chosen plan.

The expected plan sets come from a brute force over every (pp, tp, ep, x) with pp * tp * ep * x == G, filtered
by the rules read off the model's own fields (heads, KV heads, experts of each MoE layer, layers), not from the
search's code; fit and concurrency are checked against cost.capacity and against memory figures summed by hand.
"""

import itertools
import math
from dataclasses import replace

import pytest

from moelab.cost.capacity import capacity
from moelab.cost.estimate import estimate
from moelab.cost.memory import kv_cache_bytes, model_weight_bytes
from moelab.cost.parallel import best_plan, candidate_plans, evaluate, evaluate_plan, plans
from moelab.cost.plan import Plan, check_plan
from moelab.cost.roofline import Workload, decode_step, prefill
from moelab.errors import MoelabError
from moelab.spec import load_hardware, load_model
from moelab.spec.model import LayerSpec

HW = load_hardware("H100-SXM")


def brute_force(spec, hw, gpus: int, batch: int) -> set[str]:
    """Every plan on `gpus` GPUs that the rules allow, by enumeration."""
    a = spec.attention
    experts = {layer.moe.n_experts for layer in spec.layers if layer.moe is not None}
    out = set()
    for pp, tp, ep, x in itertools.product(range(1, gpus + 1), repeat=4):
        if pp * tp * ep * x != gpus:
            continue
        if a.n_heads % tp or (a.n_kv_heads % tp and tp % a.n_kv_heads):
            continue
        if ep > 1 and (not experts or any(e % ep for e in experts)):
            continue
        if pp > 1 and (spec.n_layers % pp or pp * tp * ep <= hw.gpus_per_node):
            continue
        if x > 1 and x > batch:
            continue
        out.add(Plan(pp=pp, tp=tp, ep=ep, replicas=x).name)
    return out


@pytest.mark.parametrize("model,gpus,batch", [
    ("mixtral-8x7b", 8, 64), ("mixtral-8x7b", 16, 64), ("mixtral-8x7b", 6, 64), ("llama-3-8b", 8, 64),
    ("llama-3-8b", 8, 2), ("qwen3-30b-a3b", 8, 8), ("llama-3-70b", 32, 64), ("deepseek-v3", 32, 1),
    ("mixtral-8x22b", 24, 64), ("mistral-7b", 1, 1),
])
def test_search_offers_exactly_the_plans_that_apply(model, gpus, batch):
    spec = load_model(model)
    found = candidate_plans(spec, HW, gpus, batch)
    names = [p.name for p in found]
    assert len(names) == len(set(names))
    assert set(names) == brute_force(spec, HW, gpus, batch)
    for p in found:
        assert p.gpus == gpus  # every plan's degrees multiply to G
        if p.ep > 1:
            assert spec.is_moe and spec.moe.n_experts % p.ep == 0  # EP never splits an expert


def test_dense_models_get_replicas_and_no_ep():
    spec = load_model("llama-3-8b")
    names = {p.plan for p in plans(spec, HW, Workload(batch=64, gpus=8))}
    assert {"tp8", "tp4x2", "tp2x4", "tp1x8"} <= names
    assert not any("ep" in n for n in names)


def test_replicas_need_a_sequence_each():
    names = {p.plan for p in plans(load_model("llama-3-8b"), HW, Workload(batch=2, gpus=8))}
    assert names == {"tp8", "tp4x2"}


def test_pp_only_past_a_node():
    spec = load_model("llama-3-70b")
    assert not any(p.pp > 1 for p in candidate_plans(spec, HW, 8, 64))
    on16 = candidate_plans(spec, HW, 16, 64)
    assert {"pp2tp8", "pp4tp4"} <= {p.name for p in on16}
    assert all(p.gpus_per_replica > HW.gpus_per_node for p in on16 if p.pp > 1)


def test_ep_must_divide_every_moe_layer():
    spec = load_model("mixtral-8x7b")
    fewer = replace(spec.moe, n_experts=4, top_k=2)
    layers = tuple(LayerSpec(layer.attention, fewer) if i % 2 else layer for i, layer in enumerate(spec.layers))
    mixed = replace(spec, name="mixed", layers=layers)
    eps = {p.ep for p in candidate_plans(mixed, HW, 8, 64)}
    assert eps == {1, 2, 4}  # 8 divides the 8-expert layers, not the 4-expert ones
    with pytest.raises(MoelabError, match="ep8 does not divide the 4 routed experts"):
        check_plan(mixed, Plan(ep=8))
    check_plan(mixed, Plan(ep=4, tp=2))


@pytest.mark.parametrize("model,plan,match", [
    ("mistral-7b", "ep2", "dense model"), ("mixtral-8x7b", "ep3", "does not divide the 8 routed experts"),
    ("mixtral-8x7b", "tp3", "does not divide the 32 heads"), ("mixtral-8x7b", "pp3tp2", "32 layers"),
    ("qwen3-30b-a3b", "tp16x1", None), ("mixtral-8x7b", "tp64", "does not divide the 32 heads"),
])
def test_check_plan(model, plan, match):
    spec = load_model(model)
    if match is None:
        check_plan(spec, Plan.parse(plan))
        return
    with pytest.raises(MoelabError, match=match):
        check_plan(spec, Plan.parse(plan))


@pytest.mark.parametrize("model,gpus,batch", [("mixtral-8x7b", 8, 256), ("llama-3-70b", 8, 32),
                                              ("qwen3-30b-a3b", 4, 1024), ("llama-3-8b", 2, 4096)])
def test_fits_and_max_concurrency_agree_with_capacity(model, gpus, batch):
    spec = load_model(model)
    wl = Workload(batch=batch, prompt=1024, gen=512, gpus=gpus)
    for r in plans(spec, HW, wl):
        plan = Plan.parse(r.plan)
        cap = capacity(spec, HW, plan, wl.dtype, wl.kv_dtype, wl.prompt + wl.gen)
        assert r.max_concurrency == cap.max_concurrency and r.fits == cap.fits(batch)
        assert r.fits == (r.memory_per_gpu_bytes <= cap.usable_bytes) or not cap.fits_weights
        assert r.replicas == plan.replicas and r.gpus == gpus
        if cap.fits_weights and r.max_concurrency:
            groups = plan.ep * plan.replicas
            assert r.max_concurrency % groups == 0  # whole sequences per data-parallel group


def test_max_concurrency_by_hand_for_tp_and_replicas():
    """Llama-3-8B (8 KV heads) on tp2 x 2: weights / 2 per GPU, KV split over 2 heads' shards, twice the slots."""
    spec = load_model("llama-3-8b")
    context = 1536
    usable = HW.memory_bytes * HW.memory_utilization
    weights = model_weight_bytes(spec, "bf16").total / 2
    per_seq = kv_cache_bytes(spec, "bf16", 1, context) / 2
    r = evaluate(spec, HW, Workload(batch=4, prompt=1024, gen=512), Plan(tp=2, replicas=2))
    cap = capacity(spec, HW, Plan(tp=2, replicas=2), "bf16", "bf16", context)
    assert cap.weights_bytes == pytest.approx(weights)
    assert r.max_concurrency == 2 * math.floor((usable - weights - cap.workspace_bytes) / per_seq)


def test_best_plan_is_the_fastest_that_fits():
    spec = load_model("mixtral-8x7b")
    results = plans(spec, HW, Workload(batch=64, gpus=8))
    best = best_plan(results)
    assert best is results[0] and best.fits
    assert best.tokens_per_second == max(r.tokens_per_second for r in results if r.fits)
    # the per-plan figures are the step model's for that plan
    wl = Workload(batch=64, gpus=8, plan=best.plan)
    assert best.decode.seconds == decode_step(spec, HW, wl).seconds
    assert best.prefill.seconds == prefill(spec, HW, wl).seconds
    assert best.tokens_per_second == pytest.approx(64 / best.decode.seconds)


def test_when_nothing_fits_the_least_memory_per_gpu_comes_first():
    results = plans(load_model("deepseek-v3"), HW, Workload(batch=1, gpus=2))
    assert not any(r.fits for r in results)
    assert results[0].memory_per_gpu_bytes == min(r.memory_per_gpu_bytes for r in results)


def test_short_plan_names_still_work():
    spec = load_model("mixtral-8x7b")
    assert evaluate_plan(spec, HW, Workload(gpus=8, plan="ep")).plan == "ep8"
    assert evaluate_plan(spec, HW, Workload(gpus=8, plan="tp")).plan == "tp8"
    assert evaluate_plan(spec, HW, Workload(gpus=4, plan="tp2x2")).replicas == 2


def test_estimate_reports_the_chosen_plan_at_the_top():
    spec = load_model("mixtral-8x7b")
    searched = estimate(spec, HW, Workload(batch=32), gpus=8)
    assert not searched.parallel.fixed and searched.parallel.chosen is best_plan(list(searched.parallel.plans))
    fixed = estimate(spec, HW, Workload(batch=32), plan="ep2x4")
    assert fixed.parallel.fixed and fixed.parallel.plan == "ep2x4" and fixed.workload.gpus == 8
    for e in (searched, fixed):
        d = e.to_dict()
        row = next(p for p in d["parallel"]["plans"] if p["plan"] == d["parallel"]["plan"])
        assert d["decode"]["step_seconds"] == row["decode_step_seconds"] == e.decode.seconds
        assert d["prefill"]["seconds"] == row["prefill_seconds"]
        assert d["decode"]["tokens_per_second"] == row["tokens_per_second"]
    with pytest.raises(MoelabError, match="contradicts"):
        estimate(spec, HW, Workload(), gpus=4, plan="tp8")


def test_serving_rows_on_the_chosen_plan_mark_what_does_not_fit():
    spec = load_model("mixtral-8x7b")
    e = estimate(spec, HW, Workload(prompt=1024, gen=256), plan="tp2", concurrency=[1, 64, 100_000])
    assert [s.concurrency for s in e.serving] == [1, 64, 100_000]
    assert {s.plan for s in e.serving} == {"tp2"}
    cap = capacity(spec, HW, Plan(tp=2), "bf16", "bf16", 1280)
    assert all(s.max_concurrency == cap.max_concurrency for s in e.serving)
    assert [s.fits for s in e.serving] == [True, True, False]
    rows = e.to_dict()["serving"]
    assert rows[2]["note"] and "max_concurrency" in rows[2]["note"] and rows[0]["note"] == ""
