"""Matched training comparison: the same data order, budget and schedule for every model; who reaches the
target validation loss with fewer tokens, FLOPs and seconds (the seeds' "training speed" table, measured)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from moelab.data.cache import check_writable_dir
from moelab.errors import MoelabError
from moelab.spec.model import ModelSpec
from moelab.train.checkpoint import checkpoints
from moelab.train.clocks import training_seconds
from moelab.train.config import TrainConfig
from moelab.train.faults import check_env
from moelab.train.fits import check_trainable
from moelab.train.loop import train


def folder_name(name: str) -> str:
    """A model name as one safe folder name: path separators, "." and ".." parts and any character outside
    [A-Za-z0-9._-] cannot lead out of the parent folder (`/some/dir` -> `some_dir`, `../../x` -> `x`)."""
    parts = [part for part in re.split(r"[/\\]+", name) if part not in ("", ".", "..")]
    safe = re.sub(r"[^A-Za-z0-9.-]+", "_", "_".join(parts)).strip("._")[:100]
    return safe or "model"


def run_folders(specs: list[ModelSpec], out: Path) -> list[Path]:
    """out/<folder_name(spec.name)> for each spec, each checked to lie directly under `out`; two models that
    would share a folder are refused."""
    folders, seen = [], {}
    root = out.resolve()
    for spec in specs:
        folder = out / folder_name(spec.name)
        if folder.resolve().parent != root:
            raise MoelabError(f"model name {spec.name!r} does not give a folder under {out}")
        if folder.name in seen:
            raise MoelabError(f"models {seen[folder.name]!r} and {spec.name!r} would both train into {folder}: "
                              "give each model a distinct name")
        seen[folder.name] = spec.name
        folders.append(folder)
    return folders


def _val_mean(row: dict) -> float | None:
    """The row's mean validation loss when it is a real score (some domain measured, a finite number)."""
    val = row.get("val")
    if not isinstance(val, dict) or not any(k not in ("mean", "dense") for k in val):
        return None
    mean = val.get("mean")
    return mean if isinstance(mean, int | float) and math.isfinite(mean) else None


def reached(lines: list[dict], target: float) -> dict | None:
    """Tokens, FLOPs, wall and training seconds at the first evaluation whose mean validation loss is <= target
    (an evaluation that scored nothing never counts)."""
    for row in lines:
        mean = _val_mean(row)
        if mean is not None and mean <= target:
            return {"step": row["step"], "tokens": row["tokens"], "flops": row["flops"],
                    "wall_seconds": row["wall_seconds"], "train_seconds": training_seconds(row)}
    return None


def curve(lines: list[dict]) -> list[dict]:
    """The loss curve of a run: per step tokens, FLOPs, wall and training seconds, training loss and, at
    evaluations, the mean validation loss."""
    return [{"step": r["step"], "tokens": r["tokens"], "flops": r["flops"], "wall_seconds": r["wall_seconds"],
             "train_seconds": training_seconds(r),
             "loss": r["loss"], **({"val_mean": _val_mean(r)} if _val_mean(r) is not None else {})} for r in lines]


def train_compare(specs: list[ModelSpec], cfg: TrainConfig, out: str | Path, target_loss: float | None,
                  progress: bool = True, log=print) -> dict:
    """Train each spec into out/<name> (resuming a folder that has checkpoints) and tabulate. A `target_loss`
    of None is the first model's final mean validation loss: how soon do the others reach what it reached
    with the whole budget? Beside the table: each run's loss curve and its last per-domain expert load."""
    rows, curves, loads, metrics = [], {}, {}, {}
    if target_loss is not None and (not isinstance(target_loss, int | float) or not math.isfinite(target_loss)):
        raise MoelabError(f"--target-loss must be a finite number, got {target_loss!r}")
    check_env()
    for spec in specs:  # every model checked before the first trains
        check_trainable(spec, cfg)
    out = check_writable_dir(out, "--out")
    for spec, run_dir in zip(specs, run_folders(specs, out), strict=True):
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
            "train_seconds": summary.get("train_seconds"),
        })
    if target_loss is None:
        target_loss = (rows[0]["final_val"] or {}).get("mean")
        if target_loss is None:
            raise MoelabError(f"{specs[0].name} has no validation score to use as the target: pass --target-loss")
    for row in rows:
        row["to_target"] = reached(metrics[row["model"]], target_loss)
    return {"target_loss": target_loss, "config": cfg.to_dict(), "rows": rows, "curves": curves,
            "expert_load": loads,
            "note": "to_target is read at evaluation steps (every eval_every steps): a resolution, not interpolation"}
