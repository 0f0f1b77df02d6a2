"""Stopwatch helpers: device sync, repeated timing, percentiles, process memory, machine load, a quiet profiler.

Every timing is wall-clock around a synchronised region (CUDA work is waited for), after warm-up.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str = "cpu") -> float:
    """Seconds one call of fn takes, synchronised."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def repeat(fn: Callable[[], object], device: str = "cpu", min_reps: int = 5, min_time: float = 0.2,
           max_reps: int = 200, warmup: int = 2) -> list[float]:
    """Seconds of each of at least `min_reps` runs (and `min_time` seconds in all) after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time and len(times) < max_reps):
        times.append(timed(fn, device))
    return times


def median_time(fn: Callable[[], object], device: str = "cpu", **kw) -> float:
    return statistics.median(repeat(fn, device, **kw))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between order statistics (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def proc_status_bytes(key: str) -> int | None:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM) in bytes; None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def cpu_profile():
    """torch.profiler.profile over CPU ops, without kineto's log lines.

    Kineto writes `USDT: ... profiler_start` / `profiler_stop` (and STAGE lines) to stderr for every profiling
    session, at its default log level; KINETO_LOG_LEVEL=6 (above its highest level, USDT = 5) silences them.
    Kineto reads the variable once, at the first profiling session of the process, so it is set here, before
    any session, unless the user set it."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU])
