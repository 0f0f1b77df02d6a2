"""The MoE layer: router, routed experts through a dispatch backend, shared experts, balancing and capacity.

Balancing signals, recomputed every forward and kept on the layer:
- `aux_loss`: Switch load-balancing loss E * sum_i f_i * P_i (f_i: share of token-slots routed to expert i,
  P_i: mean router probability of expert i); perfect balance scores 1. Multiply by your coefficient.
- `z_loss`: mean over tokens of logsumexp(router logits)^2.
- `load`: token-slots per expert, accumulated by training forwards (train mode with gradients; never by an
  evaluation) until `update_bias()` applies auxiliary-loss-free balancing:
  bias_i += rate * sign(mean_load - load_i) (the bias only affects which experts are selected).
- `last_counts`, `last_entropy`, `dropped`: the last forward's token-slots per expert, mean router entropy
  (nats) and dropped slots, for metrics.

DS-MoE (`dense_experts`): every expert processes every token, weighted by the router's probabilities, so that
all experts learn; the training lab turns it on to train and off for sparse top-k inference.

Capacity: with `capacity_factor` c each expert takes at most ceil(c * T * k / E) token-slots. Slots are
served by choice rank, then by token position (all first choices before any second choice, earlier tokens
first, as in GShard); the rest are dropped and contribute nothing (the residual stream carries the token).
`capacity_factor=None` is dropless.

Across processes (`apply_ep`, `share_statistics`): the router's counts are all-reduced over the statistics
group, so f_i, the load the biases follow and capacity are those of the global batch. The aux loss then uses the
global f_i with this process's P_i: averaged over the processes (as their gradients are) it is the global
E * sum_i f_i * P_i, and its gradient is the global one (f_i carries none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from moelab.nn.dispatch import Dispatcher, Experts, ExpertWeights, local_dispatcher, run
from moelab.nn.layers import SwiGLU
from moelab.nn.routers import Router, Routing
from moelab.parallel.clock import timed
from moelab.spec.model import MoESpec

SHARDED = ("gate_up_proj", "down_proj", "gate_up_proj_bias", "down_proj_bias")  # split by expert under EP


@dataclass(frozen=True)
class MoEOptions:
    """How a MoE layer routes and balances (training-time choices, not architecture)."""

    backend: str = "auto"
    capacity_factor: float | None = None
    jitter: float = 0.0
    bias_update_rate: float = 0.0  # auxiliary-loss-free balancing; 0 disables it
    dense_experts: bool = False  # DS-MoE dense training: every expert runs, weighted by the router's probabilities


def default_backend(device: torch.device | str, dtype: torch.dtype, backward: bool = False) -> str:
    """The backend measured fastest for this device, dtype and pass (benchmarks/moe_layer.py, train_step.py).

    On CUDA one grouped kernel beats a launch per expert. On the CPU the expert GEMMs are over 98% of the
    time, so the backends differ only by the GEMM calls they make: grouped_mm was fastest or tied for 16-bit
    and for float32 training steps; per-expert GEMMs ("sorted") for float32 inference.
    """
    cuda = (device if isinstance(device, str) else device.type).startswith("cuda")
    if cuda or dtype in (torch.bfloat16, torch.float16) or backward:
        return "grouped_mm"
    return "sorted"


class MoELayer(nn.Module):
    """Routed experts (stacked weights) plus optional shared experts, on (batch, seq, d) inputs."""

    def __init__(self, d: int, moe: MoESpec, options: MoEOptions = MoEOptions(), mlp_bias: bool = False,
                 activation: str = "silu") -> None:
        super().__init__()
        self.spec, self.options, self.activation = moe, options, activation
        self.gate = Router(d, moe, options.jitter)
        e, f = moe.n_experts, moe.expert_ffn
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * f, d))  # (E, 2f, d): gate rows, then up rows
        self.down_proj = nn.Parameter(torch.empty(e, d, f))  # (E, d, f)
        nn.init.normal_(self.gate_up_proj, std=d ** -0.5)
        nn.init.normal_(self.down_proj, std=f ** -0.5)
        # gpt-oss: a bias on each expert's gate_up (E, 2f: gate then up, like gate_up_proj's rows) and down
        # (E, d) projections, zero at init as transformers' GptOssPreTrainedModel._init_weights sets them
        self.gate_up_proj_bias = nn.Parameter(torch.zeros(e, 2 * f)) if moe.expert_bias else None
        self.down_proj_bias = nn.Parameter(torch.zeros(e, d)) if moe.expert_bias else None
        has_shared = moe.n_shared or mlp_bias  # mirrors transformers: a biased shared MLP exists even at width 0
        self.shared_experts = SwiGLU(d, moe.n_shared * moe.shared_ffn, mlp_bias, activation) if has_shared else None
        self.shared_expert_gate = nn.Linear(d, 1, bias=False) if moe.shared_gate else None
        self.register_buffer("load", torch.zeros(e), persistent=False)
        self.aux_loss = self.z_loss = torch.zeros(())
        self.dropped = 0
        self.dense_experts = options.dense_experts  # switch per phase with TransformerLM.set_dense_experts
        self.stats_group = None  # a process group: router counts are summed over it (the global batch)
        self.ep_group = None  # the expert-parallel group this layer's experts are sharded over (apply_ep)
        self.expert_store = None  # an Experts store that replaced the stacked weights (set_expert_store)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        shape = x_BTD.shape
        x_TD = x_BTD.reshape(-1, shape[-1])
        with record_function("moe.route"):  # labels for benchmarks/train_throughput.py's profile
            routing = self.gate(x_TD)
            self._record(routing)
            if self.dense_experts:
                self.dropped = 0
                indices = torch.arange(self.spec.n_experts, device=x_TD.device).expand(x_TD.shape[0], -1)
                weights = routing.probs_TE * self.spec.routed_scaling_factor
            else:
                indices, weights = routing.indices_TK, self._apply_capacity(routing)
        with record_function("moe.dispatch"):
            dispatcher = self._dispatcher(x_TD)
            experts = self.expert_weights()
            if self.spec.weighted_input:  # Llama 4 (top-1): expert(w * x), combined with weight 1
                ones = torch.ones_like(weights[:, :1])
                out = sum(run(dispatcher, x_TD * weights[:, k, None].to(x_TD.dtype),
                              replace(routing, indices_TK=indices[:, k:k + 1], weights_TK=ones), experts)
                          for k in range(indices.shape[1]))
            else:
                out = run(dispatcher, x_TD, replace(routing, indices_TK=indices, weights_TK=weights), experts)
        if self.shared_experts is not None:
            shared = self.shared_experts(x_TD)
            if self.shared_expert_gate is not None:
                shared = torch.sigmoid(self.shared_expert_gate(x_TD)) * shared
            out = out + shared
        return out.view(shape)

    def _dispatcher(self, x_TD: torch.Tensor) -> Dispatcher:
        """Local, or all-to-all over the ep group after apply_ep; either way the experts held here run through
        the local backend options.backend names ("auto": the one measured fastest for this device, dtype and pass)."""
        if self.ep_group is None:
            return local_dispatcher(self._backend(x_TD))
        from moelab.nn.alltoall import AllToAllDispatcher

        return AllToAllDispatcher(self.ep_group, self._backend(x_TD))

    def _backend(self, x_TD: torch.Tensor) -> str:
        if self.options.backend != "auto":
            return self.options.backend
        return default_backend(x_TD.device.type, x_TD.dtype, torch.is_grad_enabled() and self.training)

    def expert_weights(self) -> Experts:
        """The routed experts this process holds, as the dispatchers take them: the stacked parameters, or the
        store that replaced them."""
        if self.expert_store is not None:
            return self.expert_store
        return ExpertWeights(self.gate_up_proj, self.down_proj, self.gate_up_proj_bias, self.down_proj_bias,
                             self.activation)

    def set_expert_store(self, store: Experts) -> None:
        """Compute the routed experts with `store` (moelab.mitigate: quantized or offloaded experts) and drop the
        stacked parameters it replaces. A store that is an nn.Module becomes a submodule (its buffers are in the
        state dict under `expert_store.`)."""
        for name in SHARDED:
            if getattr(self, name, None) is not None:
                delattr(self, name)
                setattr(self, name, None)
        self.expert_store = store

    def _global(self) -> bool:
        """Whether this forward's statistics are the global batch's: training forwards with a statistics
        group (evaluation sees the same tokens on every process and keeps its own)."""
        return self.stats_group is not None and self.training and torch.is_grad_enabled()

    def _apply_capacity(self, routing: Routing) -> torch.Tensor:
        """Combine weights with dropped slots zeroed (unchanged when dropless)."""
        weights = routing.weights_TK
        self.dropped = 0
        if self.options.capacity_factor is None:
            return weights
        t, k = routing.indices_TK.shape
        e = self.spec.n_experts
        by_rank = routing.indices_TK.T.reshape(-1)  # slot order: rank-major, then token
        onehot = F.one_hot(by_rank, e)
        position = (onehot.cumsum(0) * onehot).sum(-1) - 1  # place of each slot in its expert's queue
        tokens = t
        if self._global():  # the queue of the global batch: this process's tokens come after earlier ranks'
            offset_KE, tokens = self._queue_offsets(onehot.view(k, t, e).sum(1))
            position = position + offset_KE.gather(1, by_rank.view(k, t)).reshape(-1)
        capacity = math.ceil(self.options.capacity_factor * tokens * k / e)
        keep = (position < capacity).view(k, t).T
        self.dropped = int((~keep).sum())
        return weights * keep

    def _queue_offsets(self, counts_KE: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(slots of the global batch queued before this process's slot of each choice rank and expert, the
        global token count). The global order is choice rank, then process rank, then token."""
        world, me = dist.get_world_size(self.stats_group), dist.get_rank(self.stats_group)
        gathered = [torch.empty_like(counts_KE) for _ in range(world)]
        with timed("allreduce"):
            dist.all_gather(gathered, counts_KE, group=self.stats_group)
        all_RKE = torch.stack(gathered)
        others_KE = all_RKE.sum(0) - all_RKE[me]
        earlier_choices = others_KE.cumsum(0) - others_KE  # other ranks' slots of lower choice ranks
        return earlier_choices + all_RKE[:me].sum(0), int(all_RKE[:, 0].sum())

    def _record(self, routing: Routing) -> None:
        e = self.spec.n_experts
        counts = torch.bincount(routing.indices_TK.reshape(-1), minlength=e).float()
        if self._global():
            with timed("allreduce"):
                dist.all_reduce(counts, group=self.stats_group)
        if self.training and torch.is_grad_enabled():  # training forwards only: evaluation never moves the biases
            self.load += counts.detach()
        share = counts / counts.sum()  # f_i
        self.aux_loss = e * (share.detach() * routing.probs_TE.mean(0)).sum()
        self.z_loss = torch.logsumexp(routing.logits_TE, dim=-1).square().mean()
        self.last_counts = counts.detach()
        probs = routing.probs_TE.detach()
        self.last_entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())

    def share_statistics(self, group) -> None:
        """Sum the router's counts over `group` in training forwards (data parallelism: the global batch)."""
        self.stats_group = group

    def apply_ep(self, group, stats_group=None) -> None:
        """Keep this rank's E / world_size experts of `group` (rank r: experts r*E/W .. (r+1)*E/W - 1) and
        exchange tokens with them by all-to-all. The router, shared experts and balancing state stay whole;
        statistics are summed over `stats_group` (default: every process)."""
        if self.expert_store is not None:
            raise ValueError("experts behind a store (quantized or offloaded) cannot be sharded by expert "
                             "parallelism; run them in one process")
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        if self.spec.n_experts % world:
            raise ValueError(f"{self.spec.n_experts} experts do not split over {world} expert-parallel ranks")
        held = self.spec.n_experts // world
        for name in SHARDED:
            full = getattr(self, name)
            if full is not None:
                setattr(self, name, nn.Parameter(full.detach()[rank * held:(rank + 1) * held].clone(),
                                                 requires_grad=full.requires_grad))
        self.ep_group = group
        self.stats_group = stats_group if stats_group is not None else dist.group.WORLD

    @torch.no_grad()
    def update_bias(self) -> None:
        """Auxiliary-loss-free balancing step from the load seen since the last call; then reset the load."""
        rate = self.options.bias_update_rate
        if rate and self.load.sum() > 0:
            self.gate.bias += rate * torch.sign(self.load.mean() - self.load)
        self.load.zero_()
