"""Multi-GPU serving plans: which plans apply to a model on G GPUs, and each plan's time, throughput and fit.

A plan (cost.plan) is pp x tp x ep GPUs per replica times its replicas. On G GPUs `plans` searches every
pp * tp * ep * x == G that applies (`plan_problem` says why one does not):

- tp divides every layer's query heads, and divides its KV heads or is a multiple of them (a KV head is
  replicated, never split; Gated DeltaNet: its value and key heads the same way);
- ep > 1 only for a MoE, and ep divides the routed experts of every MoE layer: EP places whole experts, never a
  fraction of one, and gives every group the same number;
- pp divides the layers, and the search uses it only when one replica spans more than a node (hw.gpus_per_node);
  a plan asked for (`--plan`) may use it anyway;
- replicas (data parallel) for dense and MoE alike, each serving at least one sequence of the batch (a replica
  with none adds GPUs and no throughput).

Each plan is priced by the step model (roofline.prefill / decode_step with Workload(plan=name, gpus=G)) and its
memory by cost.capacity: `fits` is the weights plus the batch's KV cache (prompt + gen tokens per sequence) fitting
every GPU, `max_concurrency` the KV-limited number of such sequences the plan holds. The best plan is the fastest
decode (tokens/s, all GPUs) among those that fit at the workload's batch; when none fits, the one needing the least
memory per GPU. Results are cached per (spec, hardware, workload, plan): compare and decide ask for the same ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from moelab.cost.capacity import capacity
from moelab.cost.eager import prices as eager_prices
from moelab.cost.plan import Plan, check_plan, expert_counts, plan_problem
from moelab.cost.roofline import Phase, Workload, decode_step, prefill
from moelab.errors import MoelabError
from moelab.limits import MAX_GPUS
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec

SHOWN = 5  # plans a table shows; JSON has them all


@dataclass(frozen=True)
class PlanResult:
    plan: str  # the plan's name (cost.plan)
    gpus: int
    replicas: int
    fits: bool  # the weights and the batch's KV cache fit every GPU
    max_concurrency: int  # KV-limited sequences of prompt + gen tokens, all replicas (0: weights do not fit)
    memory_per_gpu_bytes: float  # weights + workspace + this GPU's share of the batch's KV cache
    prefill: Phase
    decode: Phase
    tokens_per_second: float  # decode, whole system
    tokens_per_second_per_gpu: float
    scaling_efficiency: float  # per-GPU decode throughput against one GPU (memory limits ignored there)

    @property
    def parallel(self) -> Plan:
        return Plan.parse(self.plan)

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("prefill", "decode")}
        out.update(prefill_seconds=self.prefill.seconds, decode_step_seconds=self.decode.seconds,
                   comm_seconds_per_step=self.decode.comm_seconds)
        return out


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small) | {n // d for d in small})


def candidate_plans(spec: ModelSpec, hw: HardwareSpec, gpus: int, batch: int) -> list[Plan]:
    """Every plan on exactly `gpus` GPUs the search offers (module docstring)."""
    out = []
    for x in _divisors(gpus):
        if x > batch and x > 1:
            continue
        per_replica = gpus // x
        for pp in _divisors(per_replica):
            if pp > 1 and per_replica <= hw.gpus_per_node:
                continue
            for tp in _divisors(per_replica // pp):
                plan = Plan(pp=pp, tp=tp, ep=per_replica // pp // tp, replicas=x)
                if plan_problem(spec, plan) is None and (hw.execution == "gpu" or eager_prices(plan)):
                    out.append(plan)
    return out


def plan_notes(spec: ModelSpec, gpus: int) -> list[str]:
    """Why a plan that might be expected is not offered on this many GPUs (empty when none is missing)."""
    notes = []
    if spec.is_moe and gpus > 1:
        problem = plan_problem(spec, Plan(ep=gpus))
        if problem and gpus > min(expert_counts(spec)):
            notes.append(f"expert parallelism not offered on all {gpus} GPUs: {spec.name} has "
                         f"{min(expert_counts(spec))} experts per layer, fewer than the {gpus} GPUs (EP places "
                         "whole experts on GPUs); EP with tp or replicas is")
        elif problem:
            notes.append(f"ep{gpus} not offered: {problem}")
    problem = plan_problem(spec, Plan(tp=gpus))
    if gpus > 1 and problem:
        notes.append(f"tp{gpus} not offered: {problem}")
    return notes


_CACHE: dict[tuple, tuple[ModelSpec, HardwareSpec, PlanResult]] = {}
_CACHE_SIZE = 4096


def _cached(key: tuple, spec: ModelSpec, hw: HardwareSpec, make) -> PlanResult:
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is spec and hit[1] is hw:
        return hit[2]
    result = make()
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()
    _CACHE[key] = (spec, hw, result)
    return result


def _single_decode_seconds(spec: ModelSpec, hw: HardwareSpec, wl: Workload) -> float:
    one = replace(wl, gpus=1, plan="tp1")
    return _cached(("single", id(spec), id(hw), one), spec, hw,
                   lambda: evaluate(spec, hw, one, Plan(), scaling=False)).decode.seconds


def evaluate(spec: ModelSpec, hw: HardwareSpec, wl: Workload, plan: Plan, scaling: bool = True) -> PlanResult:
    """Phase times, throughput, fit and KV-limited concurrency of `plan` on the workload (cached)."""
    wl = replace(wl, gpus=plan.gpus, plan=plan.name)

    def make() -> PlanResult:
        dec = decode_step(spec, hw, wl)
        tps = wl.batch / dec.seconds
        per_gpu = tps / plan.gpus
        single = _single_decode_seconds(spec, hw, wl) if scaling else dec.seconds
        cap = capacity(spec, hw, plan, wl.dtype, wl.kv_dtype, wl.prompt + wl.gen, components=wl.components)
        groups = plan.ep * plan.replicas  # data-parallel groups, each holding its sequences' KV cache
        memory = cap.weights_bytes + cap.workspace_bytes + cap.kv_bytes_per_sequence * math.ceil(wl.batch / groups)
        return PlanResult(plan=plan.name, gpus=plan.gpus, replicas=plan.replicas, fits=cap.fits(wl.batch),
                          max_concurrency=cap.max_concurrency, memory_per_gpu_bytes=memory,
                          prefill=prefill(spec, hw, wl), decode=dec, tokens_per_second=tps,
                          tokens_per_second_per_gpu=per_gpu, scaling_efficiency=per_gpu / (wl.batch / single))

    return _cached(("plan", id(spec), id(hw), wl, scaling), spec, hw, make)


def evaluate_plan(spec: ModelSpec, hw: HardwareSpec, wl: Workload) -> PlanResult:
    """The workload's own plan ("tp", "ep" or a name); one line when it cannot serve the model."""
    plan = wl.parallel
    if plan.ep > 1 and spec.is_moe and plan.ep > min(expert_counts(spec)):
        raise MoelabError(f"expert parallelism needs at least one expert per GPU: {spec.name} has "
                          f"{min(expert_counts(spec))} experts, {plan.ep} GPUs requested")
    check_plan(spec, plan)
    return evaluate(spec, hw, wl, plan)


def _rank(r: PlanResult) -> tuple:
    """Best first: plans that fit by decode tokens/s, then the others by memory per GPU."""
    return (0, -r.tokens_per_second, r.plan) if r.fits else (1, r.memory_per_gpu_bytes, r.plan)


def plans(spec: ModelSpec, hw: HardwareSpec, wl: Workload) -> list[PlanResult]:
    """Every plan the search offers on wl.gpus GPUs, best first (module docstring)."""
    found = candidate_plans(spec, hw, wl.gpus, wl.batch)
    if not found:  # more GPUs than sequences and no tp that divides the heads: idle replicas are all there is
        found = candidate_plans(spec, hw, wl.gpus, wl.gpus)
    return sorted((evaluate(spec, hw, wl, p) for p in found), key=_rank)


def best_plan(results: list[PlanResult]) -> PlanResult:
    """The fastest decode among plans that fit in memory (the least memory-hungry if none fits)."""
    return min(results, key=_rank)


def default_gpus(min_gpus: int) -> int:
    """Serving stacks shard by powers of two (tensor parallel must divide the heads): round min_gpus up, at most
    the most GPUs moelab models (a workload that needs more is reported as not fitting there)."""
    gpus = 1
    while gpus < min_gpus and gpus < MAX_GPUS:
        gpus *= 2
    return gpus
