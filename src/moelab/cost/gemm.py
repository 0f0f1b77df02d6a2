"""Achieved FLOP/s of a GPU kernel as a function of its shape: the efficiency curves of the operator model.

A GEMM of M rows (tokens) against an N x K weight reaches, of the dense peak of its dtype,

    share(M) = gemm_share(dtype) * M / (M + gemm_half_rows)

Hockney's (r_inf, n_1/2) form: it saturates at the large-GEMM share and halves at `gemm_half_rows` rows, where
the tile is mostly empty and the kernel is latency-bound. Measured on H100 (cuBLAS bf16, N = K = 8192) a GEMM
reaches ~70-80% of peak from M ~ 2048 and ~30-40% at M = 64; fp8 tensor cores reach a lower share of their (2x)
peak (NVIDIA's Transformer Engine and vLLM's fp8 GEMM benchmarks). The bundled presets' values are fitted to
published serving measurements (benchmarks/published) and say so in their sources.

Routed experts run as grouped / fused MoE kernels: each touched expert is one GEMM of the tokens routed to it,
its rows padded up to the kernel's row tile (`moe_block_rows`, vLLM fused_moe's BLOCK_SIZE_M), at
`moe_gemm_efficiency` of the dense curve at that many rows.

Prefill attention (FlashAttention) reaches `attention_efficiency` of peak at long context, as c / (c + half) of
it at a mean attended context c.
"""

from __future__ import annotations

import math

from moelab.spec.hardware import HardwareSpec


def gemm_flops_per_second(hw: HardwareSpec, dtype: str, rows: float) -> float:
    """Achieved FLOP/s of a dense GEMM with `rows` rows in a compute dtype."""
    _, peak = hw.peak(dtype)
    return peak * hw.gemm_share(dtype) * rows / (rows + hw.gemm_half_rows)


def padded_rows(hw: HardwareSpec, rows: float) -> float:
    """Rows a fused MoE kernel computes for an expert given `rows` tokens: rounded up to its row tile."""
    block = hw.moe_block_rows
    return block * math.ceil(rows / block - 1e-9) if rows > 0 else 0.0


def expert_flops_per_second(hw: HardwareSpec, dtype: str, rows: float) -> float:
    """Achieved FLOP/s on the padded rows of one expert's GEMM in a grouped MoE kernel."""
    return gemm_flops_per_second(hw, dtype, padded_rows(hw, rows)) * hw.moe_gemm_efficiency


ATTENTION_DTYPE = "bf16"  # FlashAttention computes in 16 bits whatever the weights' dtype (vLLM, SGLang)


def attention_flops_per_second(hw: HardwareSpec, dtype: str, context: float) -> float:
    """Achieved FLOP/s of attention at a mean attended context of `context` positions (16-bit tensor cores;
    `dtype` is the weights' and matters only where the hardware lacks a 16-bit peak)."""
    _, peak = hw.peak(ATTENTION_DTYPE if dtype in ("fp8", "int8") else dtype)
    return peak * hw.attention_efficiency * context / (context + hw.attention_half_context)
