"""Seed 001's other claims: the example models, the benchmark and code tables, the quality claims (against the
study's task-type probes), the scaling-law exponents (against the study's fits), the hybrid strategies (against
the study's cascade) and the operational ratings."""

from __future__ import annotations

from moelab.claims import engine as E
from moelab.claims.evidence import Evidence, NoEvidence, accuracy_gap, difference_noise, mapping, number
from moelab.claims.registry import BASIS_ARITH, BASIS_EXACT, BASIS_TINY, claim, out_of_scope
from moelab.claims.rules import (
    ARITH_RANGE,
    GREATER,
    INTERVAL,
    NOT_WORSE,
    ROUNDED,
    Above,
    Check,
    quoted,
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
        cells = [c.strip() for c in line.strip("|").split("|")]
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
       "(task_type)", BASIS_TINY)
def _reasoning_gain(ev: Evidence) -> Check:
    reasoning = accuracy_gap(ev, "iso_active", "reasoning", moe_minus_dense=True)
    knowledge = accuracy_gap(ev, "iso_active", "knowledge", moe_minus_dense=True)
    scores = [s for item_set in ("reasoning", "knowledge") for s in ev.task_scores("iso_active", item_set)[:2]]
    noise = 100 * difference_noise(*scores)
    return Check(reasoning.value - knowledge.value, f"MoE - dense: reasoning {reasoning.value:+.1f}, knowledge "
                                                    f"{knowledge.value:+.1f} points; noise ±{noise:.1f}", noise=noise)


@claim("moe-quality-at-equal-compute", S, "Verdict: MoE delivers better quality for equivalent compute per forward "
       "pass.", None, "accuracy points (MoE - dense)", GREATER, "the study's iso-active pair (same active parameters, "
       "so the same compute per forward pass) on both probe sets (task_type); the value shown is the smaller gap",
       BASIS_TINY)
def _moe_quality(ev: Evidence) -> Check:
    gaps = [accuracy_gap(ev, "iso_active", s, moe_minus_dense=True) for s in ("knowledge", "reasoning")]
    low = min(gaps, key=lambda g: g.value)
    return Check(low.value, " | ".join(g.why for g in gaps), values=tuple(g.value for g in gaps),
                 noise=max(g.noise for g in gaps))


# --- scaling laws -------------------------------------------------------------------------------------------

ALPHA = "where C = compute budget, α ≈ 0.076"
BETA = "where C = compute per token, E = num experts, β ≈ 0.084"
KAPLAN = ("0.076 is Kaplan et al. 2020's exponent in parameters (alpha_N); their compute exponent is 0.050 "
          "(alpha_C^min)")


def _fit(ev: Evidence, kind: str, key: str, seed: float) -> Check:
    """A fitted exponent and its 95% interval; no interval where the seed's figure lies past an end the fit left
    open (the interval reached the search's bound: it may extend further)."""
    fits = mapping(ev.stage("laws").get("fits"), "scaling-law fits")
    fit = mapping(fits.get(kind), f"{kind} scaling-law fit")
    value = number(fit.get(key), f"{kind} {key}")
    ci = fit.get(f"{key}_ci")
    if not (isinstance(ci, list) and len(ci) == 2):
        raise NoEvidence(f"the study's {kind} fit has no {key} interval")
    lo, hi = number(ci[0], f"{key} interval"), number(ci[1], f"{key} interval")
    open_ends = fit.get("ci_open") if isinstance(fit.get("ci_open"), list) else []
    why = f"fitted {key} {value:.3f} [{lo:.3f}, {hi:.3f}] on {fit.get('points', '?')} points, at tiny scale"
    if (seed < lo and "low" in open_ends) or (seed > hi and "high" in open_ends):
        return Check(value, why + "; the interval is open on the seed's side: no verdict")
    return Check(value, why, interval=(lo, hi))


@claim("scaling-law-alpha", S, ALPHA, "α ≈ 0.076", "exponent", INTERVAL, "the study's dense sweep, L(C) = E + A "
       "C^-alpha with C = 6 N_active D (laws)", BASIS_TINY)
def _alpha(ev: Evidence) -> Check:
    fit = _fit(ev, "dense", "alpha", quoted("0.076", ALPHA))
    return Check(fit.value, f"{fit.why}; {KAPLAN}", interval=fit.interval)


@claim("scaling-law-beta", S, BETA, "β ≈ 0.084", "exponent", INTERVAL, "the study's MoE sweep over the expert count, "
       "L = E + A (C E_experts)^-beta (laws)", BASIS_TINY)
def _beta(ev: Evidence) -> Check:
    return _fit(ev, "moe_experts", "beta", quoted("0.084", BETA))


# --- hybrids -----------------------------------------------------------------------------------------------

def _cascade(ev: Evidence) -> tuple[dict, dict]:
    hy = ev.stage("hybrid")
    best = mapping(mapping(hy.get("best"), "hybrid best points").get("cascade"), "best cascade point")
    moe = mapping(mapping(hy.get("models"), "hybrid models").get("moe"), "hybrid MoE model")
    return best, moe


CASCADE = "the study's best cascade point (dense first, MoE when the dense answer's confidence is low) (hybrid)"


@claim("cascade-most-on-dense", S, "Most queries handled by efficient dense", None, "% of queries the dense answers",
       Above("confirmed if more than half the queries stay with the dense model", 50.0), CASCADE, BASIS_TINY)
def _most_dense(ev: Evidence) -> Check:
    best, _ = _cascade(ev)
    rate = number(best.get("escalation_rate"), "cascade escalation rate")
    return Check(100 * (1 - rate), f"threshold {best.get('threshold')}: {rate:.0%} escalated to the MoE")


@claim("cascade-quality-kept", S, "Quality guaranteed by MoE fallback", None, "accuracy points (cascade - MoE)",
       NOT_WORSE, CASCADE + ", against the MoE alone", BASIS_TINY)
def _cascade_quality(ev: Evidence) -> Check:
    best, moe = _cascade(ev)
    for d, what in ((best, "cascade"), (moe, "MoE")):
        for key in ("accuracy", "ci_low", "ci_high"):
            number(d.get(key), f"{what} {key}")
    noise = 100 * difference_noise(best, moe)
    gap = 100 * (best["accuracy"] - moe["accuracy"])
    return Check(gap, f"cascade {100 * best['accuracy']:.1f}% vs MoE {100 * moe['accuracy']:.1f}% "
                      f"(n {best.get('n')}); noise ±{noise:.1f} points", noise=noise)


out_of_scope("deployment-difficulty", S, "Difficulty: 7/10", "a rating, not a measurement", "7/10", "of 10")
