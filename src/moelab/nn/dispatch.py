"""Dispatchers: send each token-slot to its expert, run the experts, combine the outputs, by name.

The seam, as torchtitan's LocalTokenDispatcher / AllToAllTokenDispatcher split it: `dispatch(x_TD, routing)`
groups the token-slots by expert into an ExpertBatch (plus what combining needs), `experts(batch, weights)`
runs the experts this process holds on their rows, and `combine(y_ND, meta)` scales each row by its combine
weight and sums it into its token. Expert parallelism is one more dispatcher
(moelab.nn.alltoall.AllToAllDispatcher), not a branch here.

Legend: T tokens, D model width, F expert width, E experts (those held here), K slots per token, N rows
(token-slots) grouped by expert.

Experts are stacked weights gate_up (E, 2F, D) and down (E, D, F) (the transformers >= 5 layout), with
gpt-oss's optional biases: gate_up_bias (E, 2F, gate then up) added before the activation and down_bias (E, D)
added to each expert's output before its combine weight scales it, as transformers' GptOssExperts computes
(out = (act(x W_gu + b_gu) W_d + b_d) * weight).

Where the experts live is the weights' business, not the dispatcher's: anything with `one(e, x_ND)` is an
expert store (`Experts`). The stacked parameters (ExpertWeights) are one; moelab.mitigate's quantized experts
(dequantized on the fly) and offloaded experts (read from disk on a miss) are others. Only stacked weights take
the grouped kernel; any other store runs expert by expert.

Local dispatchers (LOCAL):
- "loop": per expert, a comparison finds its slots; one GEMM pair per expert. The reference (no sort).
- "sorted": slots stably sorted by expert; one contiguous GEMM pair per expert that has rows.
- "grouped_mm": the sorted rows through torch's grouped matmul (one kernel for all experts); runs as "sorted"
  where this torch has no grouped_mm, or the dtype (float64) or strides do not meet its rules.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from moelab.nn.layers import gated
from moelab.nn.routers import Routing

BACKENDS = ("loop", "sorted", "grouped_mm")


class Experts(Protocol):
    """An expert store: expert e's output on its rows (N, D) -> (N, D). A store may also give `order(experts)`:
    the order to run a step's experts in (per_expert honours it)."""

    def one(self, e: int, x_ND: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ExpertWeights:
    """The stacked weights of the experts a process holds (see the module docstring for the layout)."""

    gate_up_EFD: torch.Tensor
    down_EDF: torch.Tensor
    gate_up_bias_EF: torch.Tensor | None = None
    down_bias_ED: torch.Tensor | None = None
    activation: str = "silu"

    def one(self, e: int, x_ND: torch.Tensor) -> torch.Tensor:
        """Expert e on its rows: down(act(gate_up(x) [+ b_gu])) [+ b_d]."""
        h = x_ND @ self.gate_up_EFD[e].T
        if self.gate_up_bias_EF is not None:
            h = h + self.gate_up_bias_EF[e]
        y = _glu(h, self.activation) @ self.down_EDF[e].T
        return y + self.down_bias_ED[e] if self.down_bias_ED is not None else y


@dataclass(frozen=True)
class ExpertBatch:
    """Rows grouped by expert: x_ND holds expert 0's rows, then expert 1's, ...; counts_E the rows of each."""

    x_ND: torch.Tensor
    counts_E: torch.Tensor  # long


@dataclass(frozen=True)
class LocalMeta:
    """What combining needs: the token and the combine weight of every row, and the number of tokens."""

    tokens_N: torch.Tensor
    weights_N: torch.Tensor
    n_tokens: int


class Dispatcher(Protocol):
    def dispatch(self, x_TD: torch.Tensor, routing: Routing) -> tuple[ExpertBatch, Any]: ...

    def experts(self, batch: ExpertBatch, weights: Experts) -> torch.Tensor: ...

    def combine(self, y_ND: torch.Tensor, meta: Any) -> torch.Tensor: ...


def _glu(h: torch.Tensor, activation: str) -> torch.Tensor:
    gate, up = h.chunk(2, dim=-1)
    return gated(gate, up, activation)


def sort_slots(indices_TK: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slots stably sorted by expert: (token of each row, flat slot id of each row, rows per expert)."""
    flat = indices_TK.reshape(-1)
    order = flat.argsort(stable=True)
    return order // indices_TK.shape[1], order, torch.bincount(flat, minlength=n_experts)


def where_slots(indices_TK: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same grouping found expert by expert (the reference: no sort)."""
    flat = indices_TK.reshape(-1)
    per_expert_slots = [torch.nonzero(flat == e).squeeze(1) for e in range(n_experts)]
    slots = torch.cat(per_expert_slots)
    counts = torch.tensor([len(s) for s in per_expert_slots], dtype=torch.long, device=indices_TK.device)
    return slots // indices_TK.shape[1], slots, counts


def per_expert(batch: ExpertBatch, weights: Experts) -> torch.Tensor:
    """One GEMM pair per expert with rows, in expert order, or in the order a store asks for with
    `order(experts)` (an offloaded store runs its resident experts before it fetches the others); the rows come
    back in expert order either way."""
    counts = batch.counts_E.tolist()
    starts = [0, *itertools.accumulate(counts)]
    active = [e for e, n in enumerate(counts) if n]
    order = getattr(weights, "order", None)
    parts = {e: weights.one(e, batch.x_ND[starts[e]:starts[e] + counts[e]])
             for e in (order(active) if order is not None else active)}
    # No rows at all (an expert-parallel rank that received none): still an output of the graph, so that
    # the backward reaches this rank's exchanges as it reaches its peers'.
    return torch.cat([parts[e] for e in active]) if parts else weights.one(0, batch.x_ND)


def _grouped_mm_fn():
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def grouped_mm_available(x_TD: torch.Tensor, gate_up_EFD: torch.Tensor, down_EDF: torch.Tensor) -> bool:
    """torch has grouped_mm, the dtype is one it takes, and row strides are multiples of 16 bytes."""
    if _grouped_mm_fn() is None or x_TD.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    size = x_TD.element_size()
    return all((n * size) % 16 == 0 for n in (x_TD.shape[1], gate_up_EFD.shape[1], down_EDF.shape[2]))


def grouped(batch: ExpertBatch, weights: Experts) -> torch.Tensor:
    """All experts in one grouped matmul per projection (per_expert where grouped_mm cannot run, or for a store
    that is not stacked weights)."""
    if not isinstance(weights, ExpertWeights) or not grouped_mm_available(batch.x_ND, weights.gate_up_EFD,
                                                                          weights.down_EDF):
        return per_expert(batch, weights)
    mm = _grouped_mm_fn()
    offsets = batch.counts_E.cumsum(0).to(torch.int32)
    has_bias = weights.gate_up_bias_EF is not None or weights.down_bias_ED is not None
    expert_N = torch.repeat_interleave(torch.arange(len(batch.counts_E), device=batch.x_ND.device),
                                       batch.counts_E) if has_bias else None
    h = mm(batch.x_ND, weights.gate_up_EFD.transpose(1, 2), offs=offsets)
    if weights.gate_up_bias_EF is not None:  # each row gets its expert's bias
        h = h + weights.gate_up_bias_EF[expert_N]
    y = mm(_glu(h, weights.activation), weights.down_EDF.transpose(1, 2), offs=offsets)
    return y + weights.down_bias_ED[expert_N] if weights.down_bias_ED is not None else y


@dataclass(frozen=True)
class LocalDispatcher:
    """Every expert in this process: group the slots (`order`), run the experts (`compute`), combine."""

    name: str
    order: Any  # (indices_TK, n_experts) -> (tokens_N, slots_N, counts_E): sort_slots or where_slots
    compute: Any  # (ExpertBatch, ExpertWeights) -> y_ND: per_expert or grouped

    def dispatch(self, x_TD: torch.Tensor, routing: Routing) -> tuple[ExpertBatch, LocalMeta]:
        tokens, slots, counts = self.order(routing.indices_TK, routing.logits_TE.shape[-1])
        weights = routing.weights_TK.reshape(-1)[slots]
        return ExpertBatch(x_TD[tokens], counts), LocalMeta(tokens, weights, x_TD.shape[0])

    def experts(self, batch: ExpertBatch, weights: Experts) -> torch.Tensor:
        return self.compute(batch, weights)

    def combine(self, y_ND: torch.Tensor, meta: LocalMeta) -> torch.Tensor:
        return weighted_sum(y_ND, meta)


def weighted_sum(y_ND: torch.Tensor, meta: LocalMeta) -> torch.Tensor:
    """Each row's output times its combine weight, summed into its token: (n_tokens, D)."""
    out = y_ND.new_zeros(meta.n_tokens, y_ND.shape[1])
    return out.index_add_(0, meta.tokens_N, y_ND * meta.weights_N[:, None].to(y_ND.dtype))


LOCAL: dict[str, LocalDispatcher] = {
    "loop": LocalDispatcher("loop", where_slots, per_expert),
    "sorted": LocalDispatcher("sorted", sort_slots, per_expert),
    "grouped_mm": LocalDispatcher("grouped_mm", sort_slots, grouped),
}


def local_dispatcher(name: str) -> LocalDispatcher:
    """The local dispatcher called `name`; ValueError naming the choices for any other."""
    try:
        return LOCAL[name]
    except KeyError:
        raise ValueError(f"unknown dispatch backend {name!r} (choose from {', '.join(BACKENDS)})") from None


def run(dispatcher: Dispatcher, x_TD: torch.Tensor, routing: Routing, weights: Experts) -> torch.Tensor:
    """dispatch, experts, combine: the routed experts' output (T, D)."""
    batch, meta = dispatcher.dispatch(x_TD, routing)
    return dispatcher.combine(dispatcher.experts(batch, weights), meta)


def dispatch(backend: str, x_TD, idx_TK, w_TK, gate_up_EFD, down_EDF, activation: str = "silu", gate_up_bias=None,
             down_bias=None) -> torch.Tensor:
    """The routed experts' output through the local dispatcher `backend`, from raw routing tensors (tests and
    benchmarks; the MoE layer calls `run`)."""
    n_experts = gate_up_EFD.shape[0]
    routing = Routing(idx_TK, w_TK, idx_TK.new_empty(idx_TK.shape[0], n_experts, dtype=torch.float32), None)
    weights = ExpertWeights(gate_up_EFD, down_EDF, gate_up_bias, down_bias, activation)
    return run(local_dispatcher(backend), x_TD, routing, weights)
