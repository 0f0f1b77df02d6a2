"""Turn one spec into its counterpart: dense -> MoE (`--as-moe ExK`), MoE -> fine-grained + shared."""

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
