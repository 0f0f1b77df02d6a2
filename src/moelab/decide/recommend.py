"""Dense or MoE for one workload: candidate figures from the engine, the seeds' factor table, a choice, and
the thresholds that would flip it.

How the choice is made (simple on purpose, every step citing numbers):

1. Figures. Each candidate is modelled by the cost engine on the workload's hardware, dtype, batch and
   context, served as replicas of the fewest GPUs (a power of two, up to the workload's `gpus`) that hold it
   and meet the p99 per-token latency target; replicas fill the GPUs. Modelled step times are means, and a
   candidate's `latency_ms` is that modelled mean held against the p99 target (`latency_label` says so); with
   bench evidence from the workload's own hardware they are scaled by the measured p99/p50 ratio of decode
   steps (the model has no tail), and only then is `latency_ms` an estimate of a p99.
2. Hard constraints. A candidate is feasible when it fits the memory budget, meets the p99 target at the
   typical batch, sustains the throughput target on the workload's GPUs, and is at least the quality floor
   (the seeds' dense equivalent total/(E^0.44/k^0.63), in billions). With the workload's serving keys
   (`concurrency`, `ttft_ms`, `tpot_ms`) it must also hold that many requests in flight on the workload's GPUs
   and, on its best fitting plan there (cost.frontier.choose over cost.serving), have a modelled mean TTFT and
   TPOT at or under the limits; violations "concurrency", "ttft", "tpot", each reason citing the figures.
   The best dense and the best MoE are the cheapest feasible of each kind ($ per million output tokens at the
   typical batch).
3. One kind feasible: that kind. Except: when MoE candidates fail on memory alone and the task mix is
   knowledge-heavy (knowledge + multilingual >= 50%), "hybrid: dense backbone + MoE head" (MoE capacity
   where knowledge lives, at a memory cost the budget allows). None feasible: the candidate with the fewest
   violations (then the cheapest), reported as infeasible.
4. Both feasible: the factor table votes (+1 MoE, -1 dense, 0 neutral), batch_throughput counting twice (at a
   fixed $/GPU-hour, tokens/s per GPU *is* cost per token) and training twice from scratch (pretraining
   compute dominates). Split evidence picks a hybrid: a throughput winner that flips inside the workload's
   batch sweep with a vote within +-2 → "hybrid: route between dense and MoE" (small batches to one, large
   to the other); a vote within +-1 on a mix with both reasoning >= 30% and knowledge + multilingual >= 30%
   → "hybrid: cascade" (the cheaper model answers first, the other takes what it escalates). Otherwise
   the sign of the vote (a tie goes to the cheaper).
5. Flips: the decision is re-run with one input moved at a time (p99 target, memory budget, throughput
   target, quality floor, reasoning share, typical batch) and the nearest value that changes it is reported;
   plus the batch where the throughput winner between the best dense and the best MoE flips.

Factor rows follow the seeds' table (VRAM, batch and throughput, task type, training, scale, fine-tuning
stability). Each row's `basis` is one of BASES: "modelled" (the engine), "measured" (measured at the scale of
the candidates), "measured at tiny scale" (moelab study's tiny models, trained and benchmarked on this machine:
a measurement, but of models thousands of times smaller than the candidates), "modelled + measured at tiny
scale" (a modelled figure checked against such a measurement) or "prior" (the seeds' guidance); rows measured
at tiny scale also carry `basis_detail`, e.g. "CPU, 24 steps, 1.57M-3.94M params".
"""

from __future__ import annotations

import statistics
from dataclasses import replace

from moelab import format as fmt
from moelab.cost.compare import compare
from moelab.cost.dtypes import kv_dtype_for
from moelab.cost.equivalent import heuristic_dense_equivalent
from moelab.cost.estimate import TrainingPlan, estimate
from moelab.cost.frontier import choose, serving_points
from moelab.cost.params import count_params
from moelab.cost.roofline import Workload as CostWorkload
from moelab.decide.workload import Workload
from moelab.spec.hardware import HardwareSpec, load_hardware
from moelab.spec.model import ModelSpec
from moelab.spec.presets import load_model
from moelab.train.clocks import training_seconds

CHOICES = ("dense", "moe", "hybrid: dense backbone + MoE head", "hybrid: route between dense and MoE",
           "hybrid: cascade")
FACTORS = ("vram", "batch_throughput", "task_type", "training", "scale", "fine_tuning_stability")
SCALE_MOE_FROM = 30e9  # total parameters from which the seeds' "MoE pays off at scale" applies
SCALE_DENSE_BELOW = 10e9  # below it, dense is simpler and as cheap
MARGIN = 0.10  # a modelled gap under 10% is "neutral"
FLIP_BATCHES = (1, 4096)  # the range searched for the throughput flip

# The basis of every factor row (and of the report's badges): a small closed vocabulary.
BASIS_MODELLED = "modelled"
BASIS_MEASURED = "measured"
BASIS_TINY = "measured at tiny scale"
BASIS_MODELLED_TINY = "modelled + measured at tiny scale"
BASIS_PRIOR = "prior"
BASES = (BASIS_MODELLED, BASIS_MEASURED, BASIS_TINY, BASIS_MODELLED_TINY, BASIS_PRIOR)
TINY_PARAMS = 1e9  # models measured below this many parameters are "tiny" next to the frontier candidates
LATENCY_MEAN = "modelled mean per-token latency"
LATENCY_SCALED = "modelled mean x measured p99/p50"


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return fmt.count(lo) if lo == hi else f"{fmt.count(lo)}-{fmt.count(hi)}"


def tiny_detail(device: str | None, params: list[float], steps: int | None = None) -> str:
    """Where a measurement at tiny scale comes from, e.g. "CPU, 24 steps, 1.57M-3.94M params"."""
    parts = [(device or "cpu").upper() if (device or "cpu") in ("cpu", "cuda") else str(device)]
    if steps:
        parts.append(f"{steps} steps")
    if params:
        parts.append(f"{_span(params)} params")
    return ", ".join(parts)


def training_basis(training: dict | None) -> tuple[str, str]:
    """The basis of measurements from a training comparison, and its detail (device, steps, parameters)."""
    tr = training or {}
    params = [r["params_total"] for r in tr.get("rows") or [] if r.get("params_total")]
    cfg = tr.get("config") or {}
    basis = BASIS_TINY if not params or max(params) < TINY_PARAMS else BASIS_MEASURED
    return basis, tiny_detail(cfg.get("device", "cpu"), params, cfg.get("steps"))


def bench_basis(bench: dict | None) -> tuple[str, str]:
    """The basis of a bench's measurements, and its detail (device, parameters, warnings)."""
    b = bench or {}
    params = [m["params_total"] for m in b.get("models") or [] if m.get("params_total")]
    basis = BASIS_TINY if not params or max(params) < TINY_PARAMS else BASIS_MEASURED
    return basis, tiny_detail(b.get("device"), params)


def _gb(x: float) -> float:
    return round(x / 1e9, 2)


def _sizes(gpus: int) -> list[int]:
    return sorted({1 << i for i in range(gpus.bit_length()) if 1 << i <= gpus} | {gpus})


def _cost_workload(wl: Workload, batch: int | None = None) -> CostWorkload:
    kv = kv_dtype_for(wl.dtype)
    return CostWorkload(batch=batch or wl.batch, prompt=wl.prompt, gen=wl.gen, dtype=wl.dtype, kv_dtype=kv)


def _deployment(spec: ModelSpec, hw: HardwareSpec, wl: Workload, g: int, batch: int, plan: TrainingPlan) -> dict:
    e = estimate(spec, hw, _cost_workload(wl, batch), gpus=g, training=plan, derived=False)
    m, d = e.memory, e.decode
    return {"gpus": g, "plan": e.parallel.plan, "fits_gpus": bool(m.fits),
            "memory_bytes": m.total_bytes, "weights_bytes": m.weights_bytes, "kv_bytes": m.kv_cache_bytes,
            "step_seconds": d.seconds, "tokens_per_second": e.tokens_per_second,
            "tokens_per_second_per_gpu": e.tokens_per_second_per_gpu,
            "usd_per_million_tokens": e.cost.usd_per_million_tokens, "bound": d.bound,
            "training": e.training.to_dict()}


def candidate_figures(name: str, hw: HardwareSpec, wl: Workload, batch: int | None = None) -> dict:
    """Everything the decision needs about one candidate, for every replica size up to the workload's GPUs."""
    spec = load_model(name)
    p = count_params(spec)
    batch = batch or wl.batch
    plan = TrainingPlan(tokens=wl.train_tokens, zero=3)
    deployments = [_deployment(spec, hw, wl, g, batch, plan) for g in _sizes(wl.gpus)]
    return {
        "name": spec.name, "path": name, "kind": "moe" if spec.is_moe else "dense", "family": spec.family,
        "params_total": p.total, "params_active": p.active,
        "experts": spec.moe.n_experts if spec.is_moe else 0, "top_k": spec.moe.top_k if spec.is_moe else 0,
        "dense_equivalent": heuristic_dense_equivalent(spec), "batch": batch, "deployments": deployments,
        "serving": _serving_points(name, spec, hw, wl),
    }


def _max_batch(spec: ModelSpec, hw: HardwareSpec, wl: Workload, g: int, tail: float, budget: float) -> int:
    """Largest decode batch on a replica of g GPUs that fits memory and meets the p99 target (0: none)."""
    def ok(b: int) -> bool:
        e = estimate(spec, hw, _cost_workload(wl, b), gpus=g, derived=False)
        return (e.memory.fits and e.memory.total_bytes <= budget
                and e.decode.seconds * tail * 1e3 <= wl.latency_p99_ms)

    if not ok(1):
        return 0
    lo, hi = 1, 2
    while ok(hi):
        lo, hi = hi, hi * 2
        if hi > 1 << 17:
            return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def assess(fig: dict, wl: Workload, tail: float) -> dict:
    """The candidate on this workload: chosen replica size, constraint checks, figures at the typical batch."""
    budget = wl.memory_budget_gb * 1e9
    fitting = [d for d in fig["deployments"] if d["fits_gpus"] and d["memory_bytes"] <= budget]
    fast = [d for d in fitting if d["step_seconds"] * tail * 1e3 <= wl.latency_p99_ms]
    if fast:
        d = fast[0]
    elif fitting:
        d = min(fitting, key=lambda x: x["step_seconds"])
    else:
        d = fig["deployments"][-1]
    replicas = max(1, wl.gpus // d["gpus"])
    fleet = replicas * d["tokens_per_second"]
    trained = fig["deployments"][-1]["training"]  # training (fine-tuning) spreads over all the workload's GPUs
    fits = bool(fitting)
    # latency is judged on its own: a model that fits nowhere still "meets latency" if some replica size would
    meets_latency = bool(fast) if fitting else any(x["step_seconds"] * tail * 1e3 <= wl.latency_p99_ms
                                                   for x in fig["deployments"])
    meets_tput = wl.throughput_tokens_per_s is None or fleet >= wl.throughput_tokens_per_s
    meets_quality = fig["dense_equivalent"] / 1e9 >= wl.quality_floor_b
    violations = [v for v, ok in (("memory", fits), ("latency", meets_latency), ("throughput", meets_tput),
                                  ("quality", meets_quality)) if not ok]
    serving = _serving_check(fig.get("serving"), wl)
    violations += [v for v in ("concurrency", "ttft", "tpot") if serving and serving[f"meets_{v}"] is False]
    return {
        "name": fig["name"], "kind": fig["kind"], "family": fig["family"],
        "params_total": fig["params_total"], "params_active": fig["params_active"],
        "experts": fig["experts"], "top_k": fig["top_k"],
        "dense_equivalent_b": round(fig["dense_equivalent"] / 1e9, 2),
        "weights_gb": _gb(d["weights_bytes"]), "kv_gb": _gb(d["kv_bytes"]), "memory_gb": _gb(d["memory_bytes"]),
        "gpus_per_replica": d["gpus"], "replicas": replicas, "plan": d["plan"], "bound": d["bound"],
        "latency_ms": round(d["step_seconds"] * tail * 1e3, 3), "step_ms": round(d["step_seconds"] * 1e3, 3),
        "tokens_per_second": round(fleet, 1), "tokens_per_second_per_gpu": round(d["tokens_per_second_per_gpu"], 1),
        "usd_per_million_tokens": round(d["usd_per_million_tokens"], 4),
        "train_flops": trained["flops"], "train_usd": round(trained["usd"], 2),
        "train_gpu_hours": round(trained["gpu_hours"], 1),
        "train_memory_gb_per_gpu": _gb(trained["memory"]["total_bytes"]),
        "train_memory_fits": bool(trained["memory"]["fits"]),
        "fits": fits, "meets_latency": meets_latency, "meets_throughput": meets_tput,
        "meets_quality": meets_quality, "feasible": not violations, "violations": violations, "serving": serving,
    }


# --- serving at a concurrency (workload keys concurrency, ttft_ms, tpot_ms) ---------------------------------

_SERVING_CACHE: dict[tuple, tuple[HardwareSpec, list]] = {}


def _serving_points(name: str, spec: ModelSpec, hw: HardwareSpec, wl: Workload) -> list | None:
    """cost.serving at the workload's serving concurrency on every plan for its GPUs (cost.frontier's plans);
    None when the workload has no serving key. Cached: the batch what-ifs ask again at the same concurrency."""
    c = wl.serving_concurrency
    if c is None:
        return None
    kv = _cost_workload(wl).kv_dtype
    key = (name, id(hw), wl.gpus, wl.prompt, wl.gen, wl.dtype, kv, c)
    hit = _SERVING_CACHE.get(key)
    if hit is not None and hit[0] is hw:
        return hit[1]
    points = serving_points(spec, hw, wl.gpus, wl.prompt, wl.gen, wl.dtype, kv, [c])
    if len(_SERVING_CACHE) > 256:
        _SERVING_CACHE.clear()
    _SERVING_CACHE[key] = (hw, points)
    return points


def _serving_check(points: list | None, wl: Workload) -> dict | None:
    """The candidate at the serving concurrency on its best fitting plan (cost.frontier.choose under the
    workload's limits): modelled mean TTFT and TPOT against ttft_ms / tpot_ms, and whether any plan holds the
    concurrency at all (meets_ttft / meets_tpot are None then: nothing to judge)."""
    if points is None:
        return None
    c = wl.serving_concurrency
    sp = choose(points, wl.ttft_ms, wl.tpot_ms)
    if sp is None:
        return {"concurrency": c, "gpus": wl.gpus, "plan": None, "max_concurrency": max(
            (p.max_concurrency for p in points), default=0), "meets_concurrency": False, "meets_ttft": None,
            "meets_tpot": None, "basis": BASIS_MODELLED}
    return {"concurrency": c, "gpus": sp.gpus, "plan": sp.plan, "ttft_ms": sp.ttft_ms, "tpot_ms": sp.tpot_ms,
            "tokens_per_second_per_gpu": sp.output_tokens_per_second_per_gpu,
            "tokens_per_second_per_user": sp.output_tokens_per_second_per_user,
            "requests_per_second": sp.requests_per_second, "max_concurrency": sp.max_concurrency,
            "meets_concurrency": True, "meets_ttft": wl.ttft_ms is None or sp.ttft_ms <= wl.ttft_ms,
            "meets_tpot": wl.tpot_ms is None or sp.tpot_ms <= wl.tpot_ms, "basis": BASIS_MODELLED}


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


def _serving_failure(c: dict, wl: Workload) -> str:
    """' (the serving figures)' when the candidate fails a serving constraint, else ''."""
    failed = [v for v in c["violations"] if v in ("concurrency", "ttft", "tpot")]
    return f" ({serving_clause(c, wl)})" if failed and c.get("serving") else ""


# --- evidence ----------------------------------------------------------------------------------------------

def _tail(evidence: dict | None, hardware: str) -> tuple[float, str]:
    """p99/p50 of measured decode steps (median over bench rows) when the bench ran on the workload's own
    hardware; a tail measured on another machine (the study's CPU) says nothing about a GPU server's, so
    there the modelled mean step time stands."""
    bench = (evidence or {}).get("bench") or {}
    rows = [r for r in bench.get("rows", []) if r.get("phase") == "decode" and r.get("p99_s") and r.get("p50_s")]
    if not rows:
        return 1.0, "modelled mean step time (no tail measured)"
    ratio = max(1.0, statistics.median(r["p99_s"] / r["p50_s"] for r in rows))
    where = (bench.get("hardware") or {}).get("name")
    if where != hardware:
        return 1.0, (f"modelled mean step time (the p99/p50 of {ratio:.2f} measured on {where or 'this machine'} "
                     f"is not applied to {hardware})")
    return ratio, f"modelled step x {ratio:.2f} (measured p99/p50 of {len(rows)} decode rows on {where})"


def _training_pair(evidence: dict | None) -> tuple[dict, dict] | None:
    tr = (evidence or {}).get("training") or {}
    pairs, rows = tr.get("pairs") or {}, {r["model"]: r for r in tr.get("rows") or [] if "model" in r}
    dense, moe = rows.get(pairs.get("dense", "")), rows.get(pairs.get("moe", ""))
    return (dense, moe) if dense and moe else None


DOMAIN_TASK = {"math": "reasoning", "prose": "knowledge", "code": "code", "json": "code"}


# --- factors -----------------------------------------------------------------------------------------------

def _favour(moe_better: float, margin: float = MARGIN) -> str:
    """'moe' when the MoE is better by more than `margin` (a relative advantage), 'dense' when worse."""
    return "moe" if moe_better > margin else "dense" if moe_better < -margin else "neutral"


def _factor(name: str, favours: str, numbers: dict, basis: str, why: str, detail: str = "") -> dict:
    assert basis in BASES, basis
    out = {"factor": name, "favours": favours, "numbers": numbers, "basis": basis, "why": why}
    if detail:
        out["basis_detail"] = detail
    return out


def basis_text(factor: dict) -> str:
    """A factor's basis as shown to a reader: "measured at tiny scale (CPU, 24 steps, 1.57M-3.94M params)"."""
    detail = factor.get("basis_detail")
    return f"{factor['basis']} ({detail})" if detail else factor["basis"]


def _vram(d: dict, m: dict, wl: Workload) -> dict:
    numbers = {"dense": d["name"], "moe": m["name"], "dense_memory_gb": d["memory_gb"], "moe_memory_gb": m["memory_gb"],
               "dense_weights_gb": d["weights_gb"], "moe_weights_gb": m["weights_gb"],
               "moe_total_over_active": round(m["params_total"] / m["params_active"], 2),
               "budget_gb": round(wl.memory_budget_gb, 1), "batch": wl.batch}
    if d["fits"] != m["fits"]:
        favours = "dense" if d["fits"] else "moe"
    else:
        favours = _favour(d["memory_gb"] / m["memory_gb"] - 1)
    def fit(c: dict) -> str:
        return "" if c["fits"] else ", DOES NOT FIT"

    why = (f"{m['name']} needs {m['memory_gb']:.0f} GB at batch {wl.batch}{fit(m)} ({m['weights_gb']:.0f} GB of "
           f"weights: all {m['experts']} experts resident, {numbers['moe_total_over_active']}x its active size) vs "
           f"{d['memory_gb']:.0f} GB for {d['name']}{fit(d)}; budget {wl.memory_budget_gb:.0f} GB.")
    return _factor("vram", favours, numbers, BASIS_MODELLED, why)


def _bench_flip(flip: dict) -> str:
    """The measured and predicted decode-throughput winners of the bench, in words."""
    def one(kind: str) -> str:
        winners = flip.get(f"{kind}_winner_by_batch") or {}
        at = flip.get(f"{kind}_batch")
        if at is not None:
            return f"{kind}, {winners.get(str(at), 'the other')} wins from batch {at}"
        first = next(iter(winners.values()), None)
        return f"{kind}, {first} wins at every batch" if first else f"{kind}, no flip"

    return f"throughput winner {one('measured')}; {one('predicted')}"


def _throughput(d: dict, m: dict, wl: Workload, flip: dict | None, evidence: dict | None) -> dict:
    ratio = m["tokens_per_second_per_gpu"] / d["tokens_per_second_per_gpu"]
    numbers = {"batch": wl.batch, "dense_tokens_per_s_per_gpu": d["tokens_per_second_per_gpu"],
               "moe_tokens_per_s_per_gpu": m["tokens_per_second_per_gpu"], "moe_over_dense": round(ratio, 3),
               "dense_usd_per_mtok": d["usd_per_million_tokens"], "moe_usd_per_mtok": m["usd_per_million_tokens"],
               "flip_batch": flip["batch"] if flip else None, "flip_to": flip["to"] if flip else None}
    favours = _favour(ratio - 1)
    why = (f"at batch {wl.batch}, {m['name']} {m['tokens_per_second_per_gpu']:.0f} vs {d['name']} "
           f"{d['tokens_per_second_per_gpu']:.0f} tokens/s/GPU (${m['usd_per_million_tokens']:.2f} vs "
           f"${d['usd_per_million_tokens']:.2f} per Mtok)")
    if flip:
        why += f"; the winner flips at batch {flip['batch']} to {flip['to']}" + (
            f" {flip['note']}" if flip.get("note") else "")
    else:
        why += f"; no flip in batch {FLIP_BATCHES[0]}-{FLIP_BATCHES[1]}"
    numbers["flip_gpus_changed"] = bool(flip and flip.get("gpus_changed"))
    bench = (evidence or {}).get("bench") or {}
    if not bench.get("rows"):
        return _factor("batch_throughput", favours, numbers, BASIS_MODELLED, why + " (modelled).")
    err = (bench.get("summary") or {}).get("decode", {}).get("median_abs_rel_error")
    bflip = bench.get("flip") or {}
    warnings = list(bench.get("warnings") or [])
    numbers.update(measured_flip_batch=bflip.get("measured_batch"), predicted_flip_batch=bflip.get("predicted_batch"),
                   decode_median_abs_rel_error=err, measured_on=bench.get("device", "this machine"),
                   measurement_warnings=warnings)
    measured_basis, detail = bench_basis(bench)
    scale = "on tiny models on this machine" if measured_basis == BASIS_TINY else "on this machine"
    why += f" (modelled). Measured {scale} ({detail}): {_bench_flip(bflip)}"
    if err is not None:
        why += f", decode prediction error {err:.0%} (median)"
        if abs(ratio - 1) < err:
            favours = "neutral"
            why += ", larger than the modelled gap, so neutral"
    if warnings:
        why += f"; measurement warning: {'; '.join(warnings)}"
    basis = BASIS_MODELLED_TINY if measured_basis == BASIS_TINY else BASIS_MODELLED
    return _factor("batch_throughput", favours, numbers, basis, why + "; frontier figures are modelled.", detail)


def _task_type(wl: Workload, evidence: dict | None) -> dict:
    mix = wl.task_mix
    lean = mix["knowledge"] + mix["multilingual"] - mix["reasoning"]
    numbers = {f"{k}_share": round(v, 3) for k, v in mix.items()} | {"knowledge_multilingual_minus_reasoning":
                                                                      round(lean, 3)}
    prior_favours = "moe" if lean > MARGIN else "dense" if lean < -MARGIN else "neutral"
    prior_why = (f"knowledge + multilingual {mix['knowledge'] + mix['multilingual']:.0%} vs reasoning "
                 f"{mix['reasoning']:.0%} of the mix (seeds: MoE excels at knowledge-heavy and multilingual work, "
                 "dense at reasoning-heavy work)")
    pair = _training_pair(evidence)
    if not pair or not pair[0].get("final_val") or not pair[1].get("final_val"):
        return _factor("task_type", prior_favours, numbers, BASIS_PRIOR, prior_why + ".")
    dense, moe = pair
    weighted, per_domain, weight = 0.0, {}, 0.0
    for domain, dl in dense["final_val"].items():
        ml = moe["final_val"].get(domain)
        if domain in ("mean", "dense") or not isinstance(dl, (int, float)) or not isinstance(ml, (int, float)):
            continue
        per_domain[domain] = {"dense": round(dl, 4), "moe": round(ml, 4)}
        share = mix.get(DOMAIN_TASK.get(domain, ""), 0.0)
        weighted += share * (dl - ml)
        weight += share
    delta = weighted / weight if weight else 0.0
    numbers.update(measured_val_loss=per_domain, measured_weighted_loss_gap=round(delta, 4),
                   dense_model=dense["model"], moe_model=moe["model"])
    favours = "moe" if delta > 0.01 else "dense" if delta < -0.01 else prior_favours
    basis, detail = training_basis((evidence or {}).get("training"))
    best = ", ".join(f"{k} {v['dense']:.2f}→{v['moe']:.2f}" for k, v in per_domain.items())
    scale = "on tiny models on this machine" if basis == BASIS_TINY else "on this machine"
    why = (f"measured {scale} ({detail}), validation loss {dense['model']} → {moe['model']}: {best}; "
           f"weighted by the task mix the MoE is {delta:+.3f} nats better; prior: {prior_why}.")
    if favours == prior_favours and abs(delta) <= 0.01:
        basis, detail = BASIS_PRIOR, ""
        why += " The measured gap is within 0.01 nats, so the prior decides."
    return _factor("task_type", favours, numbers, basis, why, detail)


def _training(d: dict, m: dict, wl: Workload, evidence: dict | None) -> dict:
    numbers = {"mode": wl.training, "tokens": wl.train_tokens, "dense_flops": d["train_flops"],
               "moe_flops": m["train_flops"], "dense_usd": d["train_usd"], "moe_usd": m["train_usd"],
               "dense_memory_gb_per_gpu": d["train_memory_gb_per_gpu"], "moe_memory_gb_per_gpu":
               m["train_memory_gb_per_gpu"]}
    numbers.update(dense_train_memory_fits=d["train_memory_fits"], moe_train_memory_fits=m["train_memory_fits"])
    favours = _favour(d["train_flops"] / m["train_flops"] - 1)

    def fit(c: dict) -> str:
        return "" if c["train_memory_fits"] else " (DOES NOT FIT)"

    why = (f"{wl.training} on {wl.train_tokens:.3g} tokens: {m['name']} {m['train_flops']:.3g} FLOPs "
           f"(${m['train_usd']:,.0f}) vs {d['name']} {d['train_flops']:.3g} (${d['train_usd']:,.0f}), 6 x active "
           f"params x tokens; Adam state needs {m['train_memory_gb_per_gpu']:.0f} GB/GPU{fit(m)} vs "
           f"{d['train_memory_gb_per_gpu']:.0f} GB/GPU{fit(d)} over {wl.gpus} GPUs (ZeRO-3)")
    pair = _training_pair(evidence)
    if not pair:
        return _factor("training", favours, numbers, BASIS_MODELLED, why + ".")
    dense, moe = pair
    dt, mt = dense.get("to_target"), moe.get("to_target")
    target = ((evidence or {}).get("training") or {}).get("target_loss")
    numbers.update(measured_target_loss=target, measured_dense_to_target=dt, measured_moe_to_target=mt,
                   measured_dense_final_val=(dense.get("final_val") or {}).get("mean"),
                   measured_moe_final_val=(moe.get("final_val") or {}).get("mean"))
    if dt and mt:
        favours = _favour(dt["flops"] / mt["flops"] - 1)
        m_why = (f"to validation loss {target:.3f}: {moe['model']} {mt['tokens']:,} tokens, {mt['flops']:.3g} FLOPs, "
                 f"{training_seconds(mt):.1f} s of training vs {dense['model']} {dt['tokens']:,} tokens, "
                 f"{dt['flops']:.3g} FLOPs, {training_seconds(dt):.1f} s")
    elif dt or mt:
        favours = "dense" if dt else "moe"
        winner = dense if dt else moe
        m_why = f"only {winner['model']} reached validation loss {target}"
    else:
        dv, mv = numbers["measured_dense_final_val"], numbers["measured_moe_final_val"]
        favours = "moe" if mv is not None and dv is not None and mv < dv - 0.01 else \
            "dense" if mv is not None and dv is not None and dv < mv - 0.01 else favours
        m_why = (f"neither reached validation loss {target}; final mean loss {moe['model']} "
                 f"{mv if mv is None else round(mv, 3)} vs {dense['model']} {dv if dv is None else round(dv, 3)}")
    basis, detail = training_basis((evidence or {}).get("training"))
    scale = "on tiny models on this machine" if basis == BASIS_TINY else "on this machine"
    return _factor("training", favours, numbers, basis,
                   f"measured {scale} ({detail}; same data, budget, schedule): {m_why}; modelled at "
                   f"frontier scale: {why}.", detail)


def _scale(d: dict, m: dict) -> dict:
    numbers = {"moe": m["name"], "moe_total": m["params_total"], "moe_active": m["params_active"],
               "moe_dense_equivalent_b": m["dense_equivalent_b"], "dense": d["name"], "dense_total": d["params_total"],
               "moe_from": SCALE_MOE_FROM, "dense_below": SCALE_DENSE_BELOW}
    total = m["params_total"]
    favours = "moe" if total >= SCALE_MOE_FROM else "dense" if total < SCALE_DENSE_BELOW else "neutral"
    why = (f"{m['name']} has {total / 1e9:.1f}B total, {m['params_active'] / 1e9:.1f}B active, performing like a "
           f"{m['dense_equivalent_b']:.0f}B dense model by the seeds' heuristic, vs {d['name']} at "
           f"{d['params_total'] / 1e9:.1f}B; MoE's advantage grows with scale (from ~{SCALE_MOE_FROM / 1e9:.0f}B "
           f"total), below {SCALE_DENSE_BELOW / 1e9:.0f}B dense is as cheap and simpler.")
    return _factor("scale", favours, numbers, BASIS_PRIOR, why)


def _stability(wl: Workload) -> dict:
    if wl.training == "fine-tune":
        why = (f"fine-tuning on {wl.train_tokens:.3g} tokens: MoE fine-tuning is less stable (overfitting, router "
               "drift; needs lower learning rates, frozen routers or more data), dense fine-tunes predictably.")
        return _factor("fine_tuning_stability", "dense", {"mode": wl.training, "tokens": wl.train_tokens},
                       BASIS_PRIOR, why)
    return _factor("fine_tuning_stability", "neutral", {"mode": wl.training, "tokens": wl.train_tokens}, BASIS_PRIOR,
                   "training from scratch: fine-tuning stability does not enter.")


# --- the decision ------------------------------------------------------------------------------------------

class _Context:
    """Candidate figures and cached comparisons, so that the decision can be re-run cheaply under what-ifs."""

    def __init__(self, wl: Workload, evidence: dict | None, figures: list[dict] | None = None) -> None:
        self.wl, self.evidence = wl, evidence
        self.hw = load_hardware(wl.hardware)
        self.tail, self.tail_note = _tail(evidence, wl.hardware)
        self.latency_label = LATENCY_MEAN if self.tail_note.startswith("modelled mean") else LATENCY_SCALED
        self.latency_word = ("modelled mean" if self.latency_label == LATENCY_MEAN
                             else f"estimated p99 (modelled mean x {self.tail:.2f})")
        self.figures = figures or [candidate_figures(c, self.hw, wl) for c in wl.candidates]
        self.paths = {f["name"]: f["path"] for f in self.figures}
        self._flips: dict[tuple[str, str], dict] = {}

    def pair_compare(self, dense: str, moe: str) -> dict:
        key = (dense, moe)
        if key not in self._flips:
            batches = sorted({1 << i for i in range(13)} | set(self.wl.batches))
            self._flips[key] = compare(load_model(self.paths[dense]), load_model(self.paths[moe]), self.hw,
                                       _cost_workload(self.wl), batches)
        return self._flips[key]


def _best(cands: list[dict], kind: str, feasible_only: bool = True) -> dict | None:
    pool = [c for c in cands if c["kind"] == kind and (c["feasible"] or not feasible_only)]
    if not feasible_only:
        pool.sort(key=lambda c: (len(c["violations"]), c["usd_per_million_tokens"]))
        return pool[0] if pool else None
    return min(pool, key=lambda c: c["usd_per_million_tokens"]) if pool else None


def _decide(ctx: _Context, wl: Workload) -> dict:
    """Factor table and recommendation for `wl` from the context's figures (no flips)."""
    cands = [assess(f, wl, ctx.tail) for f in ctx.figures]
    dense_ok, moe_ok = _best(cands, "dense"), _best(cands, "moe")
    dense = dense_ok or _best(cands, "dense", False)
    moe = moe_ok or _best(cands, "moe", False)
    factors, flip, vote = [], None, 0
    if dense and moe:
        cmp = ctx.pair_compare(dense["name"], moe["name"])
        flip = cmp["flips"][0] if cmp["flips"] else None
        factors = [_vram(dense, moe, wl), _throughput(dense, moe, wl, flip, ctx.evidence), _task_type(wl, ctx.evidence),
                   _training(dense, moe, wl, ctx.evidence), _scale(dense, moe), _stability(wl)]
        weights = {"batch_throughput": 2, "training": 2 if wl.training == "scratch" else 1}
        vote = sum({"moe": 1, "dense": -1, "neutral": 0}[f["favours"]] * weights.get(f["factor"], 1) for f in factors)
    mix = wl.task_mix
    knowledge = mix["knowledge"] + mix["multilingual"]
    feasible = True
    if dense_ok and moe_ok:
        cheaper = moe_ok if moe_ok["usd_per_million_tokens"] <= dense_ok["usd_per_million_tokens"] else dense_ok
        lo, hi = min(wl.batches), max(wl.batches)
        tally = (f"factor vote {vote:+d} (+ MoE, - dense; batch_throughput x2"
                 f"{', training x2' if wl.training == 'scratch' else ''})")
        if flip and lo < flip["batch"] <= hi and abs(vote) <= 2:
            choice, model = CHOICES[3], f"{dense_ok['name']} + {moe_ok['name']}"
            note = f" {flip['note']}" if flip.get("note") else ""
            reason = (f"both meet the constraints and the evidence is split ({tally}); the modelled throughput "
                      f"winner flips from {flip['from']} to {flip['to']} at batch {flip['batch']}{note}, inside the "
                      f"workload's batch range {lo}-{hi}: route batches below {flip['batch']} to {flip['from']}, "
                      f"above to {flip['to']}.")
        elif abs(vote) <= 1 and mix["reasoning"] >= 0.3 and knowledge >= 0.3:
            other = dense_ok if cheaper is moe_ok else moe_ok
            choice, model = CHOICES[4], f"{cheaper['name']} → {other['name']}"
            reason = (f"both meet the constraints and the evidence is split ({tally}) on a mixed workload "
                      f"(reasoning {mix['reasoning']:.0%}, knowledge + multilingual {knowledge:.0%}): "
                      f"{cheaper['name']} (${cheaper['usd_per_million_tokens']:.2f}/Mtok) answers first and escalates "
                      f"to {other['name']} (${other['usd_per_million_tokens']:.2f}/Mtok).")
        else:
            pick = moe_ok if vote > 0 else dense_ok if vote < 0 else cheaper
            choice, model = pick["kind"], pick["name"]
            other = dense_ok if pick is moe_ok else moe_ok
            reason = (f"both kinds meet the constraints; {tally} picks {pick['name']}: "
                      f"${pick['usd_per_million_tokens']:.2f} vs ${other['usd_per_million_tokens']:.2f} per Mtok, "
                      f"{pick['tokens_per_second_per_gpu']:.0f} vs {other['tokens_per_second_per_gpu']:.0f} "
                      f"tokens/s/GPU at batch {wl.batch}, {_latency_clause(pick, wl, ctx.latency_word)}"
                      f"{'; ' + serving_clause(pick, wl) if pick.get('serving') else ''}.")
    elif moe_ok or dense_ok:
        pick = moe_ok or dense_ok
        other = _best(cands, "dense" if pick is moe_ok else "moe", False)
        why_not = (f"; the best {other['kind']} ({other['name']}) fails on {', '.join(other['violations'])}"
                   f"{_serving_failure(other, wl)}"
                   if other else f"; no {'dense' if pick is moe_ok else 'MoE'} candidate was given")
        moe_memory_only = [c for c in cands if c["kind"] == "moe" and c["violations"] == ["memory"]]
        if pick is dense_ok and moe_memory_only and knowledge >= 0.5:
            choice, model = CHOICES[2], f"{dense_ok['name']} + MoE head"
            reason = (f"only dense fits: {moe_memory_only[0]['name']} needs {moe_memory_only[0]['memory_gb']:.0f} GB "
                      f"against a {wl.memory_budget_gb:.0f} GB budget, but the mix is knowledge-heavy "
                      f"({knowledge:.0%} knowledge + multilingual): keep {dense_ok['name']} as the backbone and turn "
                      "its last layers into experts (moelab.spec.transform.with_layout(..., 'moe_head', n)).")
        else:
            choice, model = pick["kind"], pick["name"]
            reason = (f"{pick['name']} is the cheapest candidate meeting every constraint "
                      f"(${pick['usd_per_million_tokens']:.2f}/Mtok; "
                      f"{'; '.join(constraint_clauses(pick, wl, ctx.latency_word))}){why_not}.")
    else:
        feasible = False
        pick = min(cands, key=lambda c: (len(c["violations"]), c["usd_per_million_tokens"]))
        choice, model = pick["kind"], pick["name"]
        reason = (f"no candidate meets every constraint; {pick['name']} comes closest, failing on "
                  f"{', '.join(pick['violations'])} ({'; '.join(constraint_clauses(pick, wl, ctx.latency_word))}).")
    return {"candidates": cands, "factors": factors, "vote": vote, "throughput_flip": flip,
            "best": {"dense": dense["name"] if dense else None, "moe": moe["name"] if moe else None},
            "recommendation": {"choice": choice, "model": model, "reason": reason, "feasible": feasible}}


def _latency_clause(c: dict, wl: Workload, word: str) -> str:
    return f"{word} {c['latency_ms']:.1f} ms/token vs p99 target {wl.latency_p99_ms:g} ms"


def constraint_clauses(c: dict, wl: Workload, latency_word: str = "modelled mean") -> list[str]:
    """A candidate's figure beside each hard constraint, in words; a constraint the workload leaves out (no
    throughput target, no quality floor) is said to be absent, never printed as a number."""
    fit = "fits" if c["fits"] else "DOES NOT FIT"
    out = [_latency_clause(c, wl, latency_word),
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


def _label(rec: dict) -> str:
    return f"{rec['choice']} ({rec['model']}{'' if rec['feasible'] else ', closest: nothing meets every constraint'})"


def _scan(ctx: _Context, base: dict, key: str, current: float | None, values: list[float], make) -> list[dict]:
    """The nearest value of `key` below and above `current` that changes the recommendation."""
    now = _label(base["recommendation"])
    out = []
    for side, seq in (("below", sorted((v for v in values if current is not None and v < current), reverse=True)),
                      ("above", sorted(v for v in values if current is None or v > current))):
        for v in seq:
            rec = _decide(ctx, make(v))["recommendation"]
            if _label(rec) != now:
                out.append({"input": key, "direction": side, "threshold": v, "from": now, "to": _label(rec)})
                break
    return out


def _flips(ctx: _Context, base: dict) -> list[dict]:
    wl, cands = ctx.wl, base["candidates"]
    eps = 1e-6
    flips: list[dict] = []
    lat = sorted({c["latency_ms"] for c in cands} | {round(d["step_seconds"] * ctx.tail * 1e3, 3)
                                                     for f in ctx.figures for d in f["deployments"]})
    lat_values = [v - eps for v in lat] + [v for v in lat]
    for f in _scan(ctx, base, "latency_p99_ms", wl.latency_p99_ms, lat_values, lambda v: replace(wl, latency_p99_ms=v)):
        v = round(f["threshold"], 1)
        f["text"] = (f"p99 target {'below' if f['direction'] == 'below' else 'of'} {v:g} ms/token "
                     f"{'' if f['direction'] == 'below' else 'or more '}→ {f['to']}")
        flips.append(f)
    mem = sorted({c["memory_gb"] for c in cands} | {_gb(d["memory_bytes"]) for f in ctx.figures
                                                     for d in f["deployments"]})
    for f in _scan(ctx, base, "memory_budget_gb", wl.memory_budget_gb, [v - 0.01 for v in mem] + mem,
                   lambda v: replace(wl, memory_budget_gb=v)):
        f["text"] = (f"memory budget {'below' if f['direction'] == 'below' else 'of'} {f['threshold']:.0f} GB "
                     f"{'' if f['direction'] == 'below' else 'or more '}→ {f['to']}")
        flips.append(f)
    if wl.throughput_tokens_per_s is not None:
        tp = sorted({c["tokens_per_second"] for c in cands})
        for f in _scan(ctx, base, "throughput_tokens_per_s", wl.throughput_tokens_per_s, [v + 0.5 for v in tp] + tp,
                       lambda v: replace(wl, throughput_tokens_per_s=v)):
            f["text"] = (f"throughput target {'above' if f['direction'] == 'above' else 'of at most'} "
                         f"{f['threshold']:.0f} tokens/s on {wl.gpus} GPUs → {f['to']}")
            flips.append(f)
    floors = sorted({c["dense_equivalent_b"] for c in cands} | {0.0})
    for f in _scan(ctx, base, "quality_floor_b", wl.quality_floor_b, [v + 0.01 for v in floors] + floors,
                   lambda v: replace(wl, quality_floor_b=v)):
        f["text"] = (f"quality floor {'above' if f['direction'] == 'above' else 'at or below'} "
                     f"{f['threshold']:.0f}B dense-equivalent → {f['to']}")
        flips.append(f)
    # reasoning share r, the other tasks keeping their proportions
    mix, rest = wl.task_mix, 1 - wl.task_mix["reasoning"]

    def with_reasoning(r: float):
        others = {k: (v / rest if rest > 0 else 1 / 3) * (1 - r) for k, v in mix.items() if k != "reasoning"}
        return replace(wl, task_mix={"reasoning": r, **others})

    shares = [i / 100 for i in range(101)]
    found = _scan(ctx, base, "reasoning_share", mix["reasoning"], shares, with_reasoning)
    for f in found:
        f["text"] = (f"reasoning share of {f['threshold']:.0%} (now {mix['reasoning']:.0%}, other tasks in proportion) "
                     f"→ {f['to']}")
        flips.append(f)
    if not found:
        flips.append({"input": "reasoning_share", "direction": None, "threshold": None, "from": _label(
            base["recommendation"]), "to": _label(base["recommendation"]),
            "text": "no task mix (reasoning 0-100%, other tasks in proportion) changes the recommendation"})
    flips.extend(_serving_flips(ctx, base))
    flips.extend(_batch_flips(ctx, base))
    flip = base["throughput_flip"]
    best = base["best"]
    if best["dense"] and best["moe"]:
        if flip:
            kind = "MoE" if flip["to"] == best["moe"] else "dense"
            text = (f"{kind} ({flip['to']}) wins modelled decode tokens/s per GPU above batch {flip['batch'] - 1} "
                    f"({flip['from']} below)" + (f" {flip['note']}" if flip.get("note") else ""))
        else:
            row = ctx.pair_compare(best["dense"], best["moe"])["rows"][0]
            winner = best["dense"] if row["winner"] == "a" else best["moe"]
            text = (f"no throughput flip in batch {FLIP_BATCHES[0]}-{FLIP_BATCHES[1]}: {winner} wins modelled "
                    f"tokens/s per GPU at every batch")
        flips.insert(0, {"input": "throughput_winner_batch", "direction": "above", "threshold": flip["batch"]
                         if flip else None, "from": flip["from"] if flip else None, "to": flip["to"] if flip else None,
                         "gpus_changed": bool(flip and flip.get("gpus_changed")), "text": text})
    return flips


def _serving_flips(ctx: _Context, base: dict) -> list[dict]:
    """The nearest TTFT and TPOT limits (at the candidates' own modelled figures) that change the decision."""
    wl, out = ctx.wl, []
    for key, label in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT")):
        current = getattr(wl, key)
        if current is None:
            continue
        values = sorted({getattr(sp, key) for f in ctx.figures for sp in f.get("serving") or [] if sp.fits})
        for f in _scan(ctx, base, key, current, [v - 1e-9 * v for v in values] + values,
                       lambda v, key=key: replace(wl, **{key: v})):
            f["text"] = (f"{label} limit {'below' if f['direction'] == 'below' else 'of'} {f['threshold']:.3g} ms "
                         f"{'' if f['direction'] == 'below' else 'or more '}at concurrency "
                         f"{wl.serving_concurrency} → {f['to']}")
            out.append(f)
    return out


def _batch_flips(ctx: _Context, base: dict) -> list[dict]:
    """The nearest typical batch in the workload's sweep (re-modelled) at which the recommendation changes."""
    wl, now = ctx.wl, _label(base["recommendation"])
    out = []
    for side, seq in (("below", sorted((b for b in wl.batches if b < wl.batch), reverse=True)),
                      ("above", sorted(b for b in wl.batches if b > wl.batch))):
        for b in seq:
            bwl = replace(wl, batch=b)
            sub = _Context(bwl, ctx.evidence, [candidate_figures(f["path"], ctx.hw, bwl) for f in ctx.figures])
            sub._flips = ctx._flips
            rec = _decide(sub, bwl)["recommendation"]
            if _label(rec) != now:
                out.append({"input": "batch", "direction": side, "threshold": b, "from": now, "to": _label(rec),
                            "text": f"typical batch {b} (now {wl.batch}) → {_label(rec)}"})
                break
    if not out:
        out.append({"input": "batch", "direction": None, "threshold": None, "from": now, "to": now,
                    "text": f"no typical batch in {min(wl.batches)}-{max(wl.batches)} changes the recommendation"})
    return out


def recommend(workload: Workload, evidence: dict | None = None) -> dict:
    """Candidate figures, the factor table, the recommendation and its flips (see the module docstring)."""
    ctx = _Context(workload, evidence)
    base = _decide(ctx, workload)
    sizes = {}
    for c, f in zip(base["candidates"], ctx.figures, strict=True):
        spec = load_model(f["path"])
        c["max_batch_p99"] = _max_batch(spec, ctx.hw, workload, c["gpus_per_replica"], ctx.tail,
                                        workload.memory_budget_gb * 1e9)
        sizes[c["name"]] = [{k: v for k, v in d.items() if k != "training"} for d in f["deployments"]]
    flips = _flips(ctx, base)
    return {
        "workload": workload.to_dict(),
        "hardware": ctx.hw.name,
        "latency_basis": ctx.tail_note,
        "latency_label": ctx.latency_label,
        "candidates": base["candidates"],
        "deployments": sizes,
        "best": base["best"],
        "factors": base["factors"],
        "vote": base["vote"],
        "recommendation": base["recommendation"],
        "throughput_flip": base["throughput_flip"],
        "flips": [f["text"] for f in flips],
        "flip_details": flips,
        "evidence": {"training": bool(_training_pair(evidence)),
                     "bench": bool(((evidence or {}).get("bench") or {}).get("rows"))},
    }
