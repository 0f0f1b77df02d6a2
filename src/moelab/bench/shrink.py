"""Shrink a real architecture to a size this machine can run, keeping its expert structure.

Kept: expert count E, top-k, shared-expert count, router (type, groups, scaling, selection bias), the layer
pattern (all-MoE, the first k layers dense, every n-th layer MoE, or any other pattern resampled by position),
the attention kind (GQA with its query/KV head ratio, or MLA with its head dims) and the embedding tying.
Shrunk: depth (the shortest depth that shows the pattern, deeper when that keeps the width/depth ratio
closer to the original's), width (d_model, FFN and expert widths, heads, MLA ranks, by one scale factor found
by bisection on the total parameter count) and the vocabulary (at most VOCAB_CAP).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.spec.model import ModelSpec

VOCAB_CAP = 8192
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbBgGtT]?)\s*")
_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_size(text: str | float | int) -> float:
    """'50M' -> 5e7, '1.5B' -> 1.5e9, '200k' -> 2e5; plain numbers pass through. Must be positive."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _SIZE.fullmatch(str(text))
        if not match:
            raise MoelabError(f"--shrink-to expects a parameter count such as 50M or 1.5B, got {text!r}")
        value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not value > 0 or math.isinf(value):
        raise MoelabError(f"--shrink-to must be a positive parameter count, got {text!r}")
    return value


def _round(x: float, multiple: int = 8, least: int = 8) -> int:
    return max(least, int(round(x / multiple)) * multiple)


def layer_pattern(spec: ModelSpec) -> tuple[str, int]:
    """("dense" | "moe" | "first_k_dense" | "every_n" | "other", k or n)."""
    layers, moe = spec.n_layers, set(spec.moe_layers)
    if not moe:
        return "dense", 0
    if len(moe) == layers:
        return "moe", 0
    k = min(moe)
    if moe == set(range(k, layers)):
        return "first_k_dense", k
    for n in range(2, layers + 1):
        if moe == {i for i in range(layers) if (i + 1) % n == 0}:
            return "every_n", n
    return "other", 0


def _moe_layers(spec: ModelSpec, depth: int) -> tuple[int, ...]:
    kind, n = layer_pattern(spec)
    if kind == "dense":
        return ()
    if kind == "moe":
        return tuple(range(depth))
    if kind == "first_k_dense":
        return tuple(range(n, depth))
    if kind == "every_n":
        return tuple(i for i in range(depth) if (i + 1) % n == 0)
    chosen = {min(spec.n_layers - 1, int(i * spec.n_layers / depth)) for i in range(depth)}
    return tuple(i for i, orig in enumerate(sorted(chosen)) if orig in spec.moe_layers) or (depth - 1,)


def _depths(spec: ModelSpec) -> list[int]:
    """Depths that show the layer pattern, shortest first (at most the original depth)."""
    kind, n = layer_pattern(spec)
    base = {"first_k_dense": n + 3, "every_n": 2 * n}.get(kind, 4)
    step = n if kind == "every_n" else 2
    return sorted({min(spec.n_layers, d) for d in range(base, max(base, spec.n_layers) + 1, step)})


def _scaled(spec: ModelSpec, depth: int, s: float) -> ModelSpec:
    a, d = spec.attention, _round(spec.d_model * s, 8, 16)
    if a.kind == "mla":
        heads = max(1, round(a.n_heads * s))
        attention = replace(a, n_heads=heads, n_kv_heads=heads,
                            q_lora_rank=None if a.q_lora_rank is None else _round(a.q_lora_rank * s, 8, 16),
                            kv_lora_rank=_round(a.kv_lora_rank * s, 8, 16))
    else:
        ratio, head_dim = a.n_heads // a.n_kv_heads, min(a.head_dim, 64)
        kv = max(1, round(d / (head_dim * ratio)))
        window = a.sliding_window
        attention = replace(a, n_heads=kv * ratio, n_kv_heads=kv, head_dim=head_dim,
                            sliding_window=None if window is None else max(16, min(window, 4096)))
    moe = spec.moe
    if moe is not None:
        moe = replace(moe, expert_ffn=_round(moe.expert_ffn * s),
                      shared_ffn=_round(moe.shared_ffn * s) if moe.n_shared else 0)
    layers = _moe_layers(spec, depth) if spec.is_moe else ()
    return replace(spec, d_model=d, n_layers=depth, ffn_dim=_round(spec.ffn_dim * s) if spec.ffn_dim else 0,
                   attention=attention, moe=moe if layers else (moe if spec.moe_layers else spec.moe),
                   moe_layers=layers, vocab_size=min(spec.vocab_size, VOCAB_CAP))


def _fit(spec: ModelSpec, depth: int, target: float) -> ModelSpec:
    lo, hi = 1e-4, 1.0
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if count_params(_scaled(spec, depth, mid)).total > target:
            hi = mid
        else:
            lo = mid
    best = [_scaled(spec, depth, x) for x in (lo, hi)]
    return min(best, key=lambda sp: abs(math.log(count_params(sp).total / target)))


def shrink(spec: ModelSpec, target_params: float | str) -> ModelSpec:
    """A smaller model of the same expert structure with about `target_params` parameters in total."""
    target = parse_size(target_params)
    total = count_params(spec).total
    if target >= total:
        raise MoelabError(f"--shrink-to {target:.3g} is not smaller than {spec.name} ({total:.3g} parameters)")
    ratio = spec.d_model / spec.n_layers
    candidates = [_fit(spec, depth, target) for depth in _depths(spec)]
    # Close to the target first, then the width/depth ratio nearest the original's.
    chosen = min(candidates, key=lambda sp: (round(abs(math.log(count_params(sp).total / target)), 1),
                                             abs(math.log(sp.d_model / sp.n_layers / ratio))))
    label = f"{target / 1e6:g}M" if target < 1e9 else f"{target / 1e9:g}B"
    return replace(chosen, name=f"{spec.name}-shrunk-{label}",
                   notes=(*spec.notes, f"shrunk from {spec.name} ({total:,} parameters) to {label}"))
