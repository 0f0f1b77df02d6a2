"""The training loop: seeded, resumable bit for bit, observable (metrics.jsonl, progress bar, runs store).

Data batches are a pure function of (seed, step) (see moelab.data.train_batch), the torch RNG is saved in
every checkpoint, the learning rate is a function of the step and evaluation leaves balancing state alone,
so a run killed at any moment and resumed from its last checkpoint ends with exactly the parameters (and
logs exactly the losses) of an uninterrupted run; tests/train/test_faults.py kills it at named points.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from moelab import jsonout
from moelab.cost.flops import training_flops
from moelab.cost.params import count_params
from moelab.data import prepare, train_batch
from moelab.data.cache import PROBE_PREFIX, atomic_write, atomic_write_json, check_writable_dir
from moelab.errors import MoelabError
from moelab.nn import MoEOptions, build_model
from moelab.nn.model import TransformerLM
from moelab.parallel.agree import agreed
from moelab.parallel.clock import take as take_collective_seconds
from moelab.parallel.gradients import clip_grad_norm, mean_values, reduce_gradients, total
from moelab.parallel.layout import Layout, Mesh
from moelab.parallel.shards import whole
from moelab.spec.model import ModelSpec, every_expert, spec_from_dict, spec_to_dict
from moelab.train import store
from moelab.train.checkpoint import NotIntact, checkpoints, load_checkpoint, read_state, save_checkpoint, save_final
from moelab.train.config import TrainConfig
from moelab.train.evaluate import domain_losses, scorable
from moelab.train.faults import check_env, fault_point
from moelab.train.fits import check_trainable
from moelab.train.lock import run_lock
from moelab.train.metrics import CollapseDetector, router_stats
from moelab.train.steps import measured_split, predicted_split


class TrainingDiverged(MoelabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _same_spec(stored, spec: ModelSpec) -> bool:
    """Whether a checkpoint's stored spec (of this format or the one before it) is `spec`."""
    try:
        return isinstance(stored, dict) and spec_from_dict(stored) == spec
    except MoelabError:
        return False


def _same_config(stored, cfg: TrainConfig) -> bool:
    """Whether a checkpoint's stored config is `cfg` (fields added since it was written take their defaults)."""
    try:
        return isinstance(stored, dict) and TrainConfig.from_dict(stored) == cfg
    except (MoelabError, TypeError):
        return False


def init_source(init_from: str | Path, spec: ModelSpec | None, out: str | Path | None = None):
    """The run `train --init-from` starts from (moelab.mitigate.runs.SourceRun), checked before any work: a run
    folder (or its final/), not quantized (its experts are not float weights a training step can update), of
    exactly the spec being trained (None: the run's own, returned as the source's spec), and apart from `out`
    (--out neither the run folder, nor inside it, nor holding it: its final/ would be overwritten)."""
    from moelab.mitigate.runs import check_apart, read_run

    source = read_run(init_from, "--init-from")
    if out is not None:
        check_apart(out, source.run_folder, "--out", "the --init-from run")
    if source.quantization:
        raise MoelabError(f"--init-from {init_from}: is quantized (its experts are int weights with scales); "
                          "train from a float run (the one it was quantized from)")
    if spec is not None and spec != source.spec:
        raise MoelabError(f"--init-from {init_from}: holds {source.spec.name}, another model than --model "
                          f"{spec.name}; omit --model to train the run's own")
    return source


def init_data_offset(source) -> int:
    """train --init-from's default --data-offset: the source run's steps plus its own offset, so that the
    continued run trains on the batches after the ones the source saw (as upcycle-compare's arms do)."""
    from moelab.mitigate.runs import train_config

    pre = train_config(source, "--init-from")
    return pre.steps + pre.data_offset


def _check_init_corpus(source, cfg: TrainConfig, tokenizer_json: str) -> None:
    """The run's tokens mean what this config's tokens mean: the same vocabulary and the same tokenizer."""
    from moelab.mitigate.runs import check_tokenizer

    vocab = source.config.get("vocab_size")
    if vocab is not None and vocab != cfg.vocab_size:
        raise MoelabError(f"--init-from {source.folder.parent}: was trained with a {vocab}-token vocabulary, this run "
                          f"builds {cfg.vocab_size}; use the run's corpus and vocabulary")
    check_tokenizer(source, tokenizer_json, f"--init-from {source.run_folder}: its tokenizer differs from the one "
                    f"this run's corpus builds (data {cfg.data or 'default'}, max bytes per domain "
                    f"{cfg.max_bytes_per_domain}); train on the run's corpus")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.lr * cfg.min_lr_ratio at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def build(spec: ModelSpec, cfg: TrainConfig, mesh: Mesh | None = None, device: str = "cpu",
          init: Path | None = None) -> tuple[TransformerLM, torch.optim.Optimizer]:
    """The model (seeded, whole, then sharded over the mesh's ep group) and AdamW with weight decay on matrices
    only. Every rank builds the same whole model first, so a sharded run starts from a one-process run's
    weights. `init`: a run's final/ folder whose model.safetensors replaces the seeded weights (strictly: every
    tensor, no other), loaded into the whole model before it is sharded; the torch RNG is left where a seeded
    build leaves it."""
    torch.manual_seed(cfg.seed)
    options = MoEOptions(capacity_factor=cfg.capacity_factor, jitter=cfg.jitter, dense_experts=cfg.ds_moe,
                         bias_update_rate=cfg.bias_rate if cfg.balancing == "aux-free" else 0.0)
    model = build_model(spec, options).train()
    if init is not None:
        from moelab.bench.models import load_run_weights

        load_run_weights(model, init)
    if mesh is not None and mesh.layout.ep > 1:
        model.apply_ep(mesh.ep_group)
    elif mesh is not None:
        model.share_statistics(torch.distributed.group.WORLD)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return model, torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def step_flops(spec: ModelSpec, cfg: TrainConfig) -> float:
    """Training FLOPs of one step from the engine (DS-MoE trains every expert, so count them all)."""
    if cfg.ds_moe and spec.is_moe:
        spec = every_expert(spec)
    return training_flops(spec, count_params(spec), cfg.tokens_per_step, cfg.seq_len)


def _loss(model: TransformerLM, inputs, targets, cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        logits = model(inputs)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 at least (float64 stays)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
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
    fault_point("evaluate")
    if cfg.ds_moe and model.moe_layers():
        model.set_dense_experts(False)
        sparse, loads = domain_losses(model, corpus.val, cfg.seq_len, cfg.eval_tokens)
        model.set_dense_experts(True)
        dense, _ = domain_losses(model, corpus.val, cfg.seq_len, cfg.eval_tokens)
        return {**sparse, "dense": dense}, loads
    return domain_losses(model, corpus.val, cfg.seq_len, cfg.eval_tokens)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only metric lines up to `last_step` (a resumed run rewrites what came after its checkpoint). The
    rewrite is atomic (temporary file, fsync, rename), so a kill during it leaves the old file whole."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError, IndexError):  # a line torn by a kill
            continue

    def write(tmp: Path) -> None:
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        fault_point("metrics-rewrite")

    atomic_write(path, write)


def _remove_leftovers(out: Path) -> None:
    """Temporary files and folders of an earlier process that was killed before renaming them into place."""
    for path in out.iterdir():
        name = path.name
        temporary = name.startswith(".") and name.endswith(".tmp")
        if name.startswith((".ckpt-", ".final.", ".write-test.", PROBE_PREFIX)) or temporary:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _resume(out: Path, existing: list[Path], model, optimizer, spec: ModelSpec, cfg: TrainConfig, log,
            mesh: Mesh | None = None) -> dict:
    """Load the newest intact checkpoint, warning about each newer one that is not; MoelabError if none is.
    Sharded models read the whole tensors and keep their rows (parallel.shards.whole)."""
    problems = []
    for path in reversed(existing):
        try:
            state = read_state(path)
            if not _same_config(state.get("config"), cfg) or not _same_spec(state.get("spec"), spec):
                raise MoelabError(f"{path}: saved with another model or configuration; resume needs the same")
            with whole(model, optimizer, mesh, gather=False):
                return load_checkpoint(path, model, optimizer)
        except NotIntact as e:
            problems.append(str(e))
            log(f"warning: {e}; trying the checkpoint before it")
    raise MoelabError(f"no intact checkpoint in {out}: {'; '.join(problems)}")


def check_parallel(cfg: TrainConfig, layout: Layout) -> None:
    """What a run across `layout.world` processes needs of its configuration (checked before the group starts)."""
    if layout.distributed and cfg.batch_size % layout.world:
        raise MoelabError(f"--batch-size {cfg.batch_size} must be a multiple of the {layout.world} processes "
                          "(it is the global batch: each process takes an equal slice)")
    if layout.distributed and cfg.jitter:
        raise MoelabError("router jitter draws its noise per process: a run across processes would not match one "
                          "process; train with jitter 0")


def train(spec: ModelSpec, cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
          log=print, mesh: Mesh | None = None, device: str = "cpu", hardware=None,
          init_from: str | Path | None = None) -> dict:
    """Train `spec` under `cfg` into `out`; returns the run summary (also in out/summary.json).

    Refused before any work (MoelabError): a malformed MOELAB_FAULT, a run that does not fit this machine or
    the model's positions (moelab.train.fits), an `out` that is empty or cannot be written, an `out` that holds
    a finished run (final/) without `resume`. One writer per
    folder: `out/.lock` is held for the whole run (a second one gets a MoelabError naming the
    holder). `resume` continues from the newest intact checkpoint. Disk errors while training are a
    MoelabError (the last checkpoint is kept; resume once fixed); Ctrl-C records the run as interrupted and
    re-raises KeyboardInterrupt.

    Across processes (`mesh`, parallel.layout.start under torchrun): every rank trains its slice of each
    global batch; rank 0 alone holds the lock, logs and writes, and its folder checks are every rank's
    (parallel.agree). The returned summary is rank 0's (the others return it too, unwritten).

    The summary's "steps" holds the median step split into all-to-all, all-reduce and compute (train.steps),
    beside the engine's prediction on `hardware` (a HardwareSpec; None: no prediction).

    `init_from` (train --init-from RUN): the weights only, from RUN's final/model.safetensors, loaded at step 0
    in place of the seeded ones; the optimizer and the learning-rate schedule start fresh (cfg's). Refused before
    any work: a missing or quantized run, a run of another spec than `spec`, an `out` that is the run, lies
    inside it or holds it, another vocabulary or tokenizer (init_source, _check_init_corpus). The summary and
    final/meta.json gain "init_from" (the run folder) and "lineage" (the run's lineage plus {"transform":
    "train", ...}). Checkpoints carry both, so a resumed run
    continues bit for bit without loading RUN again (given again, it must be the same run).
    """
    began = time.perf_counter()
    check_env()  # a malformed MOELAB_FAULT is one line before any work, never a fault that silently does nothing
    check_trainable(spec, cfg)
    check_parallel(cfg, mesh.layout if mesh else Layout())
    source = init_source(init_from, spec, out) if init_from is not None else None
    writer = mesh is None or mesh.layout.writer
    with ExitStack() as held:
        def open_folder() -> Path:
            folder = check_writable_dir(out, "--out")
            held.enter_context(run_lock(folder))
            return folder

        folder = agreed(mesh, open_folder) or Path(out)  # the writer's checked folder; the same path elsewhere
        try:
            return _train_locked(spec, cfg, folder, resume, progress and writer, log if writer else _quiet, began,
                                 mesh, device, hardware, source)
        except OSError as e:  # before the first step (resume's metrics rewrite, caches): no training lost
            raise MoelabError(f"{e.filename or folder}: {e.strerror or e}") from None


def _quiet(message: str) -> None:
    """The log of a rank that is not the writer: rank 0 says it all."""


def _check_folder(out: Path, resume: bool) -> None:
    """The writer's checks of the folder (leftovers of a killed run removed first)."""
    _remove_leftovers(out)
    existing = checkpoints(out)
    if existing and not resume:
        raise MoelabError(f"{out} already holds checkpoints: pass --resume to continue, or choose another --out")
    if (out / "final").exists() and not resume:  # a finished run without checkpoints (a transform's, say)
        raise MoelabError(f"{out} already holds a finished run (final/): choose another --out (or --resume one "
                          "that has checkpoints)")
    if resume and not existing:
        raise MoelabError(f"no checkpoint in {out}: nothing to resume (run without --resume to start a new run)")


def _train_locked(spec: ModelSpec, cfg: TrainConfig, out: Path, resume: bool, progress: bool, log,
                  began: float, mesh: Mesh | None = None, device: str = "cpu", hardware=None, source=None) -> dict:
    writer = mesh is None or mesh.layout.writer
    agreed(mesh, lambda: _check_folder(out, resume))
    existing = checkpoints(out)
    # across processes the command built the corpus before the group started: here every rank reads its cache
    corpus, tokenizer = prepare(cfg.data, cfg.vocab_size, max_bytes_per_domain=cfg.max_bytes_per_domain,
                                corpus=cfg.corpus)
    if corpus.vocab_size > spec.vocab_size:
        raise MoelabError(f"tokenizer vocabulary {corpus.vocab_size} exceeds the model's {spec.vocab_size}")
    if not scorable(corpus.val):
        raise MoelabError("the validation split is empty: no domain of the corpus has a held-out document (a domain "
                          "needs at least 3 documents to give one to validation); add documents")
    if source is not None:
        _check_init_corpus(source, cfg, tokenizer.to_str())
    model, optimizer = build(spec, cfg, mesh, device, source.folder if source is not None and not resume else None)
    metrics_path = out / "metrics.jsonl"
    # wall_seconds: real seconds of the run (startup, evaluations, checkpoints included), summed over its launches
    # up to the checkpoint it resumed from; train_seconds: the training steps only (what tokens_per_second uses).
    state = {"tokens": 0, "flops": 0.0, "wall_seconds": 0.0, "train_seconds": 0.0, "collapses": [],
             "last_eval": None, "init_from": None, "lineage": None}
    if source is not None:
        from moelab.mitigate.runs import lineage_entry

        entry = lineage_entry("train", source, steps=cfg.steps, data_offset=cfg.data_offset)
        state.update(init_from=entry["from"], lineage=[*source.lineage, entry])
    collapse = CollapseDetector(cfg.collapse_threshold, cfg.collapse_patience)
    start = 0
    if resume:
        saved = _resume(out, existing, model, optimizer, spec, cfg, log, mesh)
        start = saved["step"]
        given, started_from = state["init_from"], saved.get("init_from")
        if given is not None and given != started_from:
            began_as = f"from {started_from}" if started_from else "without --init-from"
            raise MoelabError(f"{out}: was started {began_as}; resume it with the same --init-from (or none)")
        state.update({k: saved[k] for k in state if k in saved})
        if "train_seconds" not in saved:  # written before the two clocks: its wall_seconds counted steps only
            state["train_seconds"] = state["wall_seconds"]
        collapse.restore(saved.get("collapse"))
        if writer:
            _truncate_metrics(metrics_path, start)
        log(f"resuming {out} at step {start}")
    elif writer:
        metrics_path.unlink(missing_ok=True)
    resumed_wall = state["wall_seconds"]
    layout = mesh.layout if mesh else Layout()

    def wall() -> float:
        return resumed_wall + time.perf_counter() - began

    run_id = store.start_run(out, spec.name, spec_to_dict(spec), cfg.to_dict(), warn=log) if writer else None
    flops_per_step = step_flops(spec, cfg)
    status, done = "failed", start
    try:
        with _Progress(progress, cfg.steps, start, spec.name) as bar, _metrics_file(metrics_path, writer) as metrics:
            for step in range(start, cfg.steps):
                started = time.perf_counter()
                take_collective_seconds()
                row = _train_step(model, optimizer, corpus, step, cfg, mesh, device)
                seconds = time.perf_counter() - started
                row.update(_split_seconds(seconds, take_collective_seconds()))
                state["tokens"] += cfg.tokens_per_step
                state["flops"] += flops_per_step
                state["train_seconds"] += seconds
                row.update(step=step + 1, tokens=state["tokens"], flops=state["flops"],
                           tokens_per_second=round(cfg.tokens_per_step / seconds, 1), **router_stats(model))
                if mesh is not None and "dropped_tokens" in row:  # the global batch's, as expert_load is
                    row["dropped_tokens"] = total(row["dropped_tokens"], mesh)
                    row["router_entropy"] = _global_entropy(model, mesh)
                for warning in collapse.update(row.get("expert_load", [])):
                    state["collapses"].append(warning)
                    log(f"warning: {warning}")
                if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                    bar.evaluating(row)
                    eval_started = time.perf_counter()
                    row["val"], loads = _evaluate(model, corpus, cfg)
                    row["eval_seconds"] = round(time.perf_counter() - eval_started, 4)
                    state["last_eval"] = row["val"]
                    if loads:
                        row["val_expert_load"] = loads
                state["wall_seconds"] = wall()
                row.update(train_seconds=round(state["train_seconds"], 4), wall_seconds=round(state["wall_seconds"], 4))
                if writer:
                    metrics.write(jsonout.dumps(row, indent=None) + "\n")
                    metrics.flush()
                    fault_point("metrics-append")
                done = step + 1
                if done % cfg.ckpt_every == 0 or done == cfg.steps:
                    state["collapse"] = collapse.to_dict()
                    state["wall_seconds"] = wall()
                    with whole(model, optimizer, mesh):
                        if writer:
                            save_checkpoint(out, done, model, optimizer, {**state, "config": cfg.to_dict(),
                                            "spec": spec_to_dict(spec), "parallel": layout.to_dict()}, cfg.keep_last)
                bar.update(row)
        state["wall_seconds"] = wall()
        summary = _summary(spec, cfg, state, layout)
        if writer:
            summary["steps"] = {"measured": measured_split(metrics_path, after_step=start),
                                "predicted": predicted_split(spec, cfg, layout.ep, layout.dp, hardware)
                                if hardware is not None else None}
        with whole(model, None, mesh):
            if writer:
                save_final(out, model, {"spec": spec_to_dict(spec), "config": cfg.to_dict(), "summary": summary,
                                        **_lineage(state)}, tokenizer.to_str())
        if writer:
            atomic_write_json(out / "summary.json", summary)
        status = "finished"
        return summary
    except TrainingDiverged:
        status = "diverged"
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        log(f"interrupted at step {done}: {out} resumes from its last checkpoint with --resume")
        raise
    except OSError as e:
        raise MoelabError(f"writing {out} failed at step {done}: {e.strerror or e}; its last checkpoint is kept: "
                          "free space (or fix the folder) and rerun with --resume") from None
    finally:
        state["wall_seconds"] = wall()
        if run_id is not None:
            store.finish_run(run_id, status, _summary(spec, cfg, state, layout), warn=log)


def _global_entropy(model: TransformerLM, mesh: Mesh) -> list[float]:
    """Each MoE layer's mean router entropy over the global batch (equal slices: the mean of the ranks' means)."""
    means = mean_values({i: layer.last_entropy for i, layer in enumerate(model.moe_layers())}, mesh)
    return [round(means[i], 5) for i in range(len(means))]


def _finite_everywhere(loss: torch.Tensor, mesh: Mesh | None) -> bool:
    """Whether the loss is finite on every rank: all stop together on a divergence, none waits on the others."""
    finite = bool(torch.isfinite(loss))
    if mesh is None:
        return finite
    return mean_values({"finite": float(finite)}, mesh)["finite"] == 1.0


@contextmanager
def _metrics_file(path: Path, writer: bool):
    """metrics.jsonl opened for appending on the writer; nothing on the other ranks."""
    if not writer:
        yield None
        return
    with path.open("a", encoding="utf-8") as f:
        yield f


def _split_seconds(seconds: float, collective: dict[str, float]) -> dict[str, float]:
    """A step's seconds by where they went (parallel.clock): all-to-all, all-reduce, and the rest (compute)."""
    alltoall, allreduce = collective["alltoall"], collective["allreduce"]
    return {"alltoall_seconds": round(alltoall, 6), "allreduce_seconds": round(allreduce, 6),
            "compute_seconds": round(max(0.0, seconds - alltoall - allreduce), 6)}


def _train_step(model, optimizer, corpus, step: int, cfg: TrainConfig, mesh: Mesh | None = None,
                device: str = "cpu") -> dict:
    lr = lr_at(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    inputs, targets = train_batch(corpus, step + cfg.data_offset, cfg.batch_size * cfg.grad_accum, cfg.seq_len,
                                  cfg.seed)
    world, rank = (mesh.layout.world, mesh.layout.rank) if mesh else (1, 0)
    rows_each = cfg.batch_size // world  # this process's slice of every micro-batch (the same data order)
    parts: dict[str, float] = {}
    for micro in range(cfg.grad_accum):
        first = micro * cfg.batch_size + rank * rows_each
        rows = slice(first, first + rows_each)
        total_loss, micro_parts = _loss(model, inputs[rows].to(device), targets[rows].to(device), cfg)
        if not _finite_everywhere(total_loss, mesh):
            raise TrainingDiverged(f"loss became {total_loss.item()} at step {step + 1}; the last good checkpoint "
                                   "is kept")
        (total_loss / cfg.grad_accum).backward()
        for key, value in micro_parts.items():
            parts[key] = parts.get(key, 0.0) + value / cfg.grad_accum
    reduce_gradients(model, mesh)
    grad_norm = clip_grad_norm(model, cfg.grad_clip, mesh)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for layer in model.moe_layers():
        layer.update_bias()
    parts = mean_values(parts, mesh)
    return {**{k: round(v, 6) for k, v in parts.items()}, "lr": lr, "grad_norm": round(float(grad_norm), 5)}


def _summary(spec: ModelSpec, cfg: TrainConfig, state: dict, layout: Layout | None = None) -> dict:
    p = count_params(spec)
    train_seconds = state.get("train_seconds", 0.0)
    return {"model": spec.name, "params_total": p.total, "params_active": p.active, "tokens": state["tokens"],
            "flops": state["flops"], "wall_seconds": state["wall_seconds"], "train_seconds": train_seconds,
            "tokens_per_second": state["tokens"] / train_seconds if train_seconds else 0.0,
            "clocks": "wall_seconds: real time of the run, evaluations and checkpoints included; "
                      "tokens_per_second: tokens over train_seconds, the training steps alone",
            "val": state["last_eval"], "collapses": state["collapses"],
            "parallel": (layout or Layout()).to_dict(), **_lineage(state)}


def _lineage(state: dict) -> dict:
    """{"init_from", "lineage"} of a run started from another (train --init-from); {} otherwise."""
    if not state.get("init_from"):
        return {}
    return {"init_from": state["init_from"], "lineage": state["lineage"]}


class _Progress:
    """Training progress on stderr: a rich bar (loss, tokens/s, elapsed, ETA; "evaluating..." while it
    evaluates) on a terminal, else one line per evaluation; nothing when disabled."""

    def __init__(self, enabled: bool, total: int, start: int, name: str) -> None:
        self.enabled, self.total, self.start, self.name = enabled, total, start, name
        self.bar = None

    def __enter__(self) -> _Progress:
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.markup import escape
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            from rich.progress import TimeRemainingColumn as Remaining

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), Remaining(), TextColumn("{task.fields[info]}"),
                                console=Console(stderr=True))
            self.bar.__enter__()
            self.task = self.bar.add_task(escape(self.name), total=self.total, completed=self.start, info="")
        return self

    def evaluating(self, row: dict) -> None:
        """An evaluation begins after step row["step"]."""
        if self.bar is not None:
            self.bar.update(self.task, completed=row["step"], info=f"loss {row['loss']:.3f}  evaluating…")
        elif self.enabled:
            sys.stderr.write(f"{self.name}: step {row['step']}/{self.total}, loss {row['loss']:.3f}, evaluating…\n")
            sys.stderr.flush()

    def update(self, row: dict) -> None:
        """Step row["step"] is done (and logged)."""
        if self.bar is not None:
            info = f"loss {row['loss']:.3f}  {row['tokens_per_second']:.0f} tok/s"
            if "mean" in row.get("val", {}):
                info += f"  val {row['val']['mean']:.3f}"
            self.bar.update(self.task, completed=row["step"], info=info)
        elif self.enabled and "val" in row:
            mean = row["val"].get("mean")
            score = f"{mean:.3f}" if isinstance(mean, float) else "none"
            sys.stderr.write(f"{self.name}: step {row['step']}/{self.total}, validation loss {score} "
                             f"({row['eval_seconds']:.1f} s), {row['wall_seconds']:.1f} s so far\n")
            sys.stderr.flush()

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
