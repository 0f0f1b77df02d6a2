"""Building blocks: RMSNorm, the SwiGLU FFN, and rotary position embeddings (plain and YaRN)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from moelab.errors import MoelabError

ROPE_TYPES = ("default", "yarn")  # the rope_scaling types Rotary builds; others are the families issue's to add


def check_rope_buildable(scaling: dict | tuple | None, max_position: int | None = None, where: str = "") -> None:
    """Refuse, in one line, a rope_scaling that Rotary cannot build (the cost engine takes any: rope scaling
    does not change what a step costs). `scaling`: the spec's sorted items or a dict; `where` prefixes."""
    scaling = dict(scaling or ())
    kind = scaling.get("rope_type", "default") if scaling else "default"
    prefix = f"{where}: " if where else ""
    if kind not in ROPE_TYPES:
        raise MoelabError(f"{prefix}rope_scaling type {kind!r} is not implemented in moelab.nn (the engine still "
                          f"estimates it; moelab.nn builds {' and '.join(ROPE_TYPES)})")
    if kind == "yarn":
        factor = scaling.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not 0 < factor < math.inf:
            raise MoelabError(f"{prefix}rope_scaling type 'yarn' needs a positive factor, got {factor!r}")
        if not (scaling.get("original_max_position_embeddings") or max_position):
            raise MoelabError(f"{prefix}rope_scaling type 'yarn' needs original_max_position_embeddings "
                              "or max_position_embeddings")


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


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): d -> f -> d."""

    def __init__(self, d: int, f: int, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d, f, bias=bias)
        self.up_proj = nn.Linear(d, f, bias=bias)
        self.down_proj = nn.Linear(f, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


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
    """cos/sin tables for positions; rotate-half convention, optional interleaved pairs (DeepSeek-V3)."""

    def __init__(self, dim: int, base: float, scaling: dict | None = None, max_position: int | None = None,
                 interleave: bool = False) -> None:
        super().__init__()
        check_rope_buildable(scaling, max_position)
        if scaling and scaling.get("rope_type") == "yarn":
            inv_freq, self.attention_factor = _yarn(dim, base, scaling, max_position)
        else:
            inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
            self.attention_factor = 1.0
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.interleave = interleave

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (seq, dim) for integer `positions` of shape (seq,)."""
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        return (emb.cos() * self.attention_factor).to(dtype), (emb.sin() * self.attention_factor).to(dtype)

    def rotate(self, x_BHTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.interleave:  # (x0, x1, x2, x3, ...) -> (x0, x2, ..., x1, x3, ...)
            *lead, d = x_BHTD.shape
            x_BHTD = x_BHTD.view(*lead, d // 2, 2).transpose(-1, -2).reshape(*lead, d)
        half = x_BHTD.shape[-1] // 2
        rotated = torch.cat([-x_BHTD[..., half:], x_BHTD[..., :half]], dim=-1)
        return x_BHTD * cos + rotated * sin
