"""Every English sentence of the decision: the factor rows' `why`, the recommendation's `reason`, the flips'
`text`, the latency basis and the constraint clauses. Nothing here decides anything: each function says in
words what candidates, factors, policy and flips computed, citing their numbers.
"""

from __future__ import annotations

from moelab.decide.evidence import (
    BASIS_TINY,
    Accuracy,
    BenchEvidence,
    Comparison,
    Tail,
    TaskTypeEvidence,
    TrainingEvidence,
)
from moelab.decide.policy import Choice, ChoicePolicy, knowledge_share
from moelab.decide.workload import Workload
from moelab.train.clocks import training_seconds

NOT_FEASIBLE = ", closest: nothing meets every constraint"


def basis_text(factor: dict) -> str:
    """A factor's basis as shown to a reader: "measured at tiny scale (CPU, 24 steps, 1.57M-3.94M params)"."""
    detail = factor.get("basis_detail")
    return f"{factor['basis']} ({detail})" if detail else factor["basis"]


def _where(basis: str) -> str:
    return "on tiny models on this machine" if basis == BASIS_TINY else "on this machine"


# --- latency and the constraints -------------------------------------------------------------------------------

def tail_note(t: Tail) -> str:
    """What the candidates' latency_ms is: the modelled mean, or the modelled step x the measured tail."""
    if t.measured is None:
        return "modelled mean step time (no tail measured)"
    if not t.applied:
        return (f"modelled mean step time (the p99/p50 of {t.measured:.2f} measured on {t.where or 'this machine'} "
                f"is not applied to {t.hardware})")
    return f"modelled step x {t.ratio:.2f} (measured p99/p50 of {t.rows} decode rows on {t.where})"


def latency_word(t: Tail) -> str:
    return f"estimated p99 (modelled mean x {t.ratio:.2f})" if t.applied else "modelled mean"


def latency_clause(c: dict, wl: Workload, word: str) -> str:
    return f"{word} {c['latency_ms']:.1f} ms/token vs p99 target {wl.latency_p99_ms:g} ms"


def serving_clause(c: dict, wl: Workload) -> str:
    """The candidate's serving figures beside the workload's TTFT / TPOT limits, in words."""
    s = c["serving"]
    if s["plan"] is None:
        return (f"no plan on {wl.gpus} GPUs holds {s['concurrency']} requests of {wl.prompt}+{wl.gen} tokens "
                f"(KV-limited to {s['max_concurrency']})")
    ttft = f"modelled mean TTFT {s['ttft_ms']:.1f} ms" + (f" vs limit {wl.ttft_ms:g} ms" if wl.ttft_ms else "")
    tpot = f"TPOT {s['tpot_ms']:.2f} ms" + (f" vs limit {wl.tpot_ms:g} ms" if wl.tpot_ms else "")
    return (f"{ttft}, {tpot} at concurrency {s['concurrency']} on {s['plan']} ({s['gpus']} GPUs, "
            f"{s['tokens_per_second_per_gpu']:.0f} tokens/s/GPU)")


def serving_failure(c: dict, wl: Workload) -> str:
    """' (the serving figures)' when the candidate fails a serving constraint, else ''."""
    failed = [v for v in c["violations"] if v in ("concurrency", "ttft", "tpot")]
    return f" ({serving_clause(c, wl)})" if failed and c.get("serving") else ""


def constraint_clauses(c: dict, wl: Workload, latency_word: str = "modelled mean") -> list[str]:
    """A candidate's figure beside each hard constraint, in words; a constraint the workload leaves out (no
    throughput target, no quality floor) is said to be absent, never printed as a number."""
    fit = "fits" if c["fits"] else "DOES NOT FIT"
    out = [latency_clause(c, wl, latency_word),
           f"{c['memory_gb']:.0f} GB per replica of {c['gpus_per_replica']} GPU(s), {fit} (budget "
           f"{wl.memory_budget_gb:.0f} GB)"]
    tput = f"{c['tokens_per_second']:.0f} tokens/s on {wl.gpus} GPUs"
    out.append(f"{tput} vs target {wl.throughput_tokens_per_s:g}" if wl.throughput_tokens_per_s is not None
               else f"{tput}, no throughput target")
    if c.get("serving"):
        out.append(serving_clause(c, wl))
    if wl.quality_floor_b > 0:
        out.append(f"dense-equivalent {c['dense_equivalent_b']:.0f}B vs floor {wl.quality_floor_b:g}B")
    return out


# --- factor rows ---------------------------------------------------------------------------------------------

def vram(d: dict, m: dict, wl: Workload, numbers: dict) -> str:
    def fit(c: dict) -> str:
        return "" if c["fits"] else ", DOES NOT FIT"

    return (f"{m['name']} needs {m['memory_gb']:.0f} GB at batch {wl.batch}{fit(m)} ({m['weights_gb']:.0f} GB of "
            f"weights: all {m['experts']} experts resident, {numbers['moe_total_over_active']}x its active size) vs "
            f"{d['memory_gb']:.0f} GB for {d['name']}{fit(d)}; budget {wl.memory_budget_gb:.0f} GB.")


def bench_flip(bench: BenchEvidence) -> str:
    """The measured and predicted decode-throughput winners of the bench, in words."""
    def one(kind: str) -> str:
        winners = bench.winners.get(kind) or {}
        at = bench.measured_flip_batch if kind == "measured" else bench.predicted_flip_batch
        if at is not None:
            return f"{kind}, {winners.get(str(at), 'the other')} wins from batch {at}"
        first = next(iter(winners.values()), None)
        return f"{kind}, {first} wins at every batch" if first else f"{kind}, no flip"

    return f"throughput winner {one('measured')}; {one('predicted')}"


def throughput(d: dict, m: dict, wl: Workload, flip: dict | None, policy: ChoicePolicy,
               bench: BenchEvidence | None = None, inside_error: bool = False) -> str:
    why = (f"at batch {wl.batch}, {m['name']} {m['tokens_per_second_per_gpu']:.0f} vs {d['name']} "
           f"{d['tokens_per_second_per_gpu']:.0f} tokens/s/GPU (${m['usd_per_million_tokens']:.2f} vs "
           f"${d['usd_per_million_tokens']:.2f} per Mtok)")
    if flip:
        why += f"; the winner flips at batch {flip['batch']} to {flip['to']}" + (
            f" {flip['note']}" if flip.get("note") else "")
    else:
        why += f"; no flip in batch {policy.flip_batches[0]}-{policy.flip_batches[1]}"
    if bench is None:
        return why + " (modelled)."
    why += f" (modelled). Measured {_where(bench.basis)} ({bench.detail}): {bench_flip(bench)}"
    if bench.decode_error is not None:
        why += f", decode prediction error {bench.decode_error:.0%} (median)"
        if inside_error:
            why += ", larger than the modelled gap, so neutral"
    if bench.warnings:
        why += f"; measurement warning: {'; '.join(bench.warnings)}"
    return why + "; frontier figures are modelled."


def task_prior(mix: dict[str, float]) -> str:
    return (f"knowledge + multilingual {knowledge_share(mix):.0%} vs reasoning {mix['reasoning']:.0%} of the mix "
            "(seeds: MoE excels at knowledge-heavy and multilingual work, dense at reasoning-heavy work)")


def task_loss(training: TrainingEvidence, per_domain: dict, delta: float, mix: dict[str, float],
              prior_within: float | None) -> str:
    """The per-domain validation loss fallback; `prior_within`: the gap under which the prior decided."""
    losses = ", ".join(f"{k} {v['dense']:.2f}→{v['moe']:.2f}" for k, v in per_domain.items())
    why = (f"measured {_where(training.basis)} ({training.detail}), validation loss (a loss, not an accuracy: no "
           f"task-type probes in this study) {training.dense.name} → {training.moe.name}: {losses}; weighted by the "
           f"task mix the MoE is {delta:+.3f} nats better; prior: {task_prior(mix)}.")
    if prior_within is not None:
        why += f" The measured gap is within {prior_within:g} nats, so the prior decides."
    return why


def _pct(a: Accuracy) -> str:
    return f"{a.accuracy:.0%} [{a.ci_low:.0%}-{a.ci_high:.0%}]"


VERDICT_WORDS = {"moe": "MoE ahead by {gap:+.0%} [{lo:+.0%}, {hi:+.0%}]",
                 "dense": "dense ahead, MoE {gap:+.0%} [{lo:+.0%}, {hi:+.0%}]",
                 "inside_ci": "MoE {gap:+.0%} [{lo:+.0%}, {hi:+.0%}], inside the interval: not evidence",
                 "floor": "both at the floor (chance {chance:.0%}), not evidence"}


def task_accuracy(task: TaskTypeEvidence, used: dict[str, Comparison], mix: dict[str, float], decisive: list[str],
                  lean: float) -> str:
    """The probe accuracies behind the task-type row: per probe set, the pair read, both models' accuracy with
    interval and n, the difference with its interval, and whether it is evidence."""
    parts = []
    for item_set, c in used.items():
        gap, lo, hi = c.difference
        verdict = VERDICT_WORDS[c.verdict].format(chance=max(c.dense_score.chance, c.moe_score.chance), gap=gap,
                                                  lo=lo, hi=hi)
        if c.verdict in ("moe", "dense") and item_set not in decisive:
            verdict += " (not in the mix)"
        elif item_set not in decisive:
            verdict += f" (prior: {'MoE' if item_set == 'knowledge' else 'dense'})"
        parts.append(f"{item_set}, {c.pair.replace('_', '-')} {c.dense} {_pct(c.dense_score)} vs {c.moe} "
                     f"{_pct(c.moe_score)} (n {c.dense_score.n}/{c.moe_score.n}): {verdict}")
    where = "measured at tiny scale" if task.basis == BASIS_TINY else "measured"
    why = f"{where} ({task.detail}): {'; '.join(parts)}"
    if decisive:
        why += (f"; weighted by the mix (knowledge + multilingual {knowledge_share(mix):.0%}, reasoning "
                f"{mix['reasoning']:.0%}, the prior where nothing was measured): {lean:+.2f}")
    else:
        why += f"; nothing measured is evidence for this mix, so the prior decides: {task_prior(mix)}"
    if task.floor_warnings:
        why += f"; floor warning: {'; '.join(task.floor_warnings)}"
    return why + "."


def training_modelled(d: dict, m: dict, wl: Workload) -> str:
    def fit(c: dict) -> str:
        return "" if c["train_memory_fits"] else " (DOES NOT FIT)"

    return (f"{wl.training} on {wl.train_tokens:.3g} tokens: {m['name']} {m['train_flops']:.3g} FLOPs "
            f"(${m['train_usd']:,.0f}) vs {d['name']} {d['train_flops']:.3g} (${d['train_usd']:,.0f}), 6 x active "
            f"params x tokens; Adam state needs {m['train_memory_gb_per_gpu']:.0f} GB/GPU{fit(m)} vs "
            f"{d['train_memory_gb_per_gpu']:.0f} GB/GPU{fit(d)} over {wl.gpus} GPUs (ZeRO-3)")


def training_measured(tr: TrainingEvidence, modelled: str) -> str:
    dense, moe, target = tr.dense, tr.moe, tr.target_loss
    dt, mt = dense.to_target, moe.to_target
    if dt and mt:
        m_why = (f"to validation loss {target:.3f}: {moe.name} {mt['tokens']:,} tokens, {mt['flops']:.3g} FLOPs, "
                 f"{training_seconds(mt):.1f} s of training vs {dense.name} {dt['tokens']:,} tokens, "
                 f"{dt['flops']:.3g} FLOPs, {training_seconds(dt):.1f} s")
    elif dt or mt:
        m_why = f"only {(dense if dt else moe).name} reached validation loss {target}"
    else:
        dv, mv = dense.final_val.get("mean"), moe.final_val.get("mean")
        m_why = (f"neither reached validation loss {target}; final mean loss {moe.name} "
                 f"{mv if mv is None else round(mv, 3)} vs {dense.name} {dv if dv is None else round(dv, 3)}")
    return (f"measured {_where(tr.basis)} ({tr.detail}; same data, budget, schedule): {m_why}; modelled at "
            f"frontier scale: {modelled}.")


def scale(d: dict, m: dict, policy: ChoicePolicy) -> str:
    return (f"{m['name']} has {m['params_total'] / 1e9:.1f}B total, {m['params_active'] / 1e9:.1f}B active, performing "
            f"like a {m['dense_equivalent_b']:.0f}B dense model by the seeds' heuristic, vs {d['name']} at "
            f"{d['params_total'] / 1e9:.1f}B; MoE's advantage grows with scale (from "
            f"~{policy.scale_moe_from / 1e9:.0f}B total), below {policy.scale_dense_below / 1e9:.0f}B dense is as "
            "cheap and simpler.")


def stability(wl: Workload) -> str:
    if wl.training == "fine-tune":
        return (f"fine-tuning on {wl.train_tokens:.3g} tokens: MoE fine-tuning is less stable (overfitting, router "
                "drift; needs lower learning rates, frozen routers or more data), dense fine-tunes predictably.")
    return "training from scratch: fine-tuning stability does not enter."


# --- the recommendation ----------------------------------------------------------------------------------------

def reason(ch: Choice, wl: Workload, vote: int, flip: dict | None, word: str, policy: ChoicePolicy) -> str:
    """Why the rule picked what it picked (policy.choose), with the figures behind it."""
    mix = wl.task_mix
    training_votes = f", training x{policy.scratch_training_weight}" if wl.training == "scratch" else ""
    tally = f"factor vote {vote:+d} (+ MoE, - dense; batch_throughput x{policy.throughput_weight}{training_votes})"
    pick, first, second = ch.pick, ch.first, ch.second
    if ch.rule == "route":
        note = f" {flip['note']}" if flip.get("note") else ""
        return (f"both meet the constraints and the evidence is split ({tally}); the modelled throughput winner "
                f"flips from {flip['from']} to {flip['to']} at batch {flip['batch']}{note}, inside the workload's "
                f"batch range {min(wl.batches)}-{max(wl.batches)}: route batches below {flip['batch']} to "
                f"{flip['from']}, above to {flip['to']}.")
    if ch.rule == "cascade":
        return (f"both meet the constraints and the evidence is split ({tally}) on a mixed workload "
                f"(reasoning {mix['reasoning']:.0%}, knowledge + multilingual {knowledge_share(mix):.0%}): "
                f"{first['name']} (${first['usd_per_million_tokens']:.2f}/Mtok) answers first and escalates "
                f"to {second['name']} (${second['usd_per_million_tokens']:.2f}/Mtok).")
    if ch.rule == "vote":
        serving = f"; {serving_clause(pick, wl)}" if pick.get("serving") else ""
        return (f"both kinds meet the constraints; {tally} picks {pick['name']}: "
                f"${pick['usd_per_million_tokens']:.2f} vs ${second['usd_per_million_tokens']:.2f} per Mtok, "
                f"{pick['tokens_per_second_per_gpu']:.0f} vs {second['tokens_per_second_per_gpu']:.0f} "
                f"tokens/s/GPU at batch {wl.batch}, {latency_clause(pick, wl, word)}{serving}.")
    if ch.rule == "backbone_head":
        return (f"only dense fits: {second['name']} needs {second['memory_gb']:.0f} GB against a "
                f"{wl.memory_budget_gb:.0f} GB budget, but the mix is knowledge-heavy ({knowledge_share(mix):.0%} "
                f"knowledge + multilingual): keep {pick['name']} as the backbone and turn its last layers into "
                "experts (moelab.spec.transform.with_layout(..., 'moe_head', n)).")
    clauses = "; ".join(constraint_clauses(pick, wl, word))
    if ch.rule == "only_feasible":
        why_not = (f"; the best {second['kind']} ({second['name']}) fails on {', '.join(second['violations'])}"
                   f"{serving_failure(second, wl)}" if second
                   else f"; no {'dense' if pick['kind'] == 'moe' else 'MoE'} candidate was given")
        return (f"{pick['name']} is the cheapest candidate meeting every constraint "
                f"(${pick['usd_per_million_tokens']:.2f}/Mtok; {clauses}){why_not}.")
    return (f"no candidate meets every constraint; {pick['name']} comes closest, failing on "
            f"{', '.join(pick['violations'])} ({clauses}).")


def hybrid(h: dict) -> str:
    """The hybrid's fleet (candidates.fleet) and the measured curve it takes its escalation rate from."""
    e = h["escalation_rate"]
    first = "cascade: the dense answers every query" if h["policy"] == "cascade" else "route: each query to one"
    fit = "fits" if h["fits"] else "DOES NOT FIT"
    out = (f" Both deployed ({first}; modelled): one replica each, {h['gpus']} of {h['gpus_available']} GPUs, "
           f"{h['memory_gb']:.0f} GB vs budget {h['memory_budget_gb']:.0f} GB, {fit}; ")
    if e is None:
        out += (f"$ per Mtok = {h['formula']} with e the share of queries the MoE answers (not measured: no "
                f"hybrid in the evidence)")
        if h["breakeven_escalation_rate"] is not None:
            out += f"; it costs as much as the MoE alone at e = {h['breakeven_escalation_rate']:.0%}"
    else:
        out += (f"${h['usd_per_million_tokens']:.2f}/Mtok at the measured escalation rate {e:.0%} ({h['formula']}: "
                f"dense ${h['dense_usd_per_mtok']:.2f}, MoE ${h['moe_usd_per_mtok']:.2f}), "
                f"{h['latency_ms_mean']:.1f} ms/token on average ({h['latency_ms_mean_label']})")
    out += f"; {h['latency_ms_tail_label']}: {h['latency_ms_tail']:.1f} ms/token"
    m = h.get("measured")
    if m:
        def one(p: dict) -> str:
            return (f"{p['accuracy']:.0%} [{p['ci_low']:.0%}-{p['ci_high']:.0%}]"
                    + (f", {p['flops_per_query']:.3g} FLOPs/query" if p.get("flops_per_query") is not None else "")
                    + (f", {p['latency_s_mean'] * 1e3:.1f} ms/query" if p.get("latency_s_mean") is not None else ""))

        out += (f". {m['basis'][:1].upper()}{m['basis'][1:]} (engine {m['engine']}, {m['items']} items): "
                f"{m['dense']['name']} alone {one(m['dense'])}; {m['moe']['name']} alone {one(m['moe'])}")
        for policy in ("cascade", "route"):
            p = m.get(policy)
            if p:
                at = "" if p["threshold"] is None else f" at threshold {p['threshold']:g}"
                out += f"; best {policy}{at} {one(p)}, the MoE answering {p['escalation_rate']:.0%}"
    return out + "."


# --- the flips -------------------------------------------------------------------------------------------------

def label(rec: dict) -> str:
    """A recommendation in one phrase, e.g. "moe (mixtral-8x7b)": what a flip goes from and to."""
    return f"{rec['choice']} ({rec['model']}{'' if rec['feasible'] else NOT_FEASIBLE})"


def flip_text(f: dict, wl: Workload) -> str:
    """A flip of one workload input (flips.flips's rows) in words."""
    key, side, v, to = f["input"], f["direction"], f["threshold"], f["to"]
    below, above = side == "below", side == "above"
    if key == "latency_p99_ms":
        return f"p99 target {'below' if below else 'of'} {round(v, 1):g} ms/token {'' if below else 'or more '}→ {to}"
    if key == "memory_budget_gb":
        return f"memory budget {'below' if below else 'of'} {v:.0f} GB {'' if below else 'or more '}→ {to}"
    if key == "throughput_tokens_per_s":
        return f"throughput target {'above' if above else 'of at most'} {v:.0f} tokens/s on {wl.gpus} GPUs → {to}"
    if key == "quality_floor_b":
        return f"quality floor {'above' if above else 'at or below'} {v:.0f}B dense-equivalent → {to}"
    if key == "reasoning_share":
        if v is None:
            return "no task mix (reasoning 0-100%, other tasks in proportion) changes the recommendation"
        return (f"reasoning share of {v:.0%} (now {wl.task_mix['reasoning']:.0%}, other tasks in proportion) "
                f"→ {to}")
    if key in ("ttft_ms", "tpot_ms"):
        return (f"{'TTFT' if key == 'ttft_ms' else 'TPOT'} limit {'below' if below else 'of'} {v:.3g} ms "
                f"{'' if below else 'or more '}at concurrency {wl.serving_concurrency} → {to}")
    if key == "batch":
        if v is None:
            return f"no typical batch in {min(wl.batches)}-{max(wl.batches)} changes the recommendation"
        return f"typical batch {v} (now {wl.batch}) → {to}"
    raise ValueError(f"no wording for a flip of {key!r}")


def winner_flip_text(flip: dict | None, best: dict, winner: str, policy: ChoicePolicy) -> str:
    """The batch at which the modelled throughput winner between the best dense and the best MoE flips."""
    if flip:
        kind = "MoE" if flip["to"] == best["moe"] else "dense"
        return (f"{kind} ({flip['to']}) wins modelled decode tokens/s per GPU above batch {flip['batch'] - 1} "
                f"({flip['from']} below)" + (f" {flip['note']}" if flip.get("note") else ""))
    return (f"no throughput flip in batch {policy.flip_batches[0]}-{policy.flip_batches[1]}: {winner} wins modelled "
            f"tokens/s per GPU at every batch")
