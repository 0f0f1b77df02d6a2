"""Start a command under torchrun on this machine: 127.0.0.1, a free port, bounded in time, always stopped.

What the tests, the scaling benchmark and the study use to run `N` processes of moelab; the processes are
torchrun's (torch.distributed.run, static rendezvous on MASTER_ADDR:MASTER_PORT). A timeout or an interrupt
sends torchrun SIGTERM, which it passes to its workers (waiting up to its own 30 s); whatever is left after
GRACE_SECONDS is killed: torchrun's process group and every descendant found before (torchrun starts each
worker in a session of its own, out of reach of its group).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

from moelab.serve.server import free_port

GRACE_SECONDS = 35.0  # torchrun's own shutdown grace for its workers is 30 s


@dataclass(frozen=True)
class Finished:
    returncode: int  # torchrun's; None never: a timeout is 124
    stdout: str
    stderr: str
    timed_out: bool


def torchrun_command(nproc: int, args: list[str], port: int | None = None) -> list[str]:
    """`python -m torch.distributed.run ... ARGS` for `nproc` local processes (ARGS: a script, or -m module)."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--nnodes=1",
            "--master-addr=127.0.0.1", f"--master-port={port or free_port()}", "--local-addr=127.0.0.1",
            "--max-restarts=0", "--monitor-interval=0.5", *args]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (children first found, grandchildren after)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _stop(proc: subprocess.Popen) -> None:
    workers = _descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # torchrun stops its workers and waits for them
        proc.wait(GRACE_SECONDS)
        return
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        workers = sorted(set(workers + _descendants(proc.pid)))
    for pid in workers:  # each worker is in a session of its own: none is in torchrun's group
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def torchrun(nproc: int, args: list[str], timeout: float, env: dict[str, str] | None = None,
             threads: int = 1) -> Finished:
    """Run ARGS on `nproc` processes of `threads` threads each; the process group is stopped on return."""
    full_env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(torchrun_command(nproc, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=full_env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return Finished(proc.returncode, out, err, False)
    except subprocess.TimeoutExpired:
        _stop(proc)
        out, err = proc.communicate()
        return Finished(124, out, err, True)
    finally:
        if proc.poll() is None:
            _stop(proc)
