"""`moelab calibrate --device cuda`: measure a GPU's efficiency curves and fit the operator model's parameters.

What the operator model (cost.gpu, cost.gemm) prices a GPU by, measured on it:
- GEMMs of M = 1 .. 16384 rows against transformer-shaped N x K weights (GEMM_SHAPES), per dtype (bf16, fp16, and
  fp8 through torch._scaled_mm where the GPU has fp8 tensor cores), each weight rotated over copies that exceed
  the L2 cache so every call reads it from HBM -> `gemm_efficiency[dtype]` and one `gemm_half_rows`;
- causal prefill attention (F.scaled_dot_product_attention) over several contexts at 16k tokens per call ->
  `attention_efficiency`, `attention_half_context`;
- a grouped expert GEMM (torch._grouped_mm, else one GEMM per expert) at 1 .. 512 rows per expert ->
  `moe_gemm_efficiency` against the dense curve at the kernel's padded rows;
- a device-to-device copy -> the memory bandwidth; a CUDA graph of tiny kernels -> `kernel_launch_us`.

Fits are least squares on log time of the engine's own operator roofline, max(FLOPs / achieved FLOP/s, bytes /
bandwidth), so the memory-bound rows (small M) inform the bandwidth term, not the curve. The fitting functions
are plain Python (tested on synthetic curves without a GPU); the measuring ones take a device, so a CPU test
runs them on small shapes.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

GEMM_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
QUICK_GEMM_ROWS = (1, 8, 64, 256, 1024, 4096, 16384)
# (N, K) of one weight: Llama-3-8B's q/o projections and its fused gate/up and down (d 4096, ffn 14336), and a
# 70B-class square projection (d 8192) (meta-llama/Meta-Llama-3-8B and -70B config.json).
GEMM_SHAPES = ((4096, 4096), (28672, 4096), (4096, 14336), (8192, 8192))
QUICK_GEMM_SHAPES = ((4096, 4096), (28672, 4096))
ATTENTION_CONTEXTS = (256, 512, 1024, 2048, 4096, 8192, 16384)  # causal prompt lengths, 16k tokens per call
ATTENTION_HEADS, ATTENTION_HEAD_DIM = 32, 128
# Qwen3-30B-A3B's routed experts (Qwen/Qwen3-30B-A3B config.json: hidden 2048, moe_intermediate 768, 128 experts):
# the fused gate/up GEMM, (E, 2 f, d).
MOE_EXPERTS, MOE_D, MOE_FFN = 128, 2048, 768
MOE_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
HALF_GRID = tuple(2.0 ** (i / 4) for i in range(0, 4 * 17 + 1))  # 1 .. 131072 rows (or positions)


@dataclass(frozen=True)
class Point:
    """One timed kernel: x (GEMM rows, mean attended context or rows per expert), its FLOPs and bytes as the
    engine counts them, the FLOPs the kernel issues (padded rows; = flops unless padded) and its seconds."""

    dtype: str
    x: float
    flops: float
    nbytes: float
    seconds: float
    issued: float = 0.0
    shape: str = ""

    def to_dict(self) -> dict:
        return {"dtype": self.dtype, "x": self.x, "shape": self.shape, "flops": self.flops, "bytes": self.nbytes,
                "seconds": self.seconds, "achieved_tflops": self.flops / self.seconds / 1e12}


# --- fitting: the engine's curve share * x / (x + half) under a roofline, least squares on log time ---

def curve_seconds(p: Point, peak: float, share: float, half: float, bandwidth: float) -> float:
    """The engine's time for `p`: max(issued FLOPs / (peak * share * x / (x + half)), bytes / bandwidth)."""
    issued = p.issued or p.flops
    compute = issued * (p.x + half) / (peak * share * p.x)
    return max(compute, p.nbytes / bandwidth if bandwidth else 0.0)


def _loss(points: Sequence[Point], peak: float, share: float, half: float, bandwidth: float) -> float:
    return sum(math.log(curve_seconds(p, peak, share, half, bandwidth) / p.seconds) ** 2 for p in points)


def _best_share(points: Sequence[Point], peak: float, half: float, bandwidth: float) -> tuple[float, float]:
    """(share, loss) minimising the log-time loss at a fixed half: a log grid over (1e-3, 1], then golden
    section around its best."""
    grid = [10 ** (-3 + 3 * i / 60) for i in range(61)]
    losses = [_loss(points, peak, s, half, bandwidth) for s in grid]
    i = min(range(len(grid)), key=losses.__getitem__)
    lo, hi = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])
    f = lambda u: _loss(points, peak, math.exp(u), half, bandwidth)  # noqa: E731
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = f(b)
    u = (lo + hi) / 2
    share = min(1.0, math.exp(u))
    return share, _loss(points, peak, share, half, bandwidth)


def fit_curve(points: Sequence[Point], peaks: dict[str, float], bandwidth: float,
              half_grid: Sequence[float] = HALF_GRID) -> dict:
    """Fit one share per dtype and one half (rows or context) shared by all dtypes to `points`.

    Returns {"share": {dtype: s}, "half": h, "rms_log_error": r, "n": n}; the half is the best of a log grid
    (quarter-octave steps) refined by golden section, each dtype's share the best at that half."""
    if not points:
        raise ValueError("no points to fit")
    by_dtype: dict[str, list[Point]] = {}
    for p in points:
        by_dtype.setdefault(p.dtype, []).append(p)

    def total(half: float) -> tuple[float, dict[str, float]]:
        shares, loss = {}, 0.0
        for dt, pts in by_dtype.items():
            shares[dt], part = _best_share(pts, peaks[dt], half, bandwidth)
            loss += part
        return loss, shares

    scored = [(total(h)[0], h) for h in half_grid]
    _, best = min(scored)
    i = list(half_grid).index(best)
    lo, hi = math.log(half_grid[max(i - 1, 0)]), math.log(half_grid[min(i + 1, len(half_grid) - 1)])
    for _ in range(20):  # golden section on log half
        m1, m2 = lo + (hi - lo) * 0.382, lo + (hi - lo) * 0.618
        if total(math.exp(m1))[0] < total(math.exp(m2))[0]:
            hi = m2
        else:
            lo = m1
    half = math.exp((lo + hi) / 2)
    loss, shares = total(half)
    return {"share": shares, "half": half, "rms_log_error": math.sqrt(loss / len(points)), "n": len(points)}


def fit_scale(points: Sequence[Point], seconds_at: Callable[[Point, float], float]) -> dict:
    """The scalar e in (0, 1] whose model times `seconds_at(p, e)` best fit `points` on log time (golden section
    on log e over [1e-3, 1])."""
    f = lambda u: sum(math.log(seconds_at(p, math.exp(u)) / p.seconds) ** 2 for p in points)  # noqa: E731
    lo, hi = math.log(1e-3), 0.0
    for _ in range(60):
        m1, m2 = lo + (hi - lo) * 0.382, lo + (hi - lo) * 0.618
        if f(m1) < f(m2):
            hi = m2
        else:
            lo = m1
    e = math.exp((lo + hi) / 2)
    return {"value": e, "rms_log_error": math.sqrt(f(math.log(e)) / len(points)), "n": len(points)}


def moe_seconds(hw, p: Point, efficiency: float) -> float:
    """The engine's time for a grouped expert GEMM point (cost.gemm.expert_flops_per_second at the padded rows
    per expert, over the issued FLOPs) at a given moe_gemm_efficiency."""
    from moelab.cost.gemm import gemm_flops_per_second, padded_rows

    rate = gemm_flops_per_second(hw, p.dtype, padded_rows(hw, p.x)) * efficiency
    return max((p.issued or p.flops) / rate, p.nbytes / hw.bandwidth)


def gemm_seconds(hw, p: Point) -> float:
    """The engine's time for a dense GEMM point on `hw` (cost.gemm's curve under the bandwidth roofline)."""
    from moelab.cost.gemm import gemm_flops_per_second

    return max(p.flops / gemm_flops_per_second(hw, p.dtype, p.x), p.nbytes / hw.bandwidth)


def attention_seconds(hw, p: Point) -> float:
    from moelab.cost.gemm import attention_flops_per_second

    return max(p.flops / attention_flops_per_second(hw, p.dtype, p.x), p.nbytes / hw.bandwidth)


def curve_error(points: Sequence[Point], seconds: Callable[[Point], float]) -> dict:
    """How far a model's times are from the measured ones: median and worst |predicted / measured - 1| and the
    geometric-mean ratio (> 1: the model is too slow), per dtype and over all points."""
    def block(pts):
        ratios = [seconds(p) / p.seconds for p in pts]
        errs = [abs(r - 1) for r in ratios]
        return {"median_abs_rel_error": statistics.median(errs), "max_abs_rel_error": max(errs),
                "geomean_ratio": math.exp(statistics.fmean(math.log(r) for r in ratios)), "n": len(pts)}

    out = {"all": block(points)}
    for dt in sorted({p.dtype for p in points}):
        out[dt] = block([p for p in points if p.dtype == dt])
    return out


# --- measuring ---

def kernel_seconds(fn: Callable[[], object], device: str, min_reps: int = 5, min_time: float = 0.02,
                   max_reps: int = 200) -> float:
    """Median seconds of one call of `fn`: on CUDA from events around each call (GPU time, no host gaps)."""
    import torch

    for _ in range(2):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    if device == "cuda":
        torch.cuda.synchronize()
    while len(times) < min_reps or (time.perf_counter() - start < min_time and len(times) < max_reps):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fp8_available(device: str) -> bool:
    """torch._scaled_mm exists and the GPU has fp8 tensor cores (compute capability 8.9 or newer)."""
    import torch

    if device != "cuda" or not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        return False
    return torch.cuda.get_device_capability(0) >= (8, 9)


def _copies(nbytes: int, l2_bytes: int) -> int:
    """Copies of an operand to rotate over so that the ones not in use exceed twice the L2 cache."""
    return max(1, math.ceil(2 * l2_bytes / max(nbytes, 1)) + 1)


def _gemm_call(dtype: str, x, weights: list, one) -> Callable[[], object]:
    """One GEMM per call, against the next of `weights` in turn."""
    import torch

    turn = [0]

    def run():
        w = weights[turn[0] % len(weights)]
        turn[0] += 1
        if dtype == "fp8":
            return torch._scaled_mm(x, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        return torch.nn.functional.linear(x, w)
    return run


def gemm_points(device: str, dtypes: Sequence[str], rows: Sequence[int] = GEMM_ROWS,
                shapes: Sequence[tuple[int, int]] = GEMM_SHAPES, l2_bytes: int = 0, min_time: float = 0.02,
                say: Callable[[str], object] | None = None) -> list[Point]:
    """Time x[M, K] @ W[N, K]^T for every row count, shape and dtype ("fp8": torch._scaled_mm with per-tensor
    scales and a bf16 output, the form vLLM's fp8 linear layers call). Bytes: the weight's, as the engine counts
    a GEMM's (cost.gpu)."""
    import torch

    points = []
    for dt in dtypes:
        for n, k in shapes:
            if say:
                say(f"GEMM {dt} {n}x{k}")
            tdt = torch.float8_e4m3fn if dt == "fp8" else {"bf16": torch.bfloat16, "fp16": torch.float16,
                                                          "fp32": torch.float32}[dt]
            size = torch.tensor([], dtype=tdt).element_size()
            ws = [torch.randn(n, k, device=device).to(tdt) for _ in range(_copies(n * k * size, l2_bytes))]
            one = torch.ones((), device=device, dtype=torch.float32)
            for m in rows:
                x = torch.randn(m, k, device=device).to(tdt)
                try:
                    with torch.inference_mode():
                        s = kernel_seconds(_gemm_call(dt, x, ws, one), device, min_time=min_time)
                except RuntimeError:  # a shape this kernel does not take (fp8's alignment rules): skipped
                    continue
                points.append(Point(dt, float(m), 2.0 * m * n * k, float(n * k * size), s, shape=f"{n}x{k}"))
            del ws
    return points


def attention_points(device: str, dtype: str = "bf16", contexts: Sequence[int] = ATTENTION_CONTEXTS,
                     tokens: int = 16384, heads: int = ATTENTION_HEADS, head_dim: int = ATTENTION_HEAD_DIM,
                     min_time: float = 0.02) -> list[Point]:
    """Causal prefill attention of tokens / T sequences of T tokens; x = the mean attended context (T + 1) / 2,
    FLOPs as the engine counts them (4 * heads * head_dim per causal pair)."""
    import torch

    F = torch.nn.functional
    tdt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    size = torch.tensor([], dtype=tdt).element_size()
    points = []
    for t in contexts:
        b = max(1, tokens // t)
        q, k, v = (torch.randn(b, heads, t, head_dim, device=device).to(tdt) for _ in range(3))
        with torch.inference_mode():
            s = kernel_seconds(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                               device, min_time=min_time)
        pairs = t * (t + 1) / 2
        points.append(Point(dtype, (t + 1) / 2, b * pairs * 4.0 * heads * head_dim,
                            4.0 * b * t * heads * head_dim * size, s, shape=f"{b}x{t}"))
        del q, k, v
    return points


def grouped_points(device: str, dtype: str = "bf16", rows: Sequence[int] = MOE_ROWS, experts: int = MOE_EXPERTS,
                   d: int = MOE_D, ffn: int = MOE_FFN, block: int = 16,
                   min_time: float = 0.02) -> tuple[list[Point], str]:
    """The fused gate/up GEMM of `experts` experts, each with `r` rows (x = r): torch._grouped_mm where this
    torch has it, else one GEMM per expert. issued = the FLOPs on rows padded to `block`, as the engine prices
    a fused MoE kernel; the weights of all experts are read (bytes)."""
    import torch

    from moelab.nn.dispatch import _grouped_mm_fn

    tdt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    size = torch.tensor([], dtype=tdt).element_size()
    w_EKN = torch.randn(experts, 2 * ffn, d, device=device).to(tdt).transpose(1, 2)  # as dispatch.grouped_mm
    mm = _grouped_mm_fn()
    how = "grouped_mm" if mm is not None else "loop"
    points = []
    for r in rows:
        x = torch.randn(experts * r, d, device=device).to(tdt)
        offs = torch.arange(r, experts * r + 1, r, device=device, dtype=torch.int32)

        def run(x=x, offs=offs, r=r, how=how):
            if how == "grouped_mm":
                return mm(x, w_EKN, offs=offs)
            return [x[e * r:(e + 1) * r] @ w_EKN[e] for e in range(experts)]
        try:
            with torch.inference_mode():
                s = kernel_seconds(run, device, min_time=min_time)
        except RuntimeError:  # grouped_mm refused these operands: one GEMM per expert from here on
            if how == "loop":
                raise
            how = "loop"
            with torch.inference_mode():
                s = kernel_seconds(lambda x=x, offs=offs, r=r: run(x, offs, r, "loop"), device, min_time=min_time)
        padded = block * math.ceil(r / block)
        params = 2 * ffn * d
        points.append(Point(dtype, float(r), 2.0 * experts * r * params, float(experts * params * size), s,
                            issued=2.0 * experts * padded * params, shape=f"{experts}x{2 * ffn}x{d}"))
    return points, how


def copy_bandwidth(device: str, nbytes: int) -> float:
    """Bytes/s of a device-to-device copy (read plus write) of `nbytes`."""
    import torch

    x = torch.empty(nbytes // 2, device=device, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    s = kernel_seconds(lambda: y.copy_(x), device, min_reps=10)
    return 2.0 * nbytes / s


def launch_seconds(kernels: int = 200) -> float:
    """Seconds per tiny kernel replayed from a CUDA graph (the launch floor of a decode step under graphs)."""
    import torch

    z = torch.zeros(16, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(3):
            z.add_(1)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(kernels):
            z.add_(1)
    return kernel_seconds(graph.replay, "cuda", min_reps=10) / kernels


# --- the whole GPU calibration ---

def matching_preset(gpu_name: str) -> str | None:
    """The bundled preset a CUDA device name is (H100 SXM / PCIe, H200, A100 40/80 GB, B200, L40S, RTX 4090)."""
    name = gpu_name.upper().replace(" ", "").replace("-", "")
    if "H200" in name:
        return "H200"
    if "H100" in name:
        return "H100-PCIe" if "PCIE" in name else "H100-SXM"
    if "A100" in name:
        return "A100-40GB" if "40GB" in name else "A100-80GB"
    for key, preset in (("B200", "B200"), ("L40S", "L40S"), ("4090", "RTX-4090")):
        if key in name:
            return preset
    return None


def gpu_dtypes() -> list[str]:
    """The dtypes the GPU calibration measures GEMMs in."""
    return ["bf16", "fp16"] + (["fp8"] if fp8_available("cuda") else [])


def gpu_steps(quick: bool = False) -> int:
    """Progress steps of calibrate_gpu: bandwidth, launch, one per GEMM dtype and shape, attention, experts, fit."""
    return 5 + len(gpu_dtypes()) * len(QUICK_GEMM_SHAPES if quick else GEMM_SHAPES)


def calibrate_gpu(quick: bool = False, say: Callable[[str], object] = lambda _: None) -> dict:
    """Measure the CUDA device 0 and return a hardware dict (execution gpu) with the fitted curves, the raw
    points under `measurements`, and `measurements.preset_error`: how far the bundled preset's curves (and the
    fitted ones) are from the measured points."""
    import torch

    from moelab.spec.hardware import _table, hardware_from_dict, load_hardware

    started = time.perf_counter()
    props = torch.cuda.get_device_properties(0)
    gpu, l2 = torch.cuda.get_device_name(0), int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)
    preset_name = matching_preset(gpu)
    base = dict(_table()["presets"][preset_name]) if preset_name else {}
    dtypes = gpu_dtypes()
    min_time = 0.01 if quick else 0.025
    say("bandwidth")
    bandwidth = copy_bandwidth("cuda", (1 if quick else 4) * 2**30)
    say("launch")
    launch = launch_seconds()
    points = gemm_points("cuda", dtypes, QUICK_GEMM_ROWS if quick else GEMM_ROWS,
                         QUICK_GEMM_SHAPES if quick else GEMM_SHAPES, l2, min_time, say)
    say("attention")
    attn = attention_points("cuda", "bf16", ATTENTION_CONTEXTS[1::2] if quick else ATTENTION_CONTEXTS,
                            min_time=min_time)
    block = int(base.get("moe_block_rows", 16))
    say("grouped experts")
    moe, moe_how = grouped_points("cuda", "bf16", MOE_ROWS[::2] if quick else MOE_ROWS, block=block,
                                  min_time=min_time)
    measured_peak = {dt: max(p.flops / p.seconds for p in points if p.dtype == dt) for dt in dtypes
                     if any(p.dtype == dt for p in points)}
    peaks = {dt: base["peak_tflops"][dt] * 1e12 for dt in measured_peak if dt in base.get("peak_tflops", {})}
    peaks = {dt: peaks.get(dt, measured_peak[dt]) for dt in measured_peak}
    say("fit")
    gemm = fit_curve(points, peaks, bandwidth)
    attention = fit_curve(attn, {"bf16": peaks["bf16"]}, bandwidth)
    datasheet_bw = float(base.get("memory_bandwidth_gbps", bandwidth / 1e9))
    hw: dict = {**base, "name": f"calibrated-{gpu.replace(' ', '-')}", "execution": "gpu",
                "peak_tflops": {**base.get("peak_tflops", {}), **{dt: v / 1e12 for dt, v in peaks.items()}},
                "memory_gb": props.total_memory / 1e9, "memory_bandwidth_gbps": datasheet_bw,
                "bandwidth_efficiency": min(1.0, bandwidth / 1e9 / datasheet_bw),
                "gemm_efficiency": gemm["share"], "gemm_half_rows": gemm["half"],
                "attention_efficiency": attention["share"]["bf16"], "attention_half_context": attention["half"],
                "kernel_launch_us": launch * 1e6, "moe_block_rows": block}
    hw.setdefault("tdp_watts", 700.0)
    hw.setdefault("usd_per_hour", 2.5)
    fitted = hardware_from_dict(hw["name"], {**hw, "moe_gemm_efficiency": 0.5})
    moe_fit = fit_scale(moe, lambda p, e: moe_seconds(fitted, p, e))
    hw["moe_gemm_efficiency"] = moe_fit["value"]
    fitted = hardware_from_dict(hw["name"], hw)
    peak_note = (f"the {preset_name} preset's datasheet peak" if preset_name else "the best measured FLOP/s "
                 "(no bundled preset matches this GPU)")
    hw["sources"] = {
        "gemm_efficiency": f"measured: least squares on log time of {gemm['n']} GEMMs (rows 1..16384 x "
                           f"{', '.join(f'{n}x{k}' for n, k in (QUICK_GEMM_SHAPES if quick else GEMM_SHAPES))}; "
                           f"{', '.join(dtypes)}) under the bandwidth roofline, share of {peak_note}",
        "gemm_half_rows": "measured: the same fit, one half-rows for every dtype",
        "attention_efficiency": "measured: causal F.scaled_dot_product_attention (32 heads x 128, 16k tokens per "
                                "call) over prompt lengths 256..16384, least squares on log time",
        "attention_half_context": "measured: the same fit",
        "moe_gemm_efficiency": f"measured: {MOE_EXPERTS} experts' fused gate/up GEMM ({moe_how}, Qwen3-30B-A3B "
                               "shape) at 1..512 rows per expert against the fitted dense curve at padded rows",
        "memory_bandwidth_gbps": f"{'datasheet (' + preset_name + ' preset)' if preset_name else 'measured'}; "
                                 f"bandwidth_efficiency measured: a {(1 if quick else 4)} GiB device copy "
                                 f"reached {bandwidth / 1e9:.0f} GB/s",
        "kernel_launch_us": "measured: tiny kernels replayed from a CUDA graph, per kernel",
        "memory_gb": "measured: device total memory",
    }
    preset_error = None
    if preset_name:
        preset = load_hardware(preset_name)
        preset_error = {"preset": preset_name,
                        "gemm": curve_error(points, lambda p: gemm_seconds(preset, p)),
                        "attention": curve_error(attn, lambda p: attention_seconds(preset, p)),
                        "moe": curve_error(moe, lambda p: moe_seconds(preset, p, preset.moe_gemm_efficiency)),
                        "preset_values": {k: preset.to_dict()[k] for k in (
                            "gemm_efficiency", "gemm_half_rows", "compute_efficiency", "moe_gemm_efficiency",
                            "attention_efficiency", "attention_half_context", "bandwidth_efficiency",
                            "kernel_launch_us")}}
    hw["measurements"] = {
        "machine": {"gpu": gpu, "torch": torch.__version__, "device": "cuda", "cpu": gpu,
                    "capability": list(torch.cuda.get_device_capability(0)), "l2_bytes": l2},
        "threads": torch.get_num_threads(), "quick": quick, "preset": preset_name,
        "copy_bandwidth_gbps": bandwidth / 1e9, "kernel_launch_us": launch * 1e6,
        "gemm": [p.to_dict() for p in points], "attention": [p.to_dict() for p in attn],
        "grouped_experts": {"backend": moe_how, "points": [p.to_dict() for p in moe]},
        "fit": {"gemm": gemm, "attention": attention, "moe": moe_fit,
                "fitted_error": {"gemm": curve_error(points, lambda p: gemm_seconds(fitted, p)),
                                 "attention": curve_error(attn, lambda p: attention_seconds(fitted, p)),
                                 "moe": curve_error(moe, lambda p: moe_seconds(fitted, p,
                                                                               fitted.moe_gemm_efficiency))}},
        "preset_error": preset_error,
        "alltoall": {"error": "one GPU: nothing to measure across" if torch.cuda.device_count() < 2
                     else "not measured by the GPU calibration (links: the preset's)"},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    out = {**fitted.to_dict(), "peak_tflops": hw["peak_tflops"]}  # every key the engine reads, in file units
    out["sources"] = {**out["sources"], **hw["sources"]}
    out["measurements"] = hw["measurements"]
    out["measurements"]["seconds"] = time.perf_counter() - started
    return out
