"""The engine's figures for each candidate on a workload, and the candidate held against its hard constraints.

Each candidate is modelled by the cost engine on the workload's hardware, dtype, batch and context, served as
replicas of the fewest GPUs (a power of two, up to the workload's `gpus`) that hold it and meet the p99
per-token latency target; replicas fill the GPUs. Modelled step times are means, multiplied by the measured
p99/p50 of decode steps only when a bench ran on the workload's own hardware (evidence.tail).

A candidate is feasible when it fits the memory budget, meets the p99 target at the typical batch, sustains the
throughput target on the workload's GPUs, and is at least the quality floor (the seeds' dense equivalent
total/(E^0.44/k^0.63), in billions). With the workload's serving keys (`concurrency`, `ttft_ms`, `tpot_ms`) it
must also hold that many requests in flight on the workload's GPUs and, on its best fitting plan there
(cost.frontier.choose over cost.serving), have a modelled mean TTFT and TPOT at or under the limits.
"""

from __future__ import annotations

from moelab.cost.dtypes import kv_dtype_for
from moelab.cost.equivalent import heuristic_dense_equivalent
from moelab.cost.estimate import TrainingPlan, estimate
from moelab.cost.frontier import choose, serving_points
from moelab.cost.params import count_params
from moelab.cost.roofline import Workload as CostWorkload
from moelab.decide.evidence import BASIS_MODELLED, LATENCY_MEAN
from moelab.decide.workload import Workload
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec
from moelab.spec.presets import load_model

SERVING_VIOLATIONS = ("concurrency", "ttft", "tpot")


def gb(x: float) -> float:
    return round(x / 1e9, 2)


def _sizes(gpus: int) -> list[int]:
    return sorted({1 << i for i in range(gpus.bit_length()) if 1 << i <= gpus} | {gpus})


def cost_workload(wl: Workload, batch: int | None = None) -> CostWorkload:
    kv = kv_dtype_for(wl.dtype)
    return CostWorkload(batch=batch or wl.batch, prompt=wl.prompt, gen=wl.gen, dtype=wl.dtype, kv_dtype=kv)


def _deployment(spec: ModelSpec, hw: HardwareSpec, wl: Workload, g: int, batch: int, plan: TrainingPlan) -> dict:
    e = estimate(spec, hw, cost_workload(wl, batch), gpus=g, training=plan, derived=False)
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


def max_batch(spec: ModelSpec, hw: HardwareSpec, wl: Workload, g: int, tail: float, budget: float) -> int:
    """Largest decode batch on a replica of g GPUs that fits memory and meets the p99 target (0: none)."""
    def ok(b: int) -> bool:
        e = estimate(spec, hw, cost_workload(wl, b), gpus=g, derived=False)
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
    violations += [v for v in SERVING_VIOLATIONS if serving and serving[f"meets_{v}"] is False]
    return {
        "name": fig["name"], "kind": fig["kind"], "family": fig["family"],
        "params_total": fig["params_total"], "params_active": fig["params_active"],
        "experts": fig["experts"], "top_k": fig["top_k"],
        "dense_equivalent_b": round(fig["dense_equivalent"] / 1e9, 2),
        "weights_gb": gb(d["weights_bytes"]), "kv_gb": gb(d["kv_bytes"]), "memory_gb": gb(d["memory_bytes"]),
        "gpus_per_replica": d["gpus"], "replicas": replicas, "plan": d["plan"], "bound": d["bound"],
        "latency_ms": round(d["step_seconds"] * tail * 1e3, 3), "step_ms": round(d["step_seconds"] * 1e3, 3),
        "tokens_per_second": round(fleet, 1), "tokens_per_second_per_gpu": round(d["tokens_per_second_per_gpu"], 1),
        "usd_per_million_tokens": round(d["usd_per_million_tokens"], 4),
        "train_flops": trained["flops"], "train_usd": round(trained["usd"], 2),
        "train_gpu_hours": round(trained["gpu_hours"], 1),
        "train_memory_gb_per_gpu": gb(trained["memory"]["total_bytes"]),
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
    kv = cost_workload(wl).kv_dtype
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


# --- a hybrid: both models deployed together -----------------------------------------------------------------

HYBRID_POLICIES = ("cascade", "route")


def fleet_fits(dense: dict, moe: dict, wl: Workload) -> bool:
    """Whether one replica of each (as assess chose them) fits the workload's GPUs and memory budget together."""
    return (dense["gpus_per_replica"] + moe["gpus_per_replica"] <= wl.gpus
            and dense["memory_gb"] + moe["memory_gb"] <= wl.memory_budget_gb)


def fleet(dense: dict, moe: dict, wl: Workload, policy: str, escalation: float | None,
          tail_label: str = LATENCY_MEAN) -> dict:
    """The engine's version of a hybrid of two assessed candidates: one replica of each on the workload's GPUs.

    At an escalation rate e (the share of queries the MoE answers), per output token delivered:
    - cascade (the dense answers every query; the MoE answers again the ones it escalates):
      $ = dense + e x MoE, mean latency = dense + e x MoE, an escalated query's = dense + MoE;
    - route (each query goes to one model): $ = (1 - e) x dense + e x MoE, latency likewise, a routed query's at
      worst the slower model's.
    Latencies per token: `latency_ms_mean` from the modelled mean steps (step_ms); `latency_ms_worst` is the
    slowest query (escalated, or routed to the slower model) at those means; `latency_ms_tail` is that slowest
    query at each model's latency_ms (the mean x the measured p99/p50 when the bench ran on the workload's
    hardware, labelled by `latency_ms_tail_label` = evidence.Tail.label; equal to latency_ms_worst otherwise).
    The cascade costs as much as the MoE alone at e = 1 - dense/MoE (`breakeven_escalation_rate`; 0 when the
    dense is not the cheaper). Figures at e are None without an escalation rate."""
    assert policy in HYBRID_POLICIES, policy
    d, m = dense["usd_per_million_tokens"], moe["usd_per_million_tokens"]
    dm, mm = dense["step_ms"], moe["step_ms"]  # modelled means
    dt, mt = dense["latency_ms"], moe["latency_ms"]  # means x the applied tail (= the means when none applies)
    cascade = policy == "cascade"

    def at(e: float, a: float, b: float) -> float:
        return a + e * b if cascade else (1 - e) * a + e * b

    def slowest(a: float, b: float) -> float:
        return a + b if cascade else max(a, b)

    gpus = dense["gpus_per_replica"] + moe["gpus_per_replica"]
    memory = round(dense["memory_gb"] + moe["memory_gb"], 2)
    return {"policy": policy, "dense": dense["name"], "moe": moe["name"],
            "gpus": gpus, "gpus_available": wl.gpus, "memory_gb": memory,
            "memory_budget_gb": round(wl.memory_budget_gb, 2), "fits": fleet_fits(dense, moe, wl),
            "dense_usd_per_mtok": d, "moe_usd_per_mtok": m, "escalation_rate": escalation,
            "usd_per_million_tokens": None if escalation is None else round(at(escalation, d, m), 4),
            "latency_ms_mean": None if escalation is None else round(at(escalation, dm, mm), 3),
            "latency_ms_mean_label": LATENCY_MEAN,
            "latency_ms_worst": round(slowest(dm, mm), 3),
            "latency_ms_tail": round(slowest(dt, mt), 3), "latency_ms_tail_label": f"slowest query, {tail_label}",
            "breakeven_escalation_rate": (round(max(0.0, 1 - d / m), 4) if m > 0 else None) if cascade else None,
            "formula": "dense + e x MoE" if cascade else "(1 - e) x dense + e x MoE", "basis": BASIS_MODELLED}
