"""Run the default (or a workload's) study end to end and write the report.

Stages, in the seeds' order:
- prototype both kinds: train a dense model, an iso-active MoE, a fine-grained + shared MoE and an iso-total wide
  dense model on the study corpus (the default one and a facts domain), same data order and budget;
- calibrate this machine and benchmark the trained models beside the engine's predictions (in a fresh process);
- probe their task-type quality: knowledge and reasoning accuracy by exact match (moelab.study.task_type);
- serve the dense and MoE models with vLLM at each concurrency (when the serving environment is there; not with
  --quick), and serve them as hybrids: routed and cascaded, a cost-quality curve (moelab.study.hybrid);
- train both kinds again in 1, 2 (and 4) torchrun processes for the seeds' multi-GPU scaling table and
  all-to-all share (moelab.study.scaling);
- prune, quantize, offload and upcycle the trained models and measure what each costs (moelab.study.mitigations);
- sweep model sizes of both kinds and fit the scaling laws the seeds state (moelab.study.laws);
- model the frontier pairs on the workload's GPU (static-batch economics, and each model's interactivity-
  throughput frontier over plans and concurrencies), decide, check the seeds' numeric claims, report.
Every stage's output lands in one `study` dict (DIR/study.json), which `moelab.report` renders.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moelab import jsonout
from moelab.decide.workload import Workload, default_workload
from moelab.errors import MoelabError
from moelab.study.hybrid import hybrid_stage
from moelab.study.laws import laws_stage
from moelab.study.mitigations import mitigations_stage
from moelab.study.plan import CORPUS, FRONTIER_BATCHES, FRONTIER_PAIRS, PAIRS, SERVED, StudyPlan
from moelab.study.scaling import scaling_stage
from moelab.study.task_type import task_type_stage

Log = Callable[[str], None]
CHILD_STOP_S = 30.0  # an interrupted child's time to stop its own children (serve-bench: 2 x 10 s of grace)


def train_stage(runs: Path, plan: StudyPlan, progress: bool, log: Log) -> dict:
    """Train the four models on one budget and the study corpus, the dense model first: the target loss is its
    final validation loss, so `to_target` answers "how soon does each MoE reach what dense reached with the whole
    budget?". tiny-dense-wide (iso-total with tiny-moe) is there for the task-type probes' second pair."""
    from moelab.train.compare import train_compare
    from moelab.train.config import TrainConfig
    from moelab.train.presets import load_train_spec

    cfg = TrainConfig(steps=plan.steps, batch_size=plan.batch_size, seq_len=plan.seq_len, eval_every=plan.eval_every,
                      eval_tokens=plan.eval_tokens, ckpt_every=plan.steps, warmup=max(1, plan.steps // 10),
                      max_bytes_per_domain=plan.max_bytes_per_domain, corpus=CORPUS)
    names = [PAIRS["dense"], PAIRS["moe"], PAIRS["moe_fine"], PAIRS["dense_wide"]]
    result = train_compare([load_train_spec(n) for n in names], cfg, runs, target_loss=None, progress=progress,
                           log=log)
    return {**result, "target_rule": f"the final mean validation loss of {PAIRS['dense']} after the whole budget",
            "pairs": dict(PAIRS)}


def run_relayed(cmd: list[str], log: Log, prefix: str = "study: ", what: str = "the measurement stage",
                stdout: Path | None = None) -> None:
    """Run `cmd`, relaying each stderr line to `log` as it comes (prefixed); its stdout goes to the file `stdout`
    (else nowhere). A failure is a MoelabError with the child's `moelab: error:` line (else its last line).
    Interrupted, the child is killed, never orphaned."""
    sink = open(stdout, "w") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.PIPE,
                                text=True, errors="replace", bufsize=1)
    finally:
        if stdout is not None:
            sink.close()
    last: list[str] = []
    try:
        for line in proc.stderr:
            line = line.rstrip()
            if line:
                log(f"{prefix}{line}")
                last = [*last[-4:], line]
        code = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: let the child stop what it started (a server), then kill it
            proc.terminate()
            try:
                proc.wait(timeout=CHILD_STOP_S)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                proc.kill()
                proc.wait()
        proc.stderr.close()
    if code != 0:
        error_prefix = "moelab: error: "
        error = next((line[len(error_prefix):] for line in reversed(last) if line.startswith(error_prefix)), None)
        raise MoelabError(f"{what} failed: {error or (last[-1] if last else f'exit {code}')}")


def measure_stage(out: Path, plan: StudyPlan, log: Log) -> tuple[dict, dict]:
    """Calibrate and bench in a fresh process (see moelab.study.measure for why); (hardware, bench).

    The child reports each probe and bench round on its stderr, one line each; they are relayed to `log` as
    they come, so that the minutes of measurement are never silent."""
    run_relayed([sys.executable, "-m", "moelab.study.measure", str(out), json.dumps(plan.to_dict())], log)
    hw = json.loads((out / "hardware.json").read_text())
    log(f"calibration: {out / 'hardware.json'} ({hw['measurements']['seconds']:.1f} s)")
    return {**hw, "path": str(out / "hardware.json")}, json.loads((out / "bench.json").read_text())


def serve_stage(out: Path, plan: StudyPlan, log: Log) -> dict:
    """Serve the trained dense and MoE models with vLLM on this machine (moelab serve-bench, in a child process)
    at plan.serve_concurrency, predictions on this study's calibration; the rows, servers and greedy checks.
    Where vLLM cannot run here, or a model fails, the study says so and goes on with its eager bench."""
    from moelab.serve.environment import serving_available

    base = {"concurrency": list(plan.serve_concurrency), "input": plan.bench_prompt, "output": plan.bench_gen,
            "requests_per_level": plan.serve_requests, "rows": [], "servers": [], "notes": [], "failures": []}
    if plan.quick:
        log("study: serving skipped: --quick does not start vLLM (the full study does)")
        return {**base, "skipped": "--quick: the vLLM stage runs in the full study only"}
    reason = serving_available()
    if reason is not None:
        log(f"study: serving skipped: {reason}")
        return {**base, "skipped": reason}
    folder = out / "serve"
    (folder / "report.json").unlink(missing_ok=True)  # never an earlier study's
    models = [str(out / "runs" / PAIRS[kind]) for kind in SERVED]
    cmd = [sys.executable, "-m", "moelab.cli", "serve-bench", *models, "--concurrency",
           ",".join(map(str, plan.serve_concurrency)), "--requests", str(plan.serve_requests),
           "--input", str(plan.bench_prompt), "--output", str(plan.bench_gen), "--hardware",
           str(out / "hardware.json"), "--check-greedy", str(plan.serve_greedy_prompts), "--out", str(folder)]
    try:
        run_relayed(cmd, log, prefix="study: ", what="serving with vLLM")
    except MoelabError as e:
        log(f"study: {e}")
        if not (folder / "report.json").is_file():
            return {**base, "skipped": str(e)}
    report = json.loads((folder / "report.json").read_text())
    kinds = {PAIRS[kind]: kind for kind in SERVED}
    for row in report["rows"]:
        row["kind"] = kinds.get(row["model"], "?")
    return {**base, **report, "skipped": None, "basis": "measured: vLLM serving on this machine's CPU",
            "folder": str(folder)}


def frontier_stage(wl: Workload) -> dict:
    """The seeds' frontier pairs on the workload's GPU: one estimate per model, a batch sweep per pair."""
    from moelab.cost.compare import compare
    from moelab.cost.estimate import estimate
    from moelab.cost.roofline import Workload as CostWorkload
    from moelab.spec import load_hardware, load_model

    hw = load_hardware(wl.hardware)
    cost_wl = CostWorkload(batch=wl.batch, prompt=wl.prompt, gen=wl.gen, dtype=wl.dtype)
    names = list(dict.fromkeys(m for pair in FRONTIER_PAIRS for m in pair))
    return {"hardware": hw.name,
            "estimates": {m: estimate(load_model(m), hw, cost_wl).to_dict() for m in names},
            "pairs": [compare(load_model(a), load_model(b), hw, CostWorkload(prompt=wl.prompt, gen=wl.gen,
                                                                            dtype=wl.dtype), list(FRONTIER_BATCHES))
                      for a, b in FRONTIER_PAIRS],
            "serving": serving_frontier_stage(wl, hw)}


def serving_frontier_stage(wl: Workload, hw) -> dict:
    """The frontier pairs' interactivity-throughput frontiers (cost.frontier) on the workload's GPUs, prompt and
    output lengths: modelled means, one list of Pareto points per model (empty: no plan fits)."""
    from moelab.cost.frontier import candidate_plans, frontier
    from moelab.spec import load_model

    models = {}
    for name in dict.fromkeys(m for pair in FRONTIER_PAIRS for m in pair):
        spec = load_model(name)
        points = frontier(spec, hw, wl.gpus, wl.prompt, wl.gen, wl.dtype)
        models[name] = {"kind": "moe" if spec.is_moe else "dense",
                        "plans_searched": len(candidate_plans(spec, hw, wl.gpus)),
                        "points": [p.to_dict() for p in points]}
    return {"hardware": hw.name, "gpus": wl.gpus, "input": wl.prompt, "output": wl.gen, "dtype": wl.dtype,
            "basis": "modelled means (cost.serving), not measurements", "pairs": [list(p) for p in FRONTIER_PAIRS],
            "models": models}


def machine() -> dict:
    import torch

    from moelab.bench.calibrate import cpu_model

    return {"processor": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def run_study(out: Path, workload: Workload | None = None, quick: bool = False, progress: bool = True,
              log: Log = print) -> dict:
    """Run every stage into `out` (runs/, study.json, report.html, summary.json, CSVs); returns the study."""
    from moelab.claims import claims_table
    from moelab.data.cache import atomic_write_text, check_writable_dir
    from moelab.decide.recommend import recommend
    from moelab.report import write_report

    started = time.perf_counter()
    plan = StudyPlan.quick_plan() if quick else StudyPlan.default()
    wl = workload or default_workload()
    check_writable_dir(out, "--out")
    stage_seconds: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], Any], soft: bool = False) -> Any:
        """Run one stage and time it. A soft stage's failure (any Exception; Ctrl-C still stops the study) is
        recorded as {"skipped": why, "failures": [why]} and the study goes on: the measurements of the stages
        before it are not lost to a part that only adds to them."""
        log(f"study: {name} ...")
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as e:
            if not soft:
                raise
            why = f"{name} failed: {type(e).__name__}: {e}"
            log(f"study: {why}; the study goes on without it")
            result = {"skipped": why, "failures": [why]}
        stage_seconds[name] = round(time.perf_counter() - t0, 2)
        log(f"study: {name} done in {stage_seconds[name]:.1f} s")
        return result

    # The modelled stages first: they read the workload's hardware and candidates, so anything there that the
    # engine cannot model fails now, in a second, and not after minutes of training. The engine-only decision
    # is a dry run of the last stage on the same inputs.
    frontier = stage("frontier", lambda: frontier_stage(wl))
    recommend(wl)
    training = stage("train", lambda: train_stage(out / "runs", plan, progress, log))
    calibration, bench = stage("calibrate and bench", lambda: measure_stage(out, plan, log))
    task_type = stage("task-type probes", lambda: task_type_stage(out, plan, log), soft=True)
    serving = stage("serve with vLLM", lambda: serve_stage(out, plan, log))
    hybrid = stage("hybrid serving", lambda: hybrid_stage(out, plan, log), soft=True)
    scaling = stage("scale across processes", lambda: scaling_stage(out, plan, out / "hardware.json", log))
    mitigations = stage("mitigations", lambda: mitigations_stage(out, plan, out / "hardware.json", log))
    laws = stage("scaling laws", lambda: laws_stage(out, plan, log), soft=True)
    decision = stage("decide", lambda: recommend(wl, {"training": training, "bench": bench, "task_type": task_type,
                                                      "hybrid": hybrid}))
    study = {"version": 1, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "quick": quick, "plan": plan.to_dict(), "machine": machine(), "workload": wl.to_dict(),
             "training": training, "calibration": calibration, "bench": bench, "task_type": task_type,
             "serving": serving, "hybrid": hybrid, "scaling": scaling, "mitigations": mitigations, "laws": laws,
             "frontier": frontier, "decision": decision, "stage_seconds": stage_seconds}
    study["wall_seconds"] = round(time.perf_counter() - started, 2)

    def write_study() -> None:
        atomic_write_text(out / "study.json", jsonout.dumps(study, indent=1, default=str) + "\n")

    write_study()  # every measurement on disk before the two steps that only read them
    claims = stage("check the seeds' claims", lambda: claims_table(study), soft=True)
    study["claims"] = claims if isinstance(claims, list) else []
    if not isinstance(claims, list):
        study["claims_failure"] = claims["skipped"]
    t0 = time.perf_counter()
    write_report(study, out)
    stage_seconds["report"] = round(time.perf_counter() - t0, 2)
    study["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_study()
    return study
