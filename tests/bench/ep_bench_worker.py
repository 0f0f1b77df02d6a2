"""Under torchrun (2 processes), for tests/bench/test_bench_ep.py: `python ep_bench_worker.py OUT BENCH-ARGS...`.

The processes run `moelab BENCH-ARGS` (rank 0 prints its JSON on stdout) and exit with its code. Inside it, once
the bench has resolved its model and started its group (the process group cannot be started a second time in
one torchrun job), its own model path (moelab.bench.parallel.build_sharded, bench.measure.Runner's share of the
sequences) first runs one prefill and one decode step in float64 and float32: the ids, last-position prefill
logits and decode logits of both ranks are gathered into OUT/logits.safetensors, for the test to compare with
one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from moelab.bench import parallel as ep_bench
from moelab.bench import run
from moelab.bench.measure import Runner, prefill_last
from moelab.cli import main

BATCH, PROMPT = 4, 16
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _gather(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def logits(out: Path, r, mesh) -> None:
    layout = mesh.layout
    tensors = {}
    for name, dtype in DTYPES.items():
        m = ep_bench.build_sharded(r, "cpu", dtype, mesh)
        runner = Runner(m.model, r.spec.vocab_size, BATCH, PROMPT, 1, "cpu", seed=BATCH,
                        part=(layout.ep_rank, layout.ep), group=mesh.ep_group)
        with torch.inference_mode():
            cache = m.model.new_cache(PROMPT + 1)
            ids = runner._ids(PROMPT)
            first = prefill_last(m.model, ids, cache)
            token = runner._ids(1)
            step = m.model(token, cache)
        for key, value in (("ids", ids), ("prefill", first), ("token", token), ("decode", step)):
            tensors[f"{name}.{key}"] = _gather(value)
    if layout.writer:
        save_file(tensors, str(out / "logits.safetensors"))


def _with_logits(out: Path):
    measure = run._measure

    def wrapped(resolved, mesh, layout, **kw):
        logits(out, resolved[0], mesh)
        return measure(resolved, mesh, layout, **kw)

    return wrapped


if __name__ == "__main__":
    run._measure = _with_logits(Path(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
