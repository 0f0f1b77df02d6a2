"""The hardware file's model: the units of spec/presets/hardware.json (TFLOPS per dtype, GB, GB/s, µs).

Every key a bundled preset, `moelab hardware --json` or `moelab calibrate` writes is known here; any other key
is an error naming the closest known one. Keys left out take the presets' defaults (spec.hardware). Zero is
refused where it means nothing (a link of 0 GB/s divides by zero); it is allowed where the engine reads 0 as
"no such term" (cache, eager-CPU rates, overheads).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue, StringConstraints, model_validator

from moelab.limits import MAX_GPUS
from moelab.schema.base import StrictModel

# Upper bounds, each far above real hardware and far below where the arithmetic stops meaning anything.
MAX_TFLOPS = 1e6  # 1 EFLOP/s per accelerator: 200x a B200's fp8 peak
MAX_MEMORY_GB = 1e5  # 100 TB of memory per accelerator (a CPU host with 24 TB is the largest today)
MAX_BANDWIDTH_GBPS = 1e6  # 1 PB/s per accelerator or link: 100x HBM3e
MAX_LATENCY_US = 1e6  # one second per message or per step's fixed cost
MAX_WATTS = 1e5  # 100 kW per accelerator (a B200 is 1 kW)
MAX_USD_PER_HOUR = 1e6
MAX_CACHE_GB = 1e4  # last-level cache (today's largest are ~1 GB)
MAX_PAGE_MB = 1e6  # the fresh-page threshold of the allocator
MAX_NAME_CHARS = 256
MAX_SOURCE_CHARS = 4096  # one source note
MAX_SOURCES = 256  # source notes in one file

Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8"]
Tflops = Annotated[float, Field(ge=0, le=MAX_TFLOPS)]
SourceKey = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]
SourceNote = Annotated[str, StringConstraints(max_length=MAX_SOURCE_CHARS)]


def _rate(high: float, what: str, positive: bool = False) -> Any:
    return Field(None, gt=0, le=high, description=what) if positive else Field(None, ge=0, le=high,
                                                                                 description=what)


def _share(what: str) -> Any:
    return Field(None, gt=0, le=1, description=what)


class HardwareFile(StrictModel):
    """One accelerator, in the units of hardware.json. Links are per direction, per GPU."""

    name: str = Field(None, min_length=1, max_length=MAX_NAME_CHARS,
                      description="Shown in results (default: the file's name without extension).")
    peak_tflops: dict[Dtype, Tflops] = Field(
        min_length=1, description="Dense datasheet peak TFLOPS per compute dtype (no 2:4 sparsity); 0: unsupported. "
                                  "bf16 or fp32 is required: unsupported dtypes fall back to them.")
    memory_gb: float = _rate(MAX_MEMORY_GB, "Memory per GPU, GB (1e9 bytes).", positive=True)
    memory_bandwidth_gbps: float = _rate(MAX_BANDWIDTH_GBPS, "Memory bandwidth per GPU, GB/s.", positive=True)
    intra_node_gbps: float = _rate(MAX_BANDWIDTH_GBPS, "GPU-to-GPU link inside a node, GB/s per direction "
                                                       "(default 64).", positive=True)
    intra_node_latency_us: float = _rate(MAX_LATENCY_US, "Latency of that link, µs (default 10).")
    inter_node_gbps: float = _rate(MAX_BANDWIDTH_GBPS, "Network between nodes, GB/s per direction per GPU "
                                                       "(default 12.5).", positive=True)
    inter_node_latency_us: float = _rate(MAX_LATENCY_US, "Latency between nodes, µs (default 20).")
    gpus_per_node: int = Field(None, ge=1, le=MAX_GPUS, description="GPUs on the fast link (default 8).")
    tdp_watts: float = _rate(MAX_WATTS, "Board power, W.", positive=True)
    usd_per_hour: float = _rate(MAX_USD_PER_HOUR, "Rental price per GPU-hour, USD.")
    compute_efficiency: float = _share("Achievable share of peak FLOP/s, in (0, 1] (default 0.7).")
    bandwidth_efficiency: float = _share("Achievable share of memory bandwidth, in (0, 1] (default 0.85).")
    link_efficiency: float = _share("Achievable share of link bandwidth, in (0, 1] (default 0.8).")
    memory_utilization: float = _share("Share of memory a server may use, in (0, 1] (default 0.9).")
    runtime_overhead_gb: float = _rate(MAX_MEMORY_GB, "Memory taken by the runtime per GPU, GB (default 1).")
    layer_overhead_us: float = _rate(MAX_LATENCY_US, "Fixed cost per layer per step, µs (default 4).")
    moe_layer_overhead_us: float = _rate(MAX_LATENCY_US, "Extra fixed cost per MoE layer per step, µs (default 8).")
    step_overhead_us: float = _rate(MAX_LATENCY_US, "Fixed cost per forward pass, µs (default 0).")
    expert_overhead_us: float = _rate(MAX_LATENCY_US, "Fixed cost per routed expert touched, µs (default 0).")
    cache_gb: float = _rate(MAX_CACHE_GB, "Last-level cache, GB (0: no cache term).")
    cache_bandwidth_gbps: float = _rate(MAX_BANDWIDTH_GBPS, "Bandwidth of data within that cache, GB/s.")
    elementwise_bandwidth_gbps: float = _rate(MAX_BANDWIDTH_GBPS, "Eager execution: unfused elementwise ops, "
                                                                  "GB/s (0: not eager).")
    attention_tflops: float = _rate(MAX_TFLOPS, "Eager execution: attention TFLOPS (0: the matmul rate).")
    attention_bandwidth_gbps: float = _rate(MAX_BANDWIDTH_GBPS, "Eager execution: KV-read GB/s (0: memory "
                                                                "bandwidth).")
    attention_head_overhead_us: float = _rate(MAX_LATENCY_US, "Fixed attention cost per sequence, head and layer, "
                                                              "µs.")
    gemv_bandwidth_gbps: float = _rate(MAX_BANDWIDTH_GBPS, "One-row products (decode at batch 1), GB/s (0: memory "
                                                           "bandwidth).")
    fresh_page_mb: float = _rate(MAX_PAGE_MB, "Allocations above this many MB fault in fresh pages (0: no term).")
    fresh_page_bandwidth_gbps: float = _rate(MAX_BANDWIDTH_GBPS, "Bytes/s of those first-touch faults, GB/s.")
    sources: dict[SourceKey, SourceNote] = Field(None, max_length=MAX_SOURCES,
                                    description="Where each figure comes from: key -> note.")
    measurements: dict[str, JsonValue] = Field(None, description="Raw figures `moelab calibrate` keeps beside "
                                                                 "the fitted ones (not read by the engine).")

    @model_validator(mode="after")
    def _fallback_dtype(self) -> HardwareFile:
        if not (self.peak_tflops.get("bf16") or self.peak_tflops.get("fp32")):
            raise ValueError("peak_tflops must give bf16 or fp32 above 0 (other dtypes fall back to them)")
        return self

    def given(self) -> dict[str, Any]:
        """The keys the file gave, in hardware.json units (what spec.hardware builds a HardwareSpec from)."""
        return self.model_dump(exclude_unset=True)
