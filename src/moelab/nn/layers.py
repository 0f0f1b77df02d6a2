"""Building blocks: RMSNorm, the SwiGLU FFN, and rotary position embeddings (every rope_scaling type
transformers builds for moelab's families: plain, linear, dynamic NTK, YaRN, LongRoPE, Llama 3; partial rotary)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from moelab.errors import MoelabError

# Every rope_scaling type that transformers 5.24 builds for the families moelab reads (modeling_rope_utils.py,
# ROPE_INIT_FUNCTIONS); "proportional" (Gemma) and any other type are refused by name.
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")
_NEEDS_ORIGINAL = ("yarn", "longrope", "llama3")  # transformers falls back to max_position_embeddings for these


def rotary_dim_of(head_dim: int, partial_rotary_factor: float = 1.0) -> int:
    """Rotated dims per head, int(head_dim * partial_rotary_factor) as every transformers rope function computes
    it (GLM-4.5: 128 * 0.5 = 64; Phi-4-mini: 128 * 0.75 = 96); refused unless positive, even and <= head_dim."""
    f = partial_rotary_factor
    if isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f <= 1:
        raise MoelabError(f"partial_rotary_factor must be a number in (0, 1], got {f!r}")
    dim = int(head_dim * f)
    if dim <= 0 or dim % 2:
        raise MoelabError(f"partial_rotary_factor {f} gives {dim} rotary dims of head_dim {head_dim}; "
                          "moelab.nn needs a positive even number")
    return dim


def _is_number(v: object) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def _is_count(v: object) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and v > 0


def check_rope_buildable(scaling: dict | tuple | None, max_position: int | None = None, where: str = "",
                         rotary_dim: int | None = None) -> None:
    """Refuse, in one line naming the field, a rope_scaling that Rotary cannot build (the cost engine takes any:
    rope scaling does not change what a step costs). `scaling`: the spec's sorted items or a dict; `max_position`:
    max_position_embeddings; `rotary_dim`: the rotated dims per head when known (longrope's short_factor and
    long_factor need rotary_dim / 2 entries each); `where` prefixes. As in transformers' standardize_rope_params,
    original_max_position_embeddings falls back to max_position for yarn, longrope and llama3."""
    scaling = dict(scaling or ())
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    prefix = f"{where}: " if where else ""
    if kind not in ROPE_TYPES:
        raise MoelabError(f"{prefix}rope_scaling type {kind!r} is not implemented in moelab.nn (the engine still "
                          f"estimates it; moelab.nn builds {', '.join(ROPE_TYPES)})")
    if kind == "default":
        return
    needs = f"{prefix}rope_scaling type {kind!r} needs"

    def positive(key: str) -> None:
        value = scaling.get(key)
        if not _is_number(value) or value <= 0:
            raise MoelabError(f"{needs} rope_scaling.{key} to be a positive number, got {value!r}")

    if max_position is not None and not _is_count(max_position):
        raise MoelabError(f"{prefix}max_position_embeddings must be a positive integer, got {max_position!r}")
    if kind == "yarn":  # the wording the spec and nn tests already match
        factor = scaling.get("factor")
        if not _is_number(factor) or factor <= 0:
            raise MoelabError(f"{needs} a positive factor, got {factor!r}")
    elif kind != "longrope" or scaling.get("factor") is not None:  # longrope alone may omit it
        positive("factor")
    if kind == "dynamic" and max_position is None:
        raise MoelabError(f"{needs} max_position_embeddings (the length beyond which it rescales)")
    if kind in _NEEDS_ORIGINAL:
        original = scaling.get("original_max_position_embeddings")
        if original is None and max_position is None:
            raise MoelabError(f"{needs} original_max_position_embeddings or max_position_embeddings")
        if original is not None and not _is_count(original):
            raise MoelabError(f"{needs} rope_scaling.original_max_position_embeddings to be a positive integer, "
                              f"got {original!r}")
    for key in ("attention_factor", "mscale", "mscale_all_dim", "beta_fast", "beta_slow"):
        if scaling.get(key) is not None and not _is_number(scaling[key]):
            raise MoelabError(f"{needs} rope_scaling.{key} to be a number, got {scaling[key]!r}")
    if kind == "llama3":
        positive("low_freq_factor")
        positive("high_freq_factor")
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        # equal factors (Llama 4 Scout: 1.0 and 1.0) leave no band to smooth; transformers builds them with a warning
        if high < low:
            raise MoelabError(f"{needs} rope_scaling.high_freq_factor ({high}) not below low_freq_factor ({low})")
    if kind == "longrope":
        if scaling.get("factor") is None and max_position is None:  # the attention factor needs one of them
            raise MoelabError(f"{needs} rope_scaling.factor or max_position_embeddings")
        for key in ("short_factor", "long_factor"):
            value = scaling.get(key)
            if not isinstance(value, list | tuple):
                raise MoelabError(f"{needs} rope_scaling.{key} as a list of positive numbers, got {value!r}")
            bad = [v for v in value if not _is_number(v) or v <= 0]
            if bad or not value:
                raise MoelabError(f"{needs} rope_scaling.{key} as a list of positive numbers, "
                                  f"got {'an empty list' if not value else f'the entry {bad[0]!r}'}")
            if rotary_dim is not None and len(value) != rotary_dim // 2:
                raise MoelabError(f"{needs} rope_scaling.{key} with rotary_dim / 2 = {rotary_dim // 2} entries, "
                                  f"got {len(value)}")


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 like the reference implementations."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class OffsetRMSNorm(nn.Module):
    """Gemma's and Qwen3-Next's RMSNorm: x / rms(x) * (1 + weight), all in float32, weight starting at 0."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1.0 + self.weight.float())).to(x.dtype)


def build_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """A norm of the spec's kind (moelab.spec.model.NORMS) over `dim` features."""
    if kind == "rms":
        return RMSNorm(dim, eps)
    if kind == "rms_offset":
        return OffsetRMSNorm(dim, eps)
    return nn.LayerNorm(dim, eps=eps, bias=kind == "layer")


def l2_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama 4's weightless q/k norm: x / rms(x) over the head dimension, in float32."""
    y = x.float()
    return (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


# gpt-oss's gated unit: gate clamped above at 7, up clamped to [-7, 7], glu = gate * sigmoid(1.702 * gate),
# out = (up + 1) * glu. Source: transformers models/gpt_oss/modeling_gpt_oss.py (GptOssExperts).
CLAMP_LIMIT, CLAMP_ALPHA = 7.0, 1.702


def gated(gate: torch.Tensor, up: torch.Tensor, activation: str) -> torch.Tensor:
    """The gated FFN's elementwise part act(gate) * up, for each of moelab.spec.model.ACTIVATIONS."""
    if activation == "silu":
        return F.silu(gate) * up
    if activation == "gelu_tanh":
        return F.gelu(gate, approximate="tanh") * up
    if activation == "gelu":
        return F.gelu(gate) * up
    if activation == "clamped_swiglu":
        gate, up = gate.clamp(max=CLAMP_LIMIT), up.clamp(-CLAMP_LIMIT, CLAMP_LIMIT)
        return (up + 1) * (gate * torch.sigmoid(gate * CLAMP_ALPHA))
    raise ValueError(f"unknown activation {activation!r}")


class SwiGLU(nn.Module):
    """down(act(gate(x)) * up(x)): d -> f -> d (SwiGLU under silu, GeGLU under gelu)."""

    def __init__(self, d: int, f: int, bias: bool = False, activation: str = "silu") -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d, f, bias=bias)
        self.up_proj = nn.Linear(d, f, bias=bias)
        self.down_proj = nn.Linear(f, d, bias=bias)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(gated(self.gate_proj(x), self.up_proj(x), self.activation))


def _default_inv_freq(dim: int, base: float) -> torch.Tensor:
    return 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)


def _llama3(dim: int, base: float, scaling: dict, original: int) -> torch.Tensor:
    """Llama 3.1's inverse frequencies (transformers' _compute_llama3_parameters, same float32 steps): wavelengths
    below original / high_freq_factor kept, above original / low_freq_factor divided by factor, smoothed between."""
    inv_freq = _default_inv_freq(dim, base)
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    low_wavelen, high_wavelen = original / low, original / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def _dynamic(dim: int, base: float, factor: float, max_position: int, seq_len: int | None) -> torch.Tensor:
    """Dynamic NTK inverse frequencies for a sequence of seq_len (transformers' _compute_dynamic_ntk_parameters:
    the base grows as (factor * seq_len / max_position - (factor - 1)) ** (dim / (dim - 2)); None or a length
    within max_position gives plain RoPE). A given seq_len takes transformers' int64-tensor path, the one its
    rotary layer takes when it updates in the forward pass, so the float32 steps are the same."""
    if seq_len is None:
        seq_len = max_position
    else:
        seq_len = torch.maximum(torch.tensor(seq_len), torch.tensor(max_position))  # both int64
    base = base * ((factor * seq_len / max_position) - (factor - 1)) ** (dim / (dim - 2))
    return _default_inv_freq(dim, base)


def _longrope(dim: int, base: float, factors) -> torch.Tensor:
    """LongRoPE's inverse frequencies with one rescale per frequency (transformers' _compute_longrope_parameters)."""
    ext = torch.tensor([float(f) for f in factors], dtype=torch.float32)
    return 1.0 / (ext * base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))


def _longrope_attention_factor(scaling: dict, original: int, max_position: int | None) -> float:
    """attention_factor, else sqrt(1 + ln(factor) / ln(original)) with factor defaulting to max / original (Phi-3)."""
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    factor = scaling.get("factor")
    if factor is None:
        factor = max_position / original
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))


def _yarn(dim: int, base: float, scaling: dict, max_position: int | None) -> tuple[torch.Tensor, float]:
    """YaRN inverse frequencies and the cos/sin attention factor (as transformers computes them)."""
    factor = scaling["factor"]
    original = scaling.get("original_max_position_embeddings") or max_position

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
        attention_factor = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(scaling.get("beta_fast") or 32), correction_dim(scaling.get("beta_slow") or 1)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extrapolation = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attention_factor)


def yarn_softmax_scale(scaling: dict) -> float:
    """DeepSeek's extra softmax factor mscale(factor, mscale_all_dim)^2 under YaRN (1 otherwise)."""
    m_all = scaling.get("mscale_all_dim", 0)
    if scaling.get("rope_type") != "yarn" or not m_all or scaling["factor"] <= 1:
        return 1.0
    m = 0.1 * m_all * math.log(scaling["factor"]) + 1.0
    return m * m


class Rotary(nn.Module):
    """cos/sin tables for positions and the rotation; rotate-half convention, optional interleaved pairs
    (DeepSeek-V3), optional partial rotary (only x[..., :rotary_dim] rotated, the rest passed through, as
    transformers' glm4_moe and phi3 apply_rotary_pos_emb do). `dim` is the head's rope dims (head_dim, or MLA's
    qk_rope_head_dim); `rotary_dim` defaults to it (see rotary_dim_of). Every rope_scaling type in ROPE_TYPES is
    built as transformers 5.24's modeling_rope_utils.py builds it, attention factor included.

    Two types depend on the length, decided in tables() from seq_len = max(positions) + 1, which with a KV cache
    is the cached length plus the new tokens, exactly as transformers' dynamic_rope_update decides:
    - longrope: long_factor when seq_len > original_max_position_embeddings, short_factor otherwise; no state.
    - dynamic: stateful like transformers' rotary layer. When seq_len exceeds the longest length seen so far
      (initially max_position), the frequencies are recomputed for seq_len and that length is remembered; when
      seq_len drops below max_position after having grown past it, plain RoPE returns and the memory resets.
      Keys already in a cache keep the rotation they were given (transformers does the same)."""

    def __init__(self, dim: int, base: float, scaling: dict | None = None, max_position: int | None = None,
                 interleave: bool = False, rotary_dim: int | None = None) -> None:
        super().__init__()
        rotary_dim = dim if rotary_dim is None else rotary_dim
        if not _is_count(rotary_dim) or rotary_dim % 2 or rotary_dim > dim:
            raise MoelabError(f"rotary_dim must be a positive even number <= {dim}, got {rotary_dim!r}")
        scaling = dict(scaling or ())
        check_rope_buildable(scaling, max_position, rotary_dim=rotary_dim)
        self.kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
        self.dim, self.rotary_dim, self.interleave = dim, rotary_dim, interleave
        self.base, self.max_position = base, max_position
        self.attention_factor = 1.0
        original = scaling.get("original_max_position_embeddings") or max_position
        if self.kind == "yarn":
            inv_freq, self.attention_factor = _yarn(rotary_dim, base, scaling, max_position)
        elif self.kind == "linear":
            inv_freq = _default_inv_freq(rotary_dim, base) / scaling["factor"]
        elif self.kind == "llama3":
            inv_freq = _llama3(rotary_dim, base, scaling, original)
        elif self.kind == "dynamic":
            self.factor = scaling["factor"]
            inv_freq = _dynamic(rotary_dim, base, self.factor, max_position, None)
            self.longest = max_position  # transformers' max_seq_len_cached
            self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)
        elif self.kind == "longrope":
            inv_freq = _longrope(rotary_dim, base, scaling["short_factor"])
            self.original = original
            self.attention_factor = _longrope_attention_factor(scaling, original, max_position)
            self.register_buffer("long_inv_freq", _longrope(rotary_dim, base, scaling["long_factor"]),
                                 persistent=False)
        else:
            inv_freq = _default_inv_freq(rotary_dim, base)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _update_dynamic(self, seq_len: int) -> None:
        """transformers' dynamic_frequency_update: grow past the longest length seen, reset below max_position."""
        longest = self.longest
        if seq_len > longest:
            self.inv_freq = _dynamic(self.rotary_dim, self.base, self.factor, self.max_position, seq_len).to(
                self.inv_freq.device)
            self.longest = seq_len
        if seq_len < self.max_position and longest > self.max_position:
            self.inv_freq = self.original_inv_freq.clone()
            self.longest = self.max_position

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (seq, rotary_dim) for integer `positions` of shape (seq,)."""
        inv_freq = self.inv_freq
        if positions.numel() and self.kind == "dynamic":
            self._update_dynamic(int(positions.max()) + 1)
            inv_freq = self.inv_freq
        elif positions.numel() and self.kind == "longrope":  # a tensor test, like transformers: no host sync
            inv_freq = torch.where(positions.max() + 1 > self.original, self.long_inv_freq, self.inv_freq)
        freqs = positions.float()[:, None] * inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        return (emb.cos() * self.attention_factor).to(dtype), (emb.sin() * self.attention_factor).to(dtype)

    def rotate(self, x_BHTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate the first rotary_dim dims of each head (all of them unless partial); the rest pass through."""
        if self.rotary_dim < x_BHTD.shape[-1]:
            x_rot, x_pass = x_BHTD[..., :self.rotary_dim], x_BHTD[..., self.rotary_dim:]
            return torch.cat([self._rotate(x_rot, cos, sin), x_pass], dim=-1)
        return self._rotate(x_BHTD, cos, sin)

    def _rotate(self, x_BHTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.interleave:  # (x0, x1, x2, x3, ...) -> (x0, x2, ..., x1, x3, ...)
            *lead, d = x_BHTD.shape
            x_BHTD = x_BHTD.view(*lead, d // 2, 2).transpose(-1, -2).reshape(*lead, d)
        half = x_BHTD.shape[-1] // 2
        rotated = torch.cat([-x_BHTD[..., half:], x_BHTD[..., :half]], dim=-1)
        return x_BHTD * cos + rotated * sin
