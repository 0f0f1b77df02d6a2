"""Matched training comparison: the same data order, budget and schedule for every model; who reaches the
target validation loss with fewer tokens, FLOPs and seconds (the seeds' "training speed" table, measured)."""

from __future__ import annotations

import json
from pathlib import Path

from moelab.spec.model import ModelSpec
from moelab.train.checkpoint import checkpoints
from moelab.train.config import TrainConfig
from moelab.train.loop import train


def reached(metrics_path: Path, target: float) -> dict | None:
    """Tokens, FLOPs and wall seconds at the first evaluation whose mean validation loss is <= target."""
    for line in metrics_path.read_text().splitlines():
        row = json.loads(line)
        if "val" in row and row["val"]["mean"] <= target:
            return {"step": row["step"], "tokens": row["tokens"], "flops": row["flops"],
                    "wall_seconds": row["wall_seconds"]}
    return None


def train_compare(specs: list[ModelSpec], cfg: TrainConfig, out: Path, target_loss: float,
                  progress: bool = True, log=print) -> dict:
    """Train each spec into out/<name> (resuming a folder that has checkpoints) and tabulate."""
    rows = []
    for spec in specs:
        run_dir = out / spec.name
        summary = train(spec, cfg, run_dir, resume=bool(checkpoints(run_dir)) if run_dir.exists() else False,
                        progress=progress, log=log)
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        rows.append({
            "model": spec.name,
            "params_total": summary["params_total"],
            "params_active": summary["params_active"],
            "to_target": reached(run_dir / "metrics.jsonl", target_loss),
            "final_val": summary["val"],
            "final_train_loss": lines[-1]["loss"],
            "tokens_per_second": summary["tokens_per_second"],
            "flops": summary["flops"],
            "wall_seconds": summary["wall_seconds"],
        })
    return {"target_loss": target_loss, "config": cfg.to_dict(), "rows": rows,
            "note": "to_target is read at evaluation steps (every eval_every steps): a resolution, not interpolation"}
