"""What one GPU of a plan holds: its share of the weights, the KV cache per sequence, and how many sequences fit.

Weights per GPU: tp splits every matrix (embedding and lm_head included, vocab-parallel), ep splits the routed
experts over its groups and replicates the rest across them, pp splits the layers. The KV cache of a sequence
lives in its data-parallel group (ep groups serve different sequences) and is split over that group's tp GPUs
by KV head (no finer than one head per GPU; MLA's latent is replicated) and over the pp stages by layer.
`max_concurrency` is the KV-limited number of sequences of `context` tokens the plan (all replicas) holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from moelab.cost.dtypes import KV_BYTES
from moelab.cost.gpu import kv_shards
from moelab.cost.memory import _kv_width, linear_state_elements, model_weight_bytes, prefill_activation_bytes
from moelab.cost.plan import Plan
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec

PREFILL_TOKENS = 8192  # activation workspace for one chunked-prefill step (vLLM's max_num_batched_tokens on H100)


@dataclass(frozen=True)
class Capacity:
    """Memory of one GPU under a plan, for sequences of `context` tokens."""

    weights_bytes: float  # this GPU's share of the weights
    workspace_bytes: float  # runtime overhead and the activations of one prefill chunk
    kv_bytes_per_sequence: float  # this GPU's share of one sequence's KV cache
    usable_bytes: float  # capacity * memory_utilization
    max_concurrency: int  # KV-limited sequences, all replicas (0: the weights alone do not fit)

    @property
    def fits_weights(self) -> bool:
        return self.weights_bytes + self.workspace_bytes < self.usable_bytes

    def fits(self, concurrency: float) -> bool:
        """The weights and `concurrency` sequences (over all replicas) fit."""
        return self.fits_weights and concurrency <= self.max_concurrency


def weights_per_gpu(spec: ModelSpec, plan: Plan, dtype: str, components=None) -> float:
    """Bytes of weights one GPU of the plan holds (per-component dtypes if given)."""
    wb = model_weight_bytes(spec, dtype, components)
    experts = wb.routed_experts / (plan.ep * plan.tp)
    return ((wb.total - wb.routed_experts) / plan.tp + experts) / plan.pp


def kv_per_sequence_per_gpu(spec: ModelSpec, plan: Plan, kv_dtype: str, context: int) -> float:
    """One sequence's KV cache (layer by layer: windows, chunks and linear states) on one GPU of its group."""
    a_bytes = KV_BYTES[kv_dtype]
    per_group = (n * (_kv_width(layer.attention) * layer.attention.cached(context)
                      + linear_state_elements(layer.attention)) * a_bytes / kv_shards(layer.attention, plan.tp)
                 for layer, n in spec.layer_groups)  # memory.kv_cache_bytes, each layer split by its own heads
    return sum(per_group) / plan.pp


def capacity(spec: ModelSpec, hw: HardwareSpec, plan: Plan, dtype: str, kv_dtype: str, context: int,
             prefill_tokens: int = PREFILL_TOKENS, components=None) -> Capacity:
    """The plan's memory per GPU for sequences of `context` tokens (prompt + output); weights at per-component
    dtypes if given."""
    weights = weights_per_gpu(spec, plan, dtype, components)
    workspace = hw.runtime_overhead_bytes + prefill_activation_bytes(spec, dtype, 1, prefill_tokens) / plan.tp
    per_seq = kv_per_sequence_per_gpu(spec, plan, kv_dtype, context)
    usable = hw.memory_bytes * hw.memory_utilization
    free = usable - weights - workspace
    per_group = int(free // per_seq) if free > 0 and per_seq > 0 else (0 if free <= 0 else 1 << 30)
    return Capacity(weights, workspace, per_seq, usable, per_group * plan.ep * plan.replicas)
