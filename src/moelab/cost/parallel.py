"""Multi-GPU serving plans: memory per GPU, time per phase, throughput and scaling efficiency per plan."""

from __future__ import annotations

from dataclasses import dataclass, replace

from moelab.cost.memory import kv_cache_bytes, prefill_activation_bytes, weight_bytes
from moelab.cost.params import count_params
from moelab.cost.roofline import Phase, Workload, decode_step, prefill
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec


def memory_per_gpu(spec: ModelSpec, hw: HardwareSpec, wl: Workload) -> float:
    """Bytes one GPU holds under the workload's plan: "tp" shards everything, "ep" replicates non-experts."""
    wb = weight_bytes(count_params(spec), wl.dtype)
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


def evaluate_plan(spec: ModelSpec, hw: HardwareSpec, wl: Workload) -> PlanResult:
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
    """Every plan that applies: tensor parallel, and for a MoE on several GPUs expert parallel."""
    kinds = ["tp", "ep"] if spec.is_moe and wl.gpus > 1 else ["tp"]
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
