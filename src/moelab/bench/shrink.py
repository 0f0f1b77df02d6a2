"""Shrink a real architecture to a size this machine can run, keeping its expert structure.

Kept: expert count E, top-k, shared-expert count, router (type, groups, scaling, selection bias), the layer
pattern (all-MoE, the first k layers dense, every n-th layer MoE, or any other pattern resampled by position),
the attention kind (GQA with its query/KV head ratio, or MLA with its head dims) and the embedding tying.
The attention pattern: the first layers when it repeats with a short period (Gemma 3: five local, one
global), else layers sampled by position plus the first layer of any attention kind the sample missed.
Shrunk: depth (the shortest depth that shows the pattern, deeper when that keeps the width/depth ratio
closer to the original's), width (d_model, FFN and expert widths, heads, MLA ranks, by one scale factor found
by bisection on the total parameter count), the vocabulary (at most VOCAB_CAP) and linear attention's conv
kernel (at most LINEAR_CONV_CAP). A target the result misses by more than 2x is refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.spec.model import AttentionSpec, FFNSpec, LayerSpec, ModelSpec, MoESpec

VOCAB_CAP = 8192
# Gated DeltaNet's causal conv is 4 wide in Qwen3-Next (linear_conv_kernel_dim: 4) and transformers'
# Qwen3NextConfig default; the cost/FLOPs engine counts its (2*k_dim + v_dim) * kernel params, so a larger
# configured kernel is cut to this when shrinking.
LINEAR_CONV_CAP = 4
# The longest attention period kept by taking the first layers; real configs repeat within 6 (Gemma 3).
SHORT_PERIOD = 8
MISS_FACTOR = 2.0  # a shrink further than this from its target (either way) is refused
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


def attention_period(spec: ModelSpec) -> int:
    """The shortest p such that layer i's attention is layer (i mod p)'s for every layer (n_layers if none)."""
    kinds = [layer.attention for layer in spec.layers]
    for p in range(1, len(kinds) + 1):
        if all(kinds[i] == kinds[i % p] for i in range(len(kinds))):
            return p
    return len(kinds)


def _periodic(spec: ModelSpec) -> bool:
    """Whether the attention pattern repeats with a short period (at least twice, at most SHORT_PERIOD)."""
    period = attention_period(spec)
    return period <= SHORT_PERIOD and 2 * period <= spec.n_layers or period == 1


def _sampled(spec: ModelSpec, depth: int) -> tuple[int, ...]:
    """Original layers for a `depth`-layer shrink of an aperiodic attention pattern: `depth` positions spread
    evenly from layer 0 (so each kind keeps about its share), plus the first layer of each kind they miss."""
    n = spec.n_layers
    chosen = {min(n - 1, int(i * n / depth)) for i in range(depth)}
    present = {spec.layers[i].attention for i in chosen}
    for i, layer in enumerate(spec.layers):
        if layer.attention not in present:
            chosen.add(i)
            present.add(layer.attention)
    return tuple(sorted(chosen))


def _moe_layers(spec: ModelSpec, picks: tuple[int, ...]) -> tuple[int, ...]:
    """The new MoE layers of a shrink keeping original layers `picks` (range(depth) when periodic)."""
    depth = len(picks)
    kind, n = layer_pattern(spec)
    if kind == "dense":
        return ()
    if kind == "moe":
        return tuple(range(depth))
    if kind == "first_k_dense":
        return tuple(range(n, depth))
    if kind == "every_n":
        return tuple(i for i in range(depth) if (i + 1) % n == 0)
    if picks == tuple(range(depth)):  # the first layers: resample the MoE pattern by position
        picks = tuple(sorted({min(spec.n_layers - 1, int(i * spec.n_layers / depth)) for i in range(depth)}))
    return tuple(i for i, orig in enumerate(picks) if orig in spec.moe_layers) or (depth - 1,)


def _layer_picks(spec: ModelSpec) -> list[tuple[int, ...]]:
    """The original layers each candidate shrink keeps, shortest first: the first `depth` layers for depths
    that show the layer pattern (and a whole period of a short attention pattern), or layers sampled over
    the whole model when the attention pattern has no short period (Qwen2's first max_window_layers full)."""
    kind, n = layer_pattern(spec)
    base = {"first_k_dense": n + 3, "every_n": 2 * n}.get(kind, 4)
    step = n if kind == "every_n" else 2
    periodic, period = _periodic(spec), attention_period(spec)
    if periodic and period > 1:  # at least one whole period of the attention pattern (Gemma 3: 5 local, 1 global)
        base, step = max(base, period), max(step, period)
    depths = sorted({min(spec.n_layers, d) for d in range(base, max(base, spec.n_layers) + 1, step)})
    if periodic:
        return [tuple(range(d)) for d in depths]
    return sorted({_sampled(spec, d) for d in depths}, key=len)


def _per_dim_rope(spec: ModelSpec, a: AttentionSpec) -> bool:
    """Whether the layer's rope scaling lists a factor per rotary dimension (LongRoPE): its head size stays."""
    return any(isinstance(v, tuple) for _, v in spec.layer_rope(a)[1])


def _scaled_attention(a: AttentionSpec, d: int, s: float, keep_head_dim: bool = False) -> AttentionSpec:
    """One layer's attention at width `d` (scale `s`): heads scaled, head sizes capped at 64 (unless
    `keep_head_dim`), spans kept short."""
    if a.kind == "mla":
        heads = max(1, round(a.n_heads * s))
        return replace(a, n_heads=heads, n_kv_heads=heads,
                       q_lora_rank=None if a.q_lora_rank is None else _round(a.q_lora_rank * s, 8, 16),
                       kv_lora_rank=_round(a.kv_lora_rank * s, 8, 16))
    if a.kind == "linear":
        lin = a.linear
        ratio = lin.n_v_heads // lin.n_k_heads
        k_heads = max(1, round(lin.n_k_heads * s))
        linear = replace(lin, n_k_heads=k_heads, n_v_heads=k_heads * ratio, k_head_dim=min(lin.k_head_dim, 64),
                         v_head_dim=min(lin.v_head_dim, 64), conv_kernel=min(lin.conv_kernel, LINEAR_CONV_CAP))
        return replace(a, linear=linear)
    ratio, head_dim = a.n_heads // a.n_kv_heads, a.head_dim if keep_head_dim else min(a.head_dim, 64)
    kv = max(1, round(d / (head_dim * ratio)))

    def span(n: int | None) -> int | None:
        return None if n is None else max(16, min(n, 4096))

    return replace(a, n_heads=kv * ratio, n_kv_heads=kv, head_dim=head_dim, sliding_window=span(a.sliding_window),
                   chunk_size=span(a.chunk_size))


def _scaled_moe(moe: MoESpec, s: float) -> MoESpec:
    return replace(moe, expert_ffn=_round(moe.expert_ffn * s),
                   shared_ffn=_round(moe.shared_ffn * s) if moe.n_shared else 0)


def _scaled(spec: ModelSpec, picks: tuple[int, ...], s: float) -> ModelSpec:
    """len(picks) layers at scale `s`. New layer j keeps original layer picks[j]'s attention (picks[j] = j for
    alternating windows, no-rope or linear-attention patterns that repeat from the first layer) and, when it
    is a MoE layer of the kept pattern, that layer's experts (the first MoE layer's when it was dense)."""
    d = _round(spec.d_model * s, 8, 16)
    moe_layers = set(_moe_layers(spec, picks) if spec.is_moe else ())
    attentions = {a: _scaled_attention(a, d, s, _per_dim_rope(spec, a)) for a in {layer.attention
                                                                                   for layer in spec.layers}}
    dense_width = _round(spec.ffn_dim * s) if spec.ffn_dim else 0
    layers = []
    for j, i in enumerate(picks):
        orig = spec.layers[i]
        if j in moe_layers:
            ffn = _scaled_moe(orig.moe or spec.moe, s)
        else:
            ffn = FFNSpec(_round(orig.ffn.width * s) if orig.moe is None else dense_width or _round(
                spec.moe.expert_ffn * s))
        layers.append(LayerSpec(attentions[orig.attention], ffn))
    # Gemma scales embeddings by sqrt(d_model): the shrunk model by its own width, as its config would state
    scale = math.sqrt(d) if math.isclose(spec.embedding_scale, math.sqrt(spec.d_model)) else spec.embedding_scale
    return replace(spec, d_model=d, layers=tuple(layers), vocab_size=min(spec.vocab_size, VOCAB_CAP),
                   embedding_scale=scale)


def _fit(spec: ModelSpec, picks: tuple[int, ...], target: float) -> ModelSpec:
    lo, hi = 1e-4, 1.0
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if count_params(_scaled(spec, picks, mid)).total > target:
            hi = mid
        else:
            lo = mid
    best = [_scaled(spec, picks, x) for x in (lo, hi)]
    return min(best, key=lambda sp: abs(math.log(count_params(sp).total / target)))


def _human(n: float) -> str:
    """2.5e6 -> '2.5M', 3.2e5 -> '320k'."""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


_PARTS = {"embedding": "the embedding and lm_head", "attention": "attention", "dense_ffn": "dense FFNs",
          "routed_experts": "routed experts", "shared_experts": "shared experts", "routers": "routers",
          "norms": "norms"}


def _check_miss(spec: ModelSpec, chosen: ModelSpec, target: float, label: str) -> None:
    """Refuse a shrink more than MISS_FACTOR from its target, naming the nearest size found and why."""
    p = count_params(chosen)
    got = p.total
    if target / MISS_FACTOR <= got <= target * MISS_FACTOR:
        return
    shape = f"{chosen.n_layers} layers at d_model {chosen.d_model}"
    if got > target:
        sizes = {key: getattr(p, key) for key in _PARTS}
        sizes["embedding"] += p.lm_head
        part = max(sizes, key=sizes.get)
        why = f"{_PARTS[part]} make up {sizes[part] / got:.0%} of it"
        if part == "routed_experts" and chosen.moe:
            why += f", all {chosen.moe.n_experts} experts of a MoE layer being kept"
        raise MoelabError(f"--shrink-to {label}: the {spec.n_layers}-layer pattern of {spec.name} cannot be shrunk "
                          f"below ~{_human(got)} parameters (nearest found: {shape}; {why})")
    raise MoelabError(f"--shrink-to {label}: the largest shrink of {spec.name} found has ~{_human(got)} parameters "
                      f"({shape}, vocabulary capped at {VOCAB_CAP} from {spec.vocab_size}): pick a target "
                      f"nearer that, or run the model unshrunk")


def shrink(spec: ModelSpec, target_params: float | str) -> ModelSpec:
    """A smaller model of the same expert structure with about `target_params` parameters in total."""
    target = parse_size(target_params)
    total = count_params(spec).total
    if target >= total:
        raise MoelabError(f"--shrink-to {target:.3g} is not smaller than {spec.name} ({total:.3g} parameters)")
    ratio = spec.d_model / spec.n_layers
    candidates = [_fit(spec, picks, target) for picks in _layer_picks(spec)]
    # Close to the target first, then the width/depth ratio nearest the original's.
    chosen = min(candidates, key=lambda sp: (round(abs(math.log(count_params(sp).total / target)), 1),
                                             abs(math.log(sp.d_model / sp.n_layers / ratio))))
    label = f"{target / 1e3:g}k" if target < 1e6 else f"{target / 1e6:g}M" if target < 1e9 else f"{target / 1e9:g}B"
    _check_miss(spec, chosen, target, label)
    return replace(chosen, name=f"{spec.name}-shrunk-{label}",
                   notes=(*spec.notes, f"shrunk from {spec.name} ({total:,} parameters) to {label}"))
