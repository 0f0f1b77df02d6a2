"""The sweep's grid: dense and MoE model specs by ACTIVE parameter count, on the tiny presets' backbone.

"Active" here is non-embedding active parameters (Kaplan et al. 2020, "Scaling Laws for Neural Language Models",
arXiv:2001.08361, count N without embeddings): moelab.cost.params' `active` less the token embedding and the
lm_head. It includes attention, the dense FFN or the top-k routed experts, the routers and the norms. At these
sizes the 2048-token vocabulary alone is 2 x 2048 x d parameters (0.4M at d = 96), so a total-active size would
be mostly embedding at the small end.

Shape (moelab.train.presets' llama backbone: SwiGLU, RMSNorm, RoPE, untied lm_head, heads of 32): n_layers
L = round((N / 16384)^(1/3)) (at least 1) and d_model = 32 L (the presets' width/depth ratio of 32), so that
16 d^2 L (attention 4 d^2 plus a SwiGLU of width 4d) is about N; then the FFN width is solved so the count hits
N. Dense: one SwiGLU of width f per layer. MoE: the same attention, E experts of width f_e, top-k (Mixtral
routing, default 8 experts top-2), f_e solved so that the top-k experts plus the router hit N (iso-active with
the dense model of the same size). Widths are multiples of 4: every spec is within TOLERANCE (2%) of its target
from 10k to 1B (largest miss seen: 1.8%, MoE at 10k; under 0.5% from 200k up; tests/laws/test_grid.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.spec.hf import spec_from_config
from moelab.spec.model import ModelSpec
from moelab.spec.transform import as_moe
from moelab.train.presets import VOCAB
from moelab.validation import show_value

KINDS = ("dense", "moe")
MOE_EXPERTS, MOE_TOP_K = 8, 2
HEAD_DIM = 32
WIDTH_MULTIPLE = 4
TOLERANCE = 0.02  # |active - target| / target, every size from MIN_SIZE to MAX_SIZE
MIN_SIZE, MAX_SIZE = 10_000, 1_000_000_000  # 10k: one layer of d = 32; 1B: far past what trains here
MAX_EXPERTS = 256
_SIZE = re.compile(r"([0-9]*\.?[0-9]+)([kKmMbB]?)")
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}


def non_embedding_active(spec: ModelSpec) -> int:
    """Active parameters less the token embedding and the lm_head (the grid's size axis)."""
    p = count_params(spec)
    return p.active - p.embedding - p.lm_head


def parse_size(text: str) -> int:
    """'0.5M' -> 500000, '200k' -> 200000, '1e6' is not accepted (units k, M, B only)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise MoelabError(f"--sizes: {show_value(text)} is not a parameter count such as 500k, 0.5M or 2M")
    value = round(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if not MIN_SIZE <= value <= MAX_SIZE:
        raise MoelabError(f"--sizes: {show_value(text)} must be between 10k and 1B active parameters")
    return value


def parse_sizes(text: str) -> list[int]:
    """A comma-separated list of distinct sizes, at least 3 (the fit has three parameters), ascending."""
    parts = [p for p in str(text).split(",") if p.strip()]
    sizes = [parse_size(p) for p in parts]
    if len(set(sizes)) != len(sizes):
        raise MoelabError(f"--sizes {show_value(text)}: a size is given twice")
    if len(sizes) < 3:
        raise MoelabError(f"--sizes {show_value(text)}: a sweep needs at least 3 sizes (the fit E + A*C^-alpha has "
                          "three parameters; 4 or more to hold the largest out)")
    return sorted(sizes)


def parse_kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in str(text).split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise MoelabError(f"--kinds {show_value(text)}: give dense, moe or dense,moe")
    return list(dict.fromkeys(kinds))


def parse_experts(text: str | None) -> list[int]:
    """--experts 4,8,16: at least 2 distinct counts in [2, MAX_EXPERTS], each at least top-k; [] when None."""
    if text is None:
        return []
    try:
        counts = sorted({int(p) for p in str(text).split(",") if p.strip()})
    except ValueError:
        raise MoelabError(f"--experts {show_value(text)}: give expert counts such as 4,8,16") from None
    if len(counts) < 2 or any(not MOE_TOP_K <= n <= MAX_EXPERTS for n in counts):
        raise MoelabError(f"--experts {show_value(text)}: give at least two distinct counts between {MOE_TOP_K} "
                          f"(top-{MOE_TOP_K}) and {MAX_EXPERTS}")
    return counts


def label(size: int) -> str:
    """500000 -> '500k', 1500000 -> '1.5M', 1000001 -> '1.000001M': the size in a run's name, exact (every digit
    kept, never rounded), so two sizes never share a run folder."""
    unit, scale = ("M", 1_000_000) if size >= 1_000_000 else ("k", 1_000)
    whole, rest = divmod(int(size), scale)
    frac = f"{rest:0{len(str(scale)) - 1}d}".rstrip("0")
    return f"{whole}.{frac}{unit}" if frac else f"{whole}{unit}"


def _shape(size: int) -> tuple[int, int]:
    """(n_layers, d_model) for a target size: the presets' ratio d = 32 L at about 16 d^2 L parameters."""
    layers = max(1, round((size / (16 * HEAD_DIM**2)) ** (1 / 3)))
    return layers, HEAD_DIM * layers


def _backbone(d: int, layers: int, ffn: int, vocab: int) -> dict:
    heads = d // HEAD_DIM
    return {"model_type": "llama", "vocab_size": vocab, "hidden_size": d, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": heads, "intermediate_size": ffn,
            "max_position_embeddings": 1024, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "tie_word_embeddings": False}


def _round_width(x: float) -> int:
    return max(WIDTH_MULTIPLE, round(x / WIDTH_MULTIPLE) * WIDTH_MULTIPLE)


def grid_spec(kind: str, size: int, experts: int = MOE_EXPERTS, top_k: int = MOE_TOP_K,
              vocab: int = VOCAB) -> ModelSpec:
    """The grid's model of `kind` with about `size` non-embedding active parameters (see the module docstring)."""
    layers, d = _shape(size)
    per_layer = size / layers
    fixed = 4 * d * d + 2 * d  # attention (q, k, v, o) and the layer's two norms
    if kind == "dense":
        spec = spec_from_config(_backbone(d, layers, _round_width((per_layer - fixed) / (3 * d)), vocab), "x")
        return replace(spec, name=f"dense-{label(size)}")
    if kind != "moe":
        raise MoelabError(f"unknown kind {kind!r} (dense or moe)")
    width = _round_width((per_layer - fixed - experts * d) / (3 * d * top_k))
    spec = as_moe(spec_from_config(_backbone(d, layers, width, vocab), "x"), experts, top_k)
    return replace(spec, name=f"moe-{label(size)}-e{experts}")


@dataclass(frozen=True)
class GridPoint:
    """One model of the sweep: its kind, target size, expert count (0 for dense) and spec."""

    kind: str
    size: int
    experts: int
    top_k: int
    spec: ModelSpec
    axis: str  # "size" (the size sweep) or "experts" (the expert axis at one size)

    @property
    def name(self) -> str:
        return self.spec.name


def build_grid(sizes: list[int], kinds: list[str], experts_axis: list[int] | None = None,
               experts_at: int | None = None, vocab: int = VOCAB) -> list[GridPoint]:
    """Every size of every kind (MoE at MOE_EXPERTS experts, top-MOE_TOP_K), then the expert axis: MoE models of
    each count in `experts_axis` at the size `experts_at` (default: the median size), the point already in the
    size sweep listed once (on the size axis)."""
    points = []
    for kind in kinds:
        for size in sizes:
            experts = MOE_EXPERTS if kind == "moe" else 0
            top_k = MOE_TOP_K if kind == "moe" else 0
            spec = grid_spec(kind, size, experts or MOE_EXPERTS, MOE_TOP_K, vocab)
            points.append(GridPoint(kind, size, experts, top_k, spec, "size"))
    if experts_axis:
        at = sizes[len(sizes) // 2] if experts_at is None else experts_at
        names = {p.name for p in points}
        for n in experts_axis:
            spec = grid_spec("moe", at, n, MOE_TOP_K, vocab)
            if spec.name not in names:
                points.append(GridPoint("moe", at, n, MOE_TOP_K, spec, "experts"))
    names = [p.name for p in points]
    if len(set(names)) != len(names):  # a run folder per name: two models in one would mix their checkpoints
        raise MoelabError(f"two grid points share a run name: {sorted({n for n in names if names.count(n) > 1})}")
    return points
