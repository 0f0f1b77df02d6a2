"""Weight, KV-cache, activation and training-state bytes against hand computations from the configs."""

import pytest

from moelab.cost.memory import (
    inference_memory,
    kv_bytes_per_token,
    kv_cache_bytes,
    min_gpus_for,
    prefill_activation_bytes,
    training_memory,
    weight_bytes,
)
from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.spec import AttentionSpec, HardwareSpec, ModelSpec, MoESpec, build_spec, load_model

# Llama-3-8B by hand: V=128256, d=4096, 32 layers, 32 heads / 8 KV heads of 128, SwiGLU f=14336, untied.
L3_EMB = 128256 * 4096  # embedding, and again lm_head
L3_ATTN = 32 * (4096 * 4096 + 2 * 4096 * 8 * 128 + 4096 * 4096)  # q, k, v, o
L3_FFN = 32 * 3 * 4096 * 14336
L3_NORMS = (2 * 32 + 1) * 4096
L3_TOTAL = 2 * L3_EMB + L3_ATTN + L3_FFN + L3_NORMS

# Mixtral-8x7B by hand: V=32000, same attention, 8 experts of f=14336 per layer, router 8*d per layer.
MX_EMB = 32000 * 4096
MX_EXPERT = 3 * 4096 * 14336
MX_ROUTED = 32 * 8 * MX_EXPERT
MX_ROUTERS = 32 * 8 * 4096
MX_TOTAL = 2 * MX_EMB + L3_ATTN + MX_ROUTED + MX_ROUTERS + L3_NORMS

INT4 = 0.5 + 2 / 128  # 4 bits plus one fp16 scale per group of 128


def hardware(**overrides) -> HardwareSpec:
    fields = dict(name="test-gpu", peak_flops={"bf16": 100e12}, memory_bytes=80e9, memory_bandwidth=1e12,
                  intra_node_bandwidth=100e9, intra_node_latency_s=1e-5, inter_node_bandwidth=10e9,
                  inter_node_latency_s=2e-5, tdp_watts=500.0, usd_per_hour=2.0, memory_utilization=0.9,
                  runtime_overhead_bytes=2e9)
    fields.update(overrides)
    return HardwareSpec(**fields)


def test_hand_counts_match_the_published_exact_totals():
    # sanity of the references themselves: Llama-3-8B and Mixtral-8x7B as `sum(p.numel())` reports them
    assert L3_TOTAL == 8_030_261_248
    assert MX_TOTAL == 46_702_792_704


def test_llama_bf16_weights_are_two_bytes_per_param():
    wb = weight_bytes(count_params(load_model("llama-3-8b")), "bf16")
    assert wb.total == 2 * L3_TOTAL
    assert wb.routed_experts == 0 and wb.expert == 0
    assert wb.always_read == 2 * (L3_TOTAL - L3_EMB)  # everything but the gathered embedding table


@pytest.mark.parametrize("dtype,linear", [("fp32", 4.0), ("fp8", 1.0), ("int8", 1.0), ("int4", INT4)])
def test_llama_quantized_weights(dtype, linear):
    kept = 4.0 if dtype == "fp32" else 2.0  # embeddings, lm_head and norms stay unquantized
    wb = weight_bytes(count_params(load_model("llama-3-8b")), dtype)
    assert wb.total == pytest.approx((L3_ATTN + L3_FFN) * linear + (2 * L3_EMB + L3_NORMS) * kept, rel=1e-12)


def test_llama_int4_by_hand():
    # 6,979,321,856 linear params * 33/64 bytes + 1,050,939,392 unquantized params * 2 bytes
    wb = weight_bytes(count_params(load_model("llama-3-8b")), "int4")
    assert wb.total == pytest.approx(3_598_712_832 + 2_101_878_784, rel=1e-12)


def test_mixtral_int4_keeps_routers_16_bit():
    wb = weight_bytes(count_params(load_model("mixtral-8x7b")), "int4")
    total = (L3_ATTN + MX_ROUTED) * INT4 + (2 * MX_EMB + MX_ROUTERS + L3_NORMS) * 2
    assert wb.total == pytest.approx(total, rel=1e-12)
    assert wb.routed_experts == pytest.approx(MX_ROUTED * INT4, rel=1e-12)
    assert wb.expert == pytest.approx(MX_EXPERT * INT4, rel=1e-12)
    assert wb.always_read == pytest.approx(total - MX_ROUTED * INT4 - MX_EMB * 2, rel=1e-12)


def test_kv_per_token_gqa_and_mla():
    assert kv_bytes_per_token(load_model("llama-3-8b"), "bf16") == 32 * 2 * 8 * 128 * 2 == 131072
    assert kv_bytes_per_token(load_model("llama-3-8b"), "fp8") == 65536
    assert kv_bytes_per_token(load_model("llama-3-8b"), "int4") == 32768
    # MLA caches the compressed latent plus the shared rope key: 61 * (512 + 64) values per token
    assert kv_bytes_per_token(load_model("deepseek-v3"), "bf16") == 61 * (512 + 64) * 2 == 70272


def test_kv_cache_scales_with_batch_and_context():
    spec = load_model("llama-3-8b")
    assert kv_cache_bytes(spec, "bf16", 4, 1000) == 4 * 1000 * 131072
    assert kv_cache_bytes(spec, "bf16", 1, 10000) == 10000 * 131072  # no window: grows without bound


def test_sliding_window_caps_kv_cache():
    spec = load_model("mistral-7b")
    assert spec.attention.sliding_window == 4096
    assert kv_cache_bytes(spec, "bf16", 1, 10000) == kv_cache_bytes(spec, "bf16", 1, 4096) == 4096 * 131072
    assert kv_cache_bytes(spec, "bf16", 3, 2000) == 3 * 2000 * 131072  # below the window: all positions


def test_min_gpus_for():
    hw = hardware()  # usable per GPU: 80e9 * 0.9 - 2e9 = 70e9
    assert min_gpus_for(0, hw) == 1
    assert min_gpus_for(70e9, hw) == 1
    assert min_gpus_for(70e9 + 1e3, hw) == 2
    assert min_gpus_for(140e9, hw) == 2
    assert min_gpus_for(140.5e9, hw) == 3
    assert min_gpus_for(1e12, hw) == 15  # 1000 / 70 = 14.3
    with pytest.raises(MoelabError):
        min_gpus_for(1.0, hardware(runtime_overhead_bytes=72e9))


def test_inference_memory_by_hand():
    spec, hw = load_model("llama-3-8b"), hardware()
    mem = inference_memory(spec, hw, "bf16", "bf16", batch=4, prompt=1000, gen=24)
    weights = 2 * L3_TOTAL
    kv = 4 * 1024 * 131072
    # peak prefill activations: residual + normed input (2d) + the wider of q/k/v (48*128) and gate/up (2f),
    # in bf16, plus fp32 logits of each sequence's last position
    act = 4 * 1000 * (2 * 4096 + max(48 * 128, 2 * 14336)) * 2 + 4 * 128256 * 4
    assert mem.weights_bytes == weights
    assert mem.kv_cache_bytes == kv
    assert mem.activation_bytes == act
    sharded = weights + kv + act  # 16.06e9 + 0.537e9 + 0.297e9 < 70e9: one GPU
    assert mem.min_gpus == 1
    assert mem.total_bytes == pytest.approx(sharded + 2e9, rel=1e-12)
    assert mem.per_gpu_bytes == pytest.approx(sharded + 2e9, rel=1e-12)
    # on a 20 GB card (usable 16e9) the same needs 2 GPUs, each holding half plus its own overhead
    small = hardware(memory_bytes=20e9)
    mem = inference_memory(spec, small, "bf16", "bf16", batch=4, prompt=1000, gen=24)
    assert mem.min_gpus == 2
    assert mem.overhead_bytes == 4e9
    assert mem.per_gpu_bytes == pytest.approx(sharded / 2 + 2e9, rel=1e-12)


def test_prefill_activations_use_moe_width():
    # Mixtral: a token's widest intermediate is its top-2 experts' gate and up outputs: 2 * (2 * 14336)
    spec = load_model("mixtral-8x7b")
    act = prefill_activation_bytes(spec, "bf16", 2, 100)
    assert act == 2 * 100 * (2 * 4096 + 2 * 2 * 14336) * 2 + 2 * 32000 * 4


# --- training -------------------------------------------------------------------------------------------

D, V, F, LAYERS = 64, 100, 128, 2


def tiny_dense() -> ModelSpec:
    return build_spec(name="tiny", family="llama", vocab_size=V, d_model=D, n_layers=LAYERS, ffn_dim=F,
                     attention=AttentionSpec(n_heads=4, n_kv_heads=4, head_dim=16))


def tiny_moe() -> ModelSpec:
    """Layer 0 dense (f=128), layer 1 a MoE of 4 experts of f=32, top-2."""
    return build_spec(name="tiny-moe", family="mixtral", vocab_size=V, d_model=D, n_layers=LAYERS, ffn_dim=F,
                     attention=AttentionSpec(n_heads=4, n_kv_heads=4, head_dim=16),
                     moe=MoESpec(n_experts=4, top_k=2, expert_ffn=32), moe_layers=(1,))


TINY_ATTN = LAYERS * (D * 64 + 2 * D * 64 + 64 * D)  # 4 heads of 16, 4 KV heads of 16
TINY_DENSE_TOTAL = 2 * V * D + TINY_ATTN + LAYERS * 3 * D * F + (2 * LAYERS + 1) * D
TINY_ROUTED = 4 * 3 * D * 32
TINY_MOE_OTHER = 2 * V * D + TINY_ATTN + 3 * D * F + 4 * D + (2 * LAYERS + 1) * D  # one dense FFN, one router


def test_tiny_references():
    assert TINY_DENSE_TOTAL == 95040
    assert count_params(tiny_dense()).total == TINY_DENSE_TOTAL
    assert count_params(tiny_moe()).total == TINY_MOE_OTHER + TINY_ROUTED == 95296


@pytest.mark.parametrize("zero,w,g,o", [
    (0, 2.0, 2.0, 12.0),
    (1, 2.0, 2.0, 12.0 / 4),
    (2, 2.0, 2.0 / 4, 12.0 / 4),
    (3, 2.0 / 4, 2.0 / 4, 12.0 / 4),
])
def test_zero_stages_dp4(zero, w, g, o):
    n = TINY_DENSE_TOTAL
    tm = training_memory(tiny_dense(), hardware(), micro_batch=2, seq=16, dp=4, zero=zero)
    assert tm.weights_bytes == pytest.approx(w * n, rel=1e-12)
    assert tm.gradients_bytes == pytest.approx(g * n, rel=1e-12)
    assert tm.optimizer_bytes == pytest.approx(o * n, rel=1e-12)
    assert tm.total_bytes == pytest.approx(tm.weights_bytes + tm.gradients_bytes + tm.optimizer_bytes
                                           + tm.activation_bytes, rel=1e-12)


def test_zero0_dp1_is_16_bytes_per_param():
    tm = training_memory(tiny_dense(), hardware(), micro_batch=1, seq=8)
    assert tm.weights_bytes + tm.gradients_bytes + tm.optimizer_bytes == 16 * TINY_DENSE_TOTAL


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_expert_parallel_shards_routed_experts(zero):
    """ep=2 in dp=4: each rank holds half the experts, ZeRO-sharded over the 2 ranks holding the same half;
    everything else is replicated and ZeRO-sharded over all 4 ranks."""
    experts, other = TINY_ROUTED / 2, TINY_MOE_OTHER

    def expect(bytes_per_param: float, sharded: bool) -> float:
        return bytes_per_param * (experts / 2 + other / 4 if sharded else experts + other)

    tm = training_memory(tiny_moe(), hardware(), micro_batch=2, seq=16, dp=4, zero=zero, ep=2)
    assert tm.weights_bytes == pytest.approx(expect(2, zero >= 3), rel=1e-12)
    assert tm.gradients_bytes == pytest.approx(expect(2, zero >= 2), rel=1e-12)
    assert tm.optimizer_bytes == pytest.approx(expect(12, zero >= 1), rel=1e-12)


def test_expert_parallel_saves_memory_over_replicated_experts():
    no_ep = training_memory(tiny_moe(), hardware(), micro_batch=1, seq=8, dp=4, zero=0)
    ep = training_memory(tiny_moe(), hardware(), micro_batch=1, seq=8, dp=4, zero=0, ep=4)
    saved = no_ep.weights_bytes + no_ep.gradients_bytes + no_ep.optimizer_bytes
    saved -= ep.weights_bytes + ep.gradients_bytes + ep.optimizer_bytes
    assert saved == pytest.approx(16 * TINY_ROUTED * 3 / 4, rel=1e-12)


def test_training_activations_by_hand_and_recompute():
    """Dense tiny model, bf16: per layer and token the attention block saves 2*(2d + q + k + v + out) bytes
    plus fp32 softmax stats per head, the FFN block 2*2d + 8f; logits take 6 bytes per vocab entry."""
    attention = 2 * (2 * D + 64 + 2 * 64 + 64) + 4 * 4
    ffn = 2 * 2 * D + 8 * F
    tokens = 2 * 16
    logits = tokens * V * 6
    full = training_memory(tiny_dense(), hardware(), micro_batch=2, seq=16)
    assert full.activation_bytes == tokens * LAYERS * (attention + ffn) + logits
    rec = training_memory(tiny_dense(), hardware(), micro_batch=2, seq=16, recompute=True)
    # recomputation keeps each layer's bf16 input and rebuilds one layer at a time
    assert rec.activation_bytes == tokens * (LAYERS * 2 * D + attention + ffn) + logits
    assert rec.activation_bytes < full.activation_bytes
    assert rec.weights_bytes == full.weights_bytes


def test_recompute_reduces_activations_on_a_preset():
    spec = load_model("mixtral-8x7b")
    full = training_memory(spec, hardware(), micro_batch=1, seq=4096, dp=8, zero=3, ep=8)
    rec = training_memory(spec, hardware(), micro_batch=1, seq=4096, dp=8, zero=3, ep=8, recompute=True)
    assert rec.activation_bytes < 0.2 * full.activation_bytes
    assert rec.total_bytes < full.total_bytes


def test_training_fits_flag():
    spec = tiny_dense()
    tm = training_memory(spec, hardware(), micro_batch=1, seq=8)
    assert tm.fits
    exact = hardware(memory_bytes=tm.total_bytes + 2e9)  # just enough with the runtime overhead
    assert training_memory(spec, exact, micro_batch=1, seq=8).fits
    short = hardware(memory_bytes=tm.total_bytes + 2e9 - 1)
    assert not training_memory(spec, short, micro_batch=1, seq=8).fits


def test_training_memory_rejects_bad_plans():
    with pytest.raises(MoelabError):
        training_memory(tiny_moe(), hardware(), 1, 8, dp=4, zero=4)
    with pytest.raises(MoelabError):
        training_memory(tiny_moe(), hardware(), 1, 8, dp=4, ep=3)
    with pytest.raises(MoelabError):
        training_memory(tiny_moe(), hardware(), 0, 8)
