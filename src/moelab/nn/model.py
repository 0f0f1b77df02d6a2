"""A decoder-only transformer LM built from a ModelSpec, with a KV cache for incremental decoding."""

from __future__ import annotations

import torch
from torch import nn

from moelab.errors import MoelabError
from moelab.nn import linear_attention  # noqa: F401  (registers the "linear" attention kind)
from moelab.nn.attention import KVCache, build_attention
from moelab.nn.layers import Rotary, SwiGLU, build_norm, check_rope_buildable, rotary_dim_of
from moelab.nn.moe import MoELayer, MoEOptions
from moelab.spec.model import ModelSpec


class DecoderLayer(nn.Module):
    """One block, its norms placed as the spec says: "pre" x + attn(norm(x)), then + ffn(norm(.)); "post"
    (OLMo 2) x + norm(attn(x)), then + norm(ffn(.)); "sandwich" (Gemma 2/3) x + norm(attn(norm(x))), then
    + norm(ffn(norm(.))). Sublayer outputs are scaled by residual_scale (Granite). The FFN is dense or MoE."""

    def __init__(self, spec: ModelSpec, index: int, options: MoEOptions) -> None:
        super().__init__()
        d, layer = spec.d_model, spec.layers[index]
        norm = lambda: build_norm(spec.norm, d, spec.norm_eps)  # noqa: E731
        self.placement, self.residual_scale = spec.norm_placement, spec.residual_scale
        if spec.norm_placement != "post":
            self.input_layernorm = norm()
        self.self_attn = build_attention(spec, index)
        self.post_attention_layernorm = norm()
        if spec.norm_placement == "sandwich":
            self.pre_feedforward_layernorm = norm()
        if spec.norm_placement != "pre":
            self.post_feedforward_layernorm = norm()
        if layer.moe is not None:
            self.mlp = MoELayer(d, layer.moe, options, spec.mlp_bias, spec.activation)
        else:
            self.mlp = SwiGLU(d, layer.ffn.width, spec.mlp_bias, spec.activation)

    def _scaled(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.residual_scale if self.residual_scale != 1.0 else y

    def forward(self, x_BTD, rotary, cos, sin, cache):
        if self.placement == "pre":
            h = x_BTD + self._scaled(self.self_attn(self.input_layernorm(x_BTD), rotary, cos, sin, cache))
            return h + self._scaled(self.mlp(self.post_attention_layernorm(h)))
        if self.placement == "post":
            h = x_BTD + self._scaled(self.post_attention_layernorm(self.self_attn(x_BTD, rotary, cos, sin, cache)))
            return h + self._scaled(self.post_feedforward_layernorm(self.mlp(h)))
        attn = self.self_attn(self.input_layernorm(x_BTD), rotary, cos, sin, cache)
        h = x_BTD + self._scaled(self.post_attention_layernorm(attn))
        return h + self._scaled(self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h))))


def check_buildable(spec: ModelSpec, where: str = "") -> None:
    """One line if moelab.nn cannot build `spec`: a switch its config reader flagged (spec.unbuilt), or a
    layer's rope it cannot build; the engine still prices such a spec."""
    prefix = f"{where or spec.name}: "
    if spec.unbuilt:
        raise MoelabError(f"{prefix}{'; '.join(spec.unbuilt)} (moelab.nn does not build it; the engine still "
                          "estimates it)")
    for layer, _ in spec.layer_groups:
        a = layer.attention
        if a.rope and a.kind != "linear":
            dim = a.qk_rope_head_dim if a.kind == "mla" else a.head_dim
            check_rope_buildable(spec.layer_rope(a)[1], spec.max_position, where=where or spec.name,
                                 rotary_dim=rotary_dim_of(dim, a.rotary_fraction))


def _rotary_key(spec: ModelSpec, index: int) -> tuple | None:
    """What decides a layer's rotary tables (rotated dims, base, scaling), or None for a layer without RoPE."""
    a = spec.layers[index].attention
    if not a.rope or a.kind == "linear":
        return None
    dim = a.qk_rope_head_dim if a.kind == "mla" else a.head_dim
    theta, scaling = spec.layer_rope(a)
    return dim, rotary_dim_of(dim, a.rotary_fraction), theta, scaling


class TransformerLM(nn.Module):
    """forward(input_ids (B, T)) -> logits (B, T, vocab)."""

    def __init__(self, spec: ModelSpec, options: MoEOptions = MoEOptions()) -> None:
        super().__init__()
        check_buildable(spec)
        self.spec, self.options = spec, options
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.d_model)
        self.layers = nn.ModuleList(DecoderLayer(spec, i, options) for i in range(spec.n_layers))
        self.norm = build_norm(spec.norm, spec.d_model, spec.norm_eps)
        self.lm_head = nn.Linear(spec.d_model, spec.vocab_size, bias=spec.lm_head_bias)
        # One rotary table per distinct (dims, base, scaling); each layer names its own (None: no RoPE).
        keys = [_rotary_key(spec, i) for i in range(spec.n_layers)]
        distinct = list(dict.fromkeys(k for k in keys if k is not None))
        self.rotaries = nn.ModuleList(
            Rotary(dim, theta, dict(scaling) or None, spec.max_position, spec.rope_interleave, rotary_dim=rot)
            for dim, rot, theta, scaling in distinct)
        self.layer_rotary = [None if k is None else distinct.index(k) for k in keys]
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
        return self.head(self.hidden(input_ids, cache))

    def hidden(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The last layer's output (B, T, d), before the final norm."""
        spec = self.spec
        start = cache.length if cache is not None else 0
        x = self.embed_tokens(input_ids)
        if spec.embedding_scale != 1.0:  # Gemma: sqrt(d) in the activations' dtype, as transformers rounds it
            x = x * torch.tensor(spec.embedding_scale, dtype=x.dtype)
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        tables = [rotary.tables(positions, x.dtype) for rotary in self.rotaries]
        for layer, which in zip(self.layers, self.layer_rotary, strict=True):
            rotary, (cos, sin) = (None, (None, None)) if which is None else (self.rotaries[which], tables[which])
            x = layer(x, rotary, cos, sin, cache)
        return x

    def head(self, x_BTD: torch.Tensor) -> torch.Tensor:
        """Logits of hidden states: final norm, lm_head, Granite's scaling and Gemma 2's soft cap."""
        spec = self.spec
        logits = self.lm_head(self.norm(x_BTD))
        if spec.logits_scale != 1.0:
            logits = logits / spec.logits_scale
        if spec.logits_softcap:
            logits = torch.tanh(logits / spec.logits_softcap) * spec.logits_softcap
        return logits

    def new_cache(self, capacity: int = 0) -> KVCache:
        return KVCache(self.spec.n_layers, capacity)

    def moe_layers(self) -> list[MoELayer]:
        return [m for m in self.modules() if isinstance(m, MoELayer)]

    def set_dense_experts(self, dense: bool) -> None:
        """DS-MoE: run every expert on every token (dense) or only the routed top-k (sparse)."""
        for layer in self.moe_layers():
            layer.dense_experts = dense

    def apply_ep(self, group, stats_group=None) -> None:
        """Expert parallelism over `group`: every MoE layer keeps its share of the experts (MoELayer.apply_ep);
        router statistics are summed over `stats_group` (default: every process)."""
        for layer in self.moe_layers():
            layer.apply_ep(group, stats_group)

    def share_statistics(self, group) -> None:
        """Data parallelism: every MoE layer sums its router counts over `group` in training forwards."""
        for layer in self.moe_layers():
            layer.share_statistics(group)

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
