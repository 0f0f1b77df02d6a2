"""One full estimate of a model on a hardware preset and a workload: an `Estimate`, whose `to_dict()` is the
object `moelab estimate --json` prints.

Readers (`cli`, `decide`, `study`) take the typed fields; other tools read the JSON, whose contract is:
`workload.{batch,prompt,gen,gpus}`; `parallel.plans[i].{plan,prefill_seconds,decode_step_seconds,
tokens_per_second,fits,max_concurrency}`; top-level `prefill.seconds`, `decode.step_seconds` and
`decode.tokens_per_second` of the chosen plan (the one asked for, else the best that fits).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from moelab.cost.economics import serving_economics, training_cost
from moelab.cost.equivalent import heuristic_dense_equivalent, workload_dense_equivalent
from moelab.cost.finite import require_finite
from moelab.cost.flops import prefill_flops, token_flops
from moelab.cost.memory import (
    InferenceMemory,
    TrainingMemory,
    WeightBytes,
    inference_memory,
    kv_bytes_per_token,
    model_weight_bytes,
    training_memory,
)
from moelab.cost.parallel import PlanResult, best_plan, default_gpus, evaluate, plan_notes, plans
from moelab.cost.params import ParamBreakdown, count_params
from moelab.cost.plan import Plan, check_plan
from moelab.cost.roofline import Phase, Workload, crossover_batch
from moelab.cost.serving import ServingPoint, serve
from moelab.errors import MoelabError
from moelab.limits import MAX_BATCH, MAX_GPUS
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec


@dataclass(frozen=True)
class TrainingPlan:
    """The training run priced beside the serving estimate."""

    tokens: float = 1e12
    mfu: float = 0.4
    seq: int = 4096
    micro_batch: int = 1
    zero: int = 1
    recompute: bool = True


@dataclass(frozen=True)
class MemoryFigures:
    """Serving memory in all (`inference`) and per GPU of the chosen plan."""

    inference: InferenceMemory
    kv_bytes_per_token: float
    gpus: int
    memory_per_gpu_bytes: float
    capacity_per_gpu_bytes: float  # usable: capacity * memory_utilization
    fits: bool

    @property
    def weights_bytes(self) -> float:
        return self.inference.weights_bytes

    @property
    def kv_cache_bytes(self) -> float:
        return self.inference.kv_cache_bytes

    @property
    def total_bytes(self) -> float:
        return self.inference.total_bytes

    @property
    def min_gpus(self) -> int:
        return self.inference.min_gpus

    def to_dict(self) -> dict:
        out = self.inference.to_dict()
        out.update({k: v for k, v in self.__dict__.items() if k != "inference"})
        return out


@dataclass(frozen=True)
class FlopFigures:
    per_token_decode: float
    per_token_6n_training: float
    prefill_total: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ParallelFigures:
    """Every plan evaluated (best first), the chosen one, and why an expected plan is missing."""

    plans: tuple[PlanResult, ...]
    chosen: PlanResult
    notes: tuple[str, ...] = ()
    fixed: bool = False  # the plan was asked for (--plan), not searched

    @property
    def plan(self) -> str:
        return self.chosen.plan

    @property
    def gpus(self) -> int:
        return self.chosen.gpus

    @property
    def scaling_efficiency(self) -> float:
        return self.chosen.scaling_efficiency

    def to_dict(self) -> dict:
        return {"plan": self.plan, "gpus": self.gpus, "scaling_efficiency": self.scaling_efficiency,
                "fixed": self.fixed, "plans": [r.to_dict() for r in self.plans], "notes": list(self.notes)}


@dataclass(frozen=True)
class Economics:
    """One batch of requests end to end on the chosen plan's GPUs at TDP (cost.economics.serving_economics)."""

    request_seconds: float
    output_tokens: float
    joules_per_million_tokens: float
    kwh_per_million_tokens: float
    usd_per_million_tokens: float
    watts: float
    usd_per_hour: float

    def energy_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if "usd" not in k}

    def cost_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if "usd" in k or k == "request_seconds"}


@dataclass(frozen=True)
class TrainingFigures:
    """The training run (cost.economics.training_cost) and the memory of one rank."""

    tokens: float
    flops: float
    flops_per_token: float
    mfu: float
    gpus: int
    seconds: float
    gpu_hours: float
    usd: float
    joules: float
    plan: TrainingPlan
    memory: TrainingMemory
    capacity_per_gpu_bytes: float

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("plan", "memory", "capacity_per_gpu_bytes")}
        out["plan"] = asdict(self.plan)
        out["memory"] = {**self.memory.to_dict(), "capacity_per_gpu_bytes": self.capacity_per_gpu_bytes}
        return out


@dataclass(frozen=True)
class DenseEquivalent:
    heuristic: float  # the seeds' size rule
    workload: float | None  # params of the dense twin with the same decode step on this workload (None: not
    # computed, estimate(derived=False))
    detail: dict = field(default_factory=dict)  # cost.equivalent.workload_dense_equivalent

    def to_dict(self) -> dict:
        return {"heuristic": self.heuristic, "workload": self.workload, "workload_detail": dict(self.detail)}


@dataclass(frozen=True)
class Estimate:
    """Everything `moelab estimate` models for one model, hardware and workload (see the module docstring)."""

    model: str
    family: str
    notes: tuple[str, ...]  # how the config was read where that is not transformers' reading
    hardware: str
    workload: Workload  # with the GPU count and plan resolved
    params: ParamBreakdown
    memory: MemoryFigures
    flops: FlopFigures
    prefill: Phase  # of the chosen plan
    decode: Phase  # of the chosen plan, at the workload's mean context
    crossover_batch: int | None  # smallest decode batch that turns compute-bound (None: none up to 2**20)
    parallel: ParallelFigures
    economics: Economics
    training: TrainingFigures
    dense_equivalent: DenseEquivalent
    experts_per_layer: int = 0  # routed experts of the first MoE layer (0: dense)
    top_k: int = 0
    serving: tuple[ServingPoint, ...] = ()  # one row per --concurrency
    serving_notes: tuple[str, ...] = ()
    weights: WeightBytes | None = None  # the weights by component, at their dtypes

    @property
    def chosen(self) -> PlanResult:
        return self.parallel.chosen

    @property
    def energy(self) -> Economics:
        return self.economics

    @property
    def cost(self) -> Economics:
        return self.economics

    @property
    def tokens_per_second(self) -> float:
        """Decode tokens/s of the chosen plan, all its GPUs."""
        return self.chosen.tokens_per_second

    @property
    def tokens_per_second_per_gpu(self) -> float:
        return self.chosen.tokens_per_second_per_gpu

    def to_dict(self) -> dict:
        wl, dec, pre = self.workload, self.decode, self.prefill
        return {
            "model": self.model,
            "family": self.family,
            "notes": list(self.notes),
            "hardware": self.hardware,
            "workload": {**asdict(wl), "components": dict(wl.components)},
            "precision": self._precision(),
            "params": {**self.params.to_dict(), "active_fraction": self.params.active / self.params.total},
            "memory": self.memory.to_dict(),
            "flops": self.flops.to_dict(),
            "prefill": {
                **pre.to_dict(),
                "time_to_first_token_seconds": pre.seconds,
                "tokens_per_second": wl.batch * wl.prompt / pre.seconds,
            },
            "decode": {
                **dec.to_dict(),
                "step_seconds": dec.seconds,
                "per_token_latency_seconds": dec.seconds,
                "context": wl.decode_context,
                "tokens_per_second": self.tokens_per_second,
                "tokens_per_second_per_gpu": self.tokens_per_second_per_gpu,
                "experts_per_layer": self.experts_per_layer,
                "top_k": self.top_k,
                "crossover_batch": self.crossover_batch,
            },
            "parallel": self.parallel.to_dict(),
            "serving": [{**s.to_dict(), "note": _serving_note(s)} for s in self.serving],
            "serving_notes": list(self.serving_notes),
            "energy": self.economics.energy_dict(),
            "cost": self.economics.cost_dict(),
            "training": self.training.to_dict(),
            "dense_equivalent": self.dense_equivalent.to_dict(),
        }


    def _precision(self) -> dict:
        """The weights' dtype per component (cost.dtypes.COMPONENTS; norms and routers as `other`, at high
        precision) and their bytes; `given` lists the components the workload set."""
        if self.weights is None:
            return {}
        return {"dtype": self.workload.dtype, "given": dict(self.workload.components), **self.weights.to_dict()}


def _serving_note(s: ServingPoint) -> str:
    if s.fits:
        return ""
    if s.concurrency > s.max_concurrency:
        return (f"above the plan's max_concurrency {s.max_concurrency}: the KV cache of {s.concurrency} sequences "
                "does not fit (a server would queue the rest)")
    return "the weights do not fit"


def resolve_gpus(spec: ModelSpec, hw: HardwareSpec, wl: Workload, gpus: int | None,
                 plan: Plan | str | None = None) -> Workload:
    """The workload on `plan` (checked against the model and `gpus`), else on `gpus` GPUs or the fewest (a power
    of two) on which a plan fits (cost.capacity), with the best plan there."""
    if plan is not None:
        plan = Plan.parse(plan) if isinstance(plan, str) else plan
        if gpus is not None and gpus != plan.gpus:
            raise MoelabError(f"--gpus {gpus} contradicts --plan {plan.name}, which uses {plan.gpus} GPUs")
        check_plan(spec, plan)
        return replace(wl, gpus=plan.gpus, plan=plan.name)
    if gpus is not None:
        wl = replace(wl, gpus=gpus)
        return replace(wl, plan=best_plan(plans(spec, hw, wl)).plan)
    mem = inference_memory(spec, hw, wl.dtype, wl.kv_dtype, wl.batch, wl.prompt, wl.gen, wl.components)
    gpus = default_gpus(mem.min_gpus)
    while True:  # the memory total spread evenly is a lower bound: double until a plan fits (capacity's view)
        wl = replace(wl, gpus=gpus)
        best = best_plan(plans(spec, hw, wl))
        if best.fits or gpus >= MAX_GPUS:
            return replace(wl, plan=best.plan)
        gpus = min(2 * gpus, MAX_GPUS)


def estimate(spec: ModelSpec, hw: HardwareSpec, wl: Workload, gpus: int | None = None,
             training: TrainingPlan = TrainingPlan(), plan: Plan | str | None = None,
             concurrency: list[int] | tuple[int, ...] | None = None, derived: bool = True) -> Estimate:
    """Parameters, memory, FLOPs, prefill and decode, parallel plans, energy, dollars and dense equivalents:
    every figure finite (see moelab.cost.finite for the keys that may be None). `plan` fixes the plan (else the
    best that fits is chosen); `concurrency` adds one serving row per concurrency (cost.serving) on that plan, or
    without `plan` on the best plan for the largest concurrency. `derived=False` leaves out the two figures found
    by searching the engine (the workload dense equivalent and the crossover batch: None), for callers such as
    decide that price many workloads and read neither."""
    result = _estimate(spec, hw, wl, gpus, training, plan, tuple(concurrency or ()), derived)
    require_finite(result.to_dict(), "estimate")
    return result


def _serving(spec: ModelSpec, hw: HardwareSpec, wl: Workload, fixed: bool,
             concurrency: tuple[int, ...]) -> tuple[tuple[ServingPoint, ...], tuple[str, ...]]:
    """Serving rows at each concurrency on the fixed plan, else on the best plan for the largest concurrency."""
    for c in concurrency:
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_BATCH:
            raise MoelabError(f"--concurrency must list integers from 1 to {MAX_BATCH:,}, got {c!r}")
    top = max(concurrency)
    if fixed:
        chosen, why = wl.parallel, "the plan asked for"
    else:
        chosen = best_plan(plans(spec, hw, replace(wl, batch=top))).parallel
        why = f"the best plan on {wl.gpus} GPUs at concurrency {top}"
    rows = tuple(serve(spec, hw, chosen, c, wl.prompt, wl.gen, dtype=wl.dtype, kv_dtype=wl.kv_dtype, skew=wl.skew,
                       components=wl.components) for c in concurrency)
    notes = [f"serving rows on {chosen.name} ({why}): steady-state continuous batching, modelled means "
             f"(TTFT, TPOT = mean inter-token latency) for {wl.prompt} input and {wl.gen} output tokens"]
    over = [r.concurrency for r in rows if r.concurrency > r.max_concurrency]
    if over:
        notes.append(f"concurrency {', '.join(map(str, over))} above {chosen.name}'s KV-limited max_concurrency "
                     f"{rows[0].max_concurrency}: marked fits false, not dropped")
    return rows, tuple(notes)


def _estimate(spec: ModelSpec, hw: HardwareSpec, wl: Workload, gpus: int | None, training: TrainingPlan,
              plan: Plan | str | None, concurrency: tuple[int, ...], derived: bool = True) -> Estimate:
    p = count_params(spec)
    fixed = plan is not None
    if concurrency and gpus is None and not fixed:  # provision for the largest concurrency, not the static batch
        top = replace(wl, batch=max(concurrency))
        gpus = default_gpus(inference_memory(spec, hw, top.dtype, top.kv_dtype, top.batch, top.prompt,
                                             top.gen, top.components).min_gpus)
    wl = resolve_gpus(spec, hw, wl, gpus, plan)
    results = plans(spec, hw, wl)
    chosen = evaluate(spec, hw, wl, wl.parallel) if fixed else next(r for r in results if r.plan == wl.plan)
    if chosen.plan not in {r.plan for r in results}:
        results.append(chosen)
    serving, serving_notes = _serving(spec, hw, wl, fixed, concurrency) if concurrency else ((), ())
    mem = inference_memory(spec, hw, wl.dtype, wl.kv_dtype, wl.batch, wl.prompt, wl.gen, wl.components)
    moe = spec.moe if spec.is_moe else None
    train = training_cost(spec, hw, training.tokens, wl.gpus, training.mfu, training.seq)
    train_mem = training_memory(spec, hw, training.micro_batch, training.seq, dp=wl.gpus, zero=training.zero,
                                recompute=training.recompute)
    equivalent = workload_dense_equivalent(spec, hw, wl) if derived else {"params": None}
    return Estimate(
        model=spec.name,
        family=spec.family,
        notes=tuple(spec.notes),
        hardware=hw.name,
        workload=wl,
        params=p,
        memory=MemoryFigures(mem, kv_bytes_per_token(spec, wl.kv_dtype), wl.gpus, chosen.memory_per_gpu_bytes,
                             hw.memory_bytes * hw.memory_utilization, chosen.fits),
        flops=FlopFigures(token_flops(spec, p, wl.decode_context), 6.0 * p.active,
                          prefill_flops(spec, p, wl.batch, wl.prompt)),
        prefill=chosen.prefill,
        decode=chosen.decode,
        crossover_batch=crossover_batch(spec, hw, wl) if derived else None,
        parallel=ParallelFigures(tuple(results), chosen, tuple(plan_notes(spec, wl.gpus)), fixed),
        economics=Economics(**serving_economics(hw, wl, chosen.prefill, chosen.decode)),
        training=TrainingFigures(**train, plan=training, memory=train_mem, capacity_per_gpu_bytes=hw.memory_bytes),
        dense_equivalent=DenseEquivalent(heuristic_dense_equivalent(spec), equivalent["params"], equivalent),
        experts_per_layer=moe.n_experts if moe else 0,
        top_k=moe.top_k if moe else 0,
        serving=serving,
        serving_notes=serving_notes,
        weights=model_weight_bytes(spec, wl.dtype, wl.components),
    )
