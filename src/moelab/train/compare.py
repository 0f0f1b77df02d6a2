"""Matched training comparison: the same data order, budget and schedule for every model; who reaches the
target validation loss with fewer tokens, FLOPs and seconds (the seeds' "training speed" table, measured)."""

from __future__ import annotations

import json
from pathlib import Path

from moelab.spec.model import ModelSpec
from moelab.train.checkpoint import checkpoints
from moelab.train.config import TrainConfig
from moelab.train.loop import train


def reached(lines: list[dict], target: float) -> dict | None:
    """Tokens, FLOPs and wall seconds at the first evaluation whose mean validation loss is <= target."""
    for row in lines:
        if "val" in row and row["val"]["mean"] <= target:
            return {"step": row["step"], "tokens": row["tokens"], "flops": row["flops"],
                    "wall_seconds": row["wall_seconds"]}
    return None


def curve(lines: list[dict]) -> list[dict]:
    """The loss curve of a run: per step tokens, FLOPs, wall seconds, training loss and, at evaluations, the
    mean validation loss."""
    return [{"step": r["step"], "tokens": r["tokens"], "flops": r["flops"], "wall_seconds": r["wall_seconds"],
             "loss": r["loss"], **({"val_mean": r["val"]["mean"]} if "val" in r else {})} for r in lines]


def train_compare(specs: list[ModelSpec], cfg: TrainConfig, out: Path, target_loss: float | None,
                  progress: bool = True, log=print) -> dict:
    """Train each spec into out/<name> (resuming a folder that has checkpoints) and tabulate. A `target_loss`
    of None is the first model's final mean validation loss: how soon do the others reach what it reached
    with the whole budget? Beside the table: each run's loss curve and its last per-domain expert load."""
    rows, curves, loads, metrics = [], {}, {}, {}
    for spec in specs:
        run_dir = out / spec.name
        summary = train(spec, cfg, run_dir, resume=bool(checkpoints(run_dir)) if run_dir.exists() else False,
                        progress=progress, log=log)
        lines = metrics[spec.name] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        curves[spec.name] = curve(lines)
        evaluated = [r for r in lines if r.get("val_expert_load")]
        if evaluated:
            loads[spec.name] = evaluated[-1]["val_expert_load"]
        rows.append({
            "model": spec.name,
            "params_total": summary["params_total"],
            "params_active": summary["params_active"],
            "final_val": summary["val"],
            "final_train_loss": lines[-1]["loss"],
            "tokens_per_second": summary["tokens_per_second"],
            "flops": summary["flops"],
            "wall_seconds": summary["wall_seconds"],
        })
    if target_loss is None:
        target_loss = rows[0]["final_val"]["mean"]
    for row in rows:
        row["to_target"] = reached(metrics[row["model"]], target_loss)
    return {"target_loss": target_loss, "config": cfg.to_dict(), "rows": rows, "curves": curves,
            "expert_load": loads,
            "note": "to_target is read at evaluation steps (every eval_every steps): a resolution, not interpolation"}
