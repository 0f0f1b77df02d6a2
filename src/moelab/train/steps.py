"""A run's training step by where its time went, measured (metrics.jsonl) beside the engine's prediction.

Measured: the median over the launch's steps after its first WARMUP_STEPS (all of them if there are no more) of each
step's all-to-all, all-reduce and compute seconds (the loop's timed regions, parallel.clock) and of the
all-to-all share of the step. Predicted: cost.training_step for the same model, batch, sequence length and
ep x dp plan, on the hardware given (the calibration of this machine, when one is cached).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from moelab.errors import MoelabError

WARMUP_STEPS = 2
PARTS = ("alltoall", "allreduce", "compute")


def measured_split(metrics_path: Path, after_step: int = 0) -> dict | None:
    """Medians of the step's parts and of its all-to-all share over this launch's steps (those after
    `after_step`, where a resumed launch began: earlier ones may have run in another layout); None when none
    has them."""
    rows = []
    for line in metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and all(f"{p}_seconds" in row for p in PARTS) and row.get("step", 0) > after_step:
            rows.append(row)
    timed = rows[WARMUP_STEPS:] or rows
    if not timed:
        return None
    steps = [sum(r[f"{p}_seconds"] for p in PARTS) for r in timed]
    shares = [r["alltoall_seconds"] / s for r, s in zip(timed, steps, strict=True) if s > 0]
    out = {f"{p}_seconds": statistics.median(r[f"{p}_seconds"] for r in timed) for p in PARTS}
    return {"step_seconds": statistics.median(steps), **out,
            "alltoall_share": statistics.median(shares) if shares else 0.0, "steps_timed": len(timed)}


def predicted_split(spec, cfg, ep: int, dp: int, hw) -> dict:
    """The engine's step for this run and plan (cost.training_step), or {"error": ...} where it cannot price it."""
    from moelab.cost.training_step import training_step

    try:
        p = training_step(spec, hw, batch=cfg.batch_size, seq=cfg.seq_len, ep=ep, dp=dp, grad_accum=cfg.grad_accum,
                          dtype="bf16" if cfg.bf16 else "fp32")
    except MoelabError as e:
        return {"error": str(e), "hardware": hw.name}
    return {"hardware": hw.name, "plan": p.plan, "step_seconds": p.seconds, "alltoall_seconds": p.alltoall_seconds,
            "allreduce_seconds": p.allreduce_seconds, "compute_seconds": p.compute_seconds,
            "alltoall_share": p.alltoall_share, "tokens_per_second": p.tokens_per_second}
