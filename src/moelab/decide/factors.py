"""The seeds' factor table for the best dense against the best MoE: one row per factor, each with the side it
favours ("dense", "moe", "neutral"), the numbers behind it, its basis (evidence.BASES) and why (wording).

Rows follow seed 000's "When to Choose What" table (VRAM, batch and throughput, task type, training, scale,
fine-tuning stability). Modelled rows come from the engine's figures (candidates.assess); measured rows from a
study (evidence.Evidence); the rest are the seeds' priors. The vote counts +1 per row favouring MoE and -1 per
row favouring dense, weighted by ChoicePolicy.weight.
"""

from __future__ import annotations

from moelab.decide import wording
from moelab.decide.evidence import (
    BASES,
    BASIS_MODELLED,
    BASIS_MODELLED_TINY,
    BASIS_PRIOR,
    BASIS_TINY,
    DOMAIN_TASK,
    PAIRS,
    BenchEvidence,
    Evidence,
    TaskTypeEvidence,
    TrainingEvidence,
)
from moelab.decide.policy import POLICY, ChoicePolicy, knowledge_share
from moelab.decide.workload import Workload

FACTORS = ("vram", "batch_throughput", "task_type", "training", "scale", "fine_tuning_stability")
SIDES = ("dense", "moe", "neutral")


def favour(moe_better: float, margin: float) -> str:
    """'moe' when the MoE is better by more than `margin` (a relative advantage), 'dense' when worse."""
    return "moe" if moe_better > margin else "dense" if moe_better < -margin else "neutral"


def factor(name: str, favours: str, numbers: dict, basis: str, why: str, detail: str = "") -> dict:
    assert name in FACTORS and favours in SIDES and basis in BASES, (name, favours, basis)
    out = {"factor": name, "favours": favours, "numbers": numbers, "basis": basis, "why": why}
    if detail:
        out["basis_detail"] = detail
    return out


def vram(d: dict, m: dict, wl: Workload, policy: ChoicePolicy) -> dict:
    numbers = {"dense": d["name"], "moe": m["name"], "dense_memory_gb": d["memory_gb"], "moe_memory_gb": m["memory_gb"],
               "dense_weights_gb": d["weights_gb"], "moe_weights_gb": m["weights_gb"],
               "moe_total_over_active": round(m["params_total"] / m["params_active"], 2),
               "budget_gb": round(wl.memory_budget_gb, 1), "batch": wl.batch}
    if d["fits"] != m["fits"]:
        favours = "dense" if d["fits"] else "moe"
    else:
        favours = favour(d["memory_gb"] / m["memory_gb"] - 1, policy.margin)
    return factor("vram", favours, numbers, BASIS_MODELLED, wording.vram(d, m, wl, numbers))


def throughput(d: dict, m: dict, wl: Workload, flip: dict | None, bench: BenchEvidence | None,
               policy: ChoicePolicy) -> dict:
    """Modelled tokens/s per GPU at the typical batch; with a bench, a modelled gap inside the engine's measured
    decode prediction error is neutral."""
    ratio = m["tokens_per_second_per_gpu"] / d["tokens_per_second_per_gpu"]
    numbers = {"batch": wl.batch, "dense_tokens_per_s_per_gpu": d["tokens_per_second_per_gpu"],
               "moe_tokens_per_s_per_gpu": m["tokens_per_second_per_gpu"], "moe_over_dense": round(ratio, 3),
               "dense_usd_per_mtok": d["usd_per_million_tokens"], "moe_usd_per_mtok": m["usd_per_million_tokens"],
               "flip_batch": flip["batch"] if flip else None, "flip_to": flip["to"] if flip else None,
               "flip_gpus_changed": bool(flip and flip.get("gpus_changed"))}
    favours = favour(ratio - 1, policy.margin)
    if bench is None:
        return factor("batch_throughput", favours, numbers, BASIS_MODELLED,
                      wording.throughput(d, m, wl, flip, policy))
    numbers.update(measured_flip_batch=bench.measured_flip_batch, predicted_flip_batch=bench.predicted_flip_batch,
                   decode_median_abs_rel_error=bench.decode_error, measured_on=bench.device,
                   measurement_warnings=list(bench.warnings))
    inside_error = bench.decode_error is not None and abs(ratio - 1) < bench.decode_error
    if inside_error:
        favours = "neutral"
    basis = BASIS_MODELLED_TINY if bench.basis == BASIS_TINY else BASIS_MODELLED
    return factor("batch_throughput", favours, numbers, basis,
                  wording.throughput(d, m, wl, flip, policy, bench, inside_error), bench.detail)


# Which pair answers which probe set: the seeds' claims (seed 000, "Better for reasoning. At equal total
# parameters, dense models outperform MoEs on math, logic, and code" and "MoEs dominate trivia, natural questions,
# and multilingual benchmarks at equal training cost"; equal training cost on the same tokens is equal active
# parameters). A set whose claimed pair was not scored is read from the other pair.
CLAIM_PAIR = {"knowledge": "iso_active", "reasoning": "iso_total"}
PRIOR_SIGN = {"knowledge": 1, "reasoning": -1}  # the seeds' prior: MoE for knowledge, dense for reasoning
SIGN = {"moe": 1, "dense": -1}


def task_type(wl: Workload, evidence: Evidence, policy: ChoicePolicy) -> dict:
    """The seeds' prior (knowledge + multilingual vs reasoning share of the mix); with the study's task-type
    probes, the measured accuracy per probe set where it is evidence; without them, the per-domain validation
    loss of the training comparison (a loss, labelled as such)."""
    mix = wl.task_mix
    lean = knowledge_share(mix) - mix["reasoning"]
    numbers = {f"{k}_share": round(v, 3) for k, v in mix.items()} | {"knowledge_multilingual_minus_reasoning":
                                                                      round(lean, 3)}
    prior = favour(lean, policy.task_lean_margin)
    if evidence.task_type is not None:
        return _task_accuracy(wl, evidence.task_type, numbers, prior, policy)
    training = evidence.training
    if training is None or not training.dense.final_val or not training.moe.final_val:
        return factor("task_type", prior, numbers | {"measured": None}, BASIS_PRIOR, wording.task_prior(mix) + ".")
    return _task_loss(wl, training, numbers, prior, policy)


def _task_accuracy(wl: Workload, task: TaskTypeEvidence, numbers: dict, prior: str, policy: ChoicePolicy) -> dict:
    """Each probe set's comparison (CLAIM_PAIR) casts the mix share of that set: +1 MoE / -1 dense where the
    difference's interval excludes 0 (evidence.Comparison.verdict), the seeds' prior sign where it does not or
    both models sit at the floor."""
    mix = wl.task_mix
    shares = {"knowledge": knowledge_share(mix), "reasoning": mix["reasoning"]}
    used = {}
    for item_set, pair in CLAIM_PAIR.items():
        other = next(p for p in PAIRS if p != pair)
        c = task.get(pair, item_set) or task.get(other, item_set)
        if c is not None:
            used[item_set] = c
    decisive = [s for s, c in used.items() if c.verdict in SIGN and shares[s] > 0]
    lean = sum(share * (SIGN[used[s].verdict] if s in decisive else PRIOR_SIGN[s]) for s, share in shares.items())
    numbers.update(measured="exact-match accuracy", task_lean=round(lean, 3), measured_sets=decisive,
                   measured_accuracy=[c.to_dict() | {"used": used.get(c.set) is c} for c in task.comparisons],
                   floor_warnings=list(task.floor_warnings))
    if not decisive:
        return factor("task_type", prior, numbers, BASIS_PRIOR, wording.task_accuracy(task, used, mix, decisive, lean))
    return factor("task_type", favour(lean, policy.task_lean_margin), numbers, task.basis,
                  wording.task_accuracy(task, used, mix, decisive, lean), task.detail)


def _task_loss(wl: Workload, training: TrainingEvidence, numbers: dict, prior: str, policy: ChoicePolicy) -> dict:
    """The per-domain validation loss gap weighted by the mix (under policy.loss_gap_nats the prior decides)."""
    mix = wl.task_mix
    dense, moe = training.dense, training.moe
    weighted, per_domain, weight = 0.0, {}, 0.0
    for domain, dl in dense.final_val.items():
        ml = moe.final_val.get(domain)
        if domain in ("mean", "dense") or ml is None:
            continue
        per_domain[domain] = {"dense": round(dl, 4), "moe": round(ml, 4)}
        share = mix.get(DOMAIN_TASK.get(domain, ""), 0.0)
        weighted += share * (dl - ml)
        weight += share
    delta = weighted / weight if weight else 0.0
    numbers.update(measured="validation loss", measured_val_loss=per_domain,
                   measured_weighted_loss_gap=round(delta, 4), dense_model=dense.name, moe_model=moe.name)
    gap = policy.loss_gap_nats
    favours = "moe" if delta > gap else "dense" if delta < -gap else prior
    prior_decides = favours == prior and abs(delta) <= gap
    why = wording.task_loss(training, per_domain, delta, mix, gap if prior_decides else None)
    if prior_decides:
        return factor("task_type", favours, numbers, BASIS_PRIOR, why)
    return factor("task_type", favours, numbers, training.basis, why, training.detail)


def training(d: dict, m: dict, wl: Workload, measured: TrainingEvidence | None, policy: ChoicePolicy) -> dict:
    """Modelled training FLOPs (6 x active params x tokens) at frontier scale; with a training comparison, the
    measured FLOPs to the target loss decide."""
    numbers = {"mode": wl.training, "tokens": wl.train_tokens, "dense_flops": d["train_flops"],
               "moe_flops": m["train_flops"], "dense_usd": d["train_usd"], "moe_usd": m["train_usd"],
               "dense_memory_gb_per_gpu": d["train_memory_gb_per_gpu"], "moe_memory_gb_per_gpu":
               m["train_memory_gb_per_gpu"], "dense_train_memory_fits": d["train_memory_fits"],
               "moe_train_memory_fits": m["train_memory_fits"]}
    favours = favour(d["train_flops"] / m["train_flops"] - 1, policy.margin)
    modelled = wording.training_modelled(d, m, wl)
    if measured is None:
        return factor("training", favours, numbers, BASIS_MODELLED, modelled + ".")
    dense, moe = measured.dense, measured.moe
    dt, mt = dense.to_target, moe.to_target
    dv, mv = dense.final_val.get("mean"), moe.final_val.get("mean")
    numbers.update(measured_target_loss=measured.target_loss, measured_dense_to_target=dt,
                   measured_moe_to_target=mt, measured_dense_final_val=dv, measured_moe_final_val=mv)
    if dt and mt:
        favours = favour(dt["flops"] / mt["flops"] - 1, policy.margin)
    elif dt or mt:
        favours = "dense" if dt else "moe"
    elif mv is not None and dv is not None:
        gap = policy.loss_gap_nats
        favours = "moe" if mv < dv - gap else "dense" if dv < mv - gap else favours
    return factor("training", favours, numbers, measured.basis, wording.training_measured(measured, modelled),
                  measured.detail)


def scale(d: dict, m: dict, policy: ChoicePolicy) -> dict:
    numbers = {"moe": m["name"], "moe_total": m["params_total"], "moe_active": m["params_active"],
               "moe_dense_equivalent_b": m["dense_equivalent_b"], "dense": d["name"], "dense_total": d["params_total"],
               "moe_from": policy.scale_moe_from, "dense_below": policy.scale_dense_below}
    total = m["params_total"]
    favours = "moe" if total >= policy.scale_moe_from else "dense" if total < policy.scale_dense_below else "neutral"
    return factor("scale", favours, numbers, BASIS_PRIOR, wording.scale(d, m, policy))


def stability(wl: Workload) -> dict:
    numbers = {"mode": wl.training, "tokens": wl.train_tokens}
    favours = "dense" if wl.training == "fine-tune" else "neutral"
    return factor("fine_tuning_stability", favours, numbers, BASIS_PRIOR, wording.stability(wl))


def factor_table(d: dict, m: dict, wl: Workload, flip: dict | None, evidence: Evidence,
                 policy: ChoicePolicy = POLICY) -> list[dict]:
    """Every row of FACTORS, in order, for the best dense `d` against the best MoE `m` (candidates.assess)."""
    return [vram(d, m, wl, policy), throughput(d, m, wl, flip, evidence.bench, policy),
            task_type(wl, evidence, policy), training(d, m, wl, evidence.training, policy),
            scale(d, m, policy), stability(wl)]


def vote(factors: list[dict], wl: Workload, policy: ChoicePolicy = POLICY) -> int:
    """+1 per row favouring MoE, -1 per row favouring dense, times policy.weight."""
    sign = {"moe": 1, "dense": -1, "neutral": 0}
    return sum(sign[f["favours"]] * policy.weight(f["factor"], wl.training) for f in factors)
