"""Expert pruning by usage: count each routed expert's load per MoE layer on a calibration slice of the run's
corpus, keep the most used, and cut their weights and the router's rows out of the run.

Load is token-slots: every (token, choice) pair the router sends to an expert, counted per training-split domain
(moelab.mitigate.quality.calibration_streams) and overall, in eval mode (no jitter, no capacity drops).

Which experts stay: `keep=N` the N most used of every MoE layer (ties: the lower id); `min_share=X` those with
at least X of their layer's load (counts may then differ per layer). A layer never keeps fewer than its top-k.

What the pruned router computes: its weight rows (and gpt-oss's linear bias, DeepSeek-V3's selection bias
`e_score_correction_bias`, moelab's `gate.bias` buffer) are sliced to the kept experts, so every routing rule of
moelab.nn.routers now runs over the kept experts alone: softmax routers normalise over the kept logits (Mixtral's
top-k-then-softmax is unchanged for a token whose top-k were all kept; Qwen/OLMoE's softmax-then-top-k weights
grow by the mass of the dropped experts, renormalised or not as `norm_topk_prob` says); sigmoid scores are per
expert and do not change. Stacked expert weights (and gpt-oss's expert biases) are sliced the same way, in the
kept experts' original order; everything else in the run is kept as it is.

Grouped routing (DeepSeek-V3's n_group > 1): the groups are the layer's contiguous blocks of E / n_group experts,
and they stand for devices or nodes (device-limited routing), so they are kept, not collapsed: `keep=N` keeps the
N / n_group most used of every group (N must be a multiple of n_group, and top_k at most topk_group * N /
n_group), so a pruned expert's group is its source group and keeping every expert changes nothing. Collapsing
to one group would silently drop the group limit for every token. `min_share` must leave every group of a layer
the same count, else it is refused (use keep).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from moelab.errors import MoelabError
from moelab.spec.model import LayerSpec, ModelSpec, MoESpec

CALIBRATION_TOKENS = 16384  # calibration tokens per domain (training split) by default
BATCH = 16  # calibration sequences per forward

# The per-expert tensors of a MoE layer under `layers.{i}.mlp.` (moelab.nn.moe.MoELayer, nn.routers.Router)
EXPERT_TENSORS = ("gate_up_proj", "down_proj", "gate_up_proj_bias", "down_proj_bias",
                  "gate.weight", "gate.linear_bias", "gate.bias")


def check_request(spec: ModelSpec, keep: int | None, min_share: float | None, where: str = "RUN") -> None:
    """One line for a pruning request that cannot be met, before any work."""
    if not spec.is_moe:
        raise MoelabError(f"{where}: {spec.name} is a dense model; pruning drops routed experts of a MoE run")
    if (keep is None) == (min_share is None):
        raise MoelabError("prune: give exactly one of --keep N and --min-share X")
    if min_share is not None and not (isinstance(min_share, int | float) and 0 < min_share < 1):
        raise MoelabError(f"--min-share must be in (0, 1) (a share of a layer's load), got {min_share}")
    if keep is not None:
        for i in spec.moe_layers:
            moe = spec.layers[i].moe
            if not moe.top_k <= keep <= moe.n_experts:
                raise MoelabError(f"--keep {keep}: layer {i} routes each token to {moe.top_k} of {moe.n_experts} "
                                  f"experts; keep between top-k ({moe.top_k}) and {moe.n_experts}")
            if moe.n_group > 1:
                _check_groups(i, moe, keep)


def _check_groups(layer: int, moe: MoESpec, kept: int) -> None:
    if kept % moe.n_group or moe.top_k > moe.topk_group * (kept // moe.n_group):
        raise MoelabError(f"layer {layer}: grouped routing ({moe.n_group} groups, top-{moe.topk_group} groups, "
                          f"top-{moe.top_k}) keeps an equal number of experts per group: {kept} kept experts "
                          f"must be a multiple of {moe.n_group} with top_k at most topk_group x per group")


# --- load ----------------------------------------------------------------------------------------------


def _sequences(tokens: torch.Tensor, length: int):
    """The stream cut into consecutive sequences of `length` (the last one shorter): every token counted once."""
    tokens = tokens.long().reshape(-1)
    full = tokens.numel() // length
    if full:
        yield from tokens[:full * length].view(full, length).split(BATCH)
    if tokens.numel() > full * length:
        yield tokens[full * length:].view(1, -1)


@torch.no_grad()
def measure_load(model, streams: dict[str, torch.Tensor], length: int) -> dict[str, dict[int, list[int]]]:
    """Token-slots each expert of each MoE layer receives: {domain: {layer: counts}}, plus "all" (their sum).
    The model runs in eval mode on each stream in sequences of `length` tokens."""
    from moelab.nn.moe import MoELayer

    was_training = model.training
    model.eval()
    layers = {i: layer.mlp for i, layer in enumerate(model.layers) if isinstance(layer.mlp, MoELayer)}
    counts: dict[int, torch.Tensor] = {}
    hooks = []
    for i, mlp in layers.items():
        def count(_module, _inputs, routing, i=i, e=mlp.spec.n_experts):
            counts[i] += torch.bincount(routing.indices_TK.reshape(-1).cpu(), minlength=e)
        hooks.append(mlp.gate.register_forward_hook(count))
    device = next(model.parameters()).device
    out: dict[str, dict[int, list[int]]] = {}
    try:
        for domain, tokens in streams.items():
            counts.update({i: torch.zeros(mlp.spec.n_experts, dtype=torch.long) for i, mlp in layers.items()})
            for batch in _sequences(tokens, length):
                model(batch.to(device))
            out[domain] = {i: c.tolist() for i, c in counts.items()}
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    out["all"] = {i: [sum(out[d][i][e] for d in streams) for e in range(mlp.spec.n_experts)]
                  for i, mlp in layers.items()}
    return out


# --- the choice -----------------------------------------------------------------------------------------


def _most_used(counts: list[int], ids: list[int], n: int) -> list[int]:
    return sorted(sorted(ids, key=lambda e: (-counts[e], e))[:n])


def choose_kept(spec: ModelSpec, load: dict[int, list[int]], keep: int | None = None,
                min_share: float | None = None) -> dict[int, tuple[int, ...]]:
    """The kept expert ids (ascending) of every MoE layer from its load ({layer: counts})."""
    check_request(spec, keep, min_share)
    kept = {}
    for i in spec.moe_layers:
        moe, counts = spec.layers[i].moe, load[i]
        size = moe.n_experts // moe.n_group
        groups = [list(range(g * size, (g + 1) * size)) for g in range(moe.n_group)]
        if keep is not None:
            chosen = [e for ids in groups for e in _most_used(counts, ids, keep // moe.n_group)]
        else:
            total = sum(counts)
            chosen = [e for e in range(moe.n_experts) if total and counts[e] >= min_share * total]
            if len(chosen) < moe.top_k:
                raise MoelabError(f"--min-share {min_share}: layer {i} keeps {len(chosen)} experts, below its "
                                  f"top-k ({moe.top_k}); choose a smaller share")
            if moe.n_group > 1:
                per_group = {sum(e in ids for e in chosen) for ids in groups}
                if len(per_group) > 1:
                    raise MoelabError(f"--min-share {min_share}: layer {i} would keep {sorted(per_group)} experts "
                                      f"in its {moe.n_group} routing groups; grouped routing needs the same count "
                                      f"in every group (use --keep N, N a multiple of {moe.n_group})")
                _check_groups(i, moe, len(chosen))
        kept[i] = tuple(chosen)
    return kept


# --- spec and weights ------------------------------------------------------------------------------------


def pruned_spec(spec: ModelSpec, kept: dict[int, tuple[int, ...]], name: str | None = None) -> ModelSpec:
    """The spec with each MoE layer's routed experts cut to its kept count (groups and top-k unchanged)."""
    built: dict[tuple, LayerSpec] = {}  # equal layers share one LayerSpec, as spec builders make them
    layers = []
    for i, layer in enumerate(spec.layers):
        if layer.moe is not None:
            moe = replace(layer.moe, n_experts=len(kept[i]))
            key = (layer.attention, moe)
            layer = built.setdefault(key, LayerSpec(layer.attention, moe))
        layers.append(layer)
    return replace(spec, name=name or spec.name, layers=tuple(layers))


def pruned_state(state: dict[str, torch.Tensor], kept: dict[int, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The state dict with every per-expert tensor of each MoE layer sliced to its kept experts (dim 0)."""
    out = dict(state)
    for i, ids in kept.items():
        index = torch.tensor(ids, dtype=torch.long)
        for name in EXPERT_TENSORS:
            key = f"layers.{i}.mlp.{name}"
            if key in out:
                out[key] = out[key].index_select(0, index.to(out[key].device)).clone()
    return out


def prune_model(model, spec: ModelSpec, kept: dict[int, tuple[int, ...]], name: str | None = None):
    """(the pruned model, its spec): a new moelab.nn model of `pruned_spec` holding `model`'s sliced weights
    (strict load: every tensor, no other), in `model`'s dtype, eval mode."""
    from moelab.nn.model import build_model

    new_spec = pruned_spec(spec, kept, name)
    dtype = next(model.parameters()).dtype
    pruned = build_model(new_spec).to(dtype)
    pruned.load_state_dict(pruned_state(model.state_dict(), kept), strict=True)
    return pruned.eval(), new_spec


# --- the transform ---------------------------------------------------------------------------------------


def _name(spec: ModelSpec, keep: int | None, min_share: float | None) -> str:
    return f"{spec.name}-keep{keep}" if keep is not None else f"{spec.name}-share{min_share:g}"


def prune(run: str | Path, out: str | Path, keep: int | None = None, min_share: float | None = None,
          calibration_tokens: int = CALIBRATION_TOKENS, eval_tokens: int | None = None) -> dict[str, Any]:
    """Prune the run's experts by usage and write the result as the run folder `out`; returns its summary."""
    from moelab.mitigate import quality
    from moelab.mitigate.runs import check_out, lineage_entry, read_run, write_run

    if isinstance(calibration_tokens, bool) or not isinstance(calibration_tokens, int) or calibration_tokens < 1:
        raise MoelabError(f"--calibration-tokens must be a positive integer, got {calibration_tokens}")
    if eval_tokens is not None and (isinstance(eval_tokens, bool) or not isinstance(eval_tokens, int)
                                    or eval_tokens < 1):
        raise MoelabError(f"--eval-tokens must be a positive integer, got {eval_tokens}")
    source = read_run(run)
    if source.quantization:
        raise MoelabError(f"RUN {run}: is quantized ({source.quantized}); prune before quantizing "
                          "(prune the float run, then moelab quantize the pruned one)")
    check_request(source.spec, keep, min_share)
    eval_tokens = quality.eval_tokens(source, eval_tokens)  # the run's own by default (its config checked)
    check_out(out, source.folder)

    model = source.load_model()
    corpus = quality.run_corpus(source)
    length = quality.seq_len(source)
    streams = quality.calibration_streams(corpus, calibration_tokens)
    load = measure_load(model, streams, length)
    kept = choose_kept(source.spec, load["all"], keep, min_share)
    pruned, spec = prune_model(model, source.spec, kept, _name(source.spec, keep, min_share))

    from moelab.bench.measure import weight_bytes

    before, after = weight_bytes(model), weight_bytes(pruned)
    loss_before = quality.domain_loss(model, corpus, length, eval_tokens)
    loss_after = quality.domain_loss(pruned, corpus, length, eval_tokens)
    delta = quality.loss_delta(loss_before, loss_after)
    rare = quality.rare_domains(corpus)
    layers = []
    for i, ids in kept.items():
        counts = load["all"][i]
        total = sum(counts) or 1
        layers.append({"layer": i, "experts": len(counts), "kept": list(ids),
                       "dropped": [e for e in range(len(counts)) if e not in ids],
                       "kept_shares": [round(counts[e] / total, 6) for e in ids],
                       "kept_load_share": round(sum(counts[e] for e in ids) / total, 6)})
    summary = {
        "keep": keep, "min_share": min_share, "calibration_tokens": calibration_tokens,
        "calibration_tokens_counted": {d: int(t.numel()) for d, t in streams.items()},
        "layers": layers,
        "load": {d: {str(i): c for i, c in per.items()} for d, per in load.items()},
        "weight_bytes": {"before": before, "after": after, "saved": before - after,
                         "saved_fraction": (before - after) / before},
        "eval_tokens": eval_tokens,
        "loss": {"before": loss_before, "after": loss_after, "delta": delta, "rare_domains": rare,
                 "rare_delta": {d: v for d, v in delta.items() if d in rare},
                 "common_delta": {d: v for d, v in delta.items() if d not in rare and d != "mean"}},
    }
    entry = lineage_entry("prune", source, keep=keep, min_share=min_share, calibration_tokens=calibration_tokens,
                          kept={str(i): list(ids) for i, ids in kept.items()})
    final = write_run(out, pruned, spec, source, entry, summary=summary)
    return {"folder": str(final.parent), "model": spec.name, "from_model": source.spec.name, **summary}
