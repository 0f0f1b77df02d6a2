"""Fixes from the issue-12 review: no plan splits one sequence, a batch prefill fills the pipeline, the eager model
refuses plans it does not price, capacity shards each layer by its own KV heads."""

from dataclasses import replace

import pytest

from moelab.cost.capacity import kv_per_sequence_per_gpu
from moelab.cost.gpu import kv_shards
from moelab.cost.memory import kv_cache_bytes
from moelab.cost.plan import Plan
from moelab.cost.roofline import Workload, decode_step, prefill
from moelab.errors import MoelabError
from moelab.spec.hardware import load_hardware
from moelab.spec.presets import load_model


def ops(phase):
    return {op.name: op for op in phase.operators}


@pytest.mark.parametrize("plan", ["ep2", "ep8", "tp1x8"])
def test_one_sequence_is_never_split_over_groups_or_replicas(plan):
    spec, hw = load_model("qwen3-30b-a3b"), load_hardware("H100-SXM")
    one = Workload(batch=1, prompt=8192, gen=16)
    alone = ops(prefill(spec, hw, one))
    split = ops(prefill(spec, hw, Workload(batch=1, prompt=8192, gen=16, gpus=Plan.parse(plan).gpus, plan=plan)))
    for name in ("attention_prefill", "qkv_proj", "o_proj", "lm_head"):
        assert split[name].seconds == pytest.approx(alone[name].seconds, rel=1e-9), name
    assert decode_step(spec, hw, replace(one, gpus=8, plan="tp1x8")).seconds == pytest.approx(
        decode_step(spec, hw, one).seconds)


def test_a_batch_of_three_on_two_groups_is_priced_at_two_sequences():
    spec, hw = load_model("qwen3-30b-a3b"), load_hardware("H100-SXM")
    three = ops(decode_step(spec, hw, Workload(batch=3, gpus=2, plan="ep2")))
    two = ops(decode_step(spec, hw, Workload(batch=2)))
    assert three["attention_decode"].bytes == pytest.approx(two["attention_decode"].bytes)


@pytest.mark.parametrize("pp", [2, 4])
def test_a_batch_prefill_waits_for_the_pipeline_to_fill(pp):
    spec, hw = load_model("llama-3-70b"), load_hardware("H100-SXM")
    plan = f"pp{pp}tp8"
    ph = prefill(spec, hw, Workload(batch=8, prompt=4096, gen=16, gpus=8 * pp, plan=plan))
    through = sum(op.seconds for op in ph.operators if op.name != "pipeline_fill")  # one micro-batch, all stages
    assert ph.seconds == pytest.approx(through * (2 * pp - 1) / pp)  # m + pp - 1 = 2pp - 1 stage times
    tp8 = prefill(spec, hw, Workload(batch=8, prompt=4096, gen=16, gpus=8, plan="tp8")).seconds
    assert ph.seconds < tp8  # still faster than one TP8 replica doing the whole batch alone


def test_the_eager_model_refuses_plans_it_does_not_price():
    spec = load_model("llama-3-8b")
    cpu = replace(load_hardware("H100-SXM"), execution="eager", elementwise_bandwidth=1e10)
    decode_step(spec, cpu, Workload(batch=4, gpus=4, plan="tp4"))
    for plan in ("tp2x2", "pp2tp2", "tp1x4"):
        with pytest.raises(MoelabError, match="eager"):
            decode_step(spec, cpu, Workload(batch=4, gpus=4, plan=plan))


def test_capacity_shards_each_layer_by_its_own_kv_heads():
    spec = load_model("tests/spec/configs/qwen3_next_80b_a3b_thinking.json")
    plan = Plan(tp=4)
    want = sum(kv_cache_bytes(spec_of(spec, layer, n), "bf16", 1, 4096) / kv_shards(layer.attention, 4)
               for layer, n in spec.layer_groups)
    assert kv_per_sequence_per_gpu(spec, plan, "bf16", 4096) == pytest.approx(want)


def spec_of(spec, layer, n):
    """The model with only `n` copies of one layer kind (its KV cache is that group's)."""
    return replace(spec, layers=(layer,) * n)
