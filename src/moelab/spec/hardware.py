"""The hardware spec: datasheet ceilings, achievable fractions and prices of one accelerator, in SI units."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from moelab.errors import MoelabError

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")
EXECUTIONS = ("gpu", "eager")
_REQUIRED = ("peak_tflops", "memory_gb", "memory_bandwidth_gbps", "tdp_watts", "usd_per_hour")


@dataclass(frozen=True)
class HardwareSpec:
    """One accelerator. FLOP/s, bytes and bytes/s; links per direction, per GPU."""

    name: str
    peak_flops: dict[str, float]  # dense peak FLOP/s per compute dtype
    memory_bytes: float
    memory_bandwidth: float
    intra_node_bandwidth: float
    intra_node_latency_s: float
    inter_node_bandwidth: float
    inter_node_latency_s: float
    tdp_watts: float
    usd_per_hour: float
    gpus_per_node: int = 8
    compute_efficiency: float = 0.7
    bandwidth_efficiency: float = 0.85
    link_efficiency: float = 0.8
    memory_utilization: float = 0.9
    runtime_overhead_bytes: float = 1e9
    layer_overhead_s: float = 4e-6
    moe_layer_overhead_s: float = 8e-6
    # Fixed costs that matter on a CPU (0 on GPU presets; `moelab calibrate` measures them): per forward pass
    # (embedding, rotary tables, final norm, lm_head dispatch) and per routed expert a MoE layer touches.
    step_overhead_s: float = 0.0
    expert_overhead_s: float = 0.0
    # A last-level cache: a step whose bytes fit in it streams at cache_bandwidth (0: no cache term).
    cache_bytes: float = 0.0
    cache_bandwidth: float = 0.0
    # Eager execution (a CPU calibration): op classes run one after another (see cost.roofline); attention at
    # its own FLOP/s and KV-read bandwidth, unfused elementwise ops at elementwise_bandwidth (0: not eager).
    elementwise_bandwidth: float = 0.0
    attention_flops: float = 0.0
    attention_bandwidth: float = 0.0
    attention_head_overhead_s: float = 0.0  # per sequence, head and layer
    gemv_bandwidth: float = 0.0  # one-row products (decode at batch 1); 0: memory_bandwidth
    # Eager CPU allocations larger than fresh_page_bytes come fresh from the OS (glibc's mmap threshold) and
    # fault in on first touch, at fresh_page_bandwidth bytes/s (0: no such term).
    fresh_page_bytes: float = 0.0
    fresh_page_bandwidth: float = 0.0
    # How kernels run: "gpu" (fused kernels, each operator its own roofline: cost.gpu) or "eager" (a CPU
    # calibration, op classes one after another: cost.eager). Files without the key are eager when they give an
    # elementwise bandwidth.
    execution: str = "gpu"
    # The GPU operator model's achieved rates (cost.gemm): a large GEMM's share of the dense peak per compute
    # dtype (missing dtypes: compute_efficiency), reached as M / (M + gemm_half_rows) of it at M rows.
    gemm_efficiency: dict[str, float] = field(default_factory=dict)
    gemm_half_rows: float = 64.0
    # Grouped / fused routed-expert GEMMs against the dense curve at the same rows per expert; every expert's rows
    # padded to a multiple of moe_block_rows (the kernel's row tile).
    moe_gemm_efficiency: float = 0.7
    moe_block_rows: int = 16
    # Prefill attention (FlashAttention): share of peak at long context, reached as c / (c + half) at context c.
    attention_efficiency: float = 0.5
    attention_half_context: float = 512.0
    kernel_launch_s: float = 0.0  # per GPU operator launch (CUDA graphs in decode)
    nvls: bool = False  # NVLink SHARP in the switch: in-network all-reduce (NCCL's NVLS algorithm)
    # The host: its memory (per node, 0: unknown) and each GPU's own link to it (bytes/s per direction, raw: a
    # PCIe x16 slot; 0: none given), the fixed cost of one transfer over it, and the share of the raw rate a
    # pinned host-to-device copy reaches. Expert offloading (cost.offload) moves experts over this link; a CPU
    # calibration's "host link" is whatever slower tier it reads (a disk read, set by the caller).
    host_memory_bytes: float = 0.0
    host_link_bandwidth: float = 0.0
    host_link_latency_s: float = 0.0
    host_link_efficiency: float = 1.0
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for key in ("memory_bytes", "memory_bandwidth", "tdp_watts"):
            if getattr(self, key) <= 0:
                raise MoelabError(f"hardware {self.name}: {key} must be positive")
        for key in ("compute_efficiency", "bandwidth_efficiency", "link_efficiency", "memory_utilization",
                    "moe_gemm_efficiency", "attention_efficiency", "host_link_efficiency"):
            if not 0 < getattr(self, key) <= 1:
                raise MoelabError(f"hardware {self.name}: {key} must be in (0, 1]")
        for dtype, share in self.gemm_efficiency.items():
            if not 0 < share <= 1:
                raise MoelabError(f"hardware {self.name}: gemm_efficiency[{dtype}] must be in (0, 1]")
        if self.execution not in EXECUTIONS:
            raise MoelabError(f"hardware {self.name}: execution must be one of {', '.join(EXECUTIONS)}, "
                              f"got {self.execution!r}")
        if not self.peak_flops:
            raise MoelabError(f"hardware {self.name}: peak_tflops names no dtype")
        for key in ("host_memory_bytes", "host_link_bandwidth", "host_link_latency_s"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and value >= 0 and value != float("inf")):
                raise MoelabError(f"hardware {self.name}: {key} must be a finite number >= 0, got {value!r}")

    def peak(self, dtype: str) -> tuple[str, float]:
        """(the dtype that runs, its dense peak FLOP/s): unsupported dtypes fall back to bf16, then fp32."""
        for candidate in (dtype, "bf16", "fp32"):
            if self.peak_flops.get(candidate):
                return candidate, self.peak_flops[candidate]
        raise MoelabError(f"hardware {self.name}: no peak FLOP/s for {dtype}")

    def gemm_share(self, dtype: str) -> float:
        """A large GEMM's achieved share of the peak of `dtype` (or of the dtype it falls back to); bf16 and fp16
        run on the same tensor cores, so one stands for the other where only one is given."""
        ran = self.peak(dtype)[0]
        twin = {"bf16": "fp16", "fp16": "bf16"}.get(ran, ran)
        return self.gemm_efficiency.get(ran, self.gemm_efficiency.get(twin, self.compute_efficiency))

    def flops(self, dtype: str) -> float:
        """Achievable matmul FLOP/s for a compute dtype (falls back to bf16, then fp32, where unsupported)."""
        for candidate in (dtype, "bf16", "fp32"):
            if self.peak_flops.get(candidate):
                return self.peak_flops[candidate] * self.compute_efficiency
        raise MoelabError(f"hardware {self.name}: no peak FLOP/s for {dtype}")

    @property
    def bandwidth(self) -> float:
        """Achievable memory bandwidth, bytes/s."""
        return self.memory_bandwidth * self.bandwidth_efficiency

    def bandwidth_for(self, nbytes: float) -> float:
        """Achievable bytes/s of streaming `nbytes`: the cache's when they fit in the last-level cache."""
        if self.cache_bytes and self.cache_bandwidth and nbytes <= self.cache_bytes:
            return self.cache_bandwidth * self.bandwidth_efficiency
        return self.bandwidth

    def link(self, gpus: int) -> tuple[float, float]:
        """(achievable bytes/s per direction, latency s) of the slowest link a group of `gpus` spans."""
        if gpus <= self.gpus_per_node:
            return self.intra_node_bandwidth * self.link_efficiency, self.intra_node_latency_s
        return self.inter_node_bandwidth * self.link_efficiency, self.inter_node_latency_s

    def host_link(self) -> tuple[float, float]:
        """(achievable bytes/s per direction, latency s) of one GPU's link to host memory; one line if none."""
        if self.host_link_bandwidth <= 0:
            raise MoelabError(f"hardware {self.name}: no host link (host_link_gbps) given, so nothing can be "
                              "offloaded to host memory")
        return self.host_link_bandwidth * self.host_link_efficiency, self.host_link_latency_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "peak_tflops": {k: v / 1e12 for k, v in self.peak_flops.items()},
            "memory_gb": self.memory_bytes / 1e9,
            "memory_bandwidth_gbps": self.memory_bandwidth / 1e9,
            "intra_node_gbps": self.intra_node_bandwidth / 1e9,
            "intra_node_latency_us": self.intra_node_latency_s * 1e6,
            "inter_node_gbps": self.inter_node_bandwidth / 1e9,
            "inter_node_latency_us": self.inter_node_latency_s * 1e6,
            "gpus_per_node": self.gpus_per_node,
            "tdp_watts": self.tdp_watts,
            "usd_per_hour": self.usd_per_hour,
            "compute_efficiency": self.compute_efficiency,
            "bandwidth_efficiency": self.bandwidth_efficiency,
            "link_efficiency": self.link_efficiency,
            "memory_utilization": self.memory_utilization,
            "runtime_overhead_gb": self.runtime_overhead_bytes / 1e9,
            "layer_overhead_us": self.layer_overhead_s * 1e6,
            "moe_layer_overhead_us": self.moe_layer_overhead_s * 1e6,
            "step_overhead_us": self.step_overhead_s * 1e6,
            "expert_overhead_us": self.expert_overhead_s * 1e6,
            "cache_gb": self.cache_bytes / 1e9,
            "cache_bandwidth_gbps": self.cache_bandwidth / 1e9,
            "elementwise_bandwidth_gbps": self.elementwise_bandwidth / 1e9,
            "attention_tflops": self.attention_flops / 1e12,
            "attention_bandwidth_gbps": self.attention_bandwidth / 1e9,
            "attention_head_overhead_us": self.attention_head_overhead_s * 1e6,
            "gemv_bandwidth_gbps": self.gemv_bandwidth / 1e9,
            "fresh_page_mb": self.fresh_page_bytes / 1e6,
            "fresh_page_bandwidth_gbps": self.fresh_page_bandwidth / 1e9,
            "execution": self.execution,
            "gemm_efficiency": dict(self.gemm_efficiency),
            "gemm_half_rows": self.gemm_half_rows,
            "moe_gemm_efficiency": self.moe_gemm_efficiency,
            "moe_block_rows": self.moe_block_rows,
            "attention_efficiency": self.attention_efficiency,
            "attention_half_context": self.attention_half_context,
            "kernel_launch_us": self.kernel_launch_s * 1e6,
            "nvls": self.nvls,
            "host_memory_gb": self.host_memory_bytes / 1e9,
            "host_link_gbps": self.host_link_bandwidth / 1e9,
            "host_link_latency_us": self.host_link_latency_s * 1e6,
            "host_link_efficiency": self.host_link_efficiency,
            "sources": dict(self.sources),
        }


def _number(name: str, raw: dict[str, Any], key: str, default: Any = None) -> float:
    value = raw.get(key, default)
    if value is None:
        raise MoelabError(f"hardware {name}: missing field '{key}'")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MoelabError(f"hardware {name}: field '{key}' must be a number, got {value!r}")
    if value < 0:
        raise MoelabError(f"hardware {name}: field '{key}' must not be negative")
    return float(value)


def hardware_from_dict(name: str, raw: Any, defaults: dict[str, Any] | None = None) -> HardwareSpec:
    """Build a HardwareSpec from the human units of hardware.json (TFLOPS, GB, GB/s, us)."""
    if not isinstance(raw, dict):
        raise MoelabError(f"hardware {name}: expected a mapping of fields")
    merged = {**(defaults or _defaults()), **raw}
    merged["sources"] = {**(defaults or _defaults()).get("sources", {}), **raw.get("sources", {})}
    for key in _REQUIRED:
        if key not in merged:
            raise MoelabError(f"hardware {name}: missing field '{key}'")
    peaks = merged["peak_tflops"]
    if not isinstance(peaks, dict) or not peaks:
        raise MoelabError(f"hardware {name}: field 'peak_tflops' must map dtypes ({', '.join(DTYPES)}) to TFLOPS")
    unknown = set(peaks) - set(DTYPES)
    if unknown:
        raise MoelabError(f"hardware {name}: unknown dtype(s) in peak_tflops: {', '.join(sorted(unknown))}")
    n = lambda key, default=None: _number(name, merged, key, default)  # noqa: E731
    return HardwareSpec(
        name=str(merged.get("name", name)),
        peak_flops={k: _number(name, peaks, k) * 1e12 for k in peaks},
        memory_bytes=n("memory_gb") * 1e9,
        memory_bandwidth=n("memory_bandwidth_gbps") * 1e9,
        intra_node_bandwidth=n("intra_node_gbps", 64) * 1e9,
        intra_node_latency_s=n("intra_node_latency_us", 10) * 1e-6,
        inter_node_bandwidth=n("inter_node_gbps", 12.5) * 1e9,
        inter_node_latency_s=n("inter_node_latency_us", 20) * 1e-6,
        tdp_watts=n("tdp_watts"),
        usd_per_hour=n("usd_per_hour"),
        gpus_per_node=int(n("gpus_per_node", 8)) or 1,
        compute_efficiency=n("compute_efficiency"),
        bandwidth_efficiency=n("bandwidth_efficiency"),
        link_efficiency=n("link_efficiency"),
        memory_utilization=n("memory_utilization"),
        runtime_overhead_bytes=n("runtime_overhead_gb") * 1e9,
        layer_overhead_s=n("layer_overhead_us") * 1e-6,
        moe_layer_overhead_s=n("moe_layer_overhead_us") * 1e-6,
        step_overhead_s=n("step_overhead_us", 0) * 1e-6,
        expert_overhead_s=n("expert_overhead_us", 0) * 1e-6,
        cache_bytes=n("cache_gb", 0) * 1e9,
        cache_bandwidth=n("cache_bandwidth_gbps", 0) * 1e9,
        elementwise_bandwidth=n("elementwise_bandwidth_gbps", 0) * 1e9,
        attention_flops=n("attention_tflops", 0) * 1e12,
        attention_bandwidth=n("attention_bandwidth_gbps", 0) * 1e9,
        attention_head_overhead_s=n("attention_head_overhead_us", 0) * 1e-6,
        gemv_bandwidth=n("gemv_bandwidth_gbps", 0) * 1e9,
        fresh_page_bytes=n("fresh_page_mb", 0) * 1e6,
        fresh_page_bandwidth=n("fresh_page_bandwidth_gbps", 0) * 1e9,
        execution=str(merged.get("execution") or ("eager" if merged.get("elementwise_bandwidth_gbps") else "gpu")),
        gemm_efficiency={str(k): _number(name, merged.get("gemm_efficiency") or {}, k)
                         for k in (merged.get("gemm_efficiency") or {})},
        gemm_half_rows=n("gemm_half_rows", 64),
        moe_gemm_efficiency=n("moe_gemm_efficiency", 0.7),
        moe_block_rows=int(n("moe_block_rows", 16)) or 1,
        attention_efficiency=n("attention_efficiency", 0.5),
        attention_half_context=n("attention_half_context", 512),
        kernel_launch_s=n("kernel_launch_us", 0) * 1e-6,
        nvls=bool(merged.get("nvls", False)),
        host_memory_bytes=n("host_memory_gb", 0) * 1e9,
        host_link_bandwidth=n("host_link_gbps", 0) * 1e9,
        host_link_latency_s=n("host_link_latency_us", 0) * 1e-6,
        host_link_efficiency=n("host_link_efficiency", 1.0),
        sources={str(k): str(v) for k, v in merged["sources"].items()},
    )


@cache
def _table() -> dict[str, Any]:
    return json.loads(resources.files("moelab.spec").joinpath("presets/hardware.json").read_text())


def _defaults() -> dict[str, Any]:
    return _table()["defaults"]


def hardware_presets() -> dict[str, HardwareSpec]:
    """Every bundled hardware preset, by name."""
    return {name: hardware_from_dict(name, raw) for name, raw in _table()["presets"].items()}


def load_hardware(name_or_path: str) -> HardwareSpec:
    """A preset name (case-insensitive) or a YAML/JSON file in the same units as the presets.

    Presets are bundled, trusted data and are built directly; a file is read by moelab.userfile and validated
    by moelab.schema.hardware (every error at once, on one line) before it is built."""
    presets = _table()["presets"]
    by_lower = {k.lower(): k for k in presets}
    if name_or_path.lower() in by_lower:
        key = by_lower[name_or_path.lower()]
        return hardware_from_dict(key, presets[key])
    path = Path(name_or_path)
    if not os.path.lexists(path):
        raise MoelabError(f"unknown hardware {name_or_path!r} (presets: {', '.join(presets)}; or a YAML/JSON file)")
    return hardware_from_file(path)


def hardware_from_file(path: str | Path) -> HardwareSpec:
    """A user's hardware file, validated: see load_hardware."""
    from moelab.schema.base import validate
    from moelab.schema.hardware import HardwareFile
    from moelab.userfile import load_user_file

    path = Path(path)
    raw = load_user_file(path, "hardware file")
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise MoelabError(f"{path.name}: a hardware file must be a mapping of keys to values, got {got}")
    given = validate(HardwareFile, raw, path.name).given()
    return hardware_from_dict(path.stem, given)
