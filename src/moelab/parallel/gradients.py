"""Gradients across processes: the global batch's mean gradient, its global norm for clipping, logged means.

Each rank's loss is the mean over its own slice of the global batch, so the global mean's gradient is the
mean of the ranks' gradients. Replicated parameters (everything but the routed experts under expert
parallelism) are summed over all W ranks and divided by W. An expert shard's gradient already holds every
ep rank's tokens (the all-to-all's backward brought them to the rank holding the expert); it is summed over the
dp group (the other copies of the same shard) and divided by W. One flat buffer per group and call, as DDP's
buckets do. The clip norm is the norm over every parameter once: the replicated part (equal on every rank) plus
the expert shards summed over the ep group, with torch.nn.utils.clip_grad_norm_'s coefficient
max_norm / (norm + 1e-6), at most 1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from moelab.nn.moe import SHARDED
from moelab.parallel.clock import timed
from moelab.parallel.layout import Mesh


def collective_device() -> torch.device:
    """Where a small tensor must live to go through this group's backend (NCCL takes CUDA tensors only)."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def expert_shards(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters split over an ep group (MoELayer.apply_ep), in model order."""
    out = []
    for layer in model.moe_layers():
        if layer.ep_group is not None:
            out += [p for p in (getattr(layer, name) for name in SHARDED) if p is not None]
    return out


def _split(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    shards = {id(p) for p in expert_shards(model)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if id(p) not in shards], [p for p in params if id(p) in shards]


def _sum_mean(grads: list[torch.Tensor], group, world: int) -> None:
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    with timed("allreduce"):
        dist.all_reduce(flat, group=group)
    flat /= world
    for grad, reduced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(reduced)


@torch.no_grad()
def reduce_gradients(model: torch.nn.Module, mesh: Mesh | None) -> None:
    """Replace every rank's gradients by the global batch's (see the module docstring)."""
    if mesh is None:
        return
    replicated, shards = _split(model)
    for p in shards:  # a shard none of whose experts got a row still takes its zero gradient (and decay)
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    world = mesh.layout.world
    _sum_mean([p.grad for p in replicated if p.grad is not None], dist.group.WORLD, world)
    if mesh.layout.dp > 1:
        _sum_mean([p.grad for p in shards], mesh.dp_group, world)
    elif shards:
        for p in shards:
            p.grad /= world


@torch.no_grad()
def clip_grad_norm(model: torch.nn.Module, max_norm: float, mesh: Mesh | None) -> torch.Tensor:
    """Clip every gradient by the global norm; returns that norm (torch's clip_grad_norm_ for one process)."""
    if mesh is None:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    replicated, shards = _split(model)
    grads = [p.grad for p in replicated + shards if p.grad is not None]
    square = lambda ps: sum((p.grad.double().square().sum() for p in ps if p.grad is not None),  # noqa: E731
                            torch.zeros((), dtype=torch.float64, device=grads[0].device))
    shard_square = square(shards)
    if shards:
        with timed("allreduce"):
            dist.all_reduce(shard_square, group=mesh.ep_group)
    norm = (square(replicated) + shard_square).sqrt().to(grads[0].dtype)
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.to(g.dtype))
    return norm


def mean_values(values: dict[str, float], mesh: Mesh | None) -> dict[str, float]:
    """The mean over all ranks of each logged number (a rank's loss is its slice's mean)."""
    if mesh is None or not values:
        return values
    keys = sorted(values)
    vector = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=collective_device())
    with timed("allreduce"):
        dist.all_reduce(vector)
    return dict(zip(keys, (vector / mesh.layout.world).tolist(), strict=True))


def total(value: int, mesh: Mesh | None) -> int:
    """The sum over all ranks of a count (dropped token-slots)."""
    if mesh is None:
        return value
    t = torch.tensor([value], dtype=torch.long, device=collective_device())
    with timed("allreduce"):
        dist.all_reduce(t)
    return int(t.item())
