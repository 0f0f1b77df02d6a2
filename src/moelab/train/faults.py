"""A test-only fault hook: kill this process at a named point of a training run, to prove nothing is lost.

`MOELAB_FAULT=NAME:N` sends SIGKILL to this process the N-th time `fault_point(NAME)` is reached (N defaults
to 1); `MOELAB_FAULT=NAME:N:INT` sends SIGINT instead (Ctrl-C). Unset -- always, outside the fault-injection
tests (tests/train/test_faults.py) -- every call is a dictionary lookup and nothing else.

Points: ckpt-tensors (a checkpoint's tensors written, in its temporary folder), ckpt-rename (all files fsynced,
before the rename into place), ckpt-renamed (after it, before pruning), ckpt-prune (an old checkpoint moved
aside, before its deletion), final-rename (before final/ moves into place), metrics-append (a metrics line
written), metrics-rewrite (the resume rewrite of metrics.jsonl written to its temporary file, before the
replace), evaluate (an evaluation begins), store-start / store-finish (a runs-store write, before its commit).
"""

from __future__ import annotations

import os
import signal

ENV = "MOELAB_FAULT"
POINTS = ("ckpt-tensors", "ckpt-rename", "ckpt-renamed", "ckpt-prune", "final-rename", "metrics-append",
          "metrics-rewrite", "evaluate", "store-start", "store-finish")
_reached: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Die here if MOELAB_FAULT names this point and this is its N-th passage in this process."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, rest = spec.partition(":")
    if point != name:
        return
    nth, _, sig = rest.partition(":")
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGINT if sig.upper() in ("INT", "SIGINT") else signal.SIGKILL)
