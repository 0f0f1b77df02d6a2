"""Seed 001's other claims: the example models, the benchmark and code tables, the quality claims (against the
study's task-type probes), the scaling-law exponents (against the study's fits), the hybrid strategies (against
the study's cascade) and the operational ratings."""

from __future__ import annotations

from moelab.claims import engine as E
from moelab.claims.evidence import Evidence, NoEvidence, accuracy_gap, combine, mapping, number
from moelab.claims.registry import BASIS_ARITH, BASIS_EXACT, BASIS_TINY, claim, out_of_scope
from moelab.claims.rules import (
    ARITH_RANGE,
    GREATER,
    INTERVAL,
    PAIRED,
    ROUNDED,
    Above,
    Check,
    mcnemar_p,
    quoted,
    table_cells,
)
from moelab.cost.params import count_params

S = "001"
NO_CONFIG = "moelab has no config for it (its families are decoder-only Hugging Face ones)"

out_of_scope("gpt-3-params", S, "GPT-3 (175B parameters, all dense)", "GPT-3's weights and config were never "
             "released: nothing to count", "175B", "B params")
out_of_scope("bert-params", S, "BERT (110M-340M parameters)", "BERT is an encoder: " + NO_CONFIG, "110M", "M params")
out_of_scope("switch-params", S, "Switch Transformer (1.6T parameters, sparse)", "an encoder-decoder: " + NO_CONFIG,
             "1.6T", "T params")
out_of_scope("glam-params", S, "GLaM (1.2T parameters, sparse)", "GLaM was never released: nothing to count",
             "1.2T", "T params")
out_of_scope("gshard-params", S, "GShard (600B parameters, sparse)", "an encoder-decoder, never released: "
             + NO_CONFIG, "600B", "B params")

MOE_100B = "MoE 100B (8 experts): Process only 25B parameters per token"


@claim("moe-100b-active-25b", S, MOE_100B, "25B", "B params", ROUNDED, "a 100B MoE of the seeds' shape (8 experts, "
       "top-2, attention and embeddings shared): 100B x the active share of the seeds' MoE", BASIS_EXACT)
def _active_share(ev: Evidence) -> Check:
    p = count_params(E.seeds_moe())
    total = quoted("100B", MOE_100B)
    return Check(total * p.active / p.total, f"{p.active / p.total:.1%} active, not 2/8: attention and embeddings run "
                                             "for every token")


# --- benchmarks -----------------------------------------------------------------------------------------------

BENCHMARKS = ("| MMLU | 63.2 | 68.7 | 70.1 |", "| HellaSwag | 78.1 | 82.4 | 83.8 |", "| GSM8K | 34.5 | 48.2 | 52.1 |",
              "| HumanEval | 28.7 | 35.6 | 38.2 |", "| TruthfulQA | 42.1 | 46.8 | 47.3 |")
out_of_scope("benchmark-table", S, BENCHMARKS[0], "moelab runs none of these benchmarks; its task-type probes "
             "(knowledge and reasoning, at tiny scale) are the rows that check the seed's quality claims", "63.2",
             "% MMLU")


def _gains(column: int) -> list[tuple[str, float]]:
    out = []
    for line in BENCHMARKS:
        cells = table_cells(line)
        out.append((cells[0], quoted(cells[column], line) - quoted(cells[1], line)))
    return out


@claim("benchmark-gains-5-15", S, "5-15 point improvements across benchmarks", "5-15", "points (MoE K=2 - dense)",
       ARITH_RANGE, "the seed's own benchmark table, K=2 against the dense", BASIS_ARITH, is_range=True,
       sources=BENCHMARKS)
def _gain_range(ev: Evidence) -> Check:
    k2, k4 = _gains(2), _gains(3)
    values = tuple(g for _, g in k2)
    low = min(k2, key=lambda t: t[1])
    return Check(low[1], "its K=2 gains: " + ", ".join(f"{n} {g:+.1f}" for n, g in k2) + f" ({low[0]} below 5); K=4 "
                 f"reaches {max(g for _, g in k4):+.1f}", values=values)


out_of_scope("code-table", S, "| Pass@1 | 42.3% | 51.7% |", "moelab runs no code-generation benchmark", "42.3%",
             "% pass@1")


@claim("reasoning-gains-larger", S, "Larger gains on reasoning tasks (GSM8K)", None,
       "accuracy points (reasoning gain - knowledge gain of the MoE)", GREATER, "the study's iso-active pair "
       "(tiny-dense vs tiny-moe): the MoE's gain on the reasoning probes minus its gain on the knowledge probes "
       "(task_type); Newcombe's 95% intervals of the two gaps combined; no verdict when either set is at the floor "
       "for both models", BASIS_TINY)
def _reasoning_gain(ev: Evidence) -> Check:
    reasoning = accuracy_gap(ev, "iso_active", "reasoning", moe_minus_dense=True)
    knowledge = accuracy_gap(ev, "iso_active", "knowledge", moe_minus_dense=True)
    lo, hi = combine(reasoning, knowledge)
    floors = [s for s, g in (("reasoning", reasoning), ("knowledge", knowledge)) if g.no_verdict]
    why = (f"MoE - dense: reasoning {reasoning.value:+.1f}, knowledge {knowledge.value:+.1f} points; 95% interval of "
           f"the difference [{lo:+.1f}, {hi:+.1f}] (Newcombe's intervals combined) | {reasoning.why} | "
           f"{knowledge.why}")
    if floors:
        why += f"; {' and '.join(floors)} at the floor for both models: a gain there is not measured, no verdict"
    return Check(reasoning.value - knowledge.value, why, cis=((lo, hi),), no_verdict="floor" if floors else None)


@claim("moe-quality-at-equal-compute", S, "Verdict: MoE delivers better quality for equivalent compute per forward "
       "pass.", None, "accuracy points (MoE - dense)", GREATER, "the study's iso-active pair (same active parameters, "
       "so the same compute per forward pass) on both probe sets (task_type), each gap with Newcombe's 95% interval; "
       "a set both models answer at the floor is left out (none left: no verdict); the value shown is the smaller "
       "gap", BASIS_TINY)
def _moe_quality(ev: Evidence) -> Check:
    gaps = [accuracy_gap(ev, "iso_active", s, moe_minus_dense=True) for s in ("knowledge", "reasoning")]
    low = min(gaps, key=lambda g: g.value)
    # a set both models answer at the floor says nothing; the claim stands on the sets that were learned
    learned = [g for g in gaps if not g.no_verdict]
    why = " | ".join(g.why for g in gaps)
    if not learned:
        return Check(low.value, why + "; both sets at the floor: no verdict", no_verdict="floor")
    return Check(min(g.value for g in learned), why, values=tuple(g.value for g in learned),
                 cis=tuple(g.cis[0] for g in learned))


# --- scaling laws -------------------------------------------------------------------------------------------

ALPHA = "where C = compute budget, α ≈ 0.076"
BETA = "where C = compute per token, E = num experts, β ≈ 0.084"
KAPLAN = ("0.076 is Kaplan et al. 2020's exponent in parameters (alpha_N); their compute exponent is 0.050 "
          "(alpha_C^min)")


def _fit(ev: Evidence, kind: str, key: str) -> Check:
    """The study's pure power-law fit of `kind` (fits[kind]["pure"], L = A C^-exponent by least squares in log-log:
    the seeds' form; the E + A C^-exponent fit's exponent is steeper whenever E > 0) and its 95% interval. No
    verdict when the E + A C^-exponent fit on the same points put A on its bound 0 (at_bound "A=0": the loss does
    not fall with compute, there is no power law to compare); rules.Interval refuses an uninformative interval.
    The E + A fit's own open interval (ci_open) is about its exponent, not the pure one's: shown, not judged."""
    fits = mapping(ev.stage("laws").get("fits"), "scaling-law fits")
    fit = mapping(fits.get(kind), f"{kind} scaling-law fit")
    pure = mapping(fit.get("pure"), f"{kind} pure power-law fit")
    value = number(pure.get(key), f"{kind} pure-power-law {key}")
    ci = pure.get(f"{key}_ci")
    if not (isinstance(ci, list) and len(ci) == 2):
        raise NoEvidence(f"the study's {kind} pure power-law fit has no {key} interval")
    lo, hi = number(ci[0], f"{key} interval"), number(ci[1], f"{key} interval")
    if lo > hi:
        raise NoEvidence(f"the study's {kind} {key} interval [{lo:g}, {hi:g}] is reversed")
    bounds = [str(x) for x in fit["at_bound"]] if isinstance(fit.get("at_bound"), list) else []
    open_ends = [str(x) for x in fit["ci_open"]] if isinstance(fit.get("ci_open"), list) else []
    why = (f"pure power law {key} {value:.3f} [{lo:.3f}, {hi:.3f}] on {pure.get('points', '?')} points, "
           f"{BASIS_TINY}")
    if bounds or open_ends:
        why += (f"; the E + A C^-{key} fit: at bound {', '.join(bounds) or 'none'}, interval open "
                f"{', '.join(open_ends) or 'nowhere'}")
    if any(b.startswith("A") for b in bounds):
        return Check(value, why + "; A = 0: the loss does not fall with compute, no power law: no verdict",
                     no_verdict="no power law (A = 0)")
    if lo <= 0 < hi or (lo > 0 and hi / lo > INTERVAL.max_ratio):
        why += f"; the interval spans zero or more than a factor {INTERVAL.max_ratio:g}: uninformative, no verdict"
    return Check(value, why, interval=(lo, hi))


def seed_exponent(name: str) -> float:
    """The seeds' exponent, read from the quote (laws.fits.SEEDS holds the same figure; a test checks it)."""
    return quoted("0.076", ALPHA) if name == "alpha" else quoted("0.084", BETA)


@claim("scaling-law-alpha", S, ALPHA, "α ≈ 0.076", "exponent", INTERVAL, "the study's dense sweep, the pure power "
       "law L(C) = A C^-alpha with C = 6 N_active D (laws, fits.dense.pure)", BASIS_TINY)
def _alpha(ev: Evidence) -> Check:
    fit = _fit(ev, "dense", "alpha")
    return Check(fit.value, f"{fit.why}; {KAPLAN}", interval=fit.interval, no_verdict=fit.no_verdict)


@claim("scaling-law-beta", S, BETA, "β ≈ 0.084", "exponent", INTERVAL, "the study's MoE sweep over the expert count, "
       "the pure power law L = A (C E_experts)^-beta (laws, fits.moe_experts.pure)", BASIS_TINY)
def _beta(ev: Evidence) -> Check:
    return _fit(ev, "moe_experts", "beta")


# --- hybrids -----------------------------------------------------------------------------------------------

def operating_point(ev: Evidence) -> dict:
    """The cascade's one operating point both cascade claims are judged at, recomputed from the stored per-query
    answers (the cascade at threshold t gives the MoE's answer where the dense confidence < t, else the dense's:
    moelab.hybrid.policies.cascade): the lowest-escalation threshold whose answers are not worse than the MoE
    alone's by the exact McNemar test on the same queries (no net loss, or p >= 0.05). Thresholds escalating every
    query are left out (that is the MoE alone). Result: threshold, escalation, accuracy, the MoE's accuracy, n,
    b (cascade right, MoE wrong), c (cascade wrong, MoE right), p; threshold None when none qualifies (b, c, p
    then of the threshold with the fewest net losses)."""
    queries, thresholds = ev.cascade_queries()
    n = len(queries)
    moe_acc = sum(m for _, _, m in queries) / n
    tried = []
    for t in thresholds:
        answers = [(m if conf < t else d, m) for d, conf, m in queries]
        escalated = sum(conf < t for _, conf, _ in queries)
        if escalated == n:
            continue
        b = sum(a and not m for a, m in answers)
        c = sum(m and not a for a, m in answers)
        tried.append({"threshold": t, "escalation": escalated / n, "accuracy": sum(a for a, _ in answers) / n,
                      "moe_accuracy": moe_acc, "n": n, "b": b, "c": c, "p": mcnemar_p(b, c)})
    if not tried:
        raise NoEvidence("every cascade threshold of the study escalates every query: no cascade to judge")
    kept = [x for x in tried if x["c"] <= x["b"] or x["p"] >= 0.05]
    if kept:
        return min(kept, key=lambda x: (x["escalation"], x["threshold"]))
    return {**min(tried, key=lambda x: (x["c"] - x["b"], x["escalation"])), "threshold": None}


def _point_why(op: dict) -> str:
    where = (f"threshold {op['threshold']:g}" if op["threshold"] is not None else
             "no threshold keeps the MoE's quality; the closest")
    return (f"{where}: {op['escalation']:.0%} escalated, cascade {100 * op['accuracy']:.1f}% vs MoE alone "
            f"{100 * op['moe_accuracy']:.1f}% on the same {op['n']} queries; only the cascade right {op['b']}, only "
            f"the MoE right {op['c']}, exact McNemar p = {op['p']:.3g}")


CASCADE = ("the study's cascade (dense first, MoE when the dense answer's confidence is below the threshold) at one "
           "operating point: the lowest-escalation threshold not worse than the MoE alone by the exact McNemar "
           "test (95%) on the stored per-query answers (hybrid.queries)")


@claim("cascade-most-on-dense", S, "Most queries handled by efficient dense", None, "% of queries the dense answers",
       Above("confirmed if more than half the queries stay with the dense model at the operating point; "
             "contradicted if half or fewer; not_reproducible if no cascade threshold keeps the MoE's quality", 50.0),
       CASCADE, BASIS_TINY)
def _most_dense(ev: Evidence) -> Check:
    op = operating_point(ev)
    kept = 100 * (1 - op["escalation"])
    if op["threshold"] is None:
        return Check(kept, _point_why(op) + ": no operating point, no verdict", no_verdict="no operating point")
    return Check(kept, _point_why(op))


@claim("cascade-quality-kept", S, "Quality guaranteed by MoE fallback", None, "accuracy points (cascade - MoE)",
       PAIRED, CASCADE + ", against the MoE alone on the same queries", BASIS_TINY)
def _cascade_quality(ev: Evidence) -> Check:
    op = operating_point(ev)
    return Check(100 * (op["accuracy"] - op["moe_accuracy"]), _point_why(op), discordant=(op["b"], op["c"]))


out_of_scope("deployment-difficulty", S, "Difficulty: 7/10", "a rating, not a measurement", "7/10", "of 10")
