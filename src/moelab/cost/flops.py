"""Floating-point operations per token, prefill, decode step and training run (a multiply-add is 2 FLOPs)."""

from __future__ import annotations

from moelab.cost.params import ParamBreakdown
from moelab.spec.model import ModelSpec


def attended(spec: ModelSpec, context: float) -> float:
    """Positions a query attends to at `context` (capped by a sliding window)."""
    window = spec.attention.sliding_window
    return min(context, window) if window else context


def _per_position(spec: ModelSpec) -> float:
    """QK^T score plus weighted value sum, for one query and one attended position, over all layers."""
    a = spec.attention
    return 2.0 * spec.n_layers * a.n_heads * (a.qk_head_dim + a.v_head_dim)


def attention_flops(spec: ModelSpec, context: float) -> float:
    """Attention FLOPs of one query token over `context` positions."""
    return _per_position(spec) * attended(spec, context)


def token_flops(spec: ModelSpec, p: ParamBreakdown, context: float, lm_head: bool = True) -> float:
    """Forward FLOPs of one token at `context`: active matmuls (top-k and shared experts), attention, lm_head."""
    head = 2.0 * spec.d_model * spec.vocab_size if lm_head else 0.0
    return 2.0 * p.matmul_active + head + attention_flops(spec, context)


def causal_attention_flops(spec: ModelSpec, seq: int) -> float:
    """Attention FLOPs of a causal sequence of `seq` tokens: token t attends to t positions."""
    window = spec.attention.sliding_window
    if not window or seq <= window:
        positions = seq * (seq + 1) / 2
    else:
        positions = window * (window + 1) / 2 + (seq - window) * window
    return _per_position(spec) * positions


def prefill_flops(spec: ModelSpec, p: ParamBreakdown, batch: int, prompt: int, all_logits: bool = False) -> float:
    """A batch of prompts through the model; logits for the last position only unless `all_logits`."""
    matmul = 2.0 * p.matmul_active * prompt + causal_attention_flops(spec, prompt)
    head = 2.0 * spec.d_model * spec.vocab_size * (prompt if all_logits else 1)
    return batch * (matmul + head)


def decode_flops(spec: ModelSpec, p: ParamBreakdown, batch: int, context: float) -> float:
    """One decode step: `batch` new tokens, each attending to `context` positions."""
    return batch * token_flops(spec, p, context)


def training_flops(spec: ModelSpec, p: ParamBreakdown, tokens: float, seq: int) -> float:
    """Forward + backward (3x forward) over `tokens` tokens in sequences of `seq`: 6*N_active*tokens + attention."""
    per_seq = 2.0 * (p.matmul_active + spec.d_model * spec.vocab_size) * seq + causal_attention_flops(spec, seq)
    return 3.0 * per_seq * tokens / seq
