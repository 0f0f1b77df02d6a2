"""A serving measurement and the engine's prediction of it: what the published suite and `moelab fit` compare.

A Measurement is one figure someone measured (TTFT, TPOT, throughput) with the setting it was measured in:
model, hardware, plan, dtypes, input/output lengths and how requests arrived — a static batch (`mode` "static":
every request together, one prefill then decode steps), a closed loop at a concurrency ("serving": `vllm bench
serve --max-concurrency`), or every request at once for the highest throughput ("offline": the engine runs as
many as its KV cache holds, capped by the requests and by `concurrency` when the source states its batch limit).
`predict` prices it with the engine: cost.roofline for a static batch, cost.serving otherwise. The engine's
figures are means; a median is compared as if it were one, a p99 is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moelab.cost.capacity import capacity
from moelab.cost.plan import Plan
from moelab.cost.roofline import Workload, decode_step, prefill
from moelab.cost.serving import serve
from moelab.errors import MoelabError
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec

MODES = ("static", "serving", "offline")
METRICS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "output_tokens_per_second", "total_tokens_per_second",
           "requests_per_second", "output_tokens_per_second_per_gpu")
PHASES = {"ttft_ms": "prefill", "tpot_ms": "decode", "itl_ms": "decode", "e2e_ms": "throughput",
          "output_tokens_per_second": "throughput", "total_tokens_per_second": "throughput",
          "requests_per_second": "throughput", "output_tokens_per_second_per_gpu": "throughput"}
STATISTICS = ("mean", "median")
# An offline run's cap on running sequences per replica when the source states none: TensorRT-LLM's runtime batch
# (its v0.14 perf-overview example prints "Max Runtime Batch Size: 4096"); vLLM's max_num_seqs is lower (256-1024)
# and a case states it where it binds.
OFFLINE_MAX_SEQS = 4096


@dataclass(frozen=True)
class Measurement:
    """One measured figure and its setting."""

    model: str  # preset name, HF id or config path (resolved by the caller)
    hardware: str
    plan: str
    dtype: str
    kv_dtype: str
    input: int
    output: int
    mode: str
    metric: str
    value: float
    concurrency: int | None = None
    batch: int | None = None
    num_prompts: int | None = None
    statistic: str = "mean"
    name: str = ""  # an id to show
    phase: str | None = None  # prefill | decode | throughput (default: the metric's; a static batch's end-to-end
    # latency over many output tokens is a decode figure)

    def __post_init__(self) -> None:
        where = f"measurement {self.name or self.model}"
        if self.mode not in MODES:
            raise MoelabError(f"{where}: mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.metric not in METRICS:
            raise MoelabError(f"{where}: metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.statistic not in STATISTICS:
            raise MoelabError(f"{where}: the engine models means; statistic {self.statistic!r} cannot be compared "
                              f"(use {' or '.join(STATISTICS)})")
        if not (isinstance(self.value, (int, float)) and math.isfinite(self.value) and self.value > 0):
            raise MoelabError(f"{where}: value must be a positive number, got {self.value!r}")
        for key in ("input", "output"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise MoelabError(f"{where}: {key} must be a positive integer")
        if self.mode == "static" and not self.batch:
            raise MoelabError(f"{where}: a static measurement needs its batch")
        if self.mode == "serving" and not self.concurrency:
            raise MoelabError(f"{where}: a serving measurement needs its concurrency")
        Plan.parse(self.plan)
        if self.phase is None:
            object.__setattr__(self, "phase", PHASES[self.metric])
        elif self.phase not in ("prefill", "decode", "throughput"):
            raise MoelabError(f"{where}: phase must be prefill, decode or throughput, got {self.phase!r}")


def _offline_concurrency(m: Measurement, spec: ModelSpec, hw: HardwareSpec, plan: Plan) -> int:
    """Sequences an offline run keeps in flight: all requests, at most what the KV cache holds and the cap."""
    held = capacity(spec, hw, plan, m.dtype, m.kv_dtype, m.input + m.output).max_concurrency
    if held == 0:
        raise MoelabError(f"measurement {m.name or m.model}: the weights do not fit {plan.name} on {hw.name}")
    cap = m.concurrency or OFFLINE_MAX_SEQS * plan.replicas
    return max(1, min(held, cap, m.num_prompts or cap))


def predict(m: Measurement, spec: ModelSpec, hw: HardwareSpec) -> float:
    """The engine's value of the measurement's metric, in its unit."""
    plan = Plan.parse(m.plan)
    if m.mode == "static":
        wl = Workload(batch=m.batch, prompt=m.input, gen=m.output, dtype=m.dtype, kv_dtype=m.kv_dtype,
                      gpus=plan.gpus, plan=plan.name)
        ttft = prefill(spec, hw, wl).seconds
        tpot = decode_step(spec, hw, wl).seconds
        e2e = ttft + (m.output - 1) * tpot
        per_request = {"ttft_ms": ttft * 1e3, "tpot_ms": tpot * 1e3, "itl_ms": tpot * 1e3, "e2e_ms": e2e * 1e3}
        if m.metric in per_request:
            return per_request[m.metric]
        rates = {"output_tokens_per_second": m.batch * m.output / e2e,
                 "total_tokens_per_second": m.batch * (m.input + m.output) / e2e,
                 "requests_per_second": m.batch / e2e}
        rates["output_tokens_per_second_per_gpu"] = rates["output_tokens_per_second"] / plan.gpus
        return rates[m.metric]
    concurrency = m.concurrency if m.mode == "serving" else _offline_concurrency(m, spec, hw, plan)
    p = serve(spec, hw, plan, concurrency, m.input, m.output, dtype=m.dtype, kv_dtype=m.kv_dtype,
              num_prompts=m.num_prompts if m.mode == "serving" else None)
    latency_ms = p.ttft_ms + (m.output - 1) * p.tpot_ms
    return {"ttft_ms": p.ttft_ms, "tpot_ms": p.tpot_ms, "itl_ms": p.tpot_ms, "e2e_ms": latency_ms,
            "output_tokens_per_second": p.output_tokens_per_second,
            "total_tokens_per_second": p.requests_per_second * (m.input + m.output),
            "requests_per_second": p.requests_per_second,
            "output_tokens_per_second_per_gpu": p.output_tokens_per_second_per_gpu}[m.metric]

