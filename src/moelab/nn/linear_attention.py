"""Gated DeltaNet, Qwen3-Next's linear attention: a causal depthwise conv over q, k, v, then a gated delta-rule
recurrence whose per-head state (k_head_dim x v_head_dim) replaces the KV cache, then a gated RMSNorm.

The math follows transformers 5.24 models/qwen3_next/modeling_qwen3_next.py (Qwen3NextGatedDeltaNet with its
torch fallbacks causal_conv1d_fn / causal_conv1d_update, torch_chunk_gated_delta_rule for prefill and
torch_recurrent_gated_delta_rule for decode), in float32; the parameter names and layouts are transformers'
(in_proj_qkvz, in_proj_ba, conv1d, dt_bias, A_log, norm, out_proj), so checkpoints map one to one. Per token t
and value head (S: the k_dim x v_dim state, q and k l2-normalised, q scaled by k_dim^-0.5):
    S <- exp(g_t) S;  S <- S + k_t (beta_t (v_t - S^T k_t))^T;  o_t = S^T q_t
with g_t = -exp(A_log) softplus(a_t + dt_bias) and beta_t = sigmoid(b_t). Sequences run in chunks of
CHUNK tokens (the same recurrence, the in-chunk part solved as one triangular system, as transformers' chunked
form does); one token at a time runs the recurrence directly. With a KVCache, cache.states[layer] holds the
conv's last kernel - 1 inputs and the recurrent state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moelab.nn.attention import KVCache, attention_kind
from moelab.spec.model import ModelSpec

CHUNK = 64  # tokens per chunk of the prefill form (transformers' torch_chunk_gated_delta_rule default)


def _l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim (transformers' l2norm, as the FLA kernels compute it)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def recurrent_delta_rule(q_BHTK, k_BHTK, v_BHTV, g_BHT, beta_BHT, state_BHKV):
    """The gated delta rule token by token (float32 inputs, q/k already normalised and q scaled):
    (outputs (B, H, T, V), final state (B, H, K, V))."""
    outs = []
    state = state_BHKV
    for t in range(q_BHTK.shape[2]):
        k_t = k_BHTK[:, :, t]
        state = state * g_BHT[:, :, t].exp()[..., None, None]
        recalled = (state * k_t[..., None]).sum(dim=-2)  # S^T k: (B, H, V)
        delta = (v_BHTV[:, :, t] - recalled) * beta_BHT[:, :, t, None]
        state = state + k_t[..., None] * delta[..., None, :]
        outs.append((state * q_BHTK[:, :, t, :, None]).sum(dim=-2))
    return torch.stack(outs, dim=2), state


def chunked_delta_rule(q_BHTK, k_BHTK, v_BHTV, g_BHT, beta_BHT, state_BHKV, chunk: int = CHUNK):
    """The same recurrence, `chunk` tokens at a time. Within a chunk, with G_i the cumulative log decay, the
    delta-rule writes u_i = beta_i (v_i - decayed old-state read - sum_{j<i} exp(G_i - G_j) (k_i . k_j) u_j)
    form a unit lower-triangular system solved at once; the outputs then read the old state (decayed by
    exp(G_i)) and the chunk's own writes, and the state moves to the chunk's end."""
    b, h, t, kd = k_BHTK.shape
    vd = v_BHTV.shape[-1]
    pad = (chunk - t % chunk) % chunk
    q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q_BHTK, k_BHTK, v_BHTV))
    g, beta = (F.pad(x, (0, pad)) for x in (g_BHT, beta_BHT))
    n = (t + pad) // chunk
    q, k, v = (x.reshape(b, h, n, chunk, x.shape[-1]) for x in (q, k, v))
    g, beta = g.reshape(b, h, n, chunk), beta.reshape(b, h, n, chunk)
    cum = g.cumsum(dim=-1)  # (B, H, N, C): log decay from the chunk start to each position, inclusive
    upper = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).triu(1)
    decay_ij = (cum[..., :, None] - cum[..., None, :]).masked_fill(upper, float("-inf")).exp()  # i >= j
    k_beta = k * beta[..., None]
    strict = (k_beta @ k.transpose(-1, -2)) * decay_ij.masked_fill(~upper.T, 0.0)  # j < i only
    system = torch.eye(chunk, dtype=q.dtype, device=q.device) + strict
    u_pure = torch.linalg.solve_triangular(system, v * beta[..., None], upper=False, unitriangular=True)
    w = torch.linalg.solve_triangular(system, k_beta * cum.exp()[..., None], upper=False, unitriangular=True)
    scores = (q @ k.transpose(-1, -2)) * decay_ij  # (B, H, N, C, C), i >= j
    q_read = q * cum.exp()[..., None]
    k_write = k * (cum[..., -1:] - cum).exp()[..., None]
    end_decay = cum[..., -1].exp()[..., None, None]
    state, outs = state_BHKV, []
    for c in range(n):
        u = u_pure[:, :, c] - w[:, :, c] @ state  # the writes, net of what the decayed old state recalls
        outs.append(q_read[:, :, c] @ state + scores[:, :, c] @ u)
        state = state * end_decay[:, :, c] + k_write[:, :, c].transpose(-1, -2) @ u
    out = torch.stack(outs, dim=2).reshape(b, h, n * chunk, vd)[:, :, :t]
    return out, state


@attention_kind("linear")
class GatedDeltaNet(nn.Module):
    """Qwen3-Next's linear-attention token mixer (see the module docstring), on (B, T, d) inputs."""

    def __init__(self, spec: ModelSpec, layer: int) -> None:
        super().__init__()
        lin, d = spec.layers[layer].attention.linear, spec.d_model
        self.layer, self.eps = layer, spec.norm_eps
        self.nk, self.nv, self.dk, self.dv = lin.n_k_heads, lin.n_v_heads, lin.k_head_dim, lin.v_head_dim
        self.kernel = lin.conv_kernel
        key, value = self.nk * self.dk, self.nv * self.dv
        self.conv_dim = 2 * key + value
        # in_proj_qkvz rows come in n_k groups, one per key head: [q (dk), k (dk), v (r dv), z (r dv)], r = nv / nk
        # value heads per key head (transformers' fix_query_key_value_ordering); in_proj_ba likewise [b (r), a (r)].
        self.in_proj_qkvz = nn.Linear(d, 2 * key + 2 * value, bias=False)
        self.in_proj_ba = nn.Linear(d, 2 * self.nv, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, self.kernel, groups=self.conv_dim, bias=False,
                                padding=self.kernel - 1)  # weight (C, 1, K), as transformers stores it
        self.dt_bias = nn.Parameter(torch.ones(self.nv))
        self.A_log = nn.Parameter(torch.empty(self.nv).uniform_(0.01, 16.0).log())
        self.norm = _GatedRMSNorm(self.dv, spec.norm_eps)
        self.out_proj = nn.Linear(value, d, bias=False)

    def _split(self, x_BTD: torch.Tensor):
        b, t, _ = x_BTD.shape
        r = self.nv // self.nk
        qkvz = self.in_proj_qkvz(x_BTD).view(b, t, self.nk, 2 * self.dk + 2 * r * self.dv)
        q, k, v, z = qkvz.split([self.dk, self.dk, r * self.dv, r * self.dv], dim=-1)
        ba = self.in_proj_ba(x_BTD).view(b, t, self.nk, 2 * r)
        beta_in, a = ba.split([r, r], dim=-1)
        return (q.reshape(b, t, -1), k.reshape(b, t, -1), v.reshape(b, t, -1), z.reshape(b, t, self.nv, self.dv),
                beta_in.reshape(b, t, self.nv), a.reshape(b, t, self.nv))

    def _conv(self, mixed_BCT: torch.Tensor, past_BCK: torch.Tensor | None):
        """Causal depthwise conv + silu over the channels, continuing from the last kernel - 1 inputs (zeros
        at the start); returns (outputs (B, C, T), the new last kernel - 1 inputs)."""
        keep = self.kernel - 1
        if past_BCK is None:
            past_BCK = mixed_BCT.new_zeros(*mixed_BCT.shape[:2], keep)
        full = torch.cat([past_BCK.to(mixed_BCT.dtype), mixed_BCT], dim=-1)
        out = F.conv1d(full, self.conv1d.weight, groups=self.conv_dim)
        return F.silu(out), full[..., full.shape[-1] - keep:]

    def forward(self, x_BTD: torch.Tensor, rotary=None, cos=None, sin=None, cache: KVCache | None = None):
        b, t, _ = x_BTD.shape
        q, k, v, z, beta_in, a = self._split(x_BTD)
        past = cache.states.get(self.layer) if cache is not None else None
        mixed, conv_state = self._conv(torch.cat([q, k, v], dim=-1).transpose(1, 2),
                                       past["conv"] if past else None)
        q, k, v = mixed.transpose(1, 2).split([self.nk * self.dk, self.nk * self.dk, self.nv * self.dv], dim=-1)
        r = self.nv // self.nk  # each key head serves r consecutive value heads
        q_BHTK, k_BHTK = (y.reshape(b, t, self.nk, self.dk).repeat_interleave(r, dim=2).transpose(1, 2).float()
                          for y in (q, k))
        v_BHTV = v.reshape(b, t, self.nv, self.dv).transpose(1, 2).float()
        q_BHTK = _l2norm(q_BHTK) * self.dk ** -0.5
        k_BHTK = _l2norm(k_BHTK)
        beta_BHT = beta_in.float().sigmoid().transpose(1, 2)
        g_BHT = (-self.A_log.float().exp() * F.softplus(a.float() + self.dt_bias.float())).transpose(1, 2)
        state = past["recurrent"] if past else q_BHTK.new_zeros(b, self.nv, self.dk, self.dv)
        rule = recurrent_delta_rule if t == 1 else chunked_delta_rule
        out_BHTV, state = rule(q_BHTK, k_BHTK, v_BHTV, g_BHT, beta_BHT, state)
        if cache is not None:
            cache.states[self.layer] = {"conv": conv_state, "recurrent": state}
        out = self.norm(out_BHTV.transpose(1, 2).to(x_BTD.dtype), z)
        return self.out_proj(out.reshape(b, t, self.nv * self.dv))


class _GatedRMSNorm(nn.Module):
    """RMSNorm over each head's values times weight, then times silu(z) (Qwen3NextRMSNormGated: plain w,
    starting at 1, not the (1 + w) of the model's other norms)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        y = self.weight * y.to(dtype)
        return (y * F.silu(z.float())).to(dtype)
