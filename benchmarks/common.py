"""Shared helpers for the benchmark scripts: repeat-and-median timing and a streaming-bandwidth probe."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(fn: Callable[[], object], min_time: float = 0.3, min_reps: int = 5, max_reps: int = 200,
                   warmup: int = 2) -> float:
    """Median wall time of fn() over at least `min_reps` runs and `min_time` seconds."""
    for _ in range(warmup):
        fn()
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
