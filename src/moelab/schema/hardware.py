"""The hardware file's model: the units of spec/presets/hardware.json (TFLOPS per dtype, GB, GB/s, µs).

Every key a bundled preset, `moelab hardware --json` or `moelab calibrate` writes is known here; any other key
is an error naming the closest known one. Keys left out (or null) take the presets' defaults (spec.hardware).
Zero is refused where it means nothing (a link of 0 GB/s divides by zero); it is allowed where the engine reads
0 as "no such term" (cache, eager-CPU rates, overheads). A rate the engine divides by has a lower bound too
(the MIN_ constants): a bandwidth of 1e-300 GB/s is finite but makes every modelled time overflow, so a rate
is either 0 (where 0 means "none") or at least its minimum, and every modelled figure stays finite.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

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

# Lower bounds of the rates and sizes the engine divides by, each far below any machine that runs a model: with
# them the largest model and workload moelab.limits allows, on such a GPU, prices below about 1e50 (seconds,
# joules, dollars), far from float overflow at 1.8e308, so no modelled figure is ever infinite.
MIN_TFLOPS = 1e-6  # 1 MFLOP/s: slower than a 1980s PC (0 still means "dtype unsupported" where allowed)
MIN_BANDWIDTH_GBPS = 1e-3  # 1 MB/s: a floppy disk's rate, per accelerator or link
MIN_MEMORY_GB = 1e-3  # 1 MB of memory per accelerator
MIN_SHARE = 1e-3  # an efficiency or utilisation of 0.1%: below that the figure is noise, not a measurement


def _zero_or_at_least(low: float, unit: str) -> AfterValidator:
    """0 (the engine's "no such term") or a value of at least `low`."""
    def check(value: float) -> float:
        if 0 < value < low:
            raise ValueError(f"must be 0 or at least {low:g} {unit}")
        return value
    return AfterValidator(check)


Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8"]
Tflops = Annotated[float, Field(ge=0, le=MAX_TFLOPS), _zero_or_at_least(MIN_TFLOPS, "TFLOPS")]
Link = Annotated[float, Field(ge=MIN_BANDWIDTH_GBPS, le=MAX_BANDWIDTH_GBPS)]  # a link of 0 GB/s divides by zero
Rate = Annotated[float, Field(ge=0, le=MAX_BANDWIDTH_GBPS),
                 _zero_or_at_least(MIN_BANDWIDTH_GBPS, "GB/s")]  # 0: the engine has no such term
Micros = Annotated[float, Field(ge=0, le=MAX_LATENCY_US)]
Share = Annotated[float, Field(ge=MIN_SHARE, le=1)]
SourceKey = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]
SourceNote = Annotated[str, StringConstraints(max_length=MAX_SOURCE_CHARS)]


def _opt(what: str) -> Any:
    """An optional key: left out or null, it takes the presets' default."""
    return Field(None, description=what)


class HardwareFile(StrictModel):
    """One accelerator, in the units of hardware.json. Links are per direction, per GPU."""

    name: str | None = Field(None, min_length=1, max_length=MAX_NAME_CHARS,
                             description="Shown in results (default: the file's name without extension).")
    peak_tflops: dict[Dtype, Tflops] = Field(
        min_length=1, description="Dense datasheet peak TFLOPS per compute dtype (no 2:4 sparsity); 0: unsupported. "
                                  "bf16 or fp32 is required: unsupported dtypes fall back to them.")
    memory_gb: float = Field(ge=MIN_MEMORY_GB, le=MAX_MEMORY_GB, description="Memory per GPU, GB (1e9 bytes).")
    memory_bandwidth_gbps: float = Field(ge=MIN_BANDWIDTH_GBPS, le=MAX_BANDWIDTH_GBPS,
                                         description="Memory bandwidth per GPU, GB/s.")
    intra_node_gbps: Link | None = _opt("GPU-to-GPU link inside a node, GB/s per direction (default 64).")
    intra_node_latency_us: Micros | None = _opt(
        "Fixed cost of one small all-reduce inside a node (vLLM's one-shot custom all-reduce; two-shot costs "
        "twice that), µs (default 10).")
    inter_node_gbps: Link | None = _opt("Network between nodes, GB/s per direction per GPU (default 12.5).")
    inter_node_latency_us: Micros | None = _opt("One NCCL network step between nodes, µs (default 20).")
    gpus_per_node: int | None = Field(None, ge=1, le=MAX_GPUS, description="GPUs on the fast link (default 8).")
    tdp_watts: float = Field(gt=0, le=MAX_WATTS, description="Board power, W.")
    usd_per_hour: float = Field(ge=0, le=MAX_USD_PER_HOUR, description="Rental price per GPU-hour, USD.")
    compute_efficiency: Share | None = _opt("Achievable share of peak FLOP/s, in (0, 1] (default 0.7).")
    bandwidth_efficiency: Share | None = _opt("Achievable share of memory bandwidth, in (0, 1] (default 0.85).")
    link_efficiency: Share | None = _opt(
        "Achievable share of the NVLink/PCIe link rate (NCCL ring busbw / link rate), in (0, 1] (default 0.82).")
    memory_utilization: Share | None = _opt("Share of memory a server may use, in (0, 1] (default 0.9).")
    runtime_overhead_gb: Annotated[float, Field(ge=0, le=MAX_MEMORY_GB)] | None = _opt(
        "Memory the runtime takes per GPU, GB (default 1).")
    layer_overhead_us: Micros | None = _opt("Fixed cost per layer per step, µs (default 4).")
    moe_layer_overhead_us: Micros | None = _opt("Extra fixed cost per MoE layer per step, µs (default 8).")
    step_overhead_us: Micros | None = _opt("Fixed cost per forward pass, µs (default 0).")
    expert_overhead_us: Micros | None = _opt("Fixed cost per routed expert a MoE layer touches, µs (default 0).")
    cache_gb: Annotated[float, Field(ge=0, le=MAX_CACHE_GB)] | None = _opt("Last-level cache, GB (0: no cache term).")
    cache_bandwidth_gbps: Rate | None = _opt("Bandwidth of data within that cache, GB/s.")
    elementwise_bandwidth_gbps: Rate | None = _opt("Eager execution: unfused elementwise ops, GB/s (0: not eager).")
    attention_tflops: Tflops | None = _opt("Eager execution: attention TFLOPS (0: the matmul rate).")
    attention_bandwidth_gbps: Rate | None = _opt("Eager execution: KV-read GB/s (0: the memory bandwidth).")
    attention_head_overhead_us: Micros | None = _opt("Fixed attention cost per sequence, head and layer, µs.")
    gemv_bandwidth_gbps: Rate | None = _opt("One-row products (decode at batch 1), GB/s (0: the memory bandwidth).")
    fresh_page_mb: Annotated[float, Field(ge=0, le=MAX_PAGE_MB)] | None = _opt(
        "Allocations above this many MB fault in fresh pages (0: no such term).")
    fresh_page_bandwidth_gbps: Rate | None = _opt("Bytes/s of those first-touch page faults, GB/s.")
    execution: Literal["gpu", "eager"] | None = _opt(
        "gpu: fused kernels, one roofline per operator; eager: a CPU calibration's op classes one after another "
        "(default: eager when elementwise_bandwidth_gbps is given, else gpu).")
    gemm_efficiency: dict[Dtype, Share] | None = _opt(
        "GPU: a large GEMM's share of the dense peak, per compute dtype (default: compute_efficiency).")
    gemm_half_rows: Annotated[float, Field(ge=0, le=1e6)] | None = _opt(
        "GPU: GEMM rows M at which half of that share is reached (default 64).")
    moe_gemm_efficiency: Share | None = _opt(
        "GPU: grouped routed-expert GEMMs against the dense curve at equal rows per expert (default 0.7).")
    moe_block_rows: int | None = Field(None, ge=1, le=4096,
                                       description="GPU: each expert's rows are padded to this tile (default 16).")
    attention_efficiency: Share | None = _opt("GPU: prefill attention's share of peak at long context (default 0.5).")
    attention_half_context: Annotated[float, Field(ge=0, le=1e7)] | None = _opt(
        "GPU: context at which prefill attention reaches half that share (default 512).")
    kernel_launch_us: Micros | None = _opt("GPU: fixed cost per operator launch, µs (default 0).")
    nvls: bool | None = _opt("NVLink SHARP in the switch (in-network all-reduce), H100/H200/B200 NVSwitch nodes.")
    host_memory_gb: Annotated[float, Field(ge=0, le=MAX_MEMORY_GB)] | None = _opt(
        "Host (CPU) memory of one node, GB (0: unknown).")
    host_link_gbps: Rate | None = _opt("Each GPU's link to host memory (PCIe x16), raw GB/s per direction "
                                       "(0: none; expert offloading needs it).")
    host_link_latency_us: Micros | None = _opt("Fixed cost of one host-to-GPU transfer, µs (default 0).")
    host_link_efficiency: Share | None = _opt(
        "Share of the raw host-link rate a pinned host-to-device copy reaches, in (0, 1] (default 1).")
    sources: dict[SourceKey, SourceNote] | None = Field(None, max_length=MAX_SOURCES,
                                                        description="Where each figure comes from: key -> note.")
    measurements: dict[str, Any] | None = _opt("Raw figures `moelab calibrate` keeps beside the fitted ones "
                                                     "(not read by the engine).")

    @model_validator(mode="after")
    def _fallback_dtype(self) -> HardwareFile:
        if not (self.peak_tflops.get("bf16") or self.peak_tflops.get("fp32")):
            raise ValueError("peak_tflops must give bf16 or fp32 above 0 (other dtypes fall back to them)")
        return self

    def given(self) -> dict[str, Any]:
        """The keys the file gave a value (not null), in hardware.json units: what spec.hardware builds a
        HardwareSpec from, the presets' defaults filling in the rest."""
        return self.model_dump(exclude_none=True)
