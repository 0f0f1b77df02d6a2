"""Shared helpers for the benchmark scripts: repeat-and-median timing and a streaming-bandwidth probe."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(fn: Callable[[], object], min_time: float = 0.3, min_reps: int = 5, max_reps: int = 200,
                   warmup: int = 2) -> float:
    """Median wall time of fn() over at least `min_reps` runs and `min_time` seconds (3 runs if one takes > 1 s)."""
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        if time.perf_counter() - t0 > 1.0:
            min_reps = min(min_reps, 3)
            break
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def read_bandwidth(nbytes: int = 512 * 2**20, dtype: torch.dtype = torch.float32) -> float:
    """Achieved bytes/s of a full read of a buffer larger than the caches (a sum over it)."""
    x = torch.ones(nbytes // torch.tensor([], dtype=dtype).element_size(), dtype=dtype)
    seconds = median_seconds(lambda: x.sum(), min_reps=7)
    return nbytes / seconds


def interleaved_medians(fns: dict[str, Callable[[], object]], rounds: int = 7, round_time: float = 0.1,
                        warmup: int = 2) -> dict[str, float]:
    """Median seconds of each fn, timed in alternating rounds so that drift on a shared machine hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                if time.perf_counter() - start >= round_time:
                    break
    return {name: statistics.median(t) for name, t in times.items()}


def add_moe_shape(parser) -> None:
    """The MoE layer shape options the layer benchmarks share: --d, --f, --experts, --top-k (Mixtral-like, small)."""
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--f", type=int, default=1792)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
