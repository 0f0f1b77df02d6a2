"""The sweep: train every grid point on one budget and data order, into DIR/runs/<name>; DIR/sweep.json its rows.

Every run has the same TrainConfig (steps, batch, sequence length, schedule, seed: the same batches in the same
order, moelab.data.train_batch) but its peak learning rate, which follows the model's size by Kaplan et al.
2020's rule (arXiv:2001.08361, appendix D.1, eq. D.1: LR(N) ~ 0.003239 - 0.0001395 ln N, N non-embedding): at one
lr of 3e-3 the 800k and 1.6M dense models of a 100-step sweep ended above the 400k one (their gradient norms
spiking to 2-4.5), which no law of size describes; with the rule the losses fell with size (4.94, 4.60, 4.50 at
100k, 400k, 1.6M). --lr fixes one rate for every run instead. A run that finished
(final/ with the same spec and config) is not retrained; one with checkpoints resumes from its last (bit for bit:
moelab.train.loop); sweep.json is rewritten atomically after every run, so an interrupted sweep keeps the rows it
has. A DIR whose sweep.json or runs were made under another budget is refused (use another --out).

Compute per run C = 6 * N * D with N the non-embedding active parameters (moelab.laws.grid) and D the tokens
trained (Kaplan et al. 2020's C ~ 6NBS); the engine's training FLOPs (lm_head and attention included) are in
"flops" beside it. With one token budget D is the same for every run: C varies through N alone.

The default sweep (sizes 0.5M-8M of both kinds, 300 steps of 16 x 128 tokens: 614,400 tokens per run) on this
2-core CPU, estimated for an idle machine (not run end to end: four other jobs shared the cores): one-thread CPU
time per step measured for every run, 9.4 s for the 10 runs together (10.8 s with --experts 4,8,16), two threads'
wall times 1.85x below that at a load average under 1, times 300 steps, plus about a minute of evaluation,
checkpoints and startup: about 26 minutes (30 with --experts 4,8,16).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

from moelab.data.cache import atomic_write_json, check_writable_dir
from moelab.errors import MoelabError
from moelab.laws.grid import GridPoint, non_embedding_active
from moelab.spec.model import spec_from_dict
from moelab.train.checkpoint import checkpoints
from moelab.train.config import TrainConfig
from moelab.userfile import load_user_file

SWEEP_FILE = "sweep.json"
VERSION = 1
ACTIVE = ("non-embedding active parameters: attention, the dense FFN or the top-k routed experts, routers and "
          "norms (moelab.cost.params active less the embedding and lm_head)")
# The default budget: the study's training budget (300 steps of 16 x 128 tokens, warmup + cosine), each run's
# peak lr by LR_RULE.
DEFAULT = {"steps": 300, "batch_size": 16, "seq_len": 128, "eval_tokens": 8192, "max_bytes_per_domain": 1_500_000}
# --quick: a budget for tests (seconds per run at the tiny sizes).
QUICK = {"steps": 12, "batch_size": 4, "seq_len": 32, "eval_tokens": 512, "max_bytes_per_domain": 200_000}
DEFAULT_SIZES, QUICK_SIZES = "0.5M,1M,2M,4M,8M", "10k,20k,40k,80k,160k"
CKPT_EVERY = 50
LR_RULE = "kaplan"


def kaplan_lr(n: int) -> float:
    """The peak learning rate of a model of `n` non-embedding parameters: Kaplan et al. 2020, eq. D.1."""
    return 0.003239 - 0.0001395 * math.log(n)


def point_config(cfg: TrainConfig, point: GridPoint, lr_rule: str | None) -> TrainConfig:
    """The run's own TrainConfig: the sweep's, with the rule's learning rate (lr_rule None: cfg.lr for all)."""
    return replace(cfg, lr=kaplan_lr(non_embedding_active(point.spec))) if lr_rule == LR_RULE else cfg


def sweep_config(quick: bool = False, steps: int | None = None, **overrides) -> TrainConfig:
    """The one TrainConfig of every run: DEFAULT (or QUICK), `steps` and other fields overriding it; evaluated
    once, at the end (the fit reads the final validation loss), checkpointed every CKPT_EVERY steps (a quarter of
    the run when that is fewer), the last checkpoint kept."""
    base = dict(QUICK if quick else DEFAULT)
    if steps is not None:
        base["steps"] = steps
    base.update({k: v for k, v in overrides.items() if v is not None})
    n = base["steps"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MoelabError(f"--steps must be a positive integer, got {n!r}")
    return TrainConfig(**{"warmup": max(1, n // 10), "eval_every": n, "ckpt_every": max(1, min(CKPT_EVERY, n // 4)),
                          "keep_last": 1, **base})


def _finished(folder: Path, point: GridPoint, cfg: TrainConfig) -> dict | None:
    """The summary of a finished run of this spec and config in `folder`; None when it has no final/. A finished
    run of another spec or config is refused (it would mix budgets in one sweep)."""
    meta_path = folder / "final" / "meta.json"
    if not (folder / "final").is_dir():
        return None
    meta = load_user_file(meta_path, "a run's final/meta.json")
    try:
        same_spec = spec_from_dict(meta["spec"]) == point.spec
        same_cfg = TrainConfig.from_dict(meta["config"]) == cfg
        summary = meta["summary"]
    except (MoelabError, KeyError, TypeError, AttributeError) as e:
        raise MoelabError(f"{meta_path}: not a run moelab wrote ({e}); remove {folder} to retrain it") from None
    if not (same_spec and same_cfg) or not isinstance(summary, dict):
        raise MoelabError(f"{folder} holds a finished run of another model or budget: sweep into another --out "
                          "(one sweep, one budget)")
    return summary


def _row(point: GridPoint, summary: dict, cfg: TrainConfig, status: str, seconds: float) -> dict:
    from moelab.cost.params import count_params

    n = non_embedding_active(point.spec)
    p = count_params(point.spec)
    tokens = cfg.steps * cfg.tokens_per_step
    val = summary.get("val") if isinstance(summary.get("val"), dict) else {}
    mean = val.get("mean")
    return {"name": point.name, "kind": point.kind, "axis": point.axis, "size": point.size, "params_active": n,
            "params_active_with_embeddings": p.active, "params_total": p.total, "experts": point.experts,
            "top_k": point.top_k, "layers": point.spec.n_layers, "d_model": point.spec.d_model,
            "ffn": point.spec.moe.expert_ffn if point.spec.is_moe else point.spec.ffn_dim,
            "lr": cfg.lr, "tokens": tokens, "compute": 6.0 * n * tokens, "flops": summary.get("flops"),
            "final_val": mean if isinstance(mean, int | float) else None,
            "val": {k: v for k, v in val.items() if k != "mean"}, "run": str(Path("runs") / point.name),
            "status": status, "wall_seconds": summary.get("wall_seconds"), "seconds_here": round(seconds, 2)}


def _check_dir(out: Path, cfg: TrainConfig, lr_rule: str | None) -> None:
    """An existing sweep.json must be of the same budget (the rows of two budgets cannot share one fit)."""
    path = out / SWEEP_FILE
    if not path.exists():
        return
    old = load_user_file(path, "sweep.json")
    if not isinstance(old, dict) or not isinstance(old.get("config"), dict):
        raise MoelabError(f"{path}: not a sweep moelab wrote; sweep into another --out")
    try:
        same = TrainConfig.from_dict(old["config"]) == cfg and old.get("lr_rule") == lr_rule
    except (MoelabError, TypeError):
        same = False
    if not same:
        raise MoelabError(f"{out} holds a sweep of another budget (its sweep.json config differs): sweep into another "
                          "--out, or rerun with the same options to resume it")


def run_sweep(points: list[GridPoint], cfg: TrainConfig, out: str | Path, progress: bool = True, log=print,
              grid: dict | None = None, lr_rule: str | None = LR_RULE) -> dict:
    """Train (or skip, or resume) every point into out/runs/<name>; returns the sweep (also out/sweep.json).
    `grid`: the options it was built from (sizes, kinds, experts, experts_at), recorded as they are; `lr_rule`
    LR_RULE (each run's lr by its size) or None (cfg.lr for every run)."""
    from moelab.train.faults import check_env
    from moelab.train.fits import check_trainable
    from moelab.train.loop import train

    began = time.perf_counter()
    check_env()
    for point in points:  # every model checked before the first trains
        check_trainable(point.spec, point_config(cfg, point, lr_rule))
    out = check_writable_dir(out, "--out")
    _check_dir(out, cfg, lr_rule)
    runs = out / "runs"
    rows: list[dict] = []

    def record(complete: bool) -> dict:
        sweep = {"version": VERSION, "config": cfg.to_dict(), "lr_rule": lr_rule,
                 "lr_rule_text": "Kaplan et al. 2020 eq. D.1: 0.003239 - 0.0001395 ln N" if lr_rule else
                 f"one lr for every run: {cfg.lr}", "grid": grid or {}, "active": ACTIVE,
                 "token_budget": cfg.steps * cfg.tokens_per_step, "rows": rows, "complete": complete,
                 "seconds": round(time.perf_counter() - began, 2),
                 "note": "one token budget and data order for every run: compute C = 6 N D varies through N only"}
        atomic_write_json(out / SWEEP_FILE, sweep)
        return sweep

    for i, point in enumerate(points, 1):
        folder = runs / point.name
        t0 = time.perf_counter()
        run_cfg = point_config(cfg, point, lr_rule)
        summary = _finished(folder, point, run_cfg)
        if summary is not None:
            status = "skipped (finished)"
        else:
            resume = folder.is_dir() and bool(checkpoints(folder))
            status = "resumed" if resume else "trained"
            log(f"sweep: {i}/{len(points)} {point.name} ({'resuming' if resume else 'training'})")
            summary = train(point.spec, run_cfg, folder, resume=resume, progress=progress, log=log)
        rows.append(_row(point, summary, run_cfg, status, time.perf_counter() - t0))
        log(f"sweep: {point.name}: {status}, final validation loss "
            f"{rows[-1]['final_val'] if rows[-1]['final_val'] is None else round(rows[-1]['final_val'], 4)}")
        record(False)
    return record(True)
