"""Energy and dollars: per million generated tokens when serving, and for a training run to a token budget."""

from __future__ import annotations

from moelab.cost.dtypes import COMPUTE_DTYPE
from moelab.cost.flops import training_flops
from moelab.cost.params import count_params
from moelab.cost.roofline import Phase, Workload
from moelab.errors import MoelabError
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec


def serving_economics(hw: HardwareSpec, wl: Workload, pre: Phase, dec: Phase) -> dict:
    """One batch of requests end to end (prefill, then gen decode steps) on wl.gpus GPUs at TDP."""
    seconds = pre.seconds + wl.gen * dec.seconds
    per_million = 1e6 / (wl.batch * wl.gen)
    joules = wl.gpus * hw.tdp_watts * seconds
    dollars = wl.gpus * hw.usd_per_hour / 3600.0 * seconds
    return {
        "request_seconds": seconds,
        "output_tokens": wl.batch * wl.gen,
        "joules_per_million_tokens": joules * per_million,
        "kwh_per_million_tokens": joules * per_million / 3.6e6,
        "usd_per_million_tokens": dollars * per_million,
        "watts": wl.gpus * hw.tdp_watts,
        "usd_per_hour": wl.gpus * hw.usd_per_hour,
    }


def training_cost(spec: ModelSpec, hw: HardwareSpec, tokens: float, gpus: int, mfu: float = 0.4,
                  seq: int = 4096, dtype: str = "bf16") -> dict:
    """Train on `tokens` tokens: 6*N_active*tokens (+ attention) FLOPs at `mfu` of the dense peak."""
    if tokens <= 0 or gpus <= 0 or not 0 < mfu <= 1:
        raise MoelabError("training cost: tokens and GPUs must be positive and MFU in (0, 1]")
    flops = training_flops(spec, count_params(spec), tokens, seq)
    peak = hw.peak_flops.get(COMPUTE_DTYPE[dtype]) or hw.peak_flops.get("bf16") or max(hw.peak_flops.values())
    seconds = flops / (gpus * peak * mfu)
    return {
        "tokens": tokens,
        "flops": flops,
        "flops_per_token": flops / tokens,
        "mfu": mfu,
        "gpus": gpus,
        "seconds": seconds,
        "gpu_hours": gpus * seconds / 3600.0,
        "usd": gpus * seconds / 3600.0 * hw.usd_per_hour,
        "joules": gpus * seconds * hw.tdp_watts,
    }
