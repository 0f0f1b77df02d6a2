"""Expert quantization: weight-only symmetric int8 / int4 quantization of a moelab run, dequantized on the fly.

The scheme (`SCHEME`, recorded in the run's meta "quantization"):
- int8: one scale per output channel (row), s = max|w_row| / 127, q = round(w / s) in [-127, 127].
- int4: one scale per group of G consecutive input elements along each row (`--group-size`, default 128),
  s = max|w_group| / 7, q = round(w / s) in [-7, 7] (symmetric: -8 is never used, so that +-amax are both
  exact); stored as the nibble q + 8, two per uint8 along the row, element 2i in the low nibble and 2i+1 in
  the high one.
- Scales are fp32. GPTQ/AWQ (and cost.dtypes' int4 figure) store fp16 scales; fp32 keeps the scale in the
  model's dtype under model.to() exactly as the float weights are (a run loads in float32, bench casts it to
  bf16), so the dequantized weight comes out in the compute dtype with no extra state. The cost: 4 / G bytes
  per weight instead of 2 / G (int4 at G = 128: 4.25 bits, not 4.125).
- Quantization runs in float64, so every dequantized element is within s/2 of the original (the rounding
  bound), plus the fp32 product q * s's own rounding (at most 2^-24 of |q * s|). An all-zero row or group
  gets s = 0 and dequantizes to exact zeros.

Stored beside the unquantized tensors in the run's model.safetensors (a quantized module's `qweight` int8 or
uint8 and `scale` fp32; biases stay float). What each component (moelab.cost.dtypes.COMPONENTS) covers:
- routed_experts: each MoE layer's stacked gate_up (E, 2F, D) and down (E, D, F), as QuantizedExperts, the
  seam's expert store (MoELayer.set_expert_store); gpt-oss's expert biases stay float inside it.
- shared_experts, dense_ffn: the gate/up/down nn.Linear of the shared experts and of the dense layers' FFNs;
  attention: every nn.Linear of the attention blocks (GQA, MLA, linear attention); as QuantizedLinear.
- embeddings: the token embedding, per row (= per vocabulary entry), and the lm_head, per output channel
  (= per vocabulary entry, the same rows). A tied lm_head is the same quantized table read as a linear layer
  (TiedHead: stored once, as the float model stores it once). Routers, norms, the shared-expert gate and
  convolutions are never quantized.

Why not a library: torchao 0.18 (checked on this machine's torch 2.13 CPU) quantizes nn.Linear only, through
tensor subclasses that safetensors cannot save ("invalid python storage"); its int4 weight-only config needs
the mslk kernels package, and it has no path for moelab's stacked expert weights behind the dispatch seam.
Dequantizing on the fly is a few lines of torch and runs anywhere; it saves memory, not time (no int kernels).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moelab.cost.dtypes import COMPONENTS, parse_components
from moelab.cost.memory import model_weight_bytes
from moelab.errors import MoelabError

ALLOWED = ("int8", "int4")
QMAX = {"int8": 127, "int4": 7}
DEFAULT_GROUP = 128
SCHEME = ("weight-only symmetric: int8 per output channel (q in [-127, 127]); int4 per group of group_size "
          "inputs along each row (q in [-7, 7], stored q+8, two per uint8, low nibble first); fp32 scales "
          "s = max|w| / qmax; w ~ q * s")
EPS32 = 2.0 ** -24  # fp32 unit roundoff: the dequantizing product's own rounding


# --- the arithmetic ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    """How one tensor (..., rows, cols) is quantized: int8 per row, or int4 per group of `group` columns."""

    dtype: str
    group: int

    def q_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        *lead, cols = shape
        return (*lead, cols // 2) if self.dtype == "int4" else tuple(shape)

    def scale_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        *lead, cols = shape
        return (*lead, cols // self.group) if self.dtype == "int4" else tuple(lead)

    def empty(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        qdtype = torch.uint8 if self.dtype == "int4" else torch.int8
        return torch.empty(self.q_shape(shape), dtype=qdtype), torch.empty(self.scale_shape(shape))

    def _grouped(self, w: torch.Tensor) -> torch.Tensor:
        """w (..., cols) viewed as (..., groups, group) (int4) or (..., 1, cols) (int8)."""
        *lead, cols = w.shape
        return w.reshape(*lead, cols // self.group, self.group) if self.dtype == "int4" else w.unsqueeze(-2)

    def quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, scale) of the float tensor w (..., rows, cols), in the layout `empty` allocates."""
        g = self._grouped(w.detach().to(torch.float64))
        amax = g.abs().amax(-1, keepdim=True)
        scale = (amax / QMAX[self.dtype]).to(torch.float32)  # stored in fp32: quantize with the stored value
        s = scale.to(torch.float64)
        q = torch.round(g / torch.where(s > 0, s, 1.0)).clamp(-QMAX[self.dtype], QMAX[self.dtype])
        q = q.reshape(w.shape).to(torch.int8)
        scale = scale.squeeze(-1) if self.dtype == "int4" else scale.squeeze(-1).squeeze(-1)
        return (pack_int4(q) if self.dtype == "int4" else q), scale

    def dequantize(self, q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """q * s as a float tensor (..., rows, cols), in `dtype` (default: the scale's, the model's)."""
        dtype = dtype or scale.dtype
        values = unpack_int4(q) if self.dtype == "int4" else q
        s = scale.to(dtype)
        if self.dtype == "int8":
            return values.to(dtype) * s[..., None]
        *lead, cols = values.shape
        return (values.to(dtype).view(*lead, cols // self.group, self.group) * s[..., None]).view(*lead, cols)

    def bound(self, scale: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """s / 2 for every element of the (..., rows, cols) tensor: the rounding bound."""
        half = scale.to(torch.float64) / 2
        if self.dtype == "int8":
            return half[..., None].expand(shape)
        return half[..., None].expand(*half.shape, self.group).reshape(shape)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int8 values in [-8, 7], (..., cols) with cols even -> uint8 (..., cols / 2): (q[2i] + 8) | (q[2i+1] + 8) << 4."""
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of pack_int4: uint8 (..., n) -> int8 (..., 2n)."""
    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack((low, high), dim=-1).flatten(-2)


# --- the modules ------------------------------------------------------------------------------------------


class QuantizedLinear(nn.Module):
    """nn.Linear with a quantized weight (out, in): y = x W^T + b, W dequantized on every call."""

    def __init__(self, in_features: int, out_features: int, fmt: Format, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.fmt = in_features, out_features, fmt
        q, scale = fmt.empty((out_features, in_features))
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight (out, in) in the model's dtype."""
        return self.fmt.dequantize(self.qweight, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.fmt.dequantize(self.qweight, self.scale, x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.fmt.dtype}"


class QuantizedEmbedding(nn.Module):
    """nn.Embedding with a quantized table (vocab, d): only the looked-up rows are dequantized."""

    def __init__(self, num_embeddings: int, embedding_dim: int, fmt: Format) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.fmt = num_embeddings, embedding_dim, fmt
        q, scale = fmt.empty((num_embeddings, embedding_dim))
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)

    @property
    def weight(self) -> torch.Tensor:
        return self.fmt.dequantize(self.qweight, self.scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fmt.dequantize(self.qweight[ids], self.scale[ids])


class TiedHead(nn.Module):
    """A tied lm_head over a QuantizedEmbedding: logits = x E^T (+ b); the table is the embedding's, held by
    reference (not a submodule: stored once, under embed_tokens.)."""

    def __init__(self, embedding: QuantizedEmbedding, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "embedding", embedding)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding
        return F.linear(x, e.fmt.dequantize(e.qweight, e.scale, x.dtype), self.bias)


class QuantizedExperts(nn.Module):
    """A MoE layer's routed experts, quantized: the dispatch seam's expert store (moelab.nn.dispatch.Experts).
    `one(e, x)` dequantizes expert e's gate_up (2F, D) and down (D, F) and computes as ExpertWeights.one does:
    down(act(gate_up(x) [+ b_gu])) [+ b_d]."""

    def __init__(self, n_experts: int, d: int, f: int, fmt: Format, activation: str = "silu",
                 biases: bool = False) -> None:
        super().__init__()
        self.fmt, self.activation = fmt, activation
        self.shape_gate_up, self.shape_down = (n_experts, 2 * f, d), (n_experts, d, f)
        for name, shape in (("gate_up", self.shape_gate_up), ("down", self.shape_down)):
            q, scale = fmt.empty(shape)
            self.register_buffer(f"{name}_q", q)
            self.register_buffer(f"{name}_scale", scale)
        self.register_buffer("gate_up_bias", torch.empty(n_experts, 2 * f) if biases else None)
        self.register_buffer("down_bias", torch.empty(n_experts, d) if biases else None)

    def gate_up(self, e: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.fmt.dequantize(self.gate_up_q[e], self.gate_up_scale[e], dtype)

    def down(self, e: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.fmt.dequantize(self.down_q[e], self.down_scale[e], dtype)

    def one(self, e: int, x_ND: torch.Tensor) -> torch.Tensor:
        from moelab.nn.layers import gated

        h = x_ND @ self.gate_up(e, x_ND.dtype).T
        if self.gate_up_bias is not None:
            h = h + self.gate_up_bias[e]
        gate, up = h.chunk(2, dim=-1)  # gate rows, then up rows (the stacked layout's)
        y = gated(gate, up, self.activation) @ self.down(e, x_ND.dtype).T
        return y + self.down_bias[e] if self.down_bias is not None else y


def buffer_bytes(model: nn.Module) -> int:
    """Bytes of the quantized modules' stored tensors (q, scales, kept expert biases): weights that are buffers,
    not parameters, so a count over model.parameters() misses them (a tied head's table is counted once)."""
    total = 0
    for m in model.modules():
        if isinstance(m, QuantizedLinear | QuantizedEmbedding | QuantizedExperts):
            total += sum(b.numel() * b.element_size() for b in m.buffers(recurse=False))
    return total


# --- which tensors a component names -----------------------------------------------------------------------


@dataclass
class Target:
    """One module (or MoE layer's experts) a component quantizes: where it is and the rows it splits."""

    component: str
    path: str  # module path in the model
    widths: tuple[int, ...]  # row widths (input elements) of its quantized tensors


def _linears(module: nn.Module, prefix: str) -> list[tuple[str, nn.Linear]]:
    return [(f"{prefix}.{name}", m) for name, m in module.named_modules()
            if isinstance(m, nn.Linear) and m.weight.numel()]


def targets(model: nn.Module, component: str) -> list[Target]:
    """The parts of `model` that `component` covers (see the module docstring); [] where it has none."""
    from moelab.nn.moe import MoELayer

    out: list[Target] = []
    if component == "embeddings":
        out.append(Target(component, "embed_tokens", (model.embed_tokens.embedding_dim,)))
        if not model.spec.tie_embeddings:
            out.append(Target(component, "lm_head", (model.lm_head.in_features,)))
        return out
    for i, layer in enumerate(model.layers):
        mlp = layer.mlp
        if component == "attention":
            out += [Target(component, p, (m.in_features,))
                    for p, m in _linears(layer.self_attn, f"layers.{i}.self_attn")]
        elif component == "routed_experts" and isinstance(mlp, MoELayer):
            out.append(Target(component, f"layers.{i}.mlp", (mlp.gate_up_proj.shape[2], mlp.down_proj.shape[2])))
        elif component == "shared_experts" and isinstance(mlp, MoELayer) and mlp.shared_experts is not None:
            out += [Target(component, p, (m.in_features,))
                    for p, m in _linears(mlp.shared_experts, f"layers.{i}.mlp.shared_experts")]
        elif component == "dense_ffn" and not isinstance(mlp, MoELayer):
            out += [Target(component, p, (m.in_features,)) for p, m in _linears(mlp, f"layers.{i}.mlp")]
    return out


def check_request(components: dict[str, str], group_size: int) -> None:
    """The dtypes and group size alone (no model yet)."""
    if not components:
        raise MoelabError("quantize needs --experts DTYPE or at least one --component NAME=DTYPE "
                          f"(dtypes: {', '.join(ALLOWED)})")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise MoelabError(f"--group-size must be a positive integer, got {group_size!r}")


def plan(model: nn.Module, components: dict[str, str], group_size: int, where: str = "RUN") -> list[Target]:
    """Every target of the named components, each checked: the component exists in this model, and an int4
    one's rows split into groups of `group_size` (and pack two per byte)."""
    out = []
    for component, dtype in components.items():
        found = targets(model, component)
        if not found:
            flag = "--experts" if component == "routed_experts" else f"--component {component}={dtype}"
            what = ("a dense model (no routed experts)" if component == "routed_experts"
                    else f"a model with no {component}")
            raise MoelabError(f"{flag}: {where} is {what}; nothing to quantize")
        if dtype == "int4":
            for t in found:
                for width in t.widths:
                    if width % group_size or width % 2:
                        raise MoelabError(
                            f"--group-size {group_size} does not divide the rows of {component} ({t.path}: "
                            f"{width} inputs per row); int4 needs a group size that divides every row width "
                            f"(common divisors: {_divisors(found)})")
        out += found
    return out


def _divisors(found: list[Target]) -> str:
    g = 0
    for t in found:
        for w in t.widths:
            g = math.gcd(g, w)
    return ", ".join(str(d) for d in range(1, g + 1) if g % d == 0 and d > 1) or "none"


# --- quantizing a float model, and the empty layout a quantized run loads into ------------------------------


def _parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent, _, name = path.rpartition(".")
    return (model.get_submodule(parent) if parent else model), name


def _install(model: nn.Module, target: Target, fmt: Format, fill: bool) -> list[tuple[torch.Tensor, ...]]:
    """Replace the target's float module(s) with their quantized form (filled from the float weights when
    `fill`, else empty for a strict load). Returns (original, q, scale) per quantized tensor when filled."""
    done = []
    old = model.get_submodule(target.path)

    def quantized(w: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> None:
        if fill:
            q_new, s_new = fmt.quantize(w)
            q.copy_(q_new)
            scale.copy_(s_new)
            done.append((w.detach(), q, scale))

    with torch.no_grad():
        if target.component == "routed_experts":
            e, f2, d = old.gate_up_proj.shape
            store = QuantizedExperts(e, d, f2 // 2, fmt, old.activation, biases=old.gate_up_proj_bias is not None)
            quantized(old.gate_up_proj, store.gate_up_q, store.gate_up_scale)
            quantized(old.down_proj, store.down_q, store.down_scale)
            if store.gate_up_bias is not None:
                store.gate_up_bias.copy_(old.gate_up_proj_bias)
                store.down_bias.copy_(old.down_proj_bias)
            old.set_expert_store(store.to(old.gate.weight.device))
            return done
        parent, name = _parent(model, target.path)
        if isinstance(old, nn.Embedding):
            new = QuantizedEmbedding(old.num_embeddings, old.embedding_dim, fmt)
        else:
            new = QuantizedLinear(old.in_features, old.out_features, fmt, old.bias)
        quantized(old.weight, new.qweight, new.scale)
        setattr(parent, name, new.to(old.weight.device))
        if isinstance(new, QuantizedEmbedding) and model.spec.tie_embeddings:
            model.lm_head = TiedHead(new, model.lm_head.bias)
    return done


def _format(meta: dict[str, Any], component: str) -> Format:
    return Format(meta["components"][component], int(meta.get("group_size") or DEFAULT_GROUP))


def apply_layout(model: nn.Module, quantization: dict[str, Any]) -> nn.Module:
    """Turn a freshly built float model into the quantized structure `quantization` (a run's meta
    "quantization") describes, with empty tensors, so that a strict safetensors load fills it."""
    components = quantization.get("components") if isinstance(quantization, dict) else None
    if not isinstance(components, dict) or any(c not in COMPONENTS or d not in ALLOWED for c, d in components.items()):
        raise MoelabError(f"meta.json quantization {quantization!r}: not a moelab quantization layout")
    for component in components:
        for t in targets(model, component):
            _install(model, t, _format(quantization, component), fill=False)
    return model


def quantize_model(model: nn.Module, quantization: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Quantize `model` in place as `quantization` says; per component, the largest |dequantized - original|,
    the largest rounding bound s/2, and the worst ratio of the two (at most 1, up to fp32's product rounding)."""
    errors = {}
    for component in quantization["components"]:
        fmt = _format(quantization, component)
        worst = {"max_abs_error": 0.0, "max_bound": 0.0, "worst_ratio": 0.0}
        for t in targets(model, component):
            for w, q, scale in _install(model, t, fmt, fill=True):
                err = (fmt.dequantize(q, scale, torch.float64) - w.to(torch.float64)).abs()
                bound = fmt.bound(scale, tuple(w.shape))
                ratio = torch.where(bound > 0, err / bound.clamp_min(1e-300), err * math.inf)
                worst["max_abs_error"] = max(worst["max_abs_error"], float(err.max()))
                worst["max_bound"] = max(worst["max_bound"], float(bound.max()))
                worst["worst_ratio"] = max(worst["worst_ratio"], float(ratio.nan_to_num(0.0).max()))
        errors[component] = worst
    return errors


def float_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The float model's state dict (build_model(spec)'s keys) of a quantized model: every quantized tensor
    dequantized, the rest as they are (what export writes: serving engines cannot read moelab's format)."""
    out: dict[str, torch.Tensor] = {}
    quantized = {}
    for path, m in model.named_modules():
        if isinstance(m, QuantizedExperts):
            parent = path.rpartition(".")[0]
            quantized[path] = {f"{parent}.gate_up_proj": m.fmt.dequantize(m.gate_up_q, m.gate_up_scale),
                               f"{parent}.down_proj": m.fmt.dequantize(m.down_q, m.down_scale)}
            if m.gate_up_bias is not None:
                quantized[path] |= {f"{parent}.gate_up_proj_bias": m.gate_up_bias,
                                    f"{parent}.down_proj_bias": m.down_bias}
        elif isinstance(m, QuantizedLinear | QuantizedEmbedding):
            quantized[path] = {f"{path}.weight": m.weight}
            if isinstance(m, QuantizedLinear) and m.bias is not None:
                quantized[path][f"{path}.bias"] = m.bias
        elif isinstance(m, TiedHead):
            quantized[path] = {f"{path}.weight": m.weight} | ({f"{path}.bias": m.bias} if m.bias is not None else {})
    for key, value in model.state_dict().items():
        owner = next((p for p in quantized if key.startswith(p + ".")), None)
        if owner is None:
            out[key] = value
    for tensors in quantized.values():
        out |= {k: v.detach() for k, v in tensors.items()}
    return out


def to_float(model: nn.Module, spec) -> nn.Module:
    """A float model (build_model(spec)) holding the quantized model's dequantized weights, in eval mode."""
    from moelab.nn.model import build_model

    plain = build_model(spec)
    state = float_state_dict(model)
    if spec.tie_embeddings:
        state.pop("lm_head.weight", None)
        state["lm_head.weight"] = state["embed_tokens.weight"]
    plain.load_state_dict(state, strict=True)
    return plain.eval()


# --- the transform -----------------------------------------------------------------------------------------


def _component_of(path: str, model: nn.Module) -> str:
    """The component a state-dict key's module belongs to ('other': norms, routers, gates, convolutions)."""
    from moelab.nn.moe import MoELayer

    module_path, _, name = path.rpartition(".")
    if module_path in ("embed_tokens", "lm_head"):
        return "embeddings"
    module = model.get_submodule(module_path) if module_path else model
    linear = isinstance(module, nn.Linear | QuantizedLinear)
    if isinstance(module, QuantizedExperts) or (isinstance(module, MoELayer) and name in (
            "gate_up_proj", "down_proj", "gate_up_proj_bias", "down_proj_bias")):
        return "routed_experts"
    if linear and ".shared_experts." in path:
        return "shared_experts"
    if linear and ".self_attn." in path:
        return "attention"
    if linear and ".mlp." in path and not isinstance(model.get_submodule(path.split(".mlp.")[0] + ".mlp"), MoELayer):
        return "dense_ffn"
    return "other"


def component_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the model's state dict (what its safetensors file holds; tied tensors once) by component, and
    their "total"."""
    from moelab.bench.measure import stored_tensors

    out = dict.fromkeys((*COMPONENTS, "other"), 0)
    for key, t in stored_tensors(model):
        out[_component_of(key, model)] += t.numel() * t.element_size()
    out["total"] = sum(out.values())
    return out


def _name(spec, components: dict[str, str]) -> str:
    parts = [f"{c.replace('_', '-')}-{d}" for c, d in components.items()]
    return f"{spec.name}-{'-'.join(parts)}"


def quantize(run: str | Path, out: str | Path, experts: str | None = None, component: list[str] | None = None,
             group_size: int = DEFAULT_GROUP, eval_tokens: int | None = None) -> dict[str, Any]:
    """Quantize the run's weights (`experts`: routed experts' dtype; `component`: NAME=DTYPE texts) and write
    the result as the run folder `out`; returns its summary. Every refusal comes before anything is written."""
    from moelab.mitigate import quality
    from moelab.mitigate.runs import check_out, lineage_entry, read_run, write_run

    components = parse_components(component or (), experts, allowed=ALLOWED, expert_flag="--experts")
    check_request(components, group_size)
    if eval_tokens is not None and (isinstance(eval_tokens, bool) or not isinstance(eval_tokens, int)
                                    or eval_tokens < 1):
        raise MoelabError(f"--eval-tokens must be a positive integer, got {eval_tokens!r}")
    source = read_run(run)
    if source.quantization:
        raise MoelabError(f"RUN {run}: is already quantized ({source.quantized}); quantize the float run it came from")
    eval_tokens = quality.eval_tokens(source, eval_tokens)  # the run's own by default (its config checked)
    check_out(out, source.folder)
    model = source.load_model()
    plan(model, components, group_size, f"RUN {run}")
    meta = {"components": dict(components), "group_size": group_size, "scheme": SCHEME}

    corpus = quality.run_corpus(source)
    length = quality.seq_len(source)
    before = component_bytes(model)
    loss_before = quality.domain_loss(model, corpus, length, eval_tokens)
    errors = quantize_model(model, meta)
    after = component_bytes(model)
    loss_after = quality.domain_loss(model, corpus, length, eval_tokens)
    delta = quality.loss_delta(loss_before, loss_after)
    rare = quality.rare_domains(corpus)
    spec = replace(source.spec, name=_name(source.spec, components))
    # the engine's figure for the same components (cost.dtypes: int8 without scales, int4 with fp16 scales)
    predicted = model_weight_bytes(source.spec, "fp32", components).total
    summary = {
        "components": dict(components), "group_size": group_size, "scheme": SCHEME,
        "weight_bytes": {"before": before, "after": after, "ratio": before["total"] / after["total"],
                         "file_before": os.path.getsize(source.folder / "model.safetensors"),
                         "predicted_before": model_weight_bytes(source.spec, "fp32").total,
                         "predicted_after": predicted, "after_rel_error": (after["total"] - predicted) / predicted},
        "error": errors,
        "eval_tokens": eval_tokens,
        "loss": {"before": loss_before, "after": loss_after, "delta": delta, "rare_domains": rare,
                 "rare_delta": {d: v for d, v in delta.items() if d in rare},
                 "common_delta": {d: v for d, v in delta.items() if d not in rare and d != "mean"}},
    }
    entry = lineage_entry("quantize", source, components=dict(components), group_size=group_size)
    final = write_run(out, model, spec, source, entry, summary=summary, quantization=meta)
    # the written file's size, known only now: added to DIR/summary.json (meta.json's summary lacks it)
    from moelab.data.cache import atomic_write_json

    summary["weight_bytes"]["file_after"] = os.path.getsize(final / "model.safetensors")
    written = json.loads((final.parent / "summary.json").read_text())
    written["weight_bytes"] = summary["weight_bytes"]
    atomic_write_json(final.parent / "summary.json", written)
    return {"folder": str(final.parent), "model": spec.name, "from_model": source.spec.name, **summary}
