"""A decode step reads the KV positions it attends to (kv_read_bytes), not all it keeps cached (kv_cache_bytes).

Llama 4's chunked layers attend to the part of their chunk before the query (half a chunk on average past the
first chunk, as AttentionSpec.attended and the attention FLOPs count it) but cache the whole chunk. The hand
numbers below come from the real Scout config and transformers' Llama4TextConfig defaults
(configuration_llama4.py: no_rope_layers[i] = (i + 1) % 4 != 0; a rope layer is "chunked_attention" when
attention_chunk_size is set, a NoPE layer "full_attention").
"""

import json
from pathlib import Path

import pytest

from moelab.cost.memory import kv_cache_bytes, kv_read_bytes
from moelab.cost.roofline import Workload, decode_step
from moelab.spec import HardwareSpec
from moelab.spec.hf import spec_from_file

CONFIGS = Path(__file__).resolve().parents[1] / "spec" / "configs"
SCOUT = CONFIGS / "llama4_scout_17b_16e_instruct.json"


def scout_hand(context: int, batch: int = 1) -> tuple[float, float]:
    """(bf16 KV bytes read, bf16 KV bytes cached) of Scout at `context`, from its config alone."""
    text = json.loads(SCOUT.read_text())["text_config"]
    layers, chunk = text["num_hidden_layers"], text["attention_chunk_size"]
    width = 2 * text["num_key_value_heads"] * text["head_dim"]  # K and V elements per token
    full = sum(1 for i in range(layers) if (i + 1) % 4 == 0)  # NoPE layers attend to everything
    chunked = layers - full
    attended = context if context <= chunk else chunk / 2
    read = batch * 2 * width * (full * context + chunked * attended)
    cached = batch * 2 * width * (full * context + chunked * min(context, chunk))
    return read, cached


def test_scout_kv_read_is_attended_positions():
    spec = spec_from_file(SCOUT)
    read, cached = scout_hand(32768)
    assert read == 2 * 2048 * (12 * 32768 + 36 * 4096)  # 48 layers, 12 full, 8 KV heads of 128, chunk 8192
    assert kv_read_bytes(spec, "bf16", 1, 32768) == pytest.approx(read, rel=1e-12)
    assert kv_cache_bytes(spec, "bf16", 1, 32768) == pytest.approx(cached, rel=1e-12)  # memory still caches all
    assert cached / read == pytest.approx(688128 / 540672)  # the review's ~27%
    for context, batch in ((100, 3), (8192, 2), (8193, 1), (65536, 4)):
        assert kv_read_bytes(spec, "bf16", batch, context) == pytest.approx(scout_hand(context, batch)[0])


def gpu() -> HardwareSpec:
    return HardwareSpec(name="round", peak_flops={"bf16": 100e12}, memory_bytes=1e15, memory_bandwidth=1e12,
                        intra_node_bandwidth=100e9, intra_node_latency_s=1e-5, inter_node_bandwidth=10e9,
                        inter_node_latency_s=5e-5, tdp_watts=500.0, usd_per_hour=2.0, gpus_per_node=8,
                        compute_efficiency=1.0, bandwidth_efficiency=1.0, link_efficiency=1.0,
                        memory_utilization=1.0, runtime_overhead_bytes=0.0, layer_overhead_s=0.0,
                        moe_layer_overhead_s=0.0, execution="gpu", kernel_launch_s=0.0)


def attention_bytes(spec, hw, wl, context: float) -> float:
    return next(o.bytes for o in decode_step(spec, hw, wl, context=context).operators
                if o.name == "attention_decode")


def test_scout_decode_step_reads_attended_kv():
    """A decode step's query at `context` cached positions attends to context + 1 (itself too): between contexts
    4096 and 32768 a full layer reads 28672 more positions, a chunked layer one fewer (4097 positions inside its
    first chunk, half a chunk, 4096, past it). Only the attention read changes (same batch, same experts)."""
    spec, hw, wl = spec_from_file(SCOUT), gpu(), Workload(batch=1, prompt=512, gen=2)
    step = {c: decode_step(spec, hw, wl, context=c).bytes for c in (4096, 32768)}
    expected = 2 * 2048 * (12 * (32769 - 4097) + 36 * (4096 - 4097))
    assert step[32768] - step[4096] == pytest.approx(expected, rel=1e-9)
    for c in (100, 4096, 32768):
        assert attention_bytes(spec, hw, wl, c) == pytest.approx(scout_hand(c + 1)[0], rel=1e-12)


@pytest.mark.parametrize("name", ["gemma3_27b", "mixtral_8x7b_v0_1"])
def test_window_and_full_attention_unchanged(name):
    """A sliding window attends to every position it caches, full attention to all: read == cached."""
    spec = spec_from_file(CONFIGS / f"{name}.json")
    for context, batch in ((1, 1), (700, 2), (1024, 1), (5000, 3), (32768, 1)):
        assert kv_read_bytes(spec, "bf16", batch, context) == kv_cache_bytes(spec, "bf16", batch, context)
    hw, wl = gpu(), Workload(batch=2, prompt=3000, gen=100)  # mean decode context 3050
    step = decode_step(spec, hw, wl)
    assert step.bytes - decode_step(spec, hw, wl, context=1).bytes == pytest.approx(
        kv_cache_bytes(spec, "bf16", 2, 3051) - kv_cache_bytes(spec, "bf16", 2, 2), rel=1e-9)
    assert attention_bytes(spec, hw, wl, 3050) == pytest.approx(kv_cache_bytes(spec, "bf16", 2, 3051), rel=1e-12)
