"""Attention: grouped-query (GQA) and DeepSeek multi-head latent attention (MLA), with a KV cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moelab.nn.layers import RMSNorm, Rotary, yarn_softmax_scale
from moelab.spec.model import ModelSpec


class KVCache:
    """Per-layer cached tensors along the sequence axis (dim 2), grown by doubling; `length` tokens seen."""

    def __init__(self, n_layers: int, capacity: int = 0) -> None:
        self.layers: list[list[torch.Tensor] | None] = [None] * n_layers
        self.filled = [0] * n_layers
        self.capacity = capacity

    @property
    def length(self) -> int:
        return self.filled[0]

    def update(self, layer: int, *new: torch.Tensor) -> list[torch.Tensor]:
        """Append `new` tensors (each (B, H, T, D)) for `layer`; return views of everything cached so far."""
        start, t = self.filled[layer], new[0].shape[2]
        stored = self.layers[layer]
        if stored is None or start + t > stored[0].shape[2]:
            size = max(self.capacity, 2 * (start + t), 16)
            grown = [x.new_empty(*x.shape[:2], size, x.shape[3]) for x in new]
            if stored is not None:
                for g, s in zip(grown, stored, strict=True):
                    g[:, :, :start] = s[:, :, :start]
            self.layers[layer] = stored = grown
        for s, x in zip(stored, new, strict=True):
            s[:, :, start:start + t] = x
        self.filled[layer] = start + t
        return [s[:, :, :start + t] for s in stored]


def attention_mask(t_q: int, t_k: int, window: int | None, device: torch.device) -> torch.Tensor | None:
    """Boolean (t_q, t_k) mask, True = attend; None when plain causal (or full, for one query) suffices."""
    offset = t_k - t_q  # queries are the last t_q positions
    if (window is None or t_k <= window) and (t_q == 1 or offset == 0):
        return None
    q_pos = torch.arange(t_q, device=device)[:, None] + offset
    k_pos = torch.arange(t_k, device=device)[None, :]
    mask = k_pos <= q_pos
    if window is not None:
        mask &= q_pos - k_pos < window
    return mask


def _sdpa(q, k, v, mask, scale, t_q, t_k, enable_gqa=False):
    causal = mask is None and t_q > 1 and t_q == t_k
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale,
                                          enable_gqa=enable_gqa)


class GQAAttention(nn.Module):
    """Multi-head attention with n_kv_heads <= n_heads shared key/value heads, RoPE, optional q/k norms."""

    def __init__(self, spec: ModelSpec, layer: int) -> None:
        super().__init__()
        a, d = spec.attention, spec.d_model
        self.layer, self.h, self.kv, self.hd = layer, a.n_heads, a.n_kv_heads, a.head_dim
        self.window = a.sliding_window
        self.q_proj = nn.Linear(d, a.n_heads * a.head_dim, bias=a.qkv_bias)
        self.k_proj = nn.Linear(d, a.n_kv_heads * a.head_dim, bias=a.qkv_bias)
        self.v_proj = nn.Linear(d, a.n_kv_heads * a.head_dim, bias=a.qkv_bias)
        self.o_proj = nn.Linear(a.n_heads * a.head_dim, d, bias=a.o_bias)
        self.qk_norm = a.qk_norm
        if a.qk_norm == "head":
            self.q_norm, self.k_norm = RMSNorm(a.head_dim, spec.norm_eps), RMSNorm(a.head_dim, spec.norm_eps)
        elif a.qk_norm == "full":
            self.q_norm = RMSNorm(a.n_heads * a.head_dim, spec.norm_eps)
            self.k_norm = RMSNorm(a.n_kv_heads * a.head_dim, spec.norm_eps)

    def forward(self, x_BTD: torch.Tensor, rotary: Rotary, cos, sin, cache: KVCache | None) -> torch.Tensor:
        b, t, _ = x_BTD.shape
        q, k, v = self.q_proj(x_BTD), self.k_proj(x_BTD), self.v_proj(x_BTD)
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, t, self.h, self.hd)
        k = k.view(b, t, self.kv, self.hd)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        q_BHTD = rotary.rotate(q.transpose(1, 2), cos, sin)
        k_BHTD = rotary.rotate(k.transpose(1, 2), cos, sin)
        v_BHTD = v.view(b, t, self.kv, self.hd).transpose(1, 2)
        if cache is not None:
            k_BHTD, v_BHTD = cache.update(self.layer, k_BHTD, v_BHTD)
        t_k = k_BHTD.shape[2]
        mask = attention_mask(t, t_k, self.window, x_BTD.device)
        out = _sdpa(q_BHTD, k_BHTD, v_BHTD, mask, None, t, t_k, enable_gqa=self.kv != self.h)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.h * self.hd))


class MLAAttention(nn.Module):
    """DeepSeek multi-head latent attention. The cache holds the compressed latent and the rotary key."""

    def __init__(self, spec: ModelSpec, layer: int) -> None:
        super().__init__()
        a, d = spec.attention, spec.d_model
        self.layer, self.h = layer, a.n_heads
        self.nope, self.rope, self.vd, self.rank = a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim, a.kv_lora_rank
        qk = a.qk_head_dim
        # The latent norms use eps 1e-6 whatever rms_norm_eps says, as in DeepSeek's and transformers' code.
        if a.q_lora_rank is None:
            self.q_proj = nn.Linear(d, a.n_heads * qk, bias=False)
        else:
            self.q_a_proj = nn.Linear(d, a.q_lora_rank, bias=a.qkv_bias)
            self.q_a_layernorm = RMSNorm(a.q_lora_rank, 1e-6)
            self.q_b_proj = nn.Linear(a.q_lora_rank, a.n_heads * qk, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(d, a.kv_lora_rank + a.qk_rope_head_dim, bias=a.qkv_bias)
        self.kv_a_layernorm = RMSNorm(a.kv_lora_rank, 1e-6)
        self.kv_b_proj = nn.Linear(a.kv_lora_rank, a.n_heads * (a.qk_nope_head_dim + a.v_head_dim), bias=False)
        self.o_proj = nn.Linear(a.n_heads * a.v_head_dim, d, bias=a.o_bias)
        self.scale = qk ** -0.5 * yarn_softmax_scale(dict(spec.rope_scaling))
        self.window = a.sliding_window

    def forward(self, x_BTD: torch.Tensor, rotary: Rotary, cos, sin, cache: KVCache | None) -> torch.Tensor:
        b, t, _ = x_BTD.shape
        q = self.q_proj(x_BTD) if hasattr(self, "q_proj") else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x_BTD)))
        q_BHTD = q.view(b, t, self.h, self.nope + self.rope).transpose(1, 2)
        q_nope, q_pe = q_BHTD.split([self.nope, self.rope], dim=-1)
        latent, k_pe = self.kv_a_proj_with_mqa(x_BTD).split([self.rank, self.rope], dim=-1)
        latent_B1TR = self.kv_a_layernorm(latent)[:, None]
        k_pe_B1TD = rotary.rotate(k_pe[:, None], cos, sin)
        q_pe = rotary.rotate(q_pe, cos, sin)
        if cache is not None:
            latent_B1TR, k_pe_B1TD = cache.update(self.layer, latent_B1TR, k_pe_B1TD)
        t_k = latent_B1TR.shape[2]
        kv = self.kv_b_proj(latent_B1TR[:, 0]).view(b, t_k, self.h, self.nope + self.vd).transpose(1, 2)
        k_nope, v_BHTD = kv.split([self.nope, self.vd], dim=-1)
        k_BHTD = torch.cat([k_nope, k_pe_B1TD.expand(b, self.h, t_k, self.rope)], dim=-1)
        q_BHTD = torch.cat([q_nope, q_pe], dim=-1)
        mask = attention_mask(t, t_k, self.window, x_BTD.device)
        out = _sdpa(q_BHTD, k_BHTD, v_BHTD, mask, self.scale, t, t_k)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.h * self.vd))


def build_attention(spec: ModelSpec, layer: int) -> nn.Module:
    return MLAAttention(spec, layer) if spec.attention.kind == "mla" else GQAAttention(spec, layer)
