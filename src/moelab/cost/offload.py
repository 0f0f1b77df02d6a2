"""Expert offloading: a decode step when only `resident` routed experts per MoE layer stay in GPU memory and the
rest are fetched from host memory over the host link (hw.host_link) when the batch routes to them.

Per decode step and MoE layer the batch touches U(B) distinct experts (cost.routing, with the skew). A touched
expert is a hit when it is resident, else a miss that moves the expert over the link before it runs:

    miss_seconds  = host_link_latency_s + expert_bytes / tp / (host_link_bandwidth * host_link_efficiency)
    step_seconds  = resident_step + misses_per_gpu * miss_seconds          (serialised: no overlap, the default)
                  = max(resident_step, misses_per_gpu * miss_seconds)     (overlap=True: perfect prefetch, a bound)

`resident_step` is the engine's own decode step with every expert in memory (cost.roofline.decode_step, the
function `moelab bench` predicts its decode rows with), so hit_rate = 1 gives it exactly. Under tp every GPU holds
and fetches a 1/tp slice of each expert (in parallel, each over its own link); under ep each GPU holds E/ep of the
experts and fetches its own misses, misses_per_gpu = misses / ep.

The hit rate, unless given, is modelled. Uniform independent routing (skew 0): whatever the cache policy (LRU,
LFU), the resident set is independent of the next step's choices and by symmetry holds any given expert with
probability resident / E, so each touched expert hits with probability resident / E (the independent reference
model's hit rate for equal popularities). Under skew the resident set is taken as the `resident` most loaded
experts (a frequency cache, LFU in steady state), so misses = sum over the others of P(touched) =
1 - (1 - k * load_i)^B (cost.routing.expert_loads); an LRU under skew does worse than that (Che's approximation),
so the skewed figure is the better cache's.

Host memory holds the experts that are not resident (per node: hw.host_memory_bytes); `fits_host` says whether
they fit there (None when the hardware gives no host memory).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from moelab.cost.capacity import capacity
from moelab.cost.dtypes import WEIGHT_BYTES, check_dtype, component_dtype, components_key, kv_dtype_for
from moelab.cost.memory import expert_param_bytes, routed_expert_bytes
from moelab.cost.params import expert_params
from moelab.cost.plan import Plan, check_plan
from moelab.cost.roofline import Workload, decode_step
from moelab.cost.routing import distinct_experts, expert_loads
from moelab.cost.step import busiest_share
from moelab.errors import MoelabError
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec


@dataclass(frozen=True)
class OffloadedDecode:
    """One modelled decode step with `resident` experts per MoE layer in GPU memory, the rest over the host link."""

    model: str
    hardware: str
    plan: str
    batch: int
    context: float
    dtype: str
    expert_dtype: str  # the routed experts' weight dtype in memory (a miss moves them at it, unless miss_dtype)
    resident: int  # routed experts per MoE layer kept in GPU memory (over the replica's GPUs)
    n_experts: int  # routed experts per MoE layer (the fewest, if layers differ)
    moe_layers: int
    hit_rate: float  # of the touched experts, the share that is resident (given, or modelled)
    hit_rate_basis: str  # "given" or how it was modelled
    touched_experts: float  # U(B) summed over the MoE layers, per step
    misses_per_step: float  # touched * (1 - hit rate), summed over the MoE layers (the whole replica)
    misses_per_gpu: float  # of those, the ones one GPU fetches over its own link, one after another
    expert_bytes: float  # one routed expert at expert_dtype (the first MoE layer's)
    miss_bytes: float  # what one miss moves over one GPU's link (one expert at the dtype moved, / tp)
    miss_seconds: float  # one miss: latency + miss_bytes / achieved link bandwidth
    transfer_seconds: float  # per step, all of one GPU's misses
    resident_step_seconds: float  # the decode step with every expert in memory (roofline.decode_step)
    step_seconds: float
    overlap: bool  # transfers overlap the step (a lower bound) rather than add to it
    link: str
    link_bandwidth: float  # achieved bytes/s per direction (host_link_bandwidth * host_link_efficiency)
    link_latency_s: float
    host_bytes: float  # the experts not resident, all MoE layers, held in host memory (one replica)
    host_memory_bytes: float  # per node (0: not given)
    fits_host: bool | None
    basis: str = "modelled"

    @property
    def slowdown(self) -> float:
        return self.step_seconds / self.resident_step_seconds

    def to_dict(self) -> dict:
        return {**asdict(self), "slowdown": self.slowdown, "miss_ms": self.miss_seconds * 1e3}


def _plan(plan: Plan | str | None) -> Plan:
    plan = Plan() if plan is None else (Plan.parse(plan) if isinstance(plan, str) else plan)
    if plan.pp > 1:
        raise MoelabError(f"offloaded decode: plan {plan.name} has pipeline stages; price it with pp1 plans")
    return plan


def _moe_groups(spec: ModelSpec):
    groups = [(layer.moe, n) for layer, n in spec.layer_groups if layer.moe is not None]
    if not groups:
        raise MoelabError(f"{spec.name} is dense: it has no routed experts to offload")
    return groups


def _check_count(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MoelabError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def layer_hit_rate(n_experts: int, top_k: int, tokens: float, resident: int, skew: float = 0.0) -> float:
    """The modelled share of one MoE layer's touched experts that are resident (module docstring)."""
    resident = min(resident, n_experts)
    if skew == 0.0:
        return resident / n_experts
    touched = distinct_experts(n_experts, top_k, tokens, skew)
    loads = expert_loads(n_experts, top_k, skew)  # most loaded first
    misses = sum(1.0 - (1.0 - top_k * load) ** tokens for load in loads[resident:])
    return 1.0 - misses / touched if touched else 1.0


def offloaded_decode(spec: ModelSpec, hw: HardwareSpec, batch: int, context: float, dtype: str, resident: int,
                     hit_rate: float | None = None, skew: float = 0.0, components=None, *,
                     kv_dtype: str | None = None, plan: Plan | str | None = None,
                     overlap: bool = False, miss_dtype: str | None = None) -> OffloadedDecode:
    """A decode step of `batch` sequences at `context` positions with `resident` routed experts per MoE layer in
    GPU memory (0..E) and the rest fetched over the host link on a miss (module docstring). `hit_rate` in [0, 1]
    overrides the modelled one; `components` are per-component weight dtypes (a miss moves the routed expert at
    its dtype); `miss_dtype`: the dtype a miss moves when the slow tier stores the experts otherwise than memory
    holds them (a bf16 CPU bench reading an fp32 file: the link term and host bytes at the stored dtype, the
    resident step at the model's); `plan` a pp1 plan (default: one GPU). Works for eager (CPU) hardware too, whose
    host link is whatever slower tier the caller sets (dataclasses.replace(hw, host_link_bandwidth=..., ...))."""
    _check_count("batch", batch, 1, 1 << 20)
    if isinstance(context, bool) or not isinstance(context, (int, float)) or not 0 <= context < 1e9:
        raise MoelabError(f"context must be a number of positions >= 0, got {context!r}")
    groups = _moe_groups(spec)
    fewest = min(m.n_experts for m, _ in groups)
    _check_count("resident experts", resident, 0, fewest)
    if hit_rate is not None and (isinstance(hit_rate, bool) or not isinstance(hit_rate, (int, float))
                                 or not 0.0 <= hit_rate <= 1.0):
        raise MoelabError(f"hit rate must be in [0, 1], got {hit_rate!r}")
    plan = _plan(plan)
    check_plan(spec, plan)
    if plan.ep > 1 and resident % plan.ep:
        raise MoelabError(f"resident experts {resident} must divide over the ep{plan.ep} groups evenly")
    bandwidth, latency = hw.host_link()
    comps = components_key(components)
    kv = kv_dtype_for(dtype, kv_dtype)
    wl = Workload(batch=batch, prompt=max(1, math.ceil(context)), gen=1, dtype=dtype, kv_dtype=kv, skew=skew,
                  gpus=plan.gpus, plan=plan.name, components=comps)
    resident_step = decode_step(spec, hw, wl, context).seconds
    tokens = busiest_share(batch, plan.replicas)  # one replica's sequences, one token each
    per_param = routed_expert_bytes(dtype, spec.expert_storage, comps)
    if miss_dtype is not None:
        check_dtype(miss_dtype, WEIGHT_BYTES, "miss dtype")
    moved = per_param if miss_dtype is None else expert_param_bytes(miss_dtype, spec.expert_storage)
    touched = misses = transfer = host = 0.0
    for m, n in groups:
        u = distinct_experts(m.n_experts, m.top_k, tokens, skew)
        h = hit_rate if hit_rate is not None else layer_hit_rate(m.n_experts, m.top_k, tokens, resident, skew)
        nbytes = expert_params(spec.d_model, m) * moved
        touched += n * u
        misses += n * u * (1.0 - h)
        transfer += n * u * (1.0 - h) / plan.ep * (latency + nbytes / plan.tp / bandwidth)
        host += n * (m.n_experts - resident) * nbytes
    first = groups[0][0]
    one = expert_params(spec.d_model, first) * per_param
    one_moved = expert_params(spec.d_model, first) * moved
    step = max(resident_step, transfer) if overlap else resident_step + transfer
    hit = 1.0 - misses / touched if touched else 1.0
    basis = "given" if hit_rate is not None else (
        "modelled: resident / E (uniform independent routing, any cache)" if skew == 0.0 else
        f"modelled: the {resident} most loaded experts resident (Zipf skew {skew:g}, a frequency cache)")
    return OffloadedDecode(
        model=spec.name, hardware=hw.name, plan=plan.name, batch=batch, context=float(context), dtype=dtype,
        expert_dtype=component_dtype(dtype, comps, "routed_experts"), resident=resident, n_experts=fewest,
        moe_layers=spec.n_moe_layers, hit_rate=hit, hit_rate_basis=basis, touched_experts=touched,
        misses_per_step=misses, misses_per_gpu=misses / plan.ep, expert_bytes=one, miss_bytes=one_moved / plan.tp,
        miss_seconds=latency + one_moved / plan.tp / bandwidth, transfer_seconds=transfer,
        resident_step_seconds=resident_step, step_seconds=step, overlap=overlap, link=f"{hw.name} host link",
        link_bandwidth=bandwidth, link_latency_s=latency, host_bytes=host, host_memory_bytes=hw.host_memory_bytes,
        fits_host=(host <= hw.host_memory_bytes) if hw.host_memory_bytes else None)


def max_resident(spec: ModelSpec, hw: HardwareSpec, batch: int, context: int, dtype: str,
                 plan: Plan | str | None = None, components=None, kv_dtype: str | None = None) -> int:
    """How many routed experts per MoE layer fit in GPU memory beside everything else: per GPU, the usable memory
    (capacity * memory_utilization) less the runtime overhead and prefill workspace, the non-expert weights and
    the KV cache of `batch` sequences of `context` tokens (cost.capacity), divided by what one more resident expert
    per layer costs that GPU (one expert in every MoE layer, / tp; under ep a multiple of ep experts, one per
    group). At most the fewest experts of any MoE layer; 0 when the rest alone does not fit."""
    groups = _moe_groups(spec)
    plan = _plan(plan)
    check_plan(spec, plan)
    _check_count("batch", batch, 1, 1 << 20)
    _check_count("context", context, 1, 1 << 30)
    comps = components_key(components)
    kv = kv_dtype_for(dtype, kv_dtype)
    cap = capacity(spec, hw, plan, dtype, kv, context, components=comps)
    per_param = routed_expert_bytes(dtype, spec.expert_storage, comps)
    all_experts = sum(n * m.n_experts * expert_params(spec.d_model, m) for m, n in groups) * per_param
    rest = cap.weights_bytes - all_experts / (plan.ep * plan.tp)
    kv_bytes = cap.kv_bytes_per_sequence * math.ceil(batch / (plan.ep * plan.replicas))
    free = cap.usable_bytes - cap.workspace_bytes - rest - kv_bytes
    one_per_layer = sum(n * expert_params(spec.d_model, m) for m, n in groups) * per_param / plan.tp
    if free <= 0:
        return 0
    per_group = int(free // one_per_layer)  # experts per layer one GPU holds
    return min(per_group * plan.ep, min(m.n_experts for m, _ in groups) // plan.ep * plan.ep)
