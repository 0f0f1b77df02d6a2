"""Seconds spent in collectives, by kind, accumulated per process until read.

`timed(kind)` wraps a collective call (forward or backward); a training step reads and resets the totals
with `take()`. The time is the call's wall time: waiting for a slower peer is counted as communication, as a
profiler's view of a blocking collective counts it. On CUDA the region ends with a device synchronize, so
that an asynchronous NCCL call is timed to its end (this serialises communication with compute: the
figures are of a run without overlap, as moelab's loop runs anyway).
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch

KINDS = ("alltoall", "allreduce")
_seconds: dict[str, float] = defaultdict(float)


@contextmanager
def timed(kind: str):
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        torch.cuda.synchronize()  # the compute queued before the call is not the call's
    started = time.perf_counter()
    try:
        yield
    finally:
        if cuda:
            torch.cuda.synchronize()
        _seconds[kind] += time.perf_counter() - started


def take() -> dict[str, float]:
    """The seconds of each kind since the last take, and reset them."""
    out = {kind: _seconds.get(kind, 0.0) for kind in KINDS}
    _seconds.clear()
    return out
