"""Floating-point operations per token, prefill, decode step and training run (a multiply-add is 2 FLOPs).

Attention is summed layer by layer: each layer attends to its own span (all positions, its sliding window or
its chunk); a linear-attention layer instead updates and reads its fixed-size state."""

from __future__ import annotations

from moelab.cost.params import ParamBreakdown
from moelab.spec.model import AttentionSpec, ModelSpec

# Gated DeltaNet per token and value head: decay, read (S^T k), delta write (k delta^T) and output read (S^T q)
# over the d_k x d_v state, ~8 FLOPs per state element (Yang et al. 2024, "Gated Delta Networks").
_LINEAR_STATE_FLOPS = 8.0


def _per_position(a: AttentionSpec) -> float:
    """QK^T score plus weighted value sum, for one query and one attended position, in one layer."""
    return 2.0 * a.n_heads * (a.qk_head_dim + a.v_head_dim)


def _state_flops(a: AttentionSpec) -> float:
    """FLOPs one token spends on a linear-attention layer's recurrent state (0 for softmax attention)."""
    lin = a.linear
    return _LINEAR_STATE_FLOPS * lin.n_v_heads * lin.k_head_dim * lin.v_head_dim if lin else 0.0


def attended(spec: ModelSpec, context: float) -> float:
    """Positions a query attends to at `context`, averaged over the softmax-attention layers."""
    groups = [(layer.attention, n) for layer, n in spec.layer_groups if layer.attention.softmax]
    count = sum(n for _, n in groups)
    return sum(n * a.attended(context) for a, n in groups) / count if count else 0.0


def attention_flops(spec: ModelSpec, context: float) -> float:
    """Attention FLOPs of one query token over `context` positions, all layers."""
    return sum(n * (_per_position(layer.attention) * layer.attention.attended(context)
                    + _state_flops(layer.attention)) for layer, n in spec.layer_groups)


def token_flops(spec: ModelSpec, p: ParamBreakdown, context: float, lm_head: bool = True) -> float:
    """Forward FLOPs of one token at `context`: active matmuls (top-k and shared experts), attention, lm_head."""
    head = 2.0 * spec.d_model * spec.vocab_size if lm_head else 0.0
    return 2.0 * p.matmul_active + head + attention_flops(spec, context)


def _causal_positions(a: AttentionSpec, seq: int) -> float:
    """Query-key pairs of a causal sequence of `seq` tokens in one layer (window- or chunk-limited)."""
    if not a.softmax:
        return 0.0
    if a.sliding_window and seq > a.sliding_window:
        w = a.sliding_window
        return w * (w + 1) / 2 + (seq - w) * w
    if a.chunk_size and seq > a.chunk_size:
        c = a.chunk_size
        full, rest = divmod(seq, c)
        return full * c * (c + 1) / 2 + rest * (rest + 1) / 2
    return seq * (seq + 1) / 2


def causal_attention_flops(spec: ModelSpec, seq: int) -> float:
    """Attention FLOPs of a causal sequence of `seq` tokens, all layers: token t attends to its span."""
    return sum(n * (_per_position(layer.attention) * _causal_positions(layer.attention, seq)
                    + _state_flops(layer.attention) * seq) for layer, n in spec.layer_groups)


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
