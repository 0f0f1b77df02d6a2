"""Seconds spent in collectives, by kind, accumulated per process until read.

`timed(kind)` wraps a collective call (forward or backward); a training step reads and resets the totals
with `take()`. The time is the call's wall time: waiting for a slower peer is counted as communication, as a
profiler's view of a blocking collective counts it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

KINDS = ("alltoall", "allreduce")
_seconds: dict[str, float] = defaultdict(float)


@contextmanager
def timed(kind: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        _seconds[kind] += time.perf_counter() - started


def take() -> dict[str, float]:
    """The seconds of each kind since the last take, and reset them."""
    out = {kind: _seconds.get(kind, 0.0) for kind in KINDS}
    _seconds.clear()
    return out
