"""Attention: grouped-query (GQA) and DeepSeek multi-head latent attention (MLA), with a KV cache; a registry
of attention kinds (moelab.spec.model.ATTENTION_KINDS) that other modules add to (linear attention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moelab.errors import MoelabError
from moelab.nn.layers import RMSNorm, Rotary, build_norm, l2_norm, yarn_softmax_scale
from moelab.spec.model import ModelSpec


class KVCache:
    """Per-layer cached tensors along the sequence axis (dim 2), grown by doubling; `length` tokens seen."""

    def __init__(self, n_layers: int, capacity: int = 0) -> None:
        self.layers: list[list[torch.Tensor] | None] = [None] * n_layers
        self.filled = [0] * n_layers
        self.capacity = capacity
        self.states: dict[int, object] = {}  # layer -> the recurrent state of a linear-attention layer

    @property
    def length(self) -> int:
        """Positions seen (by the layers that cache them: a linear-attention layer keeps a state instead)."""
        return max(self.filled)

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


def attention_mask(t_q: int, t_k: int, window: int | None, device: torch.device,
                   chunk: int | None = None) -> torch.Tensor | None:
    """Boolean (t_q, t_k) mask, True = attend; None when plain causal (or full, for one query) suffices.
    `window`: only the last `window` positions; `chunk`: only positions in the query's aligned chunk."""
    offset = t_k - t_q  # queries are the last t_q positions
    if (window is None or t_k <= window) and (chunk is None or t_k <= chunk) and (t_q == 1 or offset == 0):
        return None
    q_pos = torch.arange(t_q, device=device)[:, None] + offset
    k_pos = torch.arange(t_k, device=device)[None, :]
    mask = k_pos <= q_pos
    if window is not None:
        mask &= q_pos - k_pos < window
    if chunk is not None:
        mask &= q_pos // chunk == k_pos // chunk
    return mask


def _sdpa(q, k, v, mask, scale, t_q, t_k, enable_gqa=False):
    causal = mask is None and t_q > 1 and t_q == t_k
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale,
                                          enable_gqa=enable_gqa)


def _eager(q_BHTD, k_BHTD, v_BHTD, mask, scale: float, softcap: float | None, sinks_H: torch.Tensor | None):
    """Attention spelled out, for what SDPA cannot do: Gemma 2's score soft cap and gpt-oss's sinks (one
    learned logit per head joins each softmax and takes its share, then is dropped). float32 softmax."""
    b, h, t_q, _ = q_BHTD.shape
    t_k = k_BHTD.shape[2]
    if k_BHTD.shape[1] != h:
        k_BHTD = k_BHTD.repeat_interleave(h // k_BHTD.shape[1], dim=1)
        v_BHTD = v_BHTD.repeat_interleave(h // v_BHTD.shape[1], dim=1)
    scores = (q_BHTD @ k_BHTD.transpose(-1, -2)) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is None and t_q > 1:
        mask = attention_mask(t_q, t_k, None, q_BHTD.device) if t_q != t_k else torch.ones(
            t_q, t_k, dtype=torch.bool, device=q_BHTD.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if sinks_H is not None:
        sink = sinks_H.to(scores.dtype).view(1, h, 1, 1).expand(b, h, t_q, 1)
        scores = torch.cat([scores, sink], dim=-1)
        scores = scores - scores.max(dim=-1, keepdim=True).values
    probs = scores.float().softmax(dim=-1).to(v_BHTD.dtype)
    if sinks_H is not None:
        probs = probs[..., :-1]
    return probs @ v_BHTD


class GQAAttention(nn.Module):
    """Multi-head attention with n_kv_heads <= n_heads shared key/value heads, RoPE (or none), optional q/k
    norms, window, chunks, sinks, soft cap, output gate and clipping: each as the layer's AttentionSpec says."""

    def __init__(self, spec: ModelSpec, layer: int) -> None:
        super().__init__()
        a, d = spec.layers[layer].attention, spec.d_model
        self.spec = a
        self.layer, self.h, self.kv, self.hd = layer, a.n_heads, a.n_kv_heads, a.head_dim
        self.q_proj = nn.Linear(d, a.n_heads * a.head_dim * (2 if a.output_gate else 1), bias=a.qkv_bias)
        self.k_proj = nn.Linear(d, a.n_kv_heads * a.head_dim, bias=a.qkv_bias)
        self.v_proj = nn.Linear(d, a.n_kv_heads * a.head_dim, bias=a.qkv_bias)
        self.o_proj = nn.Linear(a.n_heads * a.head_dim, d, bias=a.o_bias)
        self.qk_norm, self.eps = a.qk_norm, spec.norm_eps
        norm = "rms" if spec.norm.startswith("layer") else spec.norm
        if a.qk_norm == "head":
            self.q_norm, self.k_norm = build_norm(norm, a.head_dim, spec.norm_eps), build_norm(norm, a.head_dim,
                                                                                                spec.norm_eps)
        elif a.qk_norm == "full":
            self.q_norm = build_norm(norm, a.n_heads * a.head_dim, spec.norm_eps)
            self.k_norm = build_norm(norm, a.n_kv_heads * a.head_dim, spec.norm_eps)
        if a.sinks:
            self.sinks = nn.Parameter(torch.zeros(a.n_heads))
        self.scale = a.scale if a.scale is not None else a.head_dim ** -0.5

    def forward(self, x_BTD: torch.Tensor, rotary: Rotary | None, cos, sin, cache: KVCache | None) -> torch.Tensor:
        a, (b, t, _) = self.spec, x_BTD.shape
        q, k, v = self.q_proj(x_BTD), self.k_proj(x_BTD), self.v_proj(x_BTD)
        gate = None
        if a.output_gate:  # Qwen3-Next: per head, the query then its gate
            q, gate = q.view(b, t, self.h, 2 * self.hd).chunk(2, dim=-1)
            gate = gate.reshape(b, t, self.h * self.hd)
        if a.clip_qkv is not None:
            q, k, v = (z.clamp(-a.clip_qkv, a.clip_qkv) for z in (q, k, v))
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.reshape(b, t, self.h, self.hd)
        k = k.view(b, t, self.kv, self.hd)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        q_BHTD, k_BHTD = q.transpose(1, 2), k.transpose(1, 2)
        if rotary is not None:
            q_BHTD, k_BHTD = rotary.rotate(q_BHTD, cos, sin), rotary.rotate(k_BHTD, cos, sin)
        if self.qk_norm == "l2":  # Llama 4: after the rotation
            q_BHTD, k_BHTD = l2_norm(q_BHTD, self.eps), l2_norm(k_BHTD, self.eps)
        start = cache.filled[self.layer] if cache is not None else 0
        if a.temperature_tuning is not None:  # Llama 4's NoPE layers: q scaled up with the position
            floor_scale, attn_scale = a.temperature_tuning
            positions = torch.arange(start, start + t, device=x_BTD.device, dtype=torch.float32)
            scales = torch.log1p(torch.floor((positions + 1.0) / floor_scale)) * attn_scale + 1.0
            q_BHTD = (q_BHTD * scales.view(1, 1, t, 1)).to(q_BHTD.dtype)
        v_BHTD = v.view(b, t, self.kv, self.hd).transpose(1, 2)
        if cache is not None:
            k_BHTD, v_BHTD = cache.update(self.layer, k_BHTD, v_BHTD)
        t_k = k_BHTD.shape[2]
        mask = attention_mask(t, t_k, a.sliding_window, x_BTD.device, a.chunk_size)
        if a.softcap or a.sinks:
            out = _eager(q_BHTD, k_BHTD, v_BHTD, mask, self.scale, a.softcap, getattr(self, "sinks", None))
        else:
            out = _sdpa(q_BHTD, k_BHTD, v_BHTD, mask, self.scale, t, t_k, enable_gqa=self.kv != self.h)
        out = out.transpose(1, 2).reshape(b, t, self.h * self.hd)
        if gate is not None:
            out = out * torch.sigmoid(gate)
        return self.o_proj(out)


class MLAAttention(nn.Module):
    """DeepSeek multi-head latent attention. The cache holds the compressed latent and the rotary key."""

    def __init__(self, spec: ModelSpec, layer: int) -> None:
        super().__init__()
        a, d = spec.layers[layer].attention, spec.d_model
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
        self.scale = qk ** -0.5 * yarn_softmax_scale(dict(spec.layer_rope(a)[1]))
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


ATTENTIONS: dict[str, type[nn.Module]] = {"gqa": GQAAttention, "mla": MLAAttention}  # kind -> module


def attention_kind(kind: str):
    """Class decorator: register the module that builds attention of `kind`."""
    def add(cls):
        ATTENTIONS[kind] = cls
        return cls
    return add


def build_attention(spec: ModelSpec, layer: int) -> nn.Module:
    kind = spec.layers[layer].attention.kind
    if spec.layers[layer].attention.moa_experts:  # JetMoE's mixture of attention heads: engine only
        raise MoelabError(f"{spec.name}: a mixture of attention heads (JetMoE) is not built by moelab.nn "
                          "(the engine still estimates it)")
    if kind not in ATTENTIONS:
        raise MoelabError(f"{spec.name}: {kind} attention is not built by moelab.nn (the engine still estimates it)")
    return ATTENTIONS[kind](spec, layer)
