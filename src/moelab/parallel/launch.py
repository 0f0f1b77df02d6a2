"""Start a command under torchrun on this machine: 127.0.0.1, a free port, bounded in time, always stopped.

What the tests, the scaling benchmark and the study use to run `N` processes of moelab; the processes are
torchrun's (torch.distributed.run, static rendezvous on MASTER_ADDR:MASTER_PORT). torchrun runs in its own
session, so a timeout or an interrupt ends every worker with it (SIGTERM to the group, SIGKILL after a grace).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Finished:
    returncode: int  # torchrun's; None never: a timeout is 124
    stdout: str
    stderr: str
    timed_out: bool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(nproc: int, args: list[str], port: int | None = None) -> list[str]:
    """`python -m torch.distributed.run ... ARGS` for `nproc` local processes (ARGS: a script, or -m module)."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--nnodes=1",
            "--master-addr=127.0.0.1", f"--master-port={port or free_port()}", "--local-addr=127.0.0.1",
            "--max-restarts=0", "--monitor-interval=0.5", *args]


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, GRACE_SECONDS)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


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
