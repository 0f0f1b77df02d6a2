"""All-to-all latency and bandwidth across processes with torch.distributed (gloo on CPU, NCCL on GPU).

`measure` starts `world` fresh interpreters (`python -m moelab.bench.alltoall`, so that nothing of the
caller's script is re-imported); each times all_to_all_single on a tiny and on a large buffer, and rank 0
writes the medians. Alpha-beta fit as the engine uses it: t(n) = latency + (G-1)/G * n / bandwidth, n the
bytes each process sends in all.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _worker(rank: int, world: int, init_file: str, out: str, device: str, sizes: list[int], reps: int) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    dev = torch.device(device, rank) if device == "cuda" else torch.device("cpu")
    result = {}
    for nbytes in sizes:
        n = max(world, nbytes // 4 // world * world)
        x, y = torch.ones(n, device=dev), torch.empty(n, device=dev)
        for _ in range(3):
            dist.all_to_all_single(y, x)
        times = []
        for _ in range(reps):
            dist.barrier()
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            dist.all_to_all_single(y, x)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        result[str(n * 4)] = statistics.median(times)
    if rank == 0:
        Path(out).write_text(json.dumps(result))
    dist.destroy_process_group()


def measure(device: str = "cpu", world: int = 2, quick: bool = False, timeout: float = 120.0) -> dict:
    """{'world', 'backend', 'latency_s', 'bandwidth', 'seconds_by_bytes'}; raises RuntimeError on failure."""
    small, large = 64 * world, (4 if quick else 16) * 2**20
    reps = 10 if quick else 30
    with tempfile.TemporaryDirectory() as tmp:
        out, init = os.path.join(tmp, "out.json"), os.path.join(tmp, "init")
        procs = [subprocess.Popen([sys.executable, "-m", "moelab.bench.alltoall", str(rank), str(world), init, out,
                                   device, f"{small},{large}", str(reps)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE) for rank in range(world)]
        errors = []
        try:
            for p in procs:
                try:
                    _, err = p.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    _, err = p.communicate()
                if p.returncode:
                    errors.append(err.decode(errors="replace").strip().splitlines()[-1:] or ["failed"])
        finally:  # interrupted (Ctrl-C) or failed: no worker outlives the probe
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if errors or not Path(out).is_file():
            raise RuntimeError(f"all-to-all probe failed: {errors}")
        seconds = {int(k): v for k, v in json.loads(Path(out).read_text()).items()}
    (n_small, t_small), (n_large, t_large) = sorted(seconds.items())
    crossing = (world - 1) / world
    bandwidth = crossing * (n_large - n_small) / max(t_large - t_small, 1e-9)
    return {"world": world, "backend": "nccl" if device == "cuda" else "gloo", "latency_s": t_small,
            "bandwidth": bandwidth, "seconds_by_bytes": {str(k): v for k, v in seconds.items()}}


if __name__ == "__main__":
    rank, world, init, out, device, sizes, reps = sys.argv[1:8]
    _worker(int(rank), int(world), init, out, device, [int(x) for x in sizes.split(",")], int(reps))
