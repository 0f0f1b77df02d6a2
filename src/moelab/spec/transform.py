"""Turn one spec into its counterpart: dense -> MoE (`--as-moe ExK`, upcycling's copy/split/granular), MoE ->
fine-grained + shared."""

from __future__ import annotations

import re
from dataclasses import replace

from moelab import limits
from moelab.errors import MoelabError
from moelab.spec.model import ModelSpec, MoESpec, map_moe, with_ffns
from moelab.validation import show_value


def parse_as_moe(text: str) -> tuple[int, int]:
    """'8x2' -> (8 experts, top-2), with 1 <= top-k <= experts <= limits.MAX_EXPERTS."""
    match = re.fullmatch(r"\s*(\d{1,12})\s*[xX]\s*(\d{1,12})\s*", text)
    if not match:
        raise MoelabError(f"--as-moe expects EXPERTSxTOPK such as 8x2, got {show_value(text)}")
    n_experts, top_k = int(match.group(1)), int(match.group(2))
    if not 1 <= n_experts <= limits.MAX_EXPERTS:
        raise MoelabError(f"--as-moe: the expert count must be in 1..{limits.MAX_EXPERTS}, got {n_experts}")
    if not 1 <= top_k <= n_experts:
        raise MoelabError(f"--as-moe: top-k must be in 1..{n_experts} (the expert count), got {top_k}")
    return n_experts, top_k


def as_moe(spec: ModelSpec, n_experts: int, top_k: int) -> ModelSpec:
    """Every FFN becomes a MoE of `n_experts` copies of the dense FFN, top-k routed (Mixtral-style)."""
    if spec.is_moe:
        raise MoelabError(f"--as-moe needs a dense model; {spec.name} is already MoE")
    widths = {layer.ffn.width for layer in spec.layers}
    if len(widths) > 1:
        raise MoelabError(f"--as-moe: {spec.name} has dense FFNs of several widths ({sorted(widths)})")
    moe = MoESpec(n_experts=n_experts, top_k=top_k, expert_ffn=spec.ffn_dim, router="topk_softmax")
    return with_ffns(replace(spec, name=f"{spec.name}-as-{n_experts}x{top_k}"), moe, range(spec.n_layers))


def fine_grained(spec: ModelSpec, m: int, shared: int = 0) -> ModelSpec:
    """DeepSeekMoE segmentation: split each expert into `m`, isolate `shared` of them as shared experts.

    E experts of width f, top-k become E*m - S routed experts of width f/m with top k*m - S, plus S shared
    experts of width f/m: expert parameters, total and active, are unchanged (up to rounding of f/m); the
    router grows to the new expert count.
    """
    if not spec.is_moe:
        raise MoelabError("--fine-grained needs a MoE model (use --as-moe first for a dense one)")
    if len({layer.moe for layer in spec.layers if layer.moe}) > 1:
        raise MoelabError(f"--fine-grained: {spec.name}'s MoE layers differ; it splits one expert shape")
    if m <= 0 or shared < 0:
        raise MoelabError("--fine-grained needs M >= 1 and --shared S >= 0")
    old = spec.moe
    assert old is not None
    width = old.expert_ffn // m
    if width <= 0:
        raise MoelabError(f"--fine-grained {m}: experts of width {old.expert_ffn} cannot be split {m} ways")
    top_k = old.top_k * m - shared
    if top_k < 1:
        raise MoelabError(f"--shared {shared} leaves no routed expert active (top-k {old.top_k} x {m})")
    n_shared = old.n_shared + shared
    shared_ffn = old.shared_ffn if old.n_shared else width
    if old.n_shared and shared and old.shared_ffn != width:
        raise MoelabError("--shared: the model already has shared experts of another width")
    moe = replace(old, n_experts=old.n_experts * m - shared, top_k=top_k, expert_ffn=width,
                  n_shared=n_shared, shared_ffn=shared_ffn, n_group=1, topk_group=1)
    return map_moe(replace(spec, name=f"{spec.name}-fg{m}s{shared}"), lambda _: moe)


UPCYCLE_MODES = ("copy", "split", "granular")


def upcycled_moe(width: int, n_experts: int, top_k: int, mode: str, granularity: int = 1,
                 shared: int = 0) -> MoESpec:
    """The MoESpec that replaces one dense FFN of intermediate width `width` (moelab.mitigate.upcycle moves the
    weights). E = n_experts, K = top_k, M = granularity, S = shared:

    - copy: E experts of width f, each a copy of the dense FFN; Mixtral routing (topk_softmax: the K kept weights
      are renormalised to sum to 1), so the output equals the dense FFN's before any training, whatever the router
      (Komatsuzaki et al. 2022, "Sparse Upcycling", arXiv 2212.05055).
    - split: the f hidden units partitioned into E experts of width f/E (the dense FFN's parameters, K/E of them
      active); topk_softmax with routed_scaling_factor E, so each kept expert's weight is E/K at a uniform router
      (the kept weights always sum to E): the partial sum of K of the E slices is scaled to the whole FFN's sum in
      expectation, as Megatron-LM's upcycling_utils._get_moe_activation_scale does for topK-then-softmax
      (scale = granularity; He et al. 2024, "Upcycling Large Language Models into Mixture of Experts", arXiv
      2410.07524). With K = E and a uniform router every weight is exactly 1: the dense FFN, exactly.
    - granular: f cut into E*M slices of width f/(E*M); S of them (the first S) become shared experts, always
      active at weight 1, and the other R = E*M - S are routed with top-k K*M - S (the active share stays K/E, as
      DeepSeekMoE's fine-grained segmentation keeps it; spec.transform.fine_grained); routed_scaling_factor R, so
      a kept slice weighs R/(K*M - S) at a uniform router (1 when K = E: the dense FFN, exactly).

    Refused (one line): K outside 1..E, an unknown mode, M or S given to a mode that takes none, and any width
    that does not divide.
    """
    if mode not in UPCYCLE_MODES:
        raise MoelabError(f"--mode must be one of {', '.join(UPCYCLE_MODES)}, got {show_value(mode)}")
    if not 1 <= n_experts <= limits.MAX_EXPERTS:
        raise MoelabError(f"--experts must be in 1..{limits.MAX_EXPERTS}, got {show_value(n_experts)}")
    if not 1 <= top_k <= n_experts:
        raise MoelabError(f"--top-k must be in 1..{n_experts} (the expert count), got {show_value(top_k)}")
    if mode != "granular" and (granularity != 1 or shared):
        raise MoelabError(f"--granularity and --shared need --mode granular (got --mode {mode})")
    if mode == "copy":
        return MoESpec(n_experts=n_experts, top_k=top_k, expert_ffn=width, router="topk_softmax")
    if not 1 <= granularity <= limits.MAX_EXPERTS or shared < 0:
        raise MoelabError(f"--granularity must be in 1..{limits.MAX_EXPERTS} and --shared at least 0, got "
                          f"{show_value(granularity)} and {show_value(shared)}")
    slices = n_experts * granularity
    if width % slices:
        raise MoelabError(f"--mode {mode}: the dense FFN width {width} does not divide into {slices} slices "
                          f"({n_experts} experts x granularity {granularity})")
    routed, routed_k = slices - shared, top_k * granularity - shared
    if routed < 1 or routed_k < 1:
        raise MoelabError(f"--shared {shared}: of {slices} slices with {top_k * granularity} active, none would be "
                          "routed; use fewer shared slices")
    slice_width = width // slices
    return MoESpec(n_experts=routed, top_k=routed_k, expert_ffn=slice_width, n_shared=shared,
                   shared_ffn=slice_width if shared else 0, router="topk_softmax",
                   routed_scaling_factor=float(routed))


def upcycle_spec(spec: ModelSpec, n_experts: int, top_k: int, mode: str = "copy", granularity: int = 1,
                 shared: int = 0) -> ModelSpec:
    """A dense spec with every layer's FFN replaced by `upcycled_moe` of its own width (per-layer specs: layers
    of different widths each get theirs). Refused: a MoE spec, dense FFNs with biases (mlp_bias)."""
    if spec.is_moe:
        raise MoelabError(f"upcycle needs a dense model; {spec.name} is already MoE")
    if spec.mlp_bias:
        raise MoelabError(f"upcycle: {spec.name}'s dense FFNs have biases (mlp_bias), which moelab's experts "
                          "cannot carry whole; only bias-free FFNs are upcycled")
    moes = {w: upcycled_moe(w, n_experts, top_k, mode, granularity, shared)
            for w in sorted({layer.ffn.width for layer in spec.layers})}
    tag = f"{mode}{granularity}s{shared}" if mode == "granular" else mode
    layers = tuple(replace(layer, ffn=moes[layer.ffn.width]) for layer in spec.layers)
    return replace(spec, name=f"{spec.name}-up{n_experts}x{top_k}-{tag}", layers=layers)


LAYOUTS = ("dense", "moe", "first_k_dense", "every_n", "moe_head")


def with_layout(spec: ModelSpec, layout: str, n: int = 1) -> ModelSpec:
    """Choose which layers are MoE: "dense" (none), "moe" (all), "first_k_dense" (all but the first n),
    "every_n" (every n-th layer, counting from 1: layers n-1, 2n-1, ...), "moe_head" (only the last n: the
    seeds' dense backbone + MoE head). Dense layers use `spec.ffn_dim`; MoE layers `spec.moe`."""
    if layout not in LAYOUTS:
        raise MoelabError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout != "dense" and spec.moe is None:
        raise MoelabError(f"layout {layout!r} needs a MoE spec")
    if n < 1 or (layout in ("first_k_dense", "moe_head") and n > spec.n_layers):
        raise MoelabError(f"layout {layout!r}: n must be in 1..{spec.n_layers}, got {n}")
    layers = range(spec.n_layers)
    chosen = {
        "dense": [],
        "moe": list(layers),
        "first_k_dense": [i for i in layers if i >= n],
        "every_n": [i for i in layers if (i + 1) % n == 0],
        "moe_head": [i for i in layers if i >= spec.n_layers - n],
    }[layout]
    return with_ffns(spec, spec.moe if chosen else None, chosen)
