"""Calibrate this machine into a hardware spec the engine accepts (`--hardware FILE`), cached per machine.

On CUDA (`--device cuda`) the file is for the GPU operator model (`execution: gpu`): GEMM, attention and
grouped-expert efficiency curves fitted to measured kernels (bench.gpu_curves). On the CPU it is for the eager
model (`execution: eager`, cost.eager), as follows. Every ceiling is a measured achievable figure, so
bandwidth/link efficiencies are 1.0 and the engine uses them as they are:
- peak_tflops per dtype: median achieved FLOP/s of `linear` over transformer-shaped GEMMs (probes.GEMM_SHAPES);
- memory_bandwidth_gbps: weight bytes/s of batched-decode products (2-8 rows times a matrix twice the
  last-level cache; on CPUs the weights are packed every call, far below a streaming read, also measured);
  gemv_bandwidth_gbps: the same with one row (decode at batch 1);
- in situ (CPU): torch.profiler splits the eager forward of a probe model into matmuls, attention and the
  rest, giving compute_efficiency (in-forward / best GEMM FLOP/s), attention FLOP/s and KV bandwidth,
  elementwise bandwidth and the in-cache weight bandwidth (cache_gb from sysfs);
- step/layer/moe_layer/expert overheads: moelab's own tiny modules (probes.overheads);
- link figures: all-to-all across processes (gloo / NCCL), alpha-beta fit;
- memory_gb: MemTotal (CPU) or the device's memory; runtime overhead: this process's RSS after importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from moelab.data.cache import atomic_write_json, home_dir
from moelab.errors import MoelabError

CPU_TDP_W_PER_CORE = 8.0  # assumed: a server core's share of socket power
CPU_USD_PER_CORE_HOUR = 0.02  # assumed: cloud vCPU price


def check_device(device: str) -> str:
    import torch

    if device not in ("cpu", "cuda"):
        raise MoelabError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise MoelabError("--device cuda: no CUDA device is available on this machine")
    return device


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict[str, Any]:
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "device": device,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "host": platform.node()}


def machine_key(device: str) -> str:
    m = machine(device)
    ident = json.dumps({k: m[k] for k in ("cpu", "cores", "torch", "device", "gpu")}, sort_keys=True)
    return f"{device}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def _mem_total_bytes() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return 16e9


def available_memory_bytes(device: str) -> tuple[float, str]:
    """(bytes a new allocation can take now, what they are): MemAvailable on CPU, free device memory on CUDA."""
    if device == "cuda":
        import torch

        return float(torch.cuda.mem_get_info()[0]), "CUDA memory"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024.0, "RAM"
    except OSError:
        pass
    return _mem_total_bytes(), "RAM"


def cpu_ticks() -> tuple[int, int, int] | None:
    """(busy ticks of all CPUs, all ticks, this process's and its waited-for children's ticks) from /proc; None
    where there is no /proc."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8]), sum(int(v) for v in own[11:15])  # utime stime cutime cstime


def others_cpu_share(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None) -> float | None:
    """Share of the machine's CPU time that other processes used between two cpu_ticks() readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    busy, total, own = (a - b for a, b in zip(after, before, strict=True))
    return max(0.0, min(1.0, (busy - own) / total))


CONTENDED_SHARE = 0.25  # others' share of the CPUs above which a calibration's figures carry a warning
RETRIES = 1  # a full calibration measures a contended probe once more (a spike passes; a busy machine stays busy)


def least_contended(probe, retries: int, log: dict, name: str):
    """probe() measured again (up to `retries` times) while other processes used more than CONTENDED_SHARE of
    the CPUs during it; the result of the least contended try. A spike of other work during one short probe
    (a test suite starting) once made the per-layer overhead 15x a quiet machine's, and every prediction with
    it; the bench's interleaved rounds spread over minutes, so it is not hit alike. log[name]: others' share
    in each try."""
    best, shares = None, []
    for _ in range(retries + 1):
        before = cpu_ticks()
        result = probe()
        share = others_cpu_share(before, cpu_ticks())
        shares.append(share)
        if best is None or (share is not None and share < best[0]):
            best = (share if share is not None else 0.0, result)
        if share is None or share <= CONTENDED_SHARE:
            break
    log[name] = shares
    return best[1]


def calibrate(device: str = "cpu", quick: bool = False, progress: bool | str = False) -> dict:
    """Measure this machine; return a hardware dict in the units of hardware.json plus raw `measurements`.

    `progress`: False (silent), True (a bar on a terminal, else a line per probe, on stderr) or a mode of
    moelab.progress."""
    from moelab.progress import Progress, resolve

    check_device(device)
    if device == "cuda":  # the GPU operator model's curves (bench.gpu_curves), not the eager op classes
        from moelab.bench import gpu_curves

        with Progress("calibrate", gpu_curves.gpu_steps(quick), resolve(progress)) as bar:
            return gpu_curves.calibrate_gpu(quick, bar.step)
    dtypes = ["fp32", "bf16"]
    probes_run = len(dtypes) + 5 + (device == "cpu")  # matmuls, bandwidth, attention, in situ, overheads, a2a, MoE
    with Progress("calibrate", probes_run, resolve(progress)) as bar:
        return _measure(device, quick, dtypes, bar.step)


def _measure(device: str, quick: bool, dtypes: list[str], say) -> dict:
    import torch

    from moelab.bench import alltoall, probes
    from moelab.bench.timing import proc_status_bytes

    cores = os.cpu_count() or 1
    if device == "cpu":
        torch.set_num_threads(cores)
    started, ticks = time.perf_counter(), cpu_ticks()
    retries, contention = (0 if quick or device != "cpu" else RETRIES), {}

    def settled(name, probe):
        return least_contended(probe, retries, contention, name)
    from moelab.bench import drift

    reference_fns = drift.probes(device)
    reference_start = drift.time_probes(reference_fns, device, reps=3 * drift.REPS)
    flops = {}
    for dt in dtypes:
        say(f"matmul {dt}")
        flops[dt] = settled(f"matmul_{dt}", lambda dt=dt: probes.matmul_flops(device, dt, quick))
    if device == "cuda":
        llc = int(torch.cuda.get_device_properties(0).L2_cache_size)
        mem_total = float(torch.cuda.get_device_properties(0).total_memory)
    else:
        llc, mem_total = probes.last_level_cache_bytes(), _mem_total_bytes()
    say("bandwidth")
    big = max(2 * llc, (64 if quick else 256) * 2**20)
    stream = settled("stream", lambda: probes.stream_bandwidth(device, big))
    gemv = settled("gemv", lambda: probes.gemv_bandwidth(device, max(2 * llc, 64 * 2**20), quick=quick))
    one_row = settled("gemv_one_row", lambda: probes.gemv_bandwidth(device, max(2 * llc, 64 * 2**20), rows=(1,),
                                                                    quick=quick))
    say("attention")
    attn = settled("attention", lambda: probes.attention(device, "fp32" if device == "cpu" else "bf16", quick,
                                                         max(2 * llc, 64 * 2**20)))
    say("in situ")
    situ = settled("in_situ", lambda: probes.in_situ(device, quick)) if device == "cpu" else None
    fresh = settled("fresh_pages", lambda: probes.fresh_pages(device, quick=quick)) if situ else None
    say("overheads")
    over = settled("overheads", lambda: probes.overheads(device, "fp32" if device == "cpu" else "bf16", quick))
    op = probes.op_overhead(device)
    say("all-to-all")
    world = 2 if device == "cpu" else torch.cuda.device_count()
    a2a, a2a_error = None, None
    if world >= 2:
        try:
            a2a = alltoall.measure(device, world, quick)
        except Exception as e:  # noqa: BLE001 - a failed probe is reported, the defaults stay
            a2a_error = f"{type(e).__name__}: {e}"
    else:
        a2a_error = "one GPU: nothing to measure across"
    rss = proc_status_bytes("VmRSS") or 0
    name = f"calibrated-{machine_key(device)}"
    gemv_how = (f"median weight bytes/s of linear(x[rows], W) for rows 2,4,8 and W of "
                f"{gemv['weight_bytes'] / 2**20:.0f} MiB fp32 (twice the last-level cache): what batched decode "
                f"GEMMs reach; a streaming read (sum) reached {stream['bandwidth'] / 1e9:.1f} GB/s")
    hw: dict[str, Any] = {
        "name": name,
        "peak_tflops": {dt: flops[dt]["flops"] / 1e12 for dt in dtypes},
        "memory_gb": mem_total / 1e9,
        "memory_bandwidth_gbps": gemv["bandwidth"] / 1e9,
        "gemv_bandwidth_gbps": one_row["bandwidth"] / 1e9,
        "compute_efficiency": 1.0,
        "bandwidth_efficiency": 1.0,
        "link_efficiency": 1.0,
        "memory_utilization": 0.9,
        "runtime_overhead_gb": rss / 1e9 if device == "cpu" else 1.0,
        "step_overhead_us": over["step_s"] * 1e6,
        "layer_overhead_us": over["layer_s"] * 1e6,
        "moe_layer_overhead_us": over["moe_layer_s"] * 1e6,
        "expert_overhead_us": over["expert_s"] * 1e6,
        "gpus_per_node": max(world, 1),
        "tdp_watts": CPU_TDP_W_PER_CORE * cores if device == "cpu" else 700.0,
        "usd_per_hour": CPU_USD_PER_CORE_HOUR * cores if device == "cpu" else 2.5,
    }
    if situ:  # eager execution: op classes add up (see cost.eager), at their in-situ rates
        hw["execution"] = "eager"
        hw["compute_efficiency"] = min(1.0, situ["gemm_flops"] / flops["fp32"]["flops"])
        hw["elementwise_bandwidth_gbps"] = situ["elementwise_bandwidth"] / 1e9
        hw["attention_tflops"] = situ["attention_flops"] / 1e12
        hw["attention_bandwidth_gbps"] = situ["attention_bandwidth"] / 1e9
        hw["attention_head_overhead_us"] = attn["pair_s"] * 1e6
    if llc and situ:
        hw["cache_gb"] = llc / 1e9
        hw["cache_bandwidth_gbps"] = situ["gemm_weight_bandwidth"] / 1e9
    if fresh and fresh["bandwidth"]:
        hw["fresh_page_mb"] = fresh["threshold_bytes"] / 1e6
        hw["fresh_page_bandwidth_gbps"] = fresh["bandwidth"] / 1e9
    if a2a:
        for scope in ("intra", "inter"):
            hw[f"{scope}_node_gbps"] = a2a["bandwidth"] / 1e9
            hw[f"{scope}_node_latency_us"] = a2a["latency_s"] * 1e6
    shapes = ", ".join(flops["fp32"]["per_shape_flops"])
    sources = {
        "peak_tflops": f"measured: median achieved FLOP/s of torch linear over shapes MxKxN {shapes} "
                       f"({'quick' if quick else 'full'} calibration); efficiency 1.0 since it is achieved",
        "memory_bandwidth_gbps": f"measured: {gemv_how}",
        "gemv_bandwidth_gbps": "measured: the same product with one row (decode at batch 1, one token per expert)",
        "memory_gb": "measured: MemTotal" if device == "cpu" else "measured: device total memory",
        "runtime_overhead_gb": "measured: RSS of a process that has imported torch" if device == "cpu"
        else "assumed: CUDA context and workspaces",
        "step_overhead_us": "measured: t(1-layer d=16 model decode step) - layer overhead",
        "layer_overhead_us": "measured: (t(5-layer) - t(1-layer)) / 4 decode steps of d=16 moelab models",
        "moe_layer_overhead_us": "measured: tiny MoELayer on one token minus a tiny SwiGLU minus one expert",
        "expert_overhead_us": "measured: (tiny MoELayer with 16 tokens on 16 experts - 1 token) / 15",
        "tdp_watts": f"assumed: {CPU_TDP_W_PER_CORE} W per core" if device == "cpu" else "assumed: H100-class",
        "usd_per_hour": f"assumed: ${CPU_USD_PER_CORE_HOUR} per core-hour" if device == "cpu" else "assumed",
        "memory_utilization": "assumed: share of memory usable",
    }
    if situ:
        situ_how = ("in situ: torch.profiler self times of the op classes of moelab's eager forward of a d=256, "
                    "4-layer probe model (prefill 2x512 tokens; decode at batch 16, context 256)")
        sources["compute_efficiency"] = (f"measured: {situ_how}: matmul FLOP/s in the forward / the best of "
                                         "the GEMM shapes (fp32; applied to every dtype)")
        sources["elementwise_bandwidth_gbps"] = (f"measured: {situ_how}: everything but matmuls and attention, "
                                                 "bytes as cost.roofline counts them; with it the engine adds "
                                                 "op classes up (eager CPU)")
        sources["attention_tflops"] = f"measured: {situ_how}: attention FLOPs as the engine counts them / time"
        sources["attention_bandwidth_gbps"] = f"measured: {situ_how}: KV bytes read per decode step / time"
        sources["attention_head_overhead_us"] = ("measured: one-query attention of 64 sequences x 1 head over 8 "
                                                 "positions, divided by 64")
        sources["cache_bandwidth_gbps"] = (f"measured: {situ_how}: weight bytes / (decode matmul time - FLOPs "
                                           "/ FLOP/s), weights within the last-level cache; cache_gb from sysfs"
                                           + ("" if situ.get("gemm_weight_bandwidth_resolved", True) else
                                              f"; an upper bound: the difference was within the probe's noise, "
                                              f"so {probes.RESIDUAL_RESOLUTION:.0%} of the matmul time was taken"))
    if fresh and fresh["bandwidth"]:
        sources["fresh_page_mb"] = ("measured: the largest of fp32 tensors of "
                                    f"{', '.join(str(m) for m in probes.FRESH_PAGE_SIZES_MIB)} MiB below which an "
                                    "out-of-place product costs no more than one into a preallocated output (the "
                                    "allocator's mmap threshold; larger tensors come fresh from the OS)")
        sources["fresh_page_bandwidth_gbps"] = ("measured: output bytes / (out-of-place product - product into a "
                                                "preallocated output) for the sizes above fresh_page_mb: first-touch "
                                                "page faults; the engine charges every activation tensor above "
                                                "the threshold at it")
    if a2a:
        sources["intra_node_gbps"] = (f"measured: all_to_all_single across {a2a['world']} processes "
                                      f"({a2a['backend']}), alpha-beta fit of a tiny and a large buffer")
        sources["inter_node_gbps"] = "assumed: same as the measured intra-machine all-to-all (one machine)"
    else:
        sources["intra_node_gbps"] = f"default: all-to-all not measured ({a2a_error})"
    moe_situ = None
    if situ:
        say("MoE in situ")
        moe_situ = settled("moe_in_situ", lambda: probes.moe_in_situ(device, hw, quick))
        hw["moe_layer_overhead_us"] = moe_situ["moe_layer_s"] * 1e6
        hw["expert_overhead_us"] = moe_situ["expert_s"] * 1e6
        sources["expert_overhead_us"] = ("measured in situ: the same probe's fit, per routed expert touched (the "
                                         f"tiny-module probe gave {over['expert_s'] * 1e6:.1f} us: d=16, one token "
                                         "per expert)")
        sources["moe_layer_overhead_us"] = ("measured in situ: a d=192 8-expert top-2 probe model's decode steps at "
                                            "batches 1, 4, 16, 64 and a 128-token prefill minus the engine's "
                                            "predictions without MoE overheads, least squares with the "
                                            "per-expert overhead")
    hw["sources"] = sources
    hw["measurements"] = {
        "machine": machine(device),
        "threads": torch.get_num_threads(),
        "quick": quick,
        "seconds": None,
        "matmul_gflops": {dt: {k: v / 1e9 for k, v in f["per_shape_flops"].items()} for dt, f in flops.items()},
        "stream_bandwidth_gbps": [s / 1e9 for s in stream["samples"]],
        "gemv_bandwidth_gbps_by_rows": {**{k: v / 1e9 for k, v in gemv["per_rows"].items()},
                                        "1": one_row["bandwidth"] / 1e9},
        "last_level_cache_bytes": llc,
        "fresh_page_extra_s_per_gb_by_mib": fresh["extra_s_per_gb"] if fresh else None,
        "overheads_us": {k: v * 1e6 for k, v in over["raw_median_s"].items()},
        "op_overhead_us": op * 1e6,
        "moe_in_situ": moe_situ,
        "in_situ": ({k: (v if isinstance(v, dict) else v / 1e9) for k, v in situ.items()} if situ else None),
        "attention": {"prefill_gflops": attn["prefill_flops"] / 1e9,
                      "decode_kv_bandwidth_gbps": attn["decode_bandwidth"] / 1e9,
                      "per_sequence_head_us": attn["pair_s"] * 1e6},
        "alltoall": a2a if a2a else {"error": a2a_error},
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    reference_end = drift.time_probes(reference_fns, device, reps=3 * drift.REPS)
    hw["measurements"]["reference"] = {  # re-timed by every bench (moelab.bench.drift), at the start and the end
        f"{k}_s": statistics.median(reference_start[k] + reference_end[k]) for k in reference_fns}
    hw["measurements"]["seconds"] = time.perf_counter() - started
    others = others_cpu_share(ticks, cpu_ticks())
    hw["measurements"]["others_cpu_share"] = others
    hw["measurements"]["others_cpu_share_by_probe"] = contention
    hw["measurements"]["warnings"] = [] if others is None or others <= CONTENDED_SHARE else [
        f"other processes used {others:.0%} of the CPUs while this machine was calibrated: with every core "
        "running torch threads, each parallel op waits for a descheduled thread, so the figures are slower than "
        "a quiet machine's (measured 2-10x on a 2-core machine); calibrate again (--refresh) when it is quiet"]
    return hw


def cache_path(device: str = "cpu", quick: bool = False) -> Path:
    return home_dir() / "hardware" / f"{machine_key(device)}{'-quick' if quick else ''}.json"


def write_hardware(hw: dict, path: Path) -> Path:
    """The hardware file, written atomically (its folder created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, hw)


def _cached(path: Path) -> bool:
    """Whether `path` holds a calibration that loads; a corrupt one (truncated, garbage, no longer valid) is
    reported in one line on stderr and removed, so that it is measured again (and never warned about twice)."""
    from moelab.spec.hardware import load_hardware

    if not path.is_file():
        return False
    try:
        load_hardware(str(path))
        return True
    except Exception as e:  # noqa: BLE001 - whatever is wrong with a cache file, it is measured again
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        sys.stderr.write(f"moelab: warning: removing a corrupt calibration cache ({reason}); measuring again\n")
        path.unlink(missing_ok=True)
        return False


def cached_calibration(device: str = "cpu") -> Path | None:
    """This machine's cached calibration (a full one, else a quick one), never measuring; None if there is none."""
    for path in (cache_path(device), cache_path(device, quick=True)):
        if _cached(path):
            return path
    return None


def calibrated_hardware(device: str = "cpu", quick: bool = False, refresh: bool = False,
                        progress: bool | str = False) -> Path:
    """The cached calibration of this machine (a full one if there is one, else quick if `quick`); measured
    now when missing, corrupt or when `refresh`, and written atomically (the cache folder is checked to be
    writable before measuring)."""
    from moelab.data.cache import check_writable_dir

    check_device(device)
    full, fast = cache_path(device), cache_path(device, quick=True)
    if not refresh:
        if _cached(full):
            return full
        if quick and _cached(fast):
            return fast
    target = fast if quick else full
    check_writable_dir(target.parent, "the calibration cache ($MOELAB_HOME/hardware)")
    return write_hardware(calibrate(device, quick=quick, progress=progress), target)
