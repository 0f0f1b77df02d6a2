"""Serving at a concurrency: steady-state continuous batching, as `vllm bench serve --max-concurrency C` runs it.

C requests are in flight (closed loop: a new one starts when one finishes), spread evenly over the plan's
replicas, each with `input` prompt tokens and `output` generated tokens. Every engine step decodes one token for
each running sequence and, with chunked prefill, carries the prompts of newly admitted requests, at most
`chunk_tokens` prompt tokens per step (vLLM's max_num_batched_tokens). A request holds its slot for
s = ceil(input / chunk_tokens) prefill steps (input / s prompt tokens each) and output - 1 decode steps. Seen from
one request, the c - 1 others (c = the replica's share of C) bring p = (c - 1) / (s + output - 1) prompts per
step and decode (c - 1)(output - 1) / (s + output - 1) sequences at a mean context of input + output / 2. Steps
carry floor(p) or ceil(p) of those prompts, so

    TPOT (= mean ITL) = (1 - frac p) * step(floor p, + itself decoding) + frac p * step(ceil p, + itself)

TTFT = the rest of the step in progress when the request arrives (E[step^2] / 2 E[step]: a long step with a
prompt in it is more likely to be the one in progress; none when it is alone) + the M/D/1 wait for the prefill
budget (prompts arrive at p / TPOT per second, each holding the budget for input / chunk_tokens of a step) + s
steps carrying its prompt. The wait assumes arrivals as random as Poisson's: real benchmarks have that much
jitter (NIM's Llama 3.3 70B sweep at concurrency 25, 5000-token prompts: TTFT 689 ms measured, 372 ms without
the wait, 690 ms with it); a perfectly periodic closed loop of identical requests would not wait. When `num_prompts` is
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
    ttft_queue_ms: float  # of ttft_ms: the M/D/1 wait for the prefill budget (random arrivals; 0 when alone)
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


def _queueing(arrivals_per_second: float, service_seconds: float) -> float:
    """Mean wait of a prompt for the prefill budget, M/D/1 (Pollaczek-Khinchine): the budget serves prompt tokens
    at chunk_tokens per step, so a prompt holds it for input / chunk_tokens of a step (at least a whole step only
    when it is longer than the budget); utilisation rho = arrivals * service, capped at 0.95 (a stable engine)."""
    rho = min(arrivals_per_second * service_seconds, 0.95)
    return service_seconds * rho / (2 * (1 - rho))


def serve(spec: ModelSpec, hw: HardwareSpec, plan: Plan, concurrency: int, input: int, output: int,
          dtype: str = "bf16", kv_dtype: str | None = None, skew: float = 0.0, chunk_tokens: int = PREFILL_TOKENS,
          num_prompts: int | None = None, components=None) -> ServingPoint:
    """The steady state of `concurrency` requests of input + output tokens on `plan` (module docstring);
    `components`: per-component weight dtypes (cost.dtypes.COMPONENTS)."""
    for name, value in (("concurrency", concurrency), ("input", input), ("output", output),
                        ("chunk_tokens", chunk_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MoelabError(f"--{name} must be a positive integer, got {value!r}")
    kv_dtype = kv_dtype or dtype
    wl = Workload(batch=concurrency, prompt=input, gen=output, dtype=dtype, kv_dtype=kv_dtype, skew=skew,
                  gpus=plan.gpus, plan=plan.name, components=components or ())
    c = concurrency / plan.replicas
    s = math.ceil(input / chunk_tokens)  # steps a prompt's prefill spans
    chunk = input / s  # its prompt tokens per step
    cycle = s + output - 1  # steps a request holds its slot
    others = max(0.0, c - 1)  # what a request shares its steps with
    prompts = others / cycle  # the others' prompts in a step, on average
    decoding = others * (output - 1) / cycle
    context = input + output / 2
    low = math.floor(prompts)
    frac = prompts - low

    def mix(own_decode: float, own_prompt: int) -> list[tuple[float, float]]:
        """(share, seconds) of the steps a request sees: floor or ceil of the others' prompts, plus its own."""
        def one(n: int) -> float:
            return _step_seconds(spec, hw, wl, decoding + own_decode, n + own_prompt, chunk, (s - 1) * chunk / 2,
                                 context)
        return [(1 - frac, one(low)), (frac, one(low + 1))] if frac else [(1.0, one(low))]

    decode_steps = mix(1.0, 0)  # the steps between a request's tokens
    tpot = sum(w * t for w, t in decode_steps)
    prefill_step = sum(w * t for w, t in mix(0.0, 1))  # a step carrying its prompt (or a chunk of it)
    residual = sum(w * t * t for w, t in decode_steps) / (2 * tpot) if others > 0 else 0.0
    service = prefill_step * input / chunk_tokens
    wait = _queueing(prompts / tpot, service) if others > 0 else 0.0
    ttft = residual + wait + s * prefill_step
    if num_prompts:
        burst_steps = (c * input / chunk_tokens + 1) / 2
        per_burst = _step_seconds(spec, hw, wl, 0.0, max(1, round(chunk_tokens / input)) if input < chunk_tokens
                                  else 1, chunk, 0.0, 0.0)
        share = min(1.0, concurrency / num_prompts)
        ttft = share * burst_steps * per_burst + (1 - share) * ttft
        wait *= 1 - share
    latency = ttft + (output - 1) * tpot
    rps = concurrency / latency
    cap = capacity(spec, hw, plan, dtype, kv_dtype, input + output, chunk_tokens, wl.components)
    out_tps = rps * output
    return ServingPoint(
        concurrency=concurrency, plan=plan.name, ttft_ms=ttft * 1e3, ttft_queue_ms=wait * 1e3, tpot_ms=tpot * 1e3,
        requests_per_second=rps,
        output_tokens_per_second=out_tps, output_tokens_per_second_per_gpu=out_tps / plan.gpus,
        output_tokens_per_second_per_user=1.0 / tpot if tpot else 0.0, fits=cap.fits(concurrency),
        max_concurrency=cap.max_concurrency, gpus=plan.gpus)


def serve_many(spec: ModelSpec, hw: HardwareSpec, plan: Plan, concurrencies: list[int], input: int, output: int,
               **kwargs) -> list[ServingPoint]:
    """serve() at each concurrency."""
    return [serve(spec, hw, plan, c, input, output, **kwargs) for c in concurrencies]

