"""Does upcycling pay? Three ways to spend one budget after a dense pretraining, trained and measured alike.

From a dense run pretrained P steps, every arm ends after P + N steps of the same batch and sequence length:
- dense_continued: the dense run trained N more steps (train --init-from, data_offset P: the batches after the
  pretraining's);
- upcycled: the dense run upcycled (moelab.mitigate.upcycle) and trained N steps the same way;
- moe_scratch: the upcycled architecture trained from its seeded init for P + N steps (its first P batches are
  the dense pretraining's, its last N the continued arms').
Same seed and data order; the same schedule shape (cfg's peak lr, linear warmup over the same fraction of the
arm's steps as the pretraining's, cosine to lr * min_lr_ratio at the arm's last step; the continued arms start
a fresh optimizer and schedule, as `train --init-from` does).

The target loss is fixed before any run: the dense run's final mean validation loss minus `target_margin` nats
(read from its summary, measured on the same validation tokens every arm is scored on). Tokens, FLOPs (the
engine's training FLOPs, as train-compare counts them) and seconds to the target count the whole budget: the
continued arms add the pretraining's (and the upcycled arm the transform's seconds). The curves and the
to-target reading come from train.compare (reached, curve) at each arm's evaluations: a resolution, not
interpolation (the scratch arm evaluates at most SCRATCH_EVALS times unless eval_every is given, so its reading
is coarser: each row names its eval_every). The answer may well be that upcycling does not pay at this scale;
the result says what was measured.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

from moelab.errors import MoelabError
from moelab.mitigate.runs import check_apart, check_creatable, read_run, train_config
from moelab.mitigate.upcycle import upcycle
from moelab.spec.transform import upcycle_spec
from moelab.train.checkpoint import checkpoints
from moelab.train.compare import curve, reached
from moelab.train.config import TrainConfig

ARMS = ("dense_continued", "upcycled", "moe_scratch")
FOLDERS = {"dense_continued": "dense-continued", "upcycled": "upcycled-trained", "moe_scratch": "moe-scratch"}
UPCYCLED = "upcycled"  # the transform's own run folder (before training)
TARGET_MARGIN = 0.05  # nats below the dense run's final mean validation loss
EVALS = 6  # evaluations over the N continued steps
SCRATCH_EVALS = 12  # at most this many over the scratch arm's P + N steps (each costs a few training steps)


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _warmup(pre: TrainConfig, steps: int) -> int:
    """The pretraining's warmup fraction of `steps` (at least one step when the pretraining warmed up)."""
    return max(1 if pre.warmup else 0, round(pre.warmup * steps / pre.steps))


def _reusable_upcycle(folder: Path, dense: Path, params: dict) -> bool:
    """Whether `folder` already holds this upcycle of this dense run (a rerun of the comparison reuses it)."""
    try:
        source = read_run(folder)
    except MoelabError:
        return False
    entry = (source.lineage or [{}])[-1]
    return entry.get("from") == str(dense.resolve()) and all(entry.get(k) == v for k, v in params.items())


def upcycle_compare(dense_ref: str | Path, n_experts: int, top_k: int, steps: int, out: str | Path,
                    mode: str = "copy", granularity: int = 1, shared: int = 0,
                    target_margin: float = TARGET_MARGIN, eval_every: int | None = None, progress: bool = False,
                    log=print) -> dict:
    """Run the three arms into out/ (a rerun resumes each arm from its checkpoints) and write out/result.json."""
    from moelab.data.cache import atomic_write_json, check_writable_dir
    from moelab.train.faults import check_env
    from moelab.train.fits import check_trainable
    from moelab.train.loop import train

    began = time.perf_counter()
    check_env()
    source = read_run(dense_ref, "DENSE_RUN")
    if source.quantization:
        raise MoelabError(f"DENSE_RUN {dense_ref}: is quantized; compare from a float dense run")
    check_apart(out, source.run_folder, "--out", "the dense run")  # its arms would write into the run they read
    check_creatable(out)
    moe_spec = upcycle_spec(source.spec, n_experts, top_k, mode, granularity, shared)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MoelabError(f"--steps must be a positive integer, got {steps!r}")
    if isinstance(target_margin, bool) or not isinstance(target_margin, int | float) or \
            not math.isfinite(target_margin) or target_margin < 0:
        raise MoelabError(f"--target-margin must be a finite number >= 0, got {target_margin!r}")
    summary = source.meta.get("summary") if isinstance(source.meta.get("summary"), dict) else {}
    dense_val = (summary.get("val") or {}).get("mean")
    if not isinstance(dense_val, int | float) or not math.isfinite(dense_val):
        raise MoelabError(f"DENSE_RUN {dense_ref}: its summary has no final mean validation loss to set the target")
    pre = train_config(source, "DENSE_RUN")
    every = eval_every or max(1, steps // EVALS)
    dense_run = source.folder.parent
    after = replace(pre, steps=steps, warmup=_warmup(pre, steps), eval_every=min(every, steps), ckpt_every=steps,
                    data_offset=pre.data_offset + pre.steps)
    total = pre.steps + steps
    scratch_every = eval_every or max(every, math.ceil(total / SCRATCH_EVALS))
    scratch = replace(pre, steps=total, warmup=_warmup(pre, total), eval_every=min(scratch_every, total),
                      ckpt_every=total)
    for spec, cfg in ((source.spec, after), (moe_spec, after), (moe_spec, scratch)):
        check_trainable(spec, cfg)
    target = dense_val - target_margin  # fixed here, before any arm trains
    root = check_writable_dir(out, "--out")
    params = {"mode": mode, "experts": n_experts, "top_k": top_k, "granularity": granularity, "shared": shared}

    up_folder = root / UPCYCLED
    if _reusable_upcycle(up_folder, dense_run, params):
        up = {**read_run(up_folder).meta["summary"], "reused": True}
    else:
        log(f"upcycling {source.spec.name} into {moe_spec.name} ({mode}, {n_experts}x{top_k})")
        up = upcycle(dense_run, n_experts, top_k, up_folder, mode, granularity, shared)
    plans = {"dense_continued": (source.spec, after, dense_run),
             "upcycled": (moe_spec, after, up_folder),
             "moe_scratch": (moe_spec, scratch, None)}
    pre_cost = {k: float(summary.get(k) or 0.0) for k in ("tokens", "flops", "wall_seconds", "train_seconds")}
    rows, curves = {}, {}
    for arm in ARMS:
        spec, cfg, init = plans[arm]
        run = root / FOLDERS[arm]
        log(f"{arm}: {spec.name}, {cfg.steps} steps" + (f" from {init}" if init else " from scratch"))
        result = train(spec, cfg, run, resume=bool(run.exists() and checkpoints(run)), progress=progress, log=log,
                       init_from=init)
        lines = _lines(run)
        curves[arm] = curve(lines)
        # what the arm's start cost: the dense pretraining for the continued arms (and the transform's seconds)
        before = {k: 0.0 for k in pre_cost} if init is None else dict(pre_cost)
        if arm == "upcycled":
            before["wall_seconds"] += float(up.get("seconds") or 0.0)
        hit = reached(lines, target)
        if hit is not None:
            hit.update({f"{k}_total": hit[k] + before[k] for k in before})
        rows[arm] = {
            "model": spec.name, "run": str(run), "params_total": result["params_total"],
            "params_active": result["params_active"], "steps": cfg.steps, "eval_every": cfg.eval_every,
            "final_val": result["val"], "final_train_loss": lines[-1]["loss"] if lines else None,
            **{k: result[k] for k in ("tokens", "flops", "wall_seconds", "train_seconds")},
            **{f"{k}_total": result[k] + before[k] for k in before},
            "to_target": hit,
        }
    rows["upcycled"]["start_val"] = up.get("loss_after")
    rows["dense_continued"]["start_val"] = up.get("loss_before")
    result = {
        "dense_run": str(dense_run), "dense_model": source.spec.name, "moe_model": moe_spec.name,
        "upcycle": {**params, "router": moe_spec.moe.router, "routed_scaling_factor":
                    moe_spec.moe.routed_scaling_factor, "summary": up},
        "pretraining": {"steps": pre.steps, **pre_cost, "val": summary.get("val")},
        "budget": {"steps_after_pretraining": steps, "total_steps": total,
                   "tokens_per_step": pre.tokens_per_step, "total_tokens": total * pre.tokens_per_step},
        "target_loss": target,
        "target_rule": f"the dense run's final mean validation loss ({dense_val:.4f}) minus {target_margin:g} nats, "
                       "fixed before any arm trained",
        "arms": rows, "curves": curves,
        "config": {"continued": after.to_dict(), "scratch": scratch.to_dict()},
        "note": "tokens/flops/seconds *_total include the dense pretraining for the continued arms (and the "
                "upcycle transform's seconds for the upcycled arm); to_target is read at each arm's evaluations "
                "(every eval_every steps): a resolution, not interpolation",
        "wall_seconds": round(time.perf_counter() - began, 2),
    }
    atomic_write_json(root / "result.json", result)
    return result
