"""The training loop: seeded, resumable bit for bit, observable (metrics.jsonl, progress bar, runs store).

Data batches are a pure function of (seed, step) (see moelab.data.train_batch), the torch RNG is saved in
every checkpoint and the learning rate is a function of the step, so a run killed at any moment and
resumed from its last checkpoint ends with exactly the parameters of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from moelab.cost.flops import training_flops
from moelab.cost.params import count_params
from moelab.data import prepare, train_batch
from moelab.errors import MoelabError
from moelab.nn import MoEOptions, build_model
from moelab.nn.model import TransformerLM
from moelab.spec.model import ModelSpec, spec_to_dict
from moelab.train import store
from moelab.train.checkpoint import checkpoints, load_checkpoint, save_checkpoint, save_final
from moelab.train.config import TrainConfig
from moelab.train.evaluate import domain_losses
from moelab.train.metrics import CollapseDetector, router_stats


class TrainingDiverged(MoelabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.lr * cfg.min_lr_ratio at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def build(spec: ModelSpec, cfg: TrainConfig) -> tuple[TransformerLM, torch.optim.Optimizer]:
    """The model (seeded) and AdamW with weight decay on matrices only."""
    torch.manual_seed(cfg.seed)
    options = MoEOptions(capacity_factor=cfg.capacity_factor, jitter=cfg.jitter, dense_experts=cfg.ds_moe,
                         bias_update_rate=cfg.bias_rate if cfg.balancing == "aux-free" else 0.0)
    model = build_model(spec, options).train()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return model, torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def step_flops(spec: ModelSpec, cfg: TrainConfig) -> float:
    """Training FLOPs of one step from the engine (DS-MoE trains every expert, so count them all)."""
    if cfg.ds_moe and spec.is_moe:
        spec = replace(spec, moe=replace(spec.moe, top_k=spec.moe.n_experts, n_group=1, topk_group=1))
    return training_flops(spec, count_params(spec), cfg.tokens_per_step, cfg.seq_len)


def _loss(model: TransformerLM, inputs, targets, cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        logits = model(inputs)
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    total, parts = loss, {"loss": loss.item()}
    n_moe = len(model.moe_layers())
    if n_moe:
        aux, z = model.router_losses()
        parts.update(aux_loss=aux.item() / n_moe, z_loss=z.item() / n_moe)
        if cfg.balancing == "aux":
            total = total + cfg.aux_coef * aux / n_moe
        total = total + cfg.z_coef * z / n_moe
    return total, parts


def _evaluate(model: TransformerLM, corpus, cfg: TrainConfig) -> tuple[dict, dict]:
    """(validation losses per domain, expert load per domain); DS-MoE adds the dense-experts losses."""
    if cfg.ds_moe and model.moe_layers():
        model.set_dense_experts(False)
        sparse, loads = domain_losses(model, corpus.val, cfg.seq_len, cfg.eval_tokens)
        model.set_dense_experts(True)
        dense, _ = domain_losses(model, corpus.val, cfg.seq_len, cfg.eval_tokens)
        return {**sparse, "dense": dense}, loads
    return domain_losses(model, corpus.val, cfg.seq_len, cfg.eval_tokens)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only metric lines up to `last_step` (a resumed run rewrites what came after its checkpoint)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):  # a line torn by a kill
            continue
    path.write_text("".join(line + "\n" for line in kept))


def train(spec: ModelSpec, cfg: TrainConfig, out: Path, resume: bool = False, progress: bool = True,
          log=print) -> dict:
    """Train `spec` under `cfg` into `out`; returns the run summary (also in out/summary.json)."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".ckpt-*"):  # a checkpoint a kill interrupted before its rename
        shutil.rmtree(stale, ignore_errors=True)
    existing = checkpoints(out)
    if existing and not resume:
        raise MoelabError(f"{out} already holds checkpoints: pass --resume to continue, or choose another --out")
    corpus, _ = prepare(cfg.data, cfg.vocab_size, max_bytes_per_domain=cfg.max_bytes_per_domain)
    if corpus.vocab_size > spec.vocab_size:
        raise MoelabError(f"tokenizer vocabulary {corpus.vocab_size} exceeds the model's {spec.vocab_size}")
    model, optimizer = build(spec, cfg)
    metrics_path = out / "metrics.jsonl"
    state = {"tokens": 0, "flops": 0.0, "wall_seconds": 0.0, "collapses": [], "last_eval": None}
    start = 0
    if resume and existing:
        saved = load_checkpoint(existing[-1], model, optimizer)
        if saved.get("config") != cfg.to_dict() or saved.get("spec") != spec_to_dict(spec):
            raise MoelabError(f"{existing[-1]}: saved with another model or configuration; resume needs the same")
        start = saved["step"]
        state.update({k: saved[k] for k in state if k in saved})
        _truncate_metrics(metrics_path, start)
        log(f"resuming {out} at step {start}")
    elif metrics_path.exists():
        metrics_path.unlink()
    run_id = store.start_run(out, spec.name, spec_to_dict(spec), cfg.to_dict())
    flops_per_step = step_flops(spec, cfg)
    collapse = CollapseDetector(cfg.collapse_threshold, cfg.collapse_patience)
    status = "failed"
    try:
        with _progress(progress, cfg.steps, start, spec.name) as bar, metrics_path.open("a") as metrics:
            for step in range(start, cfg.steps):
                started = time.perf_counter()
                row = _train_step(model, optimizer, corpus, step, cfg)
                state["tokens"] += cfg.tokens_per_step
                state["flops"] += flops_per_step
                seconds = time.perf_counter() - started
                state["wall_seconds"] += seconds
                row.update(step=step + 1, tokens=state["tokens"], flops=state["flops"],
                           wall_seconds=round(state["wall_seconds"], 4),
                           tokens_per_second=round(cfg.tokens_per_step / seconds, 1), **router_stats(model))
                for warning in collapse.update(row.get("expert_load", [])):
                    state["collapses"].append(warning)
                    log(f"warning: {warning}")
                if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                    row["val"], loads = _evaluate(model, corpus, cfg)
                    state["last_eval"] = row["val"]
                    if loads:
                        row["val_expert_load"] = loads
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
                    save_checkpoint(out, step + 1, model, optimizer,
                                    {**state, "config": cfg.to_dict(), "spec": spec_to_dict(spec)}, cfg.keep_last)
                bar(row)
        summary = _summary(spec, cfg, state)
        save_final(out, model, {"spec": spec_to_dict(spec), "config": cfg.to_dict(), "summary": summary})
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        status = "finished"
        return summary
    except TrainingDiverged:
        status = "diverged"
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        store.finish_run(run_id, status, _summary(spec, cfg, state))


def _train_step(model, optimizer, corpus, step: int, cfg: TrainConfig) -> dict:
    lr = lr_at(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    inputs, targets = train_batch(corpus, step, cfg.batch_size * cfg.grad_accum, cfg.seq_len, cfg.seed)
    parts: dict[str, float] = {}
    for micro in range(cfg.grad_accum):
        rows = slice(micro * cfg.batch_size, (micro + 1) * cfg.batch_size)
        total, micro_parts = _loss(model, inputs[rows], targets[rows], cfg)
        if not torch.isfinite(total):
            raise TrainingDiverged(f"loss became {total.item()} at step {step + 1}; the last good checkpoint is kept")
        (total / cfg.grad_accum).backward()
        for key, value in micro_parts.items():
            parts[key] = parts.get(key, 0.0) + value / cfg.grad_accum
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for layer in model.moe_layers():
        layer.update_bias()
    return {**{k: round(v, 6) for k, v in parts.items()}, "lr": lr, "grad_norm": round(float(grad_norm), 5)}


def _summary(spec: ModelSpec, cfg: TrainConfig, state: dict) -> dict:
    p = count_params(spec)
    return {"model": spec.name, "params_total": p.total, "params_active": p.active, "tokens": state["tokens"],
            "flops": state["flops"], "wall_seconds": state["wall_seconds"],
            "tokens_per_second": state["tokens"] / state["wall_seconds"] if state["wall_seconds"] else 0.0,
            "val": state["last_eval"], "collapses": state["collapses"]}


class _progress:
    """A rich progress bar with loss, tokens/s and ETA (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int, name: str) -> None:
        self.enabled, self.total, self.start, self.name = enabled, total, start, name

    def __enter__(self):
        if not self.enabled:
            return lambda row: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        self.progress.__enter__()
        task = self.progress.add_task(self.name, total=self.total, completed=self.start, info="")

        def update(row: dict) -> None:
            info = f"loss {row['loss']:.3f}  {row['tokens_per_second']:.0f} tok/s"
            if "val" in row:
                info += f"  val {row['val']['mean']:.3f}"
            self.progress.update(task, completed=row["step"], info=info)

        return update

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)
