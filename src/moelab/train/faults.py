"""A test-only fault hook: kill this process at a named point of a training run, to prove nothing is lost.

`MOELAB_FAULT=NAME:N` sends SIGKILL to this process the N-th time `fault_point(NAME)` is reached (N defaults
to 1); `MOELAB_FAULT=NAME:N:INT` sends SIGINT instead (Ctrl-C). Unset -- always, outside the fault-injection
tests (tests/train/test_faults.py) -- every call is a dictionary lookup and nothing else. A value that is
malformed or names no point below is a MoelabError, raised by `check_env` when training starts.

Points: ckpt-tensors (a checkpoint's tensors written, in its temporary folder), ckpt-rename (all files fsynced,
before the rename into place), ckpt-renamed (after it, before pruning), ckpt-prune (an old checkpoint moved
aside, before its deletion), final-rename (before final/ moves into place), metrics-append (a metrics line
written), metrics-rewrite (the resume rewrite of metrics.jsonl written to its temporary file, before the
replace), evaluate (an evaluation begins), store-start / store-finish (a runs-store write, before its commit).
"""

from __future__ import annotations

import os
import signal

from moelab.errors import MoelabError

ENV = "MOELAB_FAULT"
POINTS = ("ckpt-tensors", "ckpt-rename", "ckpt-renamed", "ckpt-prune", "final-rename", "metrics-append",
          "metrics-rewrite", "evaluate", "store-start", "store-finish")
SIGNALS = {"": signal.SIGKILL, "KILL": signal.SIGKILL, "SIGKILL": signal.SIGKILL,
           "INT": signal.SIGINT, "SIGINT": signal.SIGINT}
_reached: dict[str, int] = {}


def parse(value: str) -> tuple[str, int, signal.Signals]:
    """(point, N, signal) of a MOELAB_FAULT value; MoelabError (one line) if malformed or the point unknown,
    so a fault test can never pass because its fault silently did nothing."""
    point, _, rest = value.partition(":")
    nth, _, sig = rest.partition(":")
    if point not in POINTS:
        raise MoelabError(f"{ENV}={value}: unknown point {point!r} (points: {', '.join(POINTS)})")
    if nth and not (nth.isdigit() and int(nth) >= 1):
        raise MoelabError(f"{ENV}={value}: N must be a positive integer, got {nth!r} (NAME[:N[:INT]])")
    if sig.upper() not in SIGNALS:
        raise MoelabError(f"{ENV}={value}: the signal must be INT or KILL, got {sig!r} (NAME[:N[:INT]])")
    return point, int(nth or 1), SIGNALS[sig.upper()]


def check_env() -> None:
    """Raise MoelabError if MOELAB_FAULT is set to something `parse` refuses (call before any work)."""
    value = os.environ.get(ENV)
    if value:
        parse(value)


def fault_point(name: str) -> None:
    """Die here if MOELAB_FAULT names this point and this is its N-th passage in this process."""
    value = os.environ.get(ENV)
    if not value:
        return
    point, nth, sig = parse(value)
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == nth:
        os.kill(os.getpid(), sig)
