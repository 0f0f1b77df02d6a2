"""Multi-GPU serving plans: memory per GPU, time per phase, throughput and scaling efficiency per plan.

Expert parallelism places whole experts on GPUs, so it needs at least one routed expert per GPU: on more GPUs
than experts it is refused when asked for (`evaluate_plan` with plan "ep") and not offered by `plans` (whose
`plan_notes` say why), rather than modelled with fractions of an expert per GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from moelab.cost.memory import kv_cache_bytes, model_weight_bytes, prefill_activation_bytes
from moelab.cost.roofline import Phase, Workload, decode_step, prefill
from moelab.errors import MoelabError
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec


def memory_per_gpu(spec: ModelSpec, hw: HardwareSpec, wl: Workload) -> float:
    """Bytes one GPU holds under the workload's plan: "tp" shards everything, "ep" replicates non-experts."""
    wb = model_weight_bytes(spec, wl.dtype)
    state = kv_cache_bytes(spec, wl.kv_dtype, wl.batch, wl.prompt + wl.gen)
    state += prefill_activation_bytes(spec, wl.dtype, wl.batch, wl.prompt)
    if wl.plan == "ep" and spec.is_moe:
        weights = wb.total - wb.routed_experts + wb.routed_experts / wl.gpus
    else:
        weights = wb.total / wl.gpus
    return weights + state / wl.gpus + hw.runtime_overhead_bytes


@dataclass(frozen=True)
class PlanResult:
    plan: str
    gpus: int
    fits: bool
    memory_per_gpu_bytes: float
    prefill: Phase
    decode: Phase
    tokens_per_second: float  # decode, whole system
    tokens_per_second_per_gpu: float
    scaling_efficiency: float  # per-GPU decode throughput against one GPU (memory limits ignored there)

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("prefill", "decode")}
        out.update(prefill_seconds=self.prefill.seconds, decode_step_seconds=self.decode.seconds,
                   comm_seconds_per_step=self.decode.comm_seconds)
        return out


def ep_applies(spec: ModelSpec, gpus: int) -> bool:
    """Expert parallelism is a plan for a MoE on 2 to n_experts GPUs (whole experts per GPU)."""
    return spec.is_moe and 1 < gpus <= spec.moe.n_experts


def plan_notes(spec: ModelSpec, gpus: int) -> list[str]:
    """Why a plan that might be expected is not offered on this many GPUs (empty when none is missing)."""
    if spec.is_moe and gpus > spec.moe.n_experts:
        return [f"expert parallelism not offered: {spec.name} has {spec.moe.n_experts} experts per layer, fewer "
                f"than the {gpus} GPUs (EP places whole experts on GPUs)"]
    return []


def evaluate_plan(spec: ModelSpec, hw: HardwareSpec, wl: Workload) -> PlanResult:
    """Memory, phase times and throughput of the workload's plan; EP on more GPUs than experts is refused."""
    if wl.plan == "ep" and spec.is_moe and wl.gpus > spec.moe.n_experts:
        raise MoelabError(f"expert parallelism needs at least one expert per GPU: {spec.name} has "
                          f"{spec.moe.n_experts} experts, {wl.gpus} GPUs requested")
    dec = decode_step(spec, hw, wl)
    single = decode_step(spec, hw, replace(wl, gpus=1, plan="tp"))
    per_gpu = wl.batch / dec.seconds / wl.gpus
    memory = memory_per_gpu(spec, hw, wl)
    return PlanResult(
        plan=wl.plan,
        gpus=wl.gpus,
        fits=memory <= hw.memory_bytes * hw.memory_utilization,
        memory_per_gpu_bytes=memory,
        prefill=prefill(spec, hw, wl),
        decode=dec,
        tokens_per_second=wl.batch / dec.seconds,
        tokens_per_second_per_gpu=per_gpu,
        scaling_efficiency=per_gpu / (wl.batch / single.seconds),
    )


def plans(spec: ModelSpec, hw: HardwareSpec, wl: Workload) -> list[PlanResult]:
    """Every plan that applies: tensor parallel, and for a MoE on 2 to n_experts GPUs expert parallel."""
    kinds = ["tp", "ep"] if ep_applies(spec, wl.gpus) else ["tp"]
    return [evaluate_plan(spec, hw, replace(wl, plan=k)) for k in kinds]


def best_plan(results: list[PlanResult]) -> PlanResult:
    """The fastest decode among plans that fit in memory (the least memory-hungry if none fits)."""
    fitting = [r for r in results if r.fits]
    if not fitting:
        return min(results, key=lambda r: r.memory_per_gpu_bytes)
    return max(fitting, key=lambda r: r.tokens_per_second)


def default_gpus(min_gpus: int) -> int:
    """Serving stacks shard by powers of two (tensor parallel must divide the heads): round min_gpus up."""
    gpus = 1
    while gpus < min_gpus:
        gpus *= 2
    return gpus
