"""Seed 001's training claims: the training speed, cost and memory tables and the multi-GPU scaling table, against
the engine on the seed's own setup (64 x A100, its token counts) and the study's tiny training runs."""

from __future__ import annotations

from moelab.claims import engine as E
from moelab.claims.evidence import TIME_NOISE, Evidence, NoEvidence, number
from moelab.claims.registry import BASIS_ARITH, BASIS_EXACT, BASIS_MODELLED, BASIS_TINY, claim, out_of_scope
from moelab.claims.rules import (
    APPROX,
    APPROX_CHANGE,
    ARITH,
    MODELLED,
    NOT_REPRO,
    ROUNDED,
    SIGN,
    Check,
    Sign,
    Within,
    quoted,
    table_cells,
)
from moelab.cost.economics import training_cost
from moelab.cost.memory import ADAM_32, training_memory
from moelab.cost.params import count_params
from moelab.cost.training_step import DEFAULT_MFU, training_step

S = "001"
TRAIN_SEQ = 4096  # assumed: the seed gives no sequence length
PER_GPU_SEQS = 16  # assumed: 16 x 4096 tokens per GPU per step (a 4M-token step on the seed's 64 GPUs)
TOKENS_ROW = "| Tokens Seen | 100B | 75B | -25% |"
TIME_ROW = "| Training Time | 18 days | 24 days | +33% |"
FLOPS_ROW = "| FLOPs to Target | 2.4e24 | 1.8e24 | -25% |"
HOURS_ROW = "| GPU Hours | 27,648 | 36,864 | +33% |"
COST_ROW = "| GPU Cost (64x A100) | $110,592 | $147,456 |"
TRAINING = (f"seed 001's 64 x A100-80GB, each model on its own tokens seen (dense 100B, MoE 75B), bf16 at MFU "
            f"{DEFAULT_MFU} (cost.training_step.DEFAULT_MFU, assumed), sequences of {TRAIN_SEQ}: 6 N_active D + "
            "attention (cost.economics.training_cost)")


def _run(kind: str) -> dict:
    spec = E.seeds_dense() if kind == "dense" else E.seeds_moe()
    tokens = quoted("100B" if kind == "dense" else "75B", TOKENS_ROW) * 1e9
    return training_cost(spec, E.hardware(E.A100), tokens, int(E.TRAIN_GPUS), DEFAULT_MFU, TRAIN_SEQ, "bf16")


def _name(kind: str) -> str:
    return "mistral-7b" if kind == "dense" else "the seeds' MoE (Mistral-7B as 8 experts top-2)"


def _days(kind: str, seed_days: float) -> Check:
    run = _run(kind)
    days = run["seconds"] / 86400
    return Check(days, f"{_name(kind)}: {run['flops']:.3g} FLOPs; the seed's {seed_days:g} days would mean MFU "
                       f"{DEFAULT_MFU * days / seed_days:.0%}")


@claim("training-time-dense", S, TIME_ROW, "18 days", "days", MODELLED, TRAINING, BASIS_MODELLED, sources=(TOKENS_ROW,))
def _time_dense(ev: Evidence) -> Check:
    return _days("dense", quoted("18 days", TIME_ROW))


@claim("training-time-moe", S, TIME_ROW, "24 days", "days", MODELLED, TRAINING, BASIS_MODELLED, sources=(TOKENS_ROW,))
def _time_moe(ev: Evidence) -> Check:
    return _days("moe", quoted("24 days", TIME_ROW))


def _measured_change(ev: Evidence, key: str, noise_from_steps: bool) -> Check:
    dense, moe = ev.training_pair()
    d, m = ev.to_target(dense, key), ev.to_target(moe, key)
    if noise_from_steps:  # the target is read at evaluation steps: one interval of the dense run's is the noise
        every = number((ev.stage("training").get("config") or {}).get("eval_every"), "training eval_every")
        steps = ev.to_target(dense, "step")
        noise = 100 * every / steps
        about = f"read every {every:g} steps (±{noise:.0f}%)"
    else:
        noise, about = 100 * TIME_NOISE, f"timing noise ±{100 * TIME_NOISE:.0f}%"
    return Check(100 * (m / d - 1), f"{key} to the target loss: {moe.get('model')} {m:.4g}, {dense.get('model')} "
                                    f"{d:.4g}; {about}", noise=noise)


TINY_TRAINING = ("the study's tiny dense and MoE (same active parameters, data and schedule), trained on this "
                 "machine to the dense model's final loss (training.to_target)")


@claim("training-time-measured", S, TIME_ROW, "+33%", "% (MoE over dense)", SIGN,
       TINY_TRAINING + ": training seconds, evaluation excluded", BASIS_TINY)
def _time_measured(ev: Evidence) -> Check:
    return _measured_change(ev, "train_seconds", noise_from_steps=False)


def _flops(kind: str, seed: float) -> Check:
    run = _run(kind)
    peak = E.hardware(E.A100).peak("bf16")[1] * int(E.TRAIN_GPUS)
    return Check(run["flops"], f"{_name(kind)}: {run['flops_per_token']:.3g} FLOPs per token x {run['tokens']:.3g} "
                               f"tokens; the seed's {seed:.2g} would take {seed / peak / 86400:,.0f} days on 64 A100s "
                               "at their full bf16 peak")


FLOPS_SETTING = ("6 N_active D + attention on the seed's own tokens seen (dense 100B, MoE 75B), sequences of "
                 f"{TRAIN_SEQ}")


@claim("training-flops-dense", S, FLOPS_ROW, "2.4e24", "FLOPs", APPROX, "mistral-7b, " + FLOPS_SETTING,
       BASIS_MODELLED, sources=(TOKENS_ROW,))
def _flops_dense(ev: Evidence) -> Check:
    return _flops("dense", quoted("2.4e24", FLOPS_ROW))


@claim("training-flops-moe", S, FLOPS_ROW, "1.8e24", "FLOPs", APPROX, "the seeds' MoE, " + FLOPS_SETTING,
       BASIS_MODELLED, sources=(TOKENS_ROW,))
def _flops_moe(ev: Evidence) -> Check:
    return _flops("moe", quoted("1.8e24", FLOPS_ROW))


@claim("training-flops-delta", S, FLOPS_ROW, "-25%", "% (MoE over dense)", APPROX_CHANGE, FLOPS_SETTING,
       BASIS_MODELLED, sources=(TOKENS_ROW,))
def _flops_delta(ev: Evidence) -> Check:
    moe, dense = _run("moe"), _run("dense")
    active = [count_params(s).active / 1e9 for s in (E.seeds_moe(), E.seeds_dense())]
    return Check(100 * (moe["flops"] / dense["flops"] - 1),
                 f"{1 - moe['tokens'] / dense['tokens']:.0%} fewer tokens but "
                 f"{moe['flops_per_token'] / dense['flops_per_token']:.2f}x the FLOPs per token (top-"
                 f"{E.seeds_moe().moe.top_k} experts: {active[0]:.1f}B active against {active[1]:.1f}B)")


@claim("training-flops-measured", S, FLOPS_ROW, "-25%", "% (MoE over dense)", SIGN,
       TINY_TRAINING + ": training FLOPs", BASIS_TINY)
def _flops_measured(ev: Evidence) -> Check:
    return _measured_change(ev, "flops", noise_from_steps=True)


@claim("tokens-seen-measured", S, TOKENS_ROW, "-25%", "% (MoE over dense)", SIGN, TINY_TRAINING + ": tokens",
       BASIS_TINY)
def _tokens_measured(ev: Evidence) -> Check:
    return _measured_change(ev, "tokens", noise_from_steps=True)


def _hours(kind: str, column: int) -> Check:
    run = _run(kind)
    days = quoted(TIME_ROW.split("|")[column + 1].strip(), TIME_ROW)
    seed_hours = E.TRAIN_GPUS * days * 24
    return Check(run["gpu_hours"], f"{_name(kind)}; the seed's figure is its own 64 GPUs x {days:g} days x 24 h "
                                   f"= {seed_hours:,.0f}")


@claim("gpu-hours-dense", S, HOURS_ROW, "27,648", "GPU-hours", MODELLED, TRAINING, BASIS_MODELLED,
       sources=(TIME_ROW, TOKENS_ROW))
def _hours_dense(ev: Evidence) -> Check:
    return _hours("dense", 1)


@claim("gpu-hours-moe", S, HOURS_ROW, "36,864", "GPU-hours", MODELLED, TRAINING, BASIS_MODELLED,
       sources=(TIME_ROW, TOKENS_ROW))
def _hours_moe(ev: Evidence) -> Check:
    return _hours("moe", 2)


def _cost(kind: str, seed_usd: float, seed_hours: float) -> Check:
    run = _run(kind)
    hw = E.hardware(E.A100)
    rate = seed_usd / seed_hours  # the seed's own $/GPU-hour, derived from its cost and hours rows
    return Check(run["gpu_hours"] * rate, f"the engine's {run['gpu_hours']:,.0f} GPU-hours at the seed's own "
                                          f"${rate:.2f}/h (its cost over its hours), so only the hours are judged; "
                                          f"at the preset's ${hw.usd_per_hour:g}/h (an assumed market rate) they "
                                          f"cost ${run['usd']:,.0f}")


@claim("gpu-cost-dense", S, COST_ROW, "$110,592", "$", MODELLED, TRAINING, BASIS_MODELLED,
       sources=(HOURS_ROW, TOKENS_ROW))
def _cost_dense(ev: Evidence) -> Check:
    return _cost("dense", quoted("$110,592", COST_ROW), quoted("27,648", HOURS_ROW))


@claim("gpu-cost-moe", S, COST_ROW, "$147,456", "$", MODELLED, TRAINING, BASIS_MODELLED,
       sources=(HOURS_ROW, TOKENS_ROW))
def _cost_moe(ev: Evidence) -> Check:
    return _cost("moe", quoted("$147,456", COST_ROW), quoted("36,864", HOURS_ROW))


NETWORK_ROW, STORAGE_ROW = "| Network Cost | $2,000 | $8,000 |", "| Storage Cost | $500 | $2,000 |"
out_of_scope("network-cost", S, NETWORK_ROW, "moelab prices GPU time only, not the network", "$2,000", "$")
out_of_scope("storage-cost", S, STORAGE_ROW, "moelab prices GPU time only, not storage", "$500", "$")
COST_TOTAL = "| Total | $113,092 | $157,456 |"


@claim("training-cost-total-dense", S, COST_TOTAL, "$113,092", "$", ARITH, "the seed's own cost lines",
       BASIS_ARITH, sources=(COST_ROW, NETWORK_ROW, STORAGE_ROW))
def _cost_total_dense(ev: Evidence) -> Check:
    parts = [quoted(t, r) for t, r in (("$110,592", COST_ROW), ("$2,000", NETWORK_ROW), ("$500", STORAGE_ROW))]
    return Check(sum(parts), " + ".join(f"{p:,.0f}" for p in parts))


@claim("training-cost-total-moe", S, COST_TOTAL, "$157,456", "$", ARITH, "the seed's own cost lines", BASIS_ARITH,
       sources=(COST_ROW, NETWORK_ROW, STORAGE_ROW))
def _cost_total_moe(ev: Evidence) -> Check:
    parts = [quoted(t, r) for t, r in (("$147,456", COST_ROW), ("$8,000", NETWORK_ROW), ("$2,000", STORAGE_ROW))]
    return Check(sum(parts), " + ".join(f"{p:,.0f}" for p in parts))


PER_POINT_DENSE, PER_POINT_MOE = "Dense: $5,655 per point", "MoE: $6,298 per point"


@claim("cost-per-perplexity-point", S, PER_POINT_DENSE, "$5,655", "$ per point", NOT_REPRO,
       "the seed's own totals", BASIS_ARITH, sources=(PER_POINT_MOE, COST_TOTAL))
def _per_point(ev: Evidence) -> Check:
    dense = quoted("$113,092", COST_TOTAL) / quoted("$5,655", PER_POINT_DENSE)
    moe = quoted("$157,456", COST_TOTAL) / quoted("$6,298", PER_POINT_MOE)
    return Check(None, f"'a point of perplexity improvement' from no stated baseline; the seed's totals imply "
                       f"{dense:.1f} points for the dense and {moe:.1f} for the MoE")


# --- training memory -----------------------------------------------------------------------------------------

TRAIN_MEMORY = (f"one A100-80GB rank, no sharding (ZeRO 0), mixed-precision Adam (bf16 weights and gradients, fp32 "
                f"master, m and v), micro-batch 1 x {TRAIN_SEQ} (cost.memory.training_memory)")


def _train_memory(kind: str, recompute: bool = True):
    spec = E.seeds_dense() if kind == "dense" else E.seeds_moe()
    return training_memory(spec, E.hardware(E.A100), 1, TRAIN_SEQ, dp=1, zero=0, recompute=recompute)


GRADS_ROW, OPTIMIZER_ROW = "| Gradients | 14 GB | 112 GB |", "| Optimizer States | 28 GB | 224 GB |"


@claim("training-gradients-dense", S, GRADS_ROW, "14 GB", "GB", ROUNDED, "mistral-7b, " + TRAIN_MEMORY, BASIS_EXACT)
def _grads_dense(ev: Evidence) -> Check:
    return Check(_train_memory("dense").gradients_bytes / 1e9, "2 bytes per parameter")


@claim("training-gradients-moe", S, GRADS_ROW, "112 GB", "GB", ROUNDED, "the seeds' MoE, " + TRAIN_MEMORY,
       BASIS_EXACT)
def _grads_moe(ev: Evidence) -> Check:
    return Check(_train_memory("moe").gradients_bytes / 1e9, "2 bytes per parameter of 46.7B, not of 56B")


def _optimizer(kind: str, seed_gb: float) -> Check:
    mem = _train_memory(kind)
    params = count_params(E.seeds_dense() if kind == "dense" else E.seeds_moe()).total
    return Check(mem.optimizer_bytes / 1e9, f"{ADAM_32:g} bytes per parameter (fp32 master copy, m and v: ZeRO, "
                                            f"Rajbhandari et al. 2020); the seed's {seed_gb:g} GB is "
                                            f"{seed_gb * 1e9 / params:.1f} bytes per parameter")


@claim("training-optimizer-dense", S, OPTIMIZER_ROW, "28 GB", "GB", ROUNDED, "mistral-7b, " + TRAIN_MEMORY,
       BASIS_EXACT)
def _opt_dense(ev: Evidence) -> Check:
    return _optimizer("dense", quoted("28 GB", OPTIMIZER_ROW))


@claim("training-optimizer-moe", S, OPTIMIZER_ROW, "224 GB", "GB", ROUNDED, "the seeds' MoE, " + TRAIN_MEMORY,
       BASIS_EXACT)
def _opt_moe(ev: Evidence) -> Check:
    return _optimizer("moe", quoted("224 GB", OPTIMIZER_ROW))


@claim("training-activations-ratio", S, "| Activations | 8 GB | 4 GB |", "4 GB", "x (MoE over dense)", MODELLED,
       TRAIN_MEMORY + ", activations saved for backward without recomputation", BASIS_MODELLED, over="8 GB")
def _train_activations(ev: Evidence) -> Check:
    moe, dense = _train_memory("moe", False).activation_bytes, _train_memory("dense", False).activation_bytes
    with_recompute = _train_memory("moe").activation_bytes / _train_memory("dense").activation_bytes
    return Check(moe / dense, f"{moe / 1e9:.1f} GB vs {dense / 1e9:.1f} GB: each token saves its top-2 experts' "
                              f"inputs and intermediates; with recomputation {with_recompute:.2f}x")


TOTAL_TRAIN_ROW = "| Total per GPU | 64 GB | 452 GB |"


def _train_total(kind: str, seed_gb: float) -> Check:
    mem = _train_memory(kind)
    return Check(mem.total_bytes / 1e9, f"weights {mem.weights_bytes / 1e9:.0f} + gradients "
                                        f"{mem.gradients_bytes / 1e9:.0f} + optimizer {mem.optimizer_bytes / 1e9:.0f} "
                                        f"+ activations {mem.activation_bytes / 1e9:.1f} GB (recomputed); the seed's "
                                        f"own lines add to its {seed_gb:g} GB")


@claim("training-total-dense", S, TOTAL_TRAIN_ROW, "64 GB", "GB", APPROX, "mistral-7b, " + TRAIN_MEMORY
       + ", layers recomputed in backward", BASIS_MODELLED)
def _total_train_dense(ev: Evidence) -> Check:
    return _train_total("dense", quoted("64 GB", TOTAL_TRAIN_ROW))


@claim("training-total-moe", S, TOTAL_TRAIN_ROW, "452 GB", "GB", APPROX, "the seeds' MoE, " + TRAIN_MEMORY
       + ", layers recomputed in backward", BASIS_MODELLED)
def _total_train_moe(ev: Evidence) -> Check:
    return _train_total("moe", quoted("452 GB", TOTAL_TRAIN_ROW))


# --- multi-GPU scaling ---------------------------------------------------------------------------------------------

SCALING_ROWS = {2: "| 2 | 1.92x | 1.89x |", 4: "| 4 | 3.76x | 3.68x |", 8: "| 8 | 7.21x | 6.84x |",
                16: "| 16 | 13.84x | 12.15x |"}
SCALING = (f"A100-80GB nodes of 8, bf16 at MFU {DEFAULT_MFU}, {PER_GPU_SEQS} sequences of {TRAIN_SEQ} per GPU at "
           "every count (weak scaling): tokens/s over one GPU's; the dense data-parallel, the MoE expert-parallel "
           "(ep up to its 8 experts, then data-parallel) (cost.training_step)")


def _speedup(kind: str, gpus: int) -> float:
    spec, hw = (E.seeds_dense(), E.hardware(E.A100)) if kind == "dense" else (E.seeds_moe(), E.hardware(E.A100))
    ep = min(gpus, spec.moe.n_experts) if kind == "moe" else 1

    def rate(n: int, e: int) -> float:
        return training_step(spec, hw, batch=n * PER_GPU_SEQS, seq=TRAIN_SEQ, ep=e, dp=n // e,
                             dtype="bf16").tokens_per_second

    return rate(gpus, ep) / rate(1, 1)


SCALING_RULE = Within("confirmed within ±10% (a multi-GPU speedup: bounded by the GPU count); not_reproducible when "
                      "the one-GPU baseline cannot hold the model's training state", 0.10)


def _one_gpu_short(kind: str) -> str | None:
    """Why the seed's one-GPU baseline cannot train `kind` (its training state outgrows one A100-80GB: weights,
    gradients, Adam states and activations, layers recomputed), or None when it fits."""
    need, have = _train_memory(kind).total_bytes, E.hardware(E.A100).memory_bytes
    if need <= have:
        return None
    return (f"the speedup's one-GPU baseline cannot run: {need / 1e9:.0f} GB of training state against "
            f"{have / 1e9:.0f} GB (the value assumes a GPU of unlimited memory)")


def _scaling_claim(kind: str, gpus: int) -> None:
    row = SCALING_ROWS[gpus]
    cells = table_cells(row)
    token = cells[1] if kind == "dense" else cells[2]
    name = "mistral-7b" if kind == "dense" else "the seeds' MoE"

    def check(ev: Evidence) -> Check:
        value = _speedup(kind, gpus)
        note = (" (above linear: each rank holds and updates 1/ep of the experts, so its optimizer step shrinks)"
                if value > gpus else "")
        why = f"{value / gpus:.0%} efficiency on {gpus} GPUs{note}"
        baseline = _one_gpu_short(kind)
        if baseline:
            return Check(value, why + f"; {baseline}: no verdict", no_verdict=baseline)
        return Check(value, why)

    claim(f"scaling-{kind}-{gpus}-gpus", S, row, token, "x speedup", SCALING_RULE, f"{name}, {gpus} GPUs: " + SCALING,
          BASIS_MODELLED)(check)


for _gpus in SCALING_ROWS:
    for _kind in ("dense", "moe"):
        _scaling_claim(_kind, _gpus)

SCALING_VERDICT = "Verdict: Dense models scale slightly more efficiently across GPUs."


@claim("scaling-dense-better-engine", S, SCALING_VERDICT, None, "x speedup (dense - MoE) on 16 GPUs",
       Sign("confirmed if the dense model's speedup is the larger; not_reproducible when a one-GPU baseline "
            "cannot hold the model", 1), "16 GPUs: " + SCALING, BASIS_MODELLED)
def _scaling_direction(ev: Evidence) -> Check:
    dense, moe = _speedup("dense", 16), _speedup("moe", 16)
    short = [f"{k}: {why}" for k in ("dense", "moe") if (why := _one_gpu_short(k))]
    if short:
        return Check(dense - moe, f"dense {dense:.2f}x, MoE {moe:.2f}x; " + "; ".join(short) + ": no verdict",
                     no_verdict="; ".join(short))
    return Check(dense - moe, f"dense {dense:.2f}x, MoE {moe:.2f}x")


@claim("scaling-dense-better-measured", S, SCALING_VERDICT, None, "% (dense speedup over MoE speedup)",
       Sign("confirmed if the dense model's measured speedup is the larger beyond the timing noise; contradicted "
            "if the smaller beyond it; else not_reproducible", 1),
       "the study's tiny dense (data-parallel) and MoE (expert-parallel) in torchrun CPU processes, at the most "
       "processes measured (scaling)", BASIS_TINY)
def _scaling_measured(ev: Evidence) -> Check:
    rows = [r for r in ev.stage("scaling").get("rows") or [] if isinstance(r, dict)]
    top = max((r.get("ranks") for r in rows if isinstance(r.get("ranks"), int)), default=None)
    by_kind = {r.get("kind"): r for r in rows if r.get("ranks") == top}
    if top is None or top < 2 or not {"dense", "moe"} <= set(by_kind):
        raise NoEvidence("the study's scaling stage has no dense and MoE rows at 2 or more processes")
    dense = number(by_kind["dense"].get("speedup"), "dense speedup")
    moe = number(by_kind["moe"].get("speedup"), "MoE speedup")
    return Check(100 * (dense / moe - 1), f"{top} processes: dense {dense:.2f}x, MoE {moe:.2f}x (both capped by the "
                                          "machine's cores)", noise=100 * TIME_NOISE)
