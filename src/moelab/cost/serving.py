"""Serving at a concurrency: steady-state continuous batching, as `vllm bench serve --max-concurrency C` runs it.

C requests are in flight (closed loop: a new one starts when one finishes), spread evenly over the plan's
replicas, each with `input` prompt tokens and `output` generated tokens. Every engine step decodes one token for
each running sequence and, with chunked prefill, carries the prompts of newly admitted requests, at most
`chunk_tokens` prompt tokens per step (vLLM's max_num_batched_tokens). A request holds its slot for
s = ceil(input / chunk) prefill steps and output - 1 decode steps, so per step a replica admits
p = c / (s + output - 1) prompts on average (c = its share of C) and decodes c (output - 1) / (s + output - 1)
sequences at a mean context of input + output / 2. Steps carry floor(p) or ceil(p) prompts; the mean step is

    TPOT (= mean ITL) = (1 - frac p) * step(floor p) + frac p * step(ceil p)

TTFT = the rest of the step in progress when the request arrives (E[step^2] / 2 E[step]: a long step with a
prompt in it is more likely to be the one in progress) + the M/D/1 wait for the prefill budget (prompts arrive
at p / TPOT per second, each holding the budget for its s steps) + s steps carrying its prompt. When `num_prompts` is
given, the first C requests arrive together and queue behind each other's prompts: their TTFT is the burst's
(about (C * input / chunk + 1) / 2 prefill steps); the mean over all requests weights the two.
A request takes TTFT + (output - 1) * TPOT; requests per second = C / that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moelab.cost.capacity import PREFILL_TOKENS, capacity
from moelab.cost.plan import Plan
from moelab.cost.roofline import Workload, step_cost
from moelab.cost.step import StepLoad
from moelab.errors import MoelabError
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec


@dataclass(frozen=True)
class ServingPoint:
    """Modelled steady state at one concurrency on one plan (means, not percentiles)."""

    concurrency: int
    plan: str
    ttft_ms: float
    tpot_ms: float  # = mean inter-token latency
    requests_per_second: float
    output_tokens_per_second: float  # whole plan
    output_tokens_per_second_per_gpu: float
    output_tokens_per_second_per_user: float  # 1000 / tpot_ms
    fits: bool  # the weights and the concurrency's KV cache fit
    max_concurrency: int  # KV-limited, all replicas
    gpus: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _step_seconds(spec: ModelSpec, hw: HardwareSpec, wl: Workload, decode: float, prompts: int, chunk: float,
                  past: float, context: float) -> float:
    if decode <= 0 and prompts <= 0:
        return 0.0
    load = StepLoad(decode_seqs=decode, decode_context=context, prefill_seqs=prompts, prefill_tokens=chunk,
                    prefill_past=past)
    return step_cost(spec, hw, wl, load).seconds


def _queueing(arrivals_per_second: float, service_seconds: float, slots: int) -> float:
    """Mean wait of a prompt for the prefill budget: M/D/1 (Pollaczek-Khinchine) with utilisation
    rho = arrivals * service, thinned by rho^(slots - 1) when a step's budget holds `slots` prompts (a prompt
    waits only when that many are ahead of it); rho is capped at 0.95 (the engine stays stable)."""
    rho = min(arrivals_per_second * service_seconds / slots, 0.95)
    return service_seconds * rho / (2 * (1 - rho)) * rho ** (slots - 1)


def serve(spec: ModelSpec, hw: HardwareSpec, plan: Plan, concurrency: int, input: int, output: int,
          dtype: str = "bf16", kv_dtype: str | None = None, skew: float = 0.0, chunk_tokens: int = PREFILL_TOKENS,
          num_prompts: int | None = None) -> ServingPoint:
    """The steady state of `concurrency` requests of input + output tokens on `plan` (module docstring)."""
    for name, value in (("concurrency", concurrency), ("input", input), ("output", output),
                        ("chunk_tokens", chunk_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MoelabError(f"--{name} must be a positive integer, got {value!r}")
    kv_dtype = kv_dtype or dtype
    wl = Workload(batch=concurrency, prompt=input, gen=output, dtype=dtype, kv_dtype=kv_dtype, skew=skew,
                  gpus=plan.gpus, plan=plan.name)
    c = concurrency / plan.replicas
    chunk = min(input, chunk_tokens)
    s = math.ceil(input / chunk)
    cycle = s + output - 1
    prompts_per_step = c / cycle
    decoding = c * (output - 1) / cycle
    context = input + output / 2
    low = math.floor(prompts_per_step)
    frac = prompts_per_step - low

    def step(prompts: int) -> float:
        return _step_seconds(spec, hw, wl, decoding, prompts, chunk, (s - 1) * chunk / 2, context)

    steps = [(1 - frac, step(low)), (frac, step(low + 1))] if frac else [(1.0, step(low))]
    tpot = sum(w * t for w, t in steps)
    own = step(max(1, math.ceil(prompts_per_step)))  # a step carrying the new request's prompt (chunk)
    ttft = sum(w * t * t for w, t in steps) / (2 * tpot) + s * own + _queueing(
        prompts_per_step / tpot, s * own, max(1, chunk_tokens // input))
    if num_prompts:
        burst_steps = (c * input / chunk_tokens + 1) / 2
        per_burst = _step_seconds(spec, hw, wl, 0.0, max(1, round(chunk_tokens / input)) if input < chunk_tokens
                                  else 1, chunk, 0.0, 0.0)
        burst = burst_steps * per_burst
        share = min(1.0, concurrency / num_prompts)
        ttft = share * burst + (1 - share) * ttft
    latency = ttft + (output - 1) * tpot
    rps = concurrency / latency
    cap = capacity(spec, hw, plan, dtype, kv_dtype, input + output, chunk_tokens)
    out_tps = rps * output
    return ServingPoint(
        concurrency=concurrency, plan=plan.name, ttft_ms=ttft * 1e3, tpot_ms=tpot * 1e3, requests_per_second=rps,
        output_tokens_per_second=out_tps, output_tokens_per_second_per_gpu=out_tps / plan.gpus,
        output_tokens_per_second_per_user=1.0 / tpot if tpot else 0.0, fits=cap.fits(concurrency),
        max_concurrency=cap.max_concurrency, gpus=plan.gpus)


def serve_many(spec: ModelSpec, hw: HardwareSpec, plan: Plan, concurrencies: list[int], input: int, output: int,
               **kwargs) -> list[ServingPoint]:
    """serve() at each concurrency."""
    return [serve(spec, hw, plan, c, input, output, **kwargs) for c in concurrencies]

