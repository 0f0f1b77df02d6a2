"""The study's multi-process stage: the seeds' multi-GPU scaling table and all-to-all share, measured here.

The dense model (data-parallel) and its iso-active MoE (expert-parallel: --ep N, every rank a share of the
experts) train for plan.scaling_steps steps in 1, 2 (and 4) torchrun processes of one thread each, on gloo,
at a fixed batch per process (the global batch grows with the processes, as the seeds' tokens/s speedup
assumes). Per run: the median step after the warm-up, split by the training loop's timed regions into
all-to-all, all-reduce and compute (train.steps.measured_split, in the run's summary.json), tokens/s, speedup
over one process and efficiency; beside them the engine's prediction for the same run and plan
(cost.training_step on this study's calibration). This machine has few cores: more processes than cores
share them, so the ideal speedup here is min(processes, cores), stated beside every row; the processes talk
through shared memory, not NVLink.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from moelab.errors import MoelabError
from moelab.study.plan import CORPUS, PAIRS, StudyPlan

# Seeds 001 ("Multi-GPU Scaling", speedup vs a single GPU): GPUs -> (dense 7B, MoE 56B with K=2).
SEEDS_SPEEDUP = {1: (1.0, 1.0), 2: (1.92, 1.89), 4: (3.76, 3.68), 8: (7.21, 6.84), 16: (13.84, 12.15)}
# Seeds 000: "Multi-GPU all-to-all for expert routing can consume ~32% of wall-clock training time."
SEEDS_ALLTOALL_SHARE = 0.32
KINDS = ("dense", "moe")


def _prediction(predicted: dict | None, ranks: int, tokens: int) -> dict | None:
    """The engine's step for the run (its summary's steps.predicted: cost.training_step for the same plan on the
    study's calibration), with each rank's compute slowed by the processes beyond the cores that share them
    (not in the engine, which prices one device per rank)."""
    if not predicted or "step_seconds" not in predicted:
        return predicted
    shared = max(1.0, ranks / (os.cpu_count() or 1))
    seconds = predicted["compute_seconds"] * shared + predicted["alltoall_seconds"] + predicted["allreduce_seconds"]
    return {"plan": predicted["plan"], "step_seconds": seconds, "tokens_per_second": tokens / seconds,
            "alltoall_share": predicted["alltoall_seconds"] / seconds, "cores_shared_factor": shared}


def _run(out: Path, kind: str, ranks: int, plan: StudyPlan, hardware: Path | None, log) -> dict:
    from moelab.parallel.launch import torchrun

    folder = out / f"{kind}-{ranks}"
    shutil.rmtree(folder, ignore_errors=True)
    ep = ranks if kind == "moe" and ranks > 1 else 1
    args = ["-m", "moelab", "train", "--model", PAIRS[kind], "--out", str(folder),
            "--steps", str(plan.scaling_steps), "--batch-size", str(plan.scaling_batch * ranks),
            "--seq-len", str(plan.seq_len), "--eval-every", str(plan.scaling_steps), "--eval-tokens", "256",
            "--ckpt-every", str(plan.scaling_steps), "--max-bytes-per-domain", str(plan.max_bytes_per_domain),
            "--corpus", CORPUS, "--no-progress", "--json"] + (["--ep", str(ep)] if ep > 1 else []) + (
            ["--hardware", str(hardware)] if hardware else [])
    log(f"study: scaling: {PAIRS[kind]} on {ranks} process(es){f' (--ep {ep})' if ep > 1 else ''}")
    done = torchrun(ranks, args, timeout=plan.scaling_timeout_s, env={"MOELAB_DIST_TIMEOUT": "120"}, threads=1)
    if done.returncode != 0:
        return {"kind": kind, "ranks": ranks, "error": ("timed out" if done.timed_out else f"exit {done.returncode}")
                + f": {_why(done.stderr)}"}
    try:
        summary = json.loads((folder / "summary.json").read_text())
        measured = summary["steps"]["measured"]
        tokens = summary["tokens"] // plan.scaling_steps
        step = measured["step_seconds"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return {"kind": kind, "ranks": ranks, "error": f"no step figures in {folder / 'summary.json'} ({e})"}
    row = {"kind": kind, "model": PAIRS[kind], "ranks": ranks, "ep": ep, "dp": ranks // ep,
           "plan": summary["parallel"]["plan"], "threads_per_rank": 1, "tokens_per_step": tokens,
           "tokens_per_second": tokens / step, **measured, "folder": str(folder)}
    if hardware:
        row["predicted"] = _prediction(summary["steps"].get("predicted"), ranks, tokens)
    return row


def _why(stderr: str) -> str:
    """The line that says why a run failed: moelab's own error line, else the last line that is not torchrun's
    report frame."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "moelab: error:" in line:
            return line[line.index("moelab: error:"):][:300]
    told = [line for line in lines if not set(line) <= set("=-") and not line.startswith(("[W", "W1", "*"))]
    return (told[-1] if told else "no output")[:300]


def scaling_stage(out: Path, plan: StudyPlan, hardware: Path | None, log) -> dict:
    """Train each kind at each process count; the rows, speedups and the all-to-all share (see the docstring)."""
    base = {"ranks": list(plan.scaling_ranks), "steps": plan.scaling_steps, "batch_per_rank": plan.scaling_batch,
            "seq_len": plan.seq_len, "cores": os.cpu_count(), "seeds_speedup": SEEDS_SPEEDUP,
            "seeds_alltoall_share": SEEDS_ALLTOALL_SHARE, "backend": "gloo (CPU processes, shared memory)",
            "rows": [], "failures": []}
    folder = out / "scaling"
    folder.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        one = None
        for ranks in plan.scaling_ranks:
            try:
                row = _run(folder, kind, ranks, plan, hardware if hardware and hardware.is_file() else None, log)
            except (OSError, MoelabError) as e:  # this stage's failure never costs the study
                row = {"kind": kind, "ranks": ranks, "error": str(e)}
            if "error" in row:
                base["failures"].append(f"{PAIRS[kind]} on {ranks} processes: {row['error']}")
                log(f"study: scaling: {base['failures'][-1]}")
                continue
            row["ideal_speedup_here"] = min(ranks, os.cpu_count() or 1)
            row["seeds_speedup"] = SEEDS_SPEEDUP.get(ranks, (None, None))[KINDS.index(kind)]
            if ranks == 1:
                one = row
            if one is not None:
                row["speedup"] = row["tokens_per_second"] / one["tokens_per_second"]
                row["efficiency"] = row["speedup"] / ranks
                p, p1 = row.get("predicted") or {}, one.get("predicted") or {}
                if p.get("tokens_per_second") and p1.get("tokens_per_second"):
                    p["speedup"] = p["tokens_per_second"] / p1["tokens_per_second"]
            base["rows"].append(row)
    moe = [r for r in base["rows"] if r["kind"] == "moe" and r["ranks"] > 1]
    if moe:
        widest = max(moe, key=lambda r: r["ranks"])
        base["alltoall_share"] = {"ranks": widest["ranks"], "measured": widest["alltoall_share"],
                                  "predicted": (widest.get("predicted") or {}).get("alltoall_share"),
                                  "seeds": SEEDS_ALLTOALL_SHARE}
    return {**base, "basis": "measured: torchrun processes on this machine's CPU (gloo), one thread each"}
