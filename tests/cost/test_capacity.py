"""cost.capacity: what one GPU of a plan holds (weights, KV cache per sequence) and how many sequences fit.

Expectations come from cost.memory's totals (tested against published parameter counts in test_memory.py and
test_published_counts.py) split by hand: tp splits every matrix, ep the routed experts, pp the layers; the KV
cache splits by KV head (no finer than one), MLA's latent not at all. Hardware memory is chosen here.
"""

from dataclasses import replace

import pytest

from moelab.cost.capacity import capacity, kv_per_sequence_per_gpu, weights_per_gpu
from moelab.cost.memory import kv_cache_bytes, model_weight_bytes, prefill_activation_bytes
from moelab.cost.params import count_params
from moelab.cost.plan import Plan
from moelab.cost.roofline import Workload, decode_step
from moelab.spec import load_hardware, load_model

MODELS = ("llama-3-8b", "mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3")
PLANS = ("tp1", "tp2", "tp8", "pp2tp4", "ep8", "tp2ep4", "pp2ep4", "tp2x4", "tp16")


def hardware(**overrides):
    fields = dict(memory_bytes=200e9, memory_utilization=0.85, runtime_overhead_bytes=3e9)
    fields.update(overrides)
    return replace(load_hardware("H100-SXM"), **fields)


def usable_plan(spec, name: str) -> bool:
    plan = Plan.parse(name)
    return plan.ep == 1 or (spec.is_moe and spec.moe.n_experts % plan.ep == 0)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", PLANS)
def test_weights_per_gpu_add_up_to_the_model(model, name):
    """Over the GPUs of one replica the shards add up to the weights, plus ep - 1 more copies of everything
    that is not a routed expert (attention and the rest are replicated over the ep groups)."""
    spec, plan = load_model(model), Plan.parse(name)
    if not usable_plan(spec, name):
        pytest.skip("ep must divide the experts")
    wb = model_weight_bytes(spec, "bf16")
    held = weights_per_gpu(spec, plan, "bf16") * plan.gpus_per_replica
    assert held == pytest.approx(wb.total + (plan.ep - 1) * (wb.total - wb.routed_experts), rel=1e-12)


@pytest.mark.parametrize("model,heads", [("llama-3-8b", 8), ("mixtral-8x7b", 8), ("qwen3-30b-a3b", 4)])
@pytest.mark.parametrize("name", PLANS)
def test_kv_per_sequence_is_split_by_kv_head_and_stage(model, heads, name):
    spec, plan = load_model(model), Plan.parse(name)
    if spec.layers[0].attention.n_kv_heads != heads:
        pytest.fail("preset changed: fix the test's KV head count")
    expected = kv_cache_bytes(spec, "bf16", 1, 5000) / min(plan.tp, heads) / plan.pp
    assert kv_per_sequence_per_gpu(spec, plan, "bf16", 5000) == pytest.approx(expected, rel=1e-12)
    assert kv_per_sequence_per_gpu(spec, plan, "fp8", 5000) == pytest.approx(expected / 2, rel=1e-12)


def test_mla_latent_is_not_split_by_tp():
    spec = load_model("deepseek-v3")
    for tp in (1, 8):
        assert kv_per_sequence_per_gpu(spec, Plan(tp=tp), "bf16", 4096) == kv_cache_bytes(spec, "bf16", 1, 4096)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", PLANS)
@pytest.mark.parametrize("context", [1024, 9000])
def test_max_concurrency_fills_the_free_memory(model, name, context):
    spec, plan, hw = load_model(model), Plan.parse(name), hardware()
    if not usable_plan(spec, name):
        pytest.skip("ep must divide the experts")
    cap = capacity(spec, hw, plan, "bf16", "bf16", context)
    usable = 200e9 * 0.85
    assert cap.usable_bytes == pytest.approx(usable)
    assert cap.workspace_bytes == pytest.approx(3e9 + prefill_activation_bytes(spec, "bf16", 1, 8192) / plan.tp)
    free = usable - cap.weights_bytes - cap.workspace_bytes
    groups = plan.ep * plan.replicas  # data-parallel groups that each hold their own sequences
    if free <= 0:
        assert cap.max_concurrency == 0 and not cap.fits_weights and not cap.fits(1)
        return
    per_group = cap.max_concurrency / groups
    assert per_group == int(per_group)
    assert per_group * cap.kv_bytes_per_sequence <= free < (per_group + 1) * cap.kv_bytes_per_sequence
    assert cap.fits(cap.max_concurrency) and not cap.fits(cap.max_concurrency + 1)


def test_weights_that_do_not_fit():
    spec = load_model("deepseek-v3")
    cap = capacity(spec, hardware(memory_bytes=80e9), Plan(tp=1), "bf16", "bf16", 2048)
    assert not cap.fits_weights and cap.max_concurrency == 0 and not cap.fits(1)
    cap8 = capacity(spec, hardware(memory_bytes=200e9), Plan(tp=8), "fp8", "fp8", 2048)
    assert cap8.fits_weights and cap8.max_concurrency > 0


def test_more_gpus_hold_more_sequences():
    spec, hw = load_model("llama-3-8b"), hardware(memory_bytes=80e9)
    counts = [capacity(spec, hw, Plan.parse(p), "bf16", "bf16", 4096).max_concurrency
              for p in ("tp1", "tp2", "tp4", "tp8")]
    assert all(a < b for a, b in zip(counts, counts[1:], strict=False)), counts
    one = capacity(spec, hw, Plan(tp=2), "bf16", "bf16", 4096).max_concurrency
    assert capacity(spec, hw, Plan(tp=2, replicas=4), "bf16", "bf16", 4096).max_concurrency == 4 * one


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_a_step_touching_every_expert_streams_the_weights_held(dtype):
    """At a batch that touches all experts, the GEMM operators stream every weight once: their bytes are the
    GPU's weights less the embedding table (not read by a matmul)."""
    spec = load_model("mixtral-8x7b")
    hw = hardware()
    ph = decode_step(spec, hw, Workload(batch=4096, dtype=dtype, kv_dtype="bf16"), context=1)
    gemms = ("qkv_proj", "o_proj", "ffn", "router", "experts", "shared_experts", "lm_head")
    streamed = sum(o.bytes for o in ph.operators if o.name in gemms)
    assert ph.distinct_experts_per_layer == pytest.approx(spec.moe.n_experts, rel=1e-9)
    wb = model_weight_bytes(spec, dtype)
    norms = count_params(spec).norms * 2  # 16-bit norm weights, read by the elementwise operator
    assert streamed == pytest.approx(wb.always_read + wb.routed_experts - norms, rel=1e-9)
