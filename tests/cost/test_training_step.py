"""The training-step model (cost.training_step) against hand counts on a round-number eager machine.

References written from the brief of issue 14, not from the module: collective times from hw.link (alpha-beta:
all-to-all = latency + (G-1)/G * bytes / bandwidth; ring all-reduce = 2(G-1) latencies + 2(G-1)/G * bytes /
bandwidth), tiny-moe's parameters counted by hand, and the one-process forward taken through another entry point
(cost.roofline.prefill, which prices logits for the last position only).
"""

import json
import subprocess
import sys

import pytest

from moelab.cost import training_step as ts
from moelab.cost.collectives import alltoall_seconds, nccl_allreduce_seconds
from moelab.cost.flops import training_flops
from moelab.cost.params import count_params
from moelab.cost.plan import Plan
from moelab.cost.roofline import Workload, prefill
from moelab.errors import MoelabError
from moelab.spec.hardware import HardwareSpec, load_hardware
from moelab.train.presets import tiny_dense, tiny_moe

BATCH, SEQ = 16, 128
LAT, LINK_BW = 1e-4, 1e9  # the link: 100 us, 1 GB/s per direction
EW_BW = 1e10


def eager_hw(**over) -> HardwareSpec:
    """A round-number eager CPU: no cache, no per-op overheads, every rate its own figure."""
    fields = dict(name="round-cpu", peak_flops={"fp32": 1e11, "bf16": 5e10}, memory_bytes=1e11,
                  memory_bandwidth=1e10, intra_node_bandwidth=LINK_BW, intra_node_latency_s=LAT,
                  inter_node_bandwidth=LINK_BW, inter_node_latency_s=LAT, tdp_watts=10.0, usd_per_hour=0.01,
                  gpus_per_node=8, compute_efficiency=1.0, bandwidth_efficiency=1.0, link_efficiency=1.0,
                  layer_overhead_s=0.0, moe_layer_overhead_s=0.0, elementwise_bandwidth=EW_BW,
                  attention_flops=5e10, attention_bandwidth=1e10, execution="eager")
    fields.update(over)
    return HardwareSpec(**fields)


def a2a(group: int, nbytes: float) -> float:
    return LAT + (group - 1) / group * nbytes / LINK_BW


def ring(group: int, nbytes: float) -> float:
    return 2 * (group - 1) * LAT + 2 * (group - 1) / group * nbytes / LINK_BW


# tiny-moe by hand (train/presets.py: V 2048, d 128, 4 layers, 4 heads of 32, untied; 8 experts of 256, top-2)
V, D, L, E, K, FE = 2048, 128, 4, 8, 2, 256
NON_EXPERT = 2 * V * D + L * 4 * D * D + L * E * D + (2 * L + 1) * D
ROUTED = L * E * 3 * D * FE


def by_name(step: ts.TrainingStep) -> dict[str, ts.Collective]:
    out = {c.name: c for c in step.collectives}
    assert len(out) == len(step.collectives)
    return out


def test_hand_count_matches_cost_params():
    p = count_params(tiny_moe())
    assert (p.total - p.routed_experts, p.routed_experts) == (NON_EXPERT, ROUTED)


def test_one_process_has_no_collectives_and_the_sum_holds():
    for spec in (tiny_dense(), tiny_moe()):
        step = ts.training_step(spec, eager_hw(), batch=BATCH, seq=SEQ, grad_accum=2)
        assert step.plan == "tp1" and step.ranks == 1 and step.tokens == 2 * BATCH * SEQ
        assert step.alltoall_seconds == step.allreduce_seconds == 0.0 and step.collectives == ()
        assert step.seconds == step.compute_seconds > 0
        assert step.compute_seconds == pytest.approx(step.forward_seconds + step.backward_seconds
                                                     + step.optimizer_seconds)
        assert step.tokens_per_second == pytest.approx(step.tokens / step.seconds)
        assert step.params_held == count_params(spec).total


def test_one_process_compute_from_the_roofline_prefill():
    """forward = the eager prefill (logits at the last position) + the lm_head at the other positions + the loss's
    forward traffic; backward = 2 x the model forward + the loss's backward traffic; AdamW + clipping: 24 fp32
    elements per parameter, all at the elementwise bandwidth."""
    hw, spec = eager_hw(), tiny_dense()
    model = prefill(spec, hw, Workload(batch=BATCH, prompt=SEQ, gen=1, dtype="fp32", kv_dtype="fp32")).seconds
    model += 2 * D * V * (SEQ - 1) * BATCH / 1e11
    logits = BATCH * SEQ * V * 4
    step = ts.training_step(spec, hw, batch=BATCH, seq=SEQ)
    assert step.forward_seconds == pytest.approx(model + 2 * logits / EW_BW, rel=1e-9)
    assert step.backward_seconds == pytest.approx(2 * model + 4 * logits / EW_BW, rel=1e-9)
    assert step.optimizer_seconds == pytest.approx(count_params(spec).total * 24 * 4 / EW_BW, rel=1e-12)


@pytest.mark.parametrize("dtype,act", [("fp32", 4), ("bf16", 2)])
@pytest.mark.parametrize("accum", [1, 3])
def test_ep2_all_to_alls_per_moe_layer_and_micro_step(dtype, act, accum):
    step = ts.training_step(tiny_moe(), eager_hw(), batch=BATCH, seq=SEQ, ep=2, grad_accum=accum, dtype=dtype)
    rank_tokens = BATCH // 2 * SEQ
    dispatched, combined = rank_tokens * K * D * 4, rank_tokens * K * D * act  # autocast: float32 residual in
    assert step.alltoall_seconds == pytest.approx(
        accum * L * (2 * a2a(2, dispatched) + 2 * a2a(2, combined) + a2a(2, E * 8)), rel=1e-12)
    calls = by_name(step)
    assert (calls["payload_alltoall"].calls, calls["combine_alltoall"].calls, calls["counts_alltoall"].calls) == (
        2 * L * accum, 2 * L * accum, L * accum)
    assert (calls["payload_alltoall"].nbytes, calls["combine_alltoall"].nbytes) == (dispatched, combined)
    assert step.alltoall_share == pytest.approx(step.alltoall_seconds / step.seconds)


def test_ep2x2_all_reduces():
    """Router counts per MoE layer and micro-step over all 4 ranks, the replicated (non-expert) gradients over
    all ranks, the local experts' gradients over the dp pair, the gradient norm and 3 logged losses."""
    step = ts.training_step(tiny_moe(), eager_hw(), batch=BATCH, seq=SEQ, ep=2, dp=2, grad_accum=2)
    assert (step.plan, step.ranks) == ("ep2x2", 4)
    calls = by_name(step)
    assert calls["grad_allreduce"].nbytes == 4 * NON_EXPERT and calls["grad_allreduce"].group == 4
    assert calls["expert_grad_allreduce"].nbytes == 4 * ROUTED / 2 and calls["expert_grad_allreduce"].group == 2
    expected = (2 * L * ring(4, E * 4) + ring(4, 4 * NON_EXPERT) + ring(2, 4 * ROUTED / 2) + ring(4, 4)
                + ring(4, 3 * 4))
    assert step.allreduce_seconds == pytest.approx(expected, rel=1e-12)
    # each rank sends its own 4 sequences' token-slots, over the ep pair
    assert calls["payload_alltoall"].nbytes == BATCH // 4 * SEQ * K * D * 4 and calls["payload_alltoall"].group == 2
    assert step.params_held == NON_EXPERT + ROUTED // 2


def test_dense_x2_all_reduces_every_gradient_and_has_no_all_to_all():
    spec = tiny_dense()
    step = ts.training_step(spec, eager_hw(), batch=BATCH, seq=SEQ, dp=2)
    assert step.plan == "x2" and step.alltoall_seconds == 0.0
    assert {c.kind for c in step.collectives} == {"allreduce"}
    total = count_params(spec).total
    assert by_name(step)["grad_allreduce"].nbytes == 4 * total
    assert step.allreduce_seconds == pytest.approx(ring(2, 4 * total) + ring(2, 4) + ring(2, 4), rel=1e-12)


def test_moe_x2_replicates_the_experts():
    step = ts.training_step(tiny_moe(), eager_hw(), batch=BATCH, seq=SEQ, dp=2)
    calls = by_name(step)
    assert "payload_alltoall" not in calls and "expert_grad_allreduce" not in calls
    assert calls["grad_allreduce"].nbytes == 4 * (NON_EXPERT + ROUTED)
    assert calls["router_counts_allreduce"].calls == L


def test_ep2_halves_the_expert_weights_a_rank_streams_and_updates():
    """ep2 against x2 at the same batch: the same tokens and token-slots per rank; the difference is the half of
    the experts ep2 does not hold: their bytes streamed through the forward and the backward (3 x at the
    memory bandwidth: the rows per expert are many, so the GEMM path) and their AdamW + clipping traffic."""
    hw = eager_hw()
    x2 = ts.training_step(tiny_moe(), hw, batch=BATCH, seq=SEQ, dp=2)
    ep2 = ts.training_step(tiny_moe(), hw, batch=BATCH, seq=SEQ, ep=2)
    half = ROUTED / 2
    assert x2.optimizer_seconds - ep2.optimizer_seconds == pytest.approx(half * 24 * 4 / EW_BW, rel=1e-9)
    assert x2.forward_seconds - ep2.forward_seconds == pytest.approx(half * 4 / 1e10, rel=1e-6)
    assert x2.backward_seconds - ep2.backward_seconds == pytest.approx(2 * half * 4 / 1e10, rel=1e-6)
    # and against one process: half the tokens, so every FLOP halves (the expert matmuls' too)
    one = ts.training_step(tiny_moe(), eager_hw(memory_bandwidth=1e30, elementwise_bandwidth=1e30,
                                                attention_bandwidth=1e30), batch=BATCH, seq=SEQ)
    ep2_flops = ts.training_step(tiny_moe(), eager_hw(memory_bandwidth=1e30, elementwise_bandwidth=1e30,
                                                      attention_bandwidth=1e30), batch=BATCH, seq=SEQ, ep=2)
    assert ep2_flops.forward_seconds == pytest.approx(one.forward_seconds / 2, rel=1e-9)


def test_gpu_hardware_prices_flops_at_the_mfu_and_nccl_collectives():
    hw, spec = load_hardware("H100-SXM"), tiny_moe()
    p = count_params(spec)
    step = ts.training_step(spec, hw, batch=BATCH, seq=SEQ, ep=2, dtype="bf16", mfu=0.5)
    flops = training_flops(spec, p, BATCH // 2 * SEQ, SEQ)
    assert step.execution == "gpu"
    assert step.forward_seconds + step.backward_seconds == pytest.approx(flops / (hw.peak("bf16")[1] * 0.5))
    assert step.backward_seconds == pytest.approx(2 * step.forward_seconds)
    rows = BATCH // 2 * SEQ * K * D  # dispatched in float32 (the residual), combined in bf16
    assert step.alltoall_seconds == pytest.approx(L * (2 * alltoall_seconds(hw, 2, rows * 4) + 2 * alltoall_seconds(
        hw, 2, rows * 2) + alltoall_seconds(hw, 2, E * 8)))
    assert by_name(step)["grad_allreduce"].seconds == pytest.approx(nccl_allreduce_seconds(hw, 2, 4 * NON_EXPERT))
    slower = ts.training_step(spec, hw, batch=BATCH, seq=SEQ, ep=2, dtype="bf16", mfu=0.25)
    assert slower.forward_seconds == pytest.approx(2 * step.forward_seconds)


@pytest.mark.parametrize("ep,dp", [(1, 1), (2, 1), (1, 2), (2, 2), (8, 4)])
def test_plan_names_read_back_as_the_plan(ep, dp):
    name = ts.plan_name(ep, dp)
    assert Plan.parse(name) == Plan(ep=ep, replicas=dp)
    assert name == {(1, 1): "tp1", (2, 1): "ep2", (1, 2): "x2", (2, 2): "ep2x2", (8, 4): "ep8x4"}[(ep, dp)]


@pytest.mark.parametrize("spec,kwargs,words", [
    (tiny_dense, dict(ep=2), "dense"),
    (tiny_moe, dict(ep=3), "does not divide the 8 routed experts"),
    (tiny_moe, dict(ep=2, dp=3, batch=16), "does not divide over 6 processes"),
    (tiny_moe, dict(batch=0), "batch must be a positive integer"),
    (tiny_moe, dict(seq=-1), "seq must be"),
    (tiny_moe, dict(grad_accum=0), "grad_accum must be"),
    (tiny_moe, dict(dp=True), "dp must be"),
    (tiny_moe, dict(ep=2.0), "ep must be"),
    (tiny_moe, dict(dtype="fp16"), "dtype must be one of fp32, bf16"),
    (tiny_moe, dict(mfu=0.0), "mfu must be in (0, 1]"),
])
def test_bad_input_is_one_line(spec, kwargs, words):
    args = dict(batch=BATCH, seq=SEQ) | kwargs
    with pytest.raises(MoelabError) as err:
        ts.training_step(spec(), eager_hw(), **args)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_to_dict_is_json_with_the_contract_keys():
    step = ts.training_step(tiny_moe(), eager_hw(), batch=BATCH, seq=SEQ, ep=2, dp=2)
    out = json.loads(json.dumps(step.to_dict()))
    for key in ("plan", "ranks", "tokens", "compute_seconds", "alltoall_seconds", "allreduce_seconds", "seconds",
                "tokens_per_second", "alltoall_share"):
        assert out[key] == getattr(step, key)
    assert sum(c["seconds"] for c in out["collectives"]) == pytest.approx(step.seconds - step.compute_seconds)


def test_the_module_does_not_import_torch():
    code = "import sys, moelab.cost.training_step; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
