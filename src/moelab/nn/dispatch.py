"""Dispatch backends: run each token through its chosen experts and combine, by name.

All take x (T, d), expert ids (T, k), combine weights (T, k), and the stacked expert weights
gate_up (E, 2f, d) and down (E, d, f) (the transformers >= 5 layout), and return (T, d). Optional expert
biases (gpt-oss): gate_up_bias (E, 2f, gate then up, like gate_up's rows) added before the activation and
down_bias (E, d) added to each expert's output before the combine weight scales it, as transformers'
GptOssExperts computes (out = (act(x W_gu + b_gu) W_d + b_d) * weight).

- "loop": per expert, gather its tokens, two matmuls, weighted scatter-add. The reference.
- "sorted": token-slots sorted by expert; one contiguous GEMM pair per expert that has tokens.
- "grouped_mm": the sorted order through torch's grouped matmul (one kernel for all experts); falls back
  to "sorted" where this torch has no grouped_mm, or the dtype (float64) or shapes do not meet its rules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moelab.nn.layers import gated

BACKENDS = ("loop", "sorted", "grouped_mm")


def _glu(h: torch.Tensor, activation: str) -> torch.Tensor:
    gate, up = h.chunk(2, dim=-1)
    return gated(gate, up, activation)


def _expert(x_ND, e: int, gate_up_EFD, down_EDF, activation, gate_up_bias_EF, down_bias_ED):
    """One expert on its tokens: down(act(gate_up(x) [+ b_gu])) [+ b_d]."""
    h = x_ND @ gate_up_EFD[e].T
    if gate_up_bias_EF is not None:
        h = h + gate_up_bias_EF[e]
    y = _glu(h, activation) @ down_EDF[e].T
    return y + down_bias_ED[e] if down_bias_ED is not None else y


def loop(x_TD, idx_TK, w_TK, gate_up_EFD, down_EDF, activation="silu", gate_up_bias=None, down_bias=None):
    out = torch.zeros_like(x_TD)
    for e in range(gate_up_EFD.shape[0]):
        tok, slot = torch.where(idx_TK == e)
        if tok.numel() == 0:
            continue
        y = _expert(x_TD[tok], e, gate_up_EFD, down_EDF, activation, gate_up_bias, down_bias)
        out.index_add_(0, tok, y * w_TK[tok, slot, None].to(y.dtype))
    return out


def _sort(idx_TK: torch.Tensor, n_experts: int):
    """Token-slot order grouped by expert: (token of each sorted slot, flat slot ids, per-expert counts)."""
    flat = idx_TK.reshape(-1)
    order = flat.argsort(stable=True)
    counts = torch.bincount(flat, minlength=n_experts)
    return order // idx_TK.shape[1], order, counts


def sorted_gemm(x_TD, idx_TK, w_TK, gate_up_EFD, down_EDF, activation="silu", gate_up_bias=None,
                down_bias=None):
    tokens, order, counts = _sort(idx_TK, gate_up_EFD.shape[0])
    xs = x_TD[tokens]
    parts = []
    start = 0
    for e, n in enumerate(counts.tolist()):
        if n:
            chunk = xs[start:start + n]
            parts.append(_expert(chunk, e, gate_up_EFD, down_EDF, activation, gate_up_bias, down_bias))
            start += n
    ys = torch.cat(parts) if parts else xs.new_zeros(0, x_TD.shape[1])
    weights = w_TK.reshape(-1)[order].to(ys.dtype)
    return torch.zeros_like(x_TD).index_add_(0, tokens, ys * weights[:, None])


def _grouped_mm_fn():
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def grouped_mm_available(x_TD: torch.Tensor, gate_up_EFD: torch.Tensor, down_EDF: torch.Tensor) -> bool:
    """torch has grouped_mm, the dtype is one it takes, and row strides are multiples of 16 bytes."""
    if _grouped_mm_fn() is None or x_TD.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    size = x_TD.element_size()
    return all((n * size) % 16 == 0 for n in (x_TD.shape[1], gate_up_EFD.shape[1], down_EDF.shape[2]))


def grouped_mm(x_TD, idx_TK, w_TK, gate_up_EFD, down_EDF, activation="silu", gate_up_bias=None, down_bias=None):
    if not grouped_mm_available(x_TD, gate_up_EFD, down_EDF):
        return sorted_gemm(x_TD, idx_TK, w_TK, gate_up_EFD, down_EDF, activation, gate_up_bias, down_bias)
    mm = _grouped_mm_fn()
    tokens, order, counts = _sort(idx_TK, gate_up_EFD.shape[0])
    offsets = counts.cumsum(0).to(torch.int32)
    xs = x_TD[tokens]
    h = mm(xs, gate_up_EFD.transpose(1, 2), offs=offsets)
    experts = idx_TK.reshape(-1)[order] if gate_up_bias is not None or down_bias is not None else None
    if gate_up_bias is not None:  # each sorted row gets its expert's bias
        h = h + gate_up_bias[experts]
    ys = mm(_glu(h, activation), down_EDF.transpose(1, 2), offs=offsets)
    if down_bias is not None:
        ys = ys + down_bias[experts]
    weights = w_TK.reshape(-1)[order].to(ys.dtype)
    return torch.zeros_like(x_TD).index_add_(0, tokens, ys * weights[:, None])


def dispatch(backend: str, *args, activation: str = "silu", gate_up_bias=None, down_bias=None):
    """Run the named backend (`activation`: the experts' gate activation, moelab.nn.layers.gated; the biases:
    gpt-oss's expert biases, None for none)."""
    options = dict(activation=activation, gate_up_bias=gate_up_bias, down_bias=down_bias)
    if backend == "loop":
        return loop(*args, **options)
    if backend == "sorted":
        return sorted_gemm(*args, **options)
    if backend == "grouped_mm":
        return grouped_mm(*args, **options)
    raise ValueError(f"unknown dispatch backend {backend!r} (choose from {', '.join(BACKENDS)})")
