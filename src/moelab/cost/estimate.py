"""One full estimate of a model on a hardware preset and a workload: the object `moelab estimate --json` prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from moelab.cost.economics import serving_economics, training_cost
from moelab.cost.equivalent import heuristic_dense_equivalent, workload_dense_equivalent
from moelab.cost.finite import require_finite
from moelab.cost.flops import prefill_flops, token_flops
from moelab.cost.memory import inference_memory, kv_bytes_per_token, training_memory
from moelab.cost.parallel import best_plan, default_gpus, plan_notes, plans
from moelab.cost.params import count_params
from moelab.cost.roofline import Workload, crossover_batch
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec


@dataclass(frozen=True)
class TrainingPlan:
    """The training run priced beside the serving estimate."""

    tokens: float = 1e12
    mfu: float = 0.4
    seq: int = 4096
    micro_batch: int = 1
    zero: int = 1
    recompute: bool = True


def resolve_gpus(spec: ModelSpec, hw: HardwareSpec, wl: Workload, gpus: int | None) -> Workload:
    """The workload on `gpus` GPUs, or on the fewest (rounded up to a power of two) that hold it."""
    if gpus is None:
        mem = inference_memory(spec, hw, wl.dtype, wl.kv_dtype, wl.batch, wl.prompt, wl.gen)
        gpus = default_gpus(mem.min_gpus)
    wl = replace(wl, gpus=gpus)
    return replace(wl, plan=best_plan(plans(spec, hw, wl)).plan)


def estimate(spec: ModelSpec, hw: HardwareSpec, wl: Workload, gpus: int | None = None,
             training: TrainingPlan = TrainingPlan()) -> dict:
    """Parameters, memory, FLOPs, prefill and decode, parallel plans, energy, dollars and dense equivalents:
    every figure finite (see moelab.cost.finite for the keys that may be None)."""
    return require_finite(_estimate(spec, hw, wl, gpus, training), "estimate")


def _estimate(spec: ModelSpec, hw: HardwareSpec, wl: Workload, gpus: int | None, training: TrainingPlan) -> dict:
    p = count_params(spec)
    wl = resolve_gpus(spec, hw, wl, gpus)
    results = plans(spec, hw, wl)
    chosen = next(r for r in results if r.plan == wl.plan)
    pre, dec = chosen.prefill, chosen.decode
    mem = inference_memory(spec, hw, wl.dtype, wl.kv_dtype, wl.batch, wl.prompt, wl.gen)
    cross = crossover_batch(spec, hw, wl)
    moe = spec.moe if spec.is_moe else None
    train = training_cost(spec, hw, training.tokens, wl.gpus, training.mfu, training.seq)
    train_mem = training_memory(spec, hw, training.micro_batch, training.seq, dp=wl.gpus, zero=training.zero,
                                recompute=training.recompute)
    money = serving_economics(hw, wl, pre, dec)
    equivalent = workload_dense_equivalent(spec, hw, wl)
    return {
        "model": spec.name,
        "family": spec.family,
        "notes": list(spec.notes),  # how the config was read where that is not transformers' reading
        "hardware": hw.name,
        "workload": asdict(wl),
        "params": {**p.to_dict(), "active_fraction": p.active / p.total},
        "memory": {
            **mem.to_dict(),
            "kv_bytes_per_token": kv_bytes_per_token(spec, wl.kv_dtype),
            "gpus": wl.gpus,
            "memory_per_gpu_bytes": chosen.memory_per_gpu_bytes,
            "capacity_per_gpu_bytes": hw.memory_bytes * hw.memory_utilization,
            "fits": chosen.fits,
        },
        "flops": {
            "per_token_decode": token_flops(spec, p, wl.decode_context),
            "per_token_6n_training": 6.0 * p.active,
            "prefill_total": prefill_flops(spec, p, wl.batch, wl.prompt),
        },
        "prefill": {
            **pre.to_dict(),
            "time_to_first_token_seconds": pre.seconds,
            "tokens_per_second": wl.batch * wl.prompt / pre.seconds,
        },
        "decode": {
            **dec.to_dict(),
            "step_seconds": dec.seconds,
            "per_token_latency_seconds": dec.seconds,
            "context": wl.decode_context,
            "tokens_per_second": chosen.tokens_per_second,
            "tokens_per_second_per_gpu": chosen.tokens_per_second_per_gpu,
            "experts_per_layer": moe.n_experts if moe else 0,
            "top_k": moe.top_k if moe else 0,
            "crossover_batch": cross,
        },
        "parallel": {
            "plan": wl.plan,
            "gpus": wl.gpus,
            "scaling_efficiency": chosen.scaling_efficiency,
            "plans": [r.to_dict() for r in results],
            "notes": plan_notes(spec, wl.gpus),
        },
        "energy": {k: v for k, v in money.items() if "usd" not in k},
        "cost": {k: v for k, v in money.items() if "usd" in k or k == "request_seconds"},
        "training": {**train, "plan": asdict(training),
                     "memory": {**train_mem.to_dict(), "capacity_per_gpu_bytes": hw.memory_bytes}},
        "dense_equivalent": {
            "heuristic": heuristic_dense_equivalent(spec),
            "workload": equivalent["params"],
            "workload_detail": equivalent,
        },
    }
