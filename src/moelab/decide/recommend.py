"""Dense, MoE or a hybrid for one workload: the orchestration of the decision's parts.

1. candidates: the engine's figures for each candidate on the workload, held against its hard constraints.
2. evidence: the study's measured figures, when a study is given (training, bench, task_type, hybrid).
3. factors: the seeds' factor table for the best dense against the best MoE, and its vote.
4. policy: the rule that picks dense, MoE or a hybrid, with every threshold named (ChoicePolicy).
5. flips: the nearest value of each input that changes the answer.
6. wording: every sentence, citing the numbers.

`recommend(workload, evidence)` returns a dict (the JSON edge: `moelab decide --json`, the study's "decision",
the report): workload, hardware, latency_basis, latency_label, latency_tail (the measured p99/p50 and whether it
was applied), candidates, deployments, best, factors, vote, recommendation {choice, model, reason, feasible,
rule}, throughput_flip, flips, flip_details, evidence (which parts were measured), hybrid (the fleet and the
measured curve behind a "route" or "cascade" choice; else None), policy (ChoicePolicy's thresholds).
"""

from __future__ import annotations

from dataclasses import asdict, replace

from moelab.cost.compare import compare
from moelab.decide import wording
from moelab.decide.candidates import HYBRID_POLICIES, assess, candidate_figures, cost_workload, fleet, max_batch
from moelab.decide.evidence import (  # noqa: F401 - re-exported: the report and the CLI import them from here
    BASES,
    BASIS_MEASURED,
    BASIS_MODELLED,
    BASIS_MODELLED_TINY,
    BASIS_PRIOR,
    BASIS_TINY,
    LATENCY_MEAN,
    LATENCY_SCALED,
    TINY_PARAMS,
    Evidence,
    HybridEvidence,
    bench_basis,
    tail,
    tiny_detail,
    training_basis,
)
from moelab.decide.factors import FACTORS, factor_table, vote  # noqa: F401 - FACTORS re-exported
from moelab.decide.flips import flips
from moelab.decide.policy import CHOICES, POLICY, Choice, ChoicePolicy, best, choose  # noqa: F401 - CHOICES
from moelab.decide.wording import basis_text, constraint_clauses  # noqa: F401 - re-exported
from moelab.decide.workload import Workload
from moelab.spec.hardware import load_hardware
from moelab.spec.presets import load_model


class Context:
    """One workload's candidate figures, evidence and policy, with the dense/MoE comparisons cached, so that the
    decision can be re-run cheaply under what-ifs (flips)."""

    def __init__(self, wl: Workload, evidence: Evidence, policy: ChoicePolicy = POLICY,
                 figures: list[dict] | None = None, compares: dict | None = None) -> None:
        self.wl, self.evidence, self.policy = wl, evidence, policy
        self.hw = load_hardware(wl.hardware)
        self.tail = tail(evidence.bench, wl.hardware)
        self.latency_word = wording.latency_word(self.tail)
        self.figures = figures or [candidate_figures(c, self.hw, wl) for c in wl.candidates]
        self.paths = {f["name"]: f["path"] for f in self.figures}
        self._compares: dict[tuple[str, str], dict] = {} if compares is None else compares

    def pair_compare(self, dense: str, moe: str) -> dict:
        """cost.compare of the two over the policy's flip batches and the workload's sweep."""
        key = (dense, moe)
        if key not in self._compares:
            lo, hi = self.policy.flip_batches
            batches = sorted({b for b in (1 << i for i in range(hi.bit_length())) if b >= lo} | set(self.wl.batches))
            self._compares[key] = compare(load_model(self.paths[dense]), load_model(self.paths[moe]), self.hw,
                                          cost_workload(self.wl), batches)
        return self._compares[key]

    def at_batch(self, batch: int) -> Context:
        """The same decision at another typical batch (the candidates re-modelled there)."""
        wl = replace(self.wl, batch=batch)
        return Context(wl, self.evidence, self.policy, [candidate_figures(f["path"], self.hw, wl)
                                                        for f in self.figures], self._compares)

    def decide(self, wl: Workload) -> dict:
        """Assessed candidates, factor table, vote and recommendation for `wl` (no flips)."""
        cands = [assess(f, wl, self.tail.ratio) for f in self.figures]
        dense = best(cands, "dense") or best(cands, "dense", False)
        moe = best(cands, "moe") or best(cands, "moe", False)
        factors, flip, votes = [], None, 0
        if dense and moe:
            cmp = self.pair_compare(dense["name"], moe["name"])
            flip = cmp["flips"][0] if cmp["flips"] else None
            factors = factor_table(dense, moe, wl, flip, self.evidence, self.policy)
            votes = vote(factors, wl, self.policy)
        ch = choose(cands, votes, flip, wl, self.policy)
        reason = wording.reason(ch, wl, votes, flip, self.latency_word, self.policy)
        mixed = _hybrid(ch, wl, self.evidence.hybrid, self.tail.label) if ch.rule in HYBRID_POLICIES else None
        return {"candidates": cands, "factors": factors, "vote": votes, "throughput_flip": flip,
                "best": {"dense": dense["name"] if dense else None, "moe": moe["name"] if moe else None},
                "recommendation": {"choice": ch.choice, "model": ch.model, "feasible": ch.feasible,
                                   "reason": reason + (wording.hybrid(mixed) if mixed else ""), "rule": ch.rule},
                "hybrid": mixed}


def _hybrid(ch: Choice, wl: Workload, measured: HybridEvidence | None, tail_label: str = LATENCY_MEAN) -> dict:
    """The fleet of the hybrid's two models (candidates.fleet) at the escalation rate of the best measured point of
    the same policy, and the measured curve's dense alone, MoE alone and best cascade and route points."""
    point = measured.best.get(ch.rule) if measured else None
    out = fleet(ch.first, ch.second, wl, ch.rule, point.escalation_rate if point else None, tail_label)
    out["basis"] = BASIS_MODELLED_TINY if point else BASIS_MODELLED
    out["escalation_source"] = f"the best measured {ch.rule} point" if point else None
    out["measured"] = None if measured is None else {
        "basis": measured.basis, "engine": measured.engine, "items": measured.items,
        "dense": {"name": measured.dense_name, **measured.dense.to_dict()},
        "moe": {"name": measured.moe_name, **measured.moe.to_dict()},
        **{k: (p.to_dict() if (p := measured.best.get(k)) else None) for k in HYBRID_POLICIES}}
    return out


def recommend(workload: Workload, evidence: dict | None = None, policy: ChoicePolicy = POLICY) -> dict:
    """Candidate figures, the factor table, the recommendation and its flips (see the module docstring).
    `evidence`: study.json's parts {"training", "bench", "task_type", "hybrid"} (evidence.Evidence.read; any may
    be missing), or None for the engine alone."""
    ev = Evidence.read(evidence)
    ctx = Context(workload, ev, policy)
    base = ctx.decide(workload)
    sizes = {}
    for c, f in zip(base["candidates"], ctx.figures, strict=True):
        c["max_batch_p99"] = max_batch(load_model(f["path"]), ctx.hw, workload, c["gpus_per_replica"],
                                       ctx.tail.ratio, workload.memory_budget_gb * 1e9)
        sizes[c["name"]] = [{k: v for k, v in d.items() if k != "training"} for d in f["deployments"]]
    details = flips(ctx, base)
    return {
        "workload": workload.to_dict(),
        "hardware": ctx.hw.name,
        "latency_basis": wording.tail_note(ctx.tail),
        "latency_label": ctx.tail.label,
        "latency_tail": {"ratio": ctx.tail.ratio, "measured": ctx.tail.measured, "rows": ctx.tail.rows,
                         "measured_on": ctx.tail.where, "applied": ctx.tail.applied},
        "candidates": base["candidates"],
        "deployments": sizes,
        "best": base["best"],
        "factors": base["factors"],
        "vote": base["vote"],
        "recommendation": base["recommendation"],
        "throughput_flip": base["throughput_flip"],
        "flips": [f["text"] for f in details],
        "flip_details": details,
        "evidence": ev.found(),
        "hybrid": base["hybrid"],
        "policy": asdict(policy),
    }
