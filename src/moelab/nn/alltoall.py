"""Expert parallelism: a dispatcher that exchanges token rows with the ranks holding their experts.

Rank r of a W-rank group holds experts r*L .. (r+1)*L - 1 (L = E / W). `dispatch` sorts this rank's slots by
global expert (so by destination rank), sends every rank the counts for its experts (all_to_all_single of E
counts), then the rows (all_to_all_single with those splits); the rows received (source rank, then local expert)
are regrouped by local expert for any local dispatcher's `experts`. `combine` undoes the regrouping, sends the
outputs back by the reverse all-to-all, and sums them into their tokens with the combine weights, as the local
dispatcher does. Gradients take the reverse exchanges (AllToAll.backward). As in torchtitan's
AllToAllTokenDispatcher and Megatron-LM's MoEAlltoAllTokenDispatcher, with one expert set per rank.

Legend: T tokens, D model width, E experts in all, L experts per rank, W ranks, N rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from moelab.nn.dispatch import ExpertBatch, Experts, LocalMeta, local_dispatcher, sort_slots, weighted_sum
from moelab.nn.routers import Routing
from moelab.parallel.clock import timed


class AllToAll(torch.autograd.Function):
    """all_to_all_single of rows with uneven splits; the backward sends the gradients back the other way."""

    @staticmethod
    def forward(ctx, x_ND, receive: list[int], send: list[int], group):
        ctx.receive, ctx.send, ctx.group = receive, send, group
        return _exchange(x_ND, receive, send, group)

    @staticmethod
    def backward(ctx, grad_ND):
        return _exchange(grad_ND, ctx.send, ctx.receive, ctx.group), None, None, None


def _exchange(x_ND: torch.Tensor, receive: list[int], send: list[int], group) -> torch.Tensor:
    out = x_ND.new_empty(sum(receive), *x_ND.shape[1:])
    with timed("alltoall"):
        dist.all_to_all_single(out, x_ND.contiguous(), receive, send, group=group)
    return out


@dataclass(frozen=True)
class AllToAllMeta:
    local: LocalMeta  # the token and combine weight of each row this rank sent
    order_N: torch.Tensor  # received rows -> rows grouped by local expert
    send: list[int]  # rows sent to each rank
    receive: list[int]  # rows received from each rank


class AllToAllDispatcher:
    """Dispatch over the ranks of `group`; the experts held here run through the local dispatcher `local`."""

    def __init__(self, group, local: str = "sorted") -> None:
        self.group, self.local = group, local
        self.world = dist.get_world_size(group)

    def dispatch(self, x_TD: torch.Tensor, routing: Routing) -> tuple[ExpertBatch, AllToAllMeta]:
        n_experts = routing.logits_TE.shape[-1]
        held = n_experts // self.world
        tokens, slots, counts_E = sort_slots(routing.indices_TK, n_experts)
        received_WL = torch.empty_like(counts_E).view(self.world, held)
        with timed("alltoall"):
            dist.all_to_all_single(received_WL, counts_E, group=self.group)
        send = counts_E.view(self.world, held).sum(1).tolist()
        receive = received_WL.sum(1).tolist()
        rows = AllToAll.apply(x_TD[tokens], receive, send, self.group)
        expert_N = torch.repeat_interleave(torch.arange(held, device=x_TD.device).repeat(self.world),
                                           received_WL.reshape(-1))
        order = expert_N.argsort(stable=True)
        meta = AllToAllMeta(LocalMeta(tokens, routing.weights_TK.reshape(-1)[slots], x_TD.shape[0]), order, send,
                            receive)
        return ExpertBatch(rows[order], received_WL.sum(0)), meta

    def experts(self, batch: ExpertBatch, weights: Experts) -> torch.Tensor:
        return local_dispatcher(self.local).experts(batch, weights)

    def combine(self, y_ND: torch.Tensor, meta: AllToAllMeta) -> torch.Tensor:
        back = AllToAll.apply(y_ND[meta.order_N.argsort()], meta.send, meta.receive, self.group)
        return weighted_sum(back, meta.local)
