"""The interactivity-throughput frontier: over every plan for G GPUs and a ladder of concurrencies, the serving
points no other point beats in both output tokens/s per user (interactivity, 1 / TPOT) and output tokens/s per
GPU (throughput, cost); the picture serving teams decide from (SemiAnalysis InferenceMAX, NVIDIA's
"tokens per second per user vs per GPU" charts). Every figure is a modelled mean (cost.serving), not a measurement.

- Plans: every pp x tp x ep x replicas that multiplies to G and that estimate's plan search offers
  (`candidate_plans`, from cost.parallel: tp divides the heads, ep whole experts and only on a MoE, pp only past
  a node), any number of replicas up to G.
- Concurrencies: 1, 2, 4, ... and each plan's KV-limited `max_concurrency` itself (the throughput end).
- Only points that fit (weights and the concurrency's KV cache, cost.capacity) enter the frontier.
"""

from __future__ import annotations

from dataclasses import dataclass

from moelab.cost.capacity import capacity
from moelab.cost.dtypes import WEIGHT_BYTES, check_dtype, kv_dtype_for
from moelab.cost.parallel import candidate_plans as search
from moelab.cost.plan import Plan
from moelab.cost.serving import ServingPoint, serve
from moelab.errors import MoelabError
from moelab.limits import MAX_BATCH, MAX_GPUS
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec

KEYS = ("plan", "concurrency", "tokens_per_second_per_user", "tokens_per_second_per_gpu", "ttft_ms", "tpot_ms")


@dataclass(frozen=True)
class FrontierPoint:
    """One modelled serving point: `concurrency` requests in flight on `plan` (means, not percentiles)."""

    plan: str
    concurrency: int
    tokens_per_second_per_user: float  # output tokens/s one request sees (1000 / tpot_ms)
    tokens_per_second_per_gpu: float  # output tokens/s of the whole plan over its GPUs
    ttft_ms: float
    tpot_ms: float

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in KEYS}

    @classmethod
    def of(cls, sp: ServingPoint) -> FrontierPoint:
        return cls(plan=sp.plan, concurrency=sp.concurrency,
                   tokens_per_second_per_user=sp.output_tokens_per_second_per_user,
                   tokens_per_second_per_gpu=sp.output_tokens_per_second_per_gpu, ttft_ms=sp.ttft_ms,
                   tpot_ms=sp.tpot_ms)


def candidate_plans(spec: ModelSpec, hw: HardwareSpec, gpus: int) -> list[Plan]:
    """Every plan on exactly `gpus` GPUs that the serving model prices: the plan search of estimate and compare
    (cost.parallel.candidate_plans; its docstring gives the rules), any replica count up to the GPUs."""
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= MAX_GPUS:
        raise MoelabError(f"--gpus must be an integer from 1 to {MAX_GPUS:,}, got {gpus!r}")
    return search(spec, hw, gpus, batch=gpus)


def ladder(max_concurrency: int) -> list[int]:
    """1, 2, 4, ... up to `max_concurrency`, and `max_concurrency` itself (empty when nothing fits)."""
    top = min(max_concurrency, MAX_BATCH)
    out, c = [], 1
    while c <= top:
        out.append(c)
        c *= 2
    if top >= 1 and out[-1] != top:
        out.append(top)
    return out


def _check(input: int, output: int, dtype: str, kv_dtype: str | None) -> str:
    for name, value in (("input", input), ("output", output)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MoelabError(f"--{name} must be a positive integer, got {value!r}")
    check_dtype(dtype, WEIGHT_BYTES)
    return kv_dtype_for(dtype, kv_dtype)


def serving_points(spec: ModelSpec, hw: HardwareSpec, gpus: int, input: int, output: int, dtype: str = "bf16",
                   kv_dtype: str | None = None, concurrencies: list[int] | None = None) -> list[ServingPoint]:
    """cost.serving.serve at every candidate plan and concurrency (the ladder of each plan when `concurrencies`
    is None); points that do not fit are kept (`fits` False)."""
    kv = _check(input, output, dtype, kv_dtype)
    for c in concurrencies or ():
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_BATCH:
            raise MoelabError(f"concurrency must be an integer from 1 to {MAX_BATCH:,}, got {c!r}")
    out = []
    for plan in candidate_plans(spec, hw, gpus):
        cap = capacity(spec, hw, plan, dtype, kv, input + output)
        if not cap.fits_weights:
            continue
        for c in concurrencies if concurrencies is not None else ladder(cap.max_concurrency):
            out.append(serve(spec, hw, plan, c, input, output, dtype, kv))
    return out


def pareto(points: list[FrontierPoint]) -> list[FrontierPoint]:
    """The points no other point dominates (at least as good in per-user and per-GPU tokens/s, better in one),
    from the most interactive to the highest throughput; of equal points the first is kept."""
    order = sorted(range(len(points)), key=lambda i: (-points[i].tokens_per_second_per_user,
                                                      -points[i].tokens_per_second_per_gpu, i))
    kept, best_gpu = [], float("-inf")
    for i in order:
        p = points[i]
        if p.tokens_per_second_per_gpu > best_gpu:
            kept.append(p)
            best_gpu = p.tokens_per_second_per_gpu
    return kept


def frontier(spec: ModelSpec, hw: HardwareSpec, gpus: int, input: int, output: int, dtype: str = "bf16",
             kv_dtype: str | None = None, concurrencies: list[int] | None = None) -> list[FrontierPoint]:
    """The Pareto frontier of the fitting serving points (module docstring); empty when no plan fits."""
    points = [FrontierPoint.of(sp) for sp in serving_points(spec, hw, gpus, input, output, dtype, kv_dtype,
                                                            concurrencies) if sp.fits]
    return pareto(points)


def choose(points: list[ServingPoint], ttft_ms: float | None = None,
           tpot_ms: float | None = None) -> ServingPoint | None:
    """Of the fitting points, those meeting the latency limits given, the most output tokens/s per GPU; when
    none meets them, the one closest to them (smallest worst ratio of modelled mean to limit); None when none
    fits."""
    fitting = [sp for sp in points if sp.fits]
    if not fitting:
        return None

    def worst(sp: ServingPoint) -> float:
        ratios = [value / limit for value, limit in ((sp.ttft_ms, ttft_ms), (sp.tpot_ms, tpot_ms)) if limit]
        return max(ratios, default=0.0)

    meeting = [sp for sp in fitting if worst(sp) <= 1.0]
    if meeting:
        return max(meeting, key=lambda sp: sp.output_tokens_per_second_per_gpu)
    return min(fitting, key=worst)


def best_at(spec: ModelSpec, hw: HardwareSpec, gpus: int, concurrency: int, input: int, output: int,
            dtype: str = "bf16", kv_dtype: str | None = None, ttft_ms: float | None = None,
            tpot_ms: float | None = None) -> ServingPoint | None:
    """The best fitting plan at `concurrency` under the latency limits given (`choose`); None when no plan holds
    `concurrency` sequences."""
    return choose(serving_points(spec, hw, gpus, input, output, dtype, kv_dtype, [concurrency]), ttft_ms, tpot_ms)
