"""Whole tensors from expert shards and back: what checkpoints are written from and read into.

`whole(model, optimizer, mesh, gather=True)` gives, for the duration of a `with`, every expert-sharded
parameter (and its AdamW moments) its full (E, ...) size: gathered from the ep group (writing a checkpoint
or final/model.safetensors, which then has exactly the tensors and names of a one-process run), or as
placeholders to be filled (`gather=False`: loading one). On exit each rank keeps its own rows of whatever the
full tensors then hold. So checkpoints are never sharded, and a run resumes in any layout whose ep divides the
experts: 2 -> 1 and 1 -> 2 processes alike (a multi-node job needs the run folder on a shared file system).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.distributed as dist

from moelab.parallel.clock import timed
from moelab.parallel.gradients import expert_shards
from moelab.parallel.layout import Mesh


def _gather(local: torch.Tensor, group, world: int) -> torch.Tensor:
    parts = [torch.empty_like(local) for _ in range(world)]
    with timed("allreduce"):
        dist.all_gather(parts, local.contiguous(), group=group)
    return torch.cat(parts)


@contextmanager
def whole(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, mesh: Mesh | None, gather: bool = True):
    if mesh is None or mesh.layout.ep == 1:
        yield
        return
    world, rank = mesh.layout.ep, mesh.layout.ep_rank

    def full(local: torch.Tensor) -> torch.Tensor:
        if gather:
            return _gather(local, mesh.ep_group, world)
        return local.new_zeros(local.shape[0] * world, *local.shape[1:])

    def mine(t: torch.Tensor) -> torch.Tensor:
        rows = t.shape[0] // world
        return t[rank * rows:(rank + 1) * rows].clone()

    def moments(p: torch.nn.Parameter) -> dict:
        return optimizer.state.get(p, {}) if optimizer is not None else {}

    shards = [(p, p.shape, torch.Size([p.shape[0] * world, *p.shape[1:]])) for p in expert_shards(model)]
    for p, local, _ in shards:
        p.data = full(p.data)
        for key, value in moments(p).items():
            if torch.is_tensor(value) and value.shape == local:
                optimizer.state[p][key] = full(value)
    try:
        yield
    finally:
        for p, _, whole_shape in shards:
            p.data = mine(p.data)
            for key, value in moments(p).items():  # the state loaded inside the `with`, or the gathered one
                if torch.is_tensor(value) and value.shape == whole_shape:
                    optimizer.state[p][key] = mine(value)
