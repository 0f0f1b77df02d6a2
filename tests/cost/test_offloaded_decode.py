"""cost.offload: the offloaded decode step against hand computations, the resident step bench predicts, and
max_resident against a hand count of what fits; host link fields on the hardware presets."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from moelab.cost.capacity import PREFILL_TOKENS
from moelab.cost.memory import kv_cache_bytes, prefill_activation_bytes
from moelab.cost.offload import layer_hit_rate, max_resident, offloaded_decode
from moelab.cost.params import count_params
from moelab.cost.roofline import Workload, decode_step
from moelab.errors import MoelabError
from moelab.spec import AttentionSpec, MoESpec, build_spec, load_hardware, load_model
from moelab.spec.hardware import hardware_presets

MIXTRAL_EXPERT = 3 * 4096 * 14336  # mistralai/Mixtral-8x7B-v0.1: hidden 4096, intermediate 14336, SwiGLU


def _bench_step(spec, hw, batch, prompt, gen, dtype):
    """The decode prediction `moelab bench` makes (bench.run._rows: _workload, then decode_step at the sweep's
    mean context)."""
    wl = Workload(batch=batch, prompt=prompt, gen=gen, dtype=dtype, kv_dtype=dtype, gpus=1, plan="tp")
    return decode_step(spec, hw, wl, prompt + (gen - 1) / 2).seconds


def test_all_hits_is_the_resident_step_bench_predicts():
    spec, hw = load_model("mixtral-8x7b"), load_hardware("L40S")
    context = 128 + (32 - 1) / 2
    for resident in (2, 5, 8):
        o = offloaded_decode(spec, hw, 4, context, "bf16", resident, hit_rate=1.0)
        assert o.misses_per_step == 0 and o.step_seconds == o.resident_step_seconds
        assert o.step_seconds == _bench_step(spec, hw, 4, 128, 32, "bf16")
    assert offloaded_decode(spec, hw, 4, context, "bf16", 8).step_seconds == _bench_step(spec, hw, 4, 128, 32, "bf16")


def test_misses_scale_with_touched_experts():
    """B=1: top-2 of 8 in each of Mixtral's 32 MoE layers, 64 touched; resident 4 of 8 -> half of them miss.
    B=8: U = 8 (1 - (6/8)^8) per layer."""
    spec, hw = load_model("mixtral-8x7b"), load_hardware("L40S")
    one = offloaded_decode(spec, hw, 1, 600, "bf16", 4)
    assert one.touched_experts == pytest.approx(64) and one.hit_rate == pytest.approx(0.5)
    assert one.misses_per_step == pytest.approx(32)
    eight = offloaded_decode(spec, hw, 8, 600, "bf16", 4)
    assert eight.touched_experts == pytest.approx(32 * 8 * (1 - 0.75 ** 8))
    assert eight.misses_per_step == pytest.approx(eight.touched_experts / 2)
    assert eight.step_seconds - eight.resident_step_seconds == pytest.approx(eight.misses_per_step
                                                                             * eight.miss_seconds)
    assert offloaded_decode(spec, hw, 1, 600, "bf16", 6, hit_rate=0.25).misses_per_step == pytest.approx(48)


def test_miss_time_from_the_pcie_figure():
    """L40S: PCIe 4.0 x16 = 16 GT/s x 16 lanes x 128/130 / 8 = 31.5 GB/s per direction, 80% of it reached, 10 us
    per transfer: a bf16 Mixtral expert (352 MB) takes 14.0 ms, an int4 one 3.6 ms."""
    hw = load_hardware("L40S")
    assert hw.host_link_bandwidth == pytest.approx(16e9 * 16 * 128 / 130 / 8, rel=1e-3)
    spec = load_model("mixtral-8x7b")
    bf16 = offloaded_decode(spec, hw, 1, 600, "bf16", 4)
    assert bf16.miss_seconds == pytest.approx(10e-6 + MIXTRAL_EXPERT * 2 / (31.5e9 * 0.8), rel=1e-12)
    int4 = offloaded_decode(spec, hw, 1, 600, "bf16", 4, components={"routed_experts": "int4"})
    assert int4.miss_seconds == pytest.approx(10e-6 + MIXTRAL_EXPERT * (0.5 + 2 / 128) / (31.5e9 * 0.8), rel=1e-12)
    assert 10e-3 < bf16.miss_seconds < 50e-3  # inside the seeds' "+10-50 ms per swap"
    h100 = load_hardware("H100-SXM")
    assert h100.host_link_bandwidth == pytest.approx(32e9 * 16 * 128 / 130 / 8, rel=1e-3)


def test_tp_and_ep_split_the_transfers():
    spec, hw = load_model("mixtral-8x7b"), load_hardware("H100-SXM")
    one = offloaded_decode(spec, hw, 1, 600, "bf16", 4)
    tp2 = offloaded_decode(spec, hw, 1, 600, "bf16", 4, plan="tp2")
    ep2 = offloaded_decode(spec, hw, 1, 600, "bf16", 4, plan="ep2")
    assert tp2.miss_bytes == one.miss_bytes / 2 and tp2.misses_per_gpu == one.misses_per_gpu
    assert ep2.miss_bytes == one.miss_bytes and ep2.misses_per_gpu == one.misses_per_gpu / 2


def test_overlap_is_a_lower_bound():
    spec, hw = load_model("mixtral-8x7b"), load_hardware("L40S")
    serial = offloaded_decode(spec, hw, 8, 600, "bf16", 2)
    both = offloaded_decode(spec, hw, 8, 600, "bf16", 2, overlap=True)
    assert both.step_seconds == max(serial.resident_step_seconds, serial.transfer_seconds) < serial.step_seconds


def test_skewed_hit_rate_is_a_frequency_cache():
    """Skew 0: resident / E. Under skew the `resident` most loaded experts are the resident ones: more hits than
    resident / E, and the hand sum over the others' touch probabilities."""
    assert layer_hit_rate(8, 2, 4, 4) == 0.5
    from moelab.cost.routing import distinct_experts, expert_loads
    loads = expert_loads(8, 2, 1.0)
    misses = sum(1 - (1 - 2 * q) ** 4 for q in loads[4:])
    assert layer_hit_rate(8, 2, 4, 4, 1.0) == pytest.approx(1 - misses / distinct_experts(8, 2, 4, 1.0))
    assert layer_hit_rate(8, 2, 4, 4, 1.0) > 0.5


def test_max_resident_hand_count():
    """One L40S: 48 GB x 0.9, less 1 GB runtime, the prefill workspace of 8192 tokens, the non-expert weights and
    the KV cache of one sequence of 768 tokens; each resident expert per layer costs 32 experts' bytes."""
    spec, hw = load_model("mixtral-8x7b"), load_hardware("L40S")
    p = count_params(spec)
    for expert_b, expected_cap in ((2.0, None), (0.5 + 2 / 128, 8)):
        rest = (p.total - p.routed_experts) * 2.0
        free = (48e9 * 0.9 - 1e9 - prefill_activation_bytes(spec, "bf16", 1, PREFILL_TOKENS) - rest
                - kv_cache_bytes(spec, "bf16", 1, 768))
        hand = min(8, math.floor(free / (32 * MIXTRAL_EXPERT * expert_b)))
        comps = {"routed_experts": "int4"} if expert_b < 2 else None
        assert max_resident(spec, hw, 1, 768, "bf16", components=comps) == hand
        if expected_cap:
            assert hand == expected_cap  # int4: all 8 fit
    assert max_resident(spec, hw, 1, 768, "bf16") == 3  # bf16: 3 of 8 experts per layer
    assert max_resident(spec, load_hardware("RTX-4090"), 1, 768, "bf16") == 1


def _tiny_moe():
    return build_spec(name="tiny-moe", family="mixtral", vocab_size=100, d_model=64, n_layers=2, ffn_dim=128,
                      attention=AttentionSpec(n_heads=4, n_kv_heads=4, head_dim=16),
                      moe=MoESpec(n_experts=4, top_k=2, expert_ffn=32), moe_layers=(1,))


def test_eager_cpu_hardware_with_a_disk_link():
    """Helper O's use: a CPU calibration (execution eager) whose host link is a measured cold disk read."""
    cpu = replace(load_hardware("H100-SXM"), name="cpu", execution="eager", elementwise_bandwidth=1e10,
                  host_link_bandwidth=2e9, host_link_latency_s=1e-4, host_link_efficiency=1.0, host_memory_bytes=0.0)
    spec = _tiny_moe()
    o = offloaded_decode(spec, cpu, 1, 40.0, "fp32", 2)
    assert o.resident_step_seconds == _bench_step(spec, cpu, 1, 25, 31, "fp32")
    assert o.touched_experts == pytest.approx(2) and o.misses_per_step == pytest.approx(1)
    assert o.miss_seconds == pytest.approx(1e-4 + 3 * 64 * 32 * 4 / 2e9)
    assert o.step_seconds == pytest.approx(o.resident_step_seconds + o.miss_seconds)
    assert o.fits_host is None and o.to_dict()["basis"] == "modelled"


def test_refusals():
    spec, hw = load_model("mixtral-8x7b"), load_hardware("L40S")
    with pytest.raises(MoelabError, match="dense"):
        offloaded_decode(load_model("llama-3-8b"), hw, 1, 100, "bf16", 1)
    with pytest.raises(MoelabError, match="resident experts"):
        offloaded_decode(spec, hw, 1, 100, "bf16", 9)
    with pytest.raises(MoelabError, match="hit rate"):
        offloaded_decode(spec, hw, 1, 100, "bf16", 4, hit_rate=1.5)
    with pytest.raises(MoelabError, match="no host link"):
        offloaded_decode(spec, replace(hw, host_link_bandwidth=0.0), 1, 100, "bf16", 4)
    with pytest.raises(MoelabError, match="divide"):
        offloaded_decode(spec, hw, 1, 100, "bf16", 3, plan="ep2")
    with pytest.raises(MoelabError, match="host_link_bandwidth"):
        replace(hw, host_link_bandwidth=-1.0)


def test_every_gpu_preset_has_a_sourced_host_link():
    gen5 = {"H100-SXM", "H100-PCIe", "H200", "B200", "MI300X"}
    for name, hw in hardware_presets().items():
        expected = 63.0e9 if name in gen5 else 31.5e9
        assert hw.host_link_bandwidth == expected, name
        assert hw.host_memory_bytes > 0 and 0 < hw.host_link_efficiency <= 1
        assert "PCIe" in hw.sources["host_link"] and "host_memory" in hw.sources
        assert hw.to_dict()["host_link_gbps"] == expected / 1e9


def test_frontier_rows():
    from moelab.cost.mitigations import frontier_mitigations

    rows = frontier_mitigations()
    assert all(r.basis == "modelled" for r in rows)
    mixtral = {(r.variant, r.batch, r.gpus): r for r in rows if r.scenario == "quantize"}
    assert not mixtral[("bf16", 1, 1)].fits and mixtral[("int4 experts, bf16 rest", 1, 1)].fits
    off = [r for r in rows if r.scenario == "offload" and r.resident_experts is not None]
    assert off and all(0 < r.resident_experts < 256 and r.fits and r.gpus == 8 for r in off)
    assert all(r.miss_ms < r.seeds_swap_ms[0] for r in off)  # an fp8 DeepSeek expert over Gen5: under 1 ms
    prune = [r for r in rows if r.scenario == "prune"]
    assert all(r.fits for r in prune)
