"""A decoder-only transformer LM built from a ModelSpec, with a KV cache for incremental decoding."""

from __future__ import annotations

import torch
from torch import nn

from moelab.nn.attention import KVCache, build_attention
from moelab.nn.layers import RMSNorm, Rotary, SwiGLU
from moelab.nn.moe import MoELayer, MoEOptions
from moelab.spec.model import ModelSpec


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then + ffn(norm(.)), where ffn is dense or MoE."""

    def __init__(self, spec: ModelSpec, index: int, options: MoEOptions) -> None:
        super().__init__()
        d = spec.d_model
        self.input_layernorm = RMSNorm(d, spec.norm_eps)
        self.self_attn = build_attention(spec, index)
        self.post_attention_layernorm = RMSNorm(d, spec.norm_eps)
        if index in spec.moe_layers:
            self.mlp = MoELayer(d, spec.moe, options, spec.mlp_bias)
        else:
            self.mlp = SwiGLU(d, spec.ffn_dim, spec.mlp_bias)

    def forward(self, x_BTD, rotary, cos, sin, cache):
        h = x_BTD + self.self_attn(self.input_layernorm(x_BTD), rotary, cos, sin, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class TransformerLM(nn.Module):
    """forward(input_ids (B, T)) -> logits (B, T, vocab)."""

    def __init__(self, spec: ModelSpec, options: MoEOptions = MoEOptions()) -> None:
        super().__init__()
        self.spec, self.options = spec, options
        a = spec.attention
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.d_model)
        self.layers = nn.ModuleList(DecoderLayer(spec, i, options) for i in range(spec.n_layers))
        self.norm = RMSNorm(spec.d_model, spec.norm_eps)
        self.lm_head = nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        rope_dim = a.qk_rope_head_dim if a.kind == "mla" else a.head_dim
        self.rotary = Rotary(rope_dim, spec.rope_theta, dict(spec.rope_scaling) or None, spec.max_position,
                             spec.rope_interleave)
        self.apply(self._init)
        if spec.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = cache.length if cache is not None else 0
        x = self.embed_tokens(input_ids)
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        cos, sin = self.rotary.tables(positions, x.dtype)
        for layer in self.layers:
            x = layer(x, self.rotary, cos, sin, cache)
        return self.lm_head(self.norm(x))

    def new_cache(self, capacity: int = 0) -> KVCache:
        return KVCache(self.spec.n_layers, capacity)

    def moe_layers(self) -> list[MoELayer]:
        return [m for m in self.modules() if isinstance(m, MoELayer)]

    def set_dense_experts(self, dense: bool) -> None:
        """DS-MoE: run every expert on every token (dense) or only the routed top-k (sparse)."""
        for layer in self.moe_layers():
            layer.dense_experts = dense

    def router_losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(aux, z) summed over the MoE layers of the last forward (zeros for a dense model)."""
        layers = self.moe_layers()
        if not layers:
            zero = self.lm_head.weight.new_zeros(())
            return zero, zero
        return sum(m.aux_loss for m in layers), sum(m.z_loss for m in layers)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding: one prefill, then one token per step through the KV cache."""
        cache = self.new_cache(input_ids.shape[1] + max_new_tokens)
        logits = self(input_ids, cache)
        out = [input_ids]
        for _ in range(max_new_tokens):
            token = logits[:, -1:].argmax(-1)
            out.append(token)
            logits = self(token, cache)
        return torch.cat(out, dim=1)


def build_model(spec: ModelSpec, options: MoEOptions = MoEOptions()) -> TransformerLM:
    return TransformerLM(spec, options)
