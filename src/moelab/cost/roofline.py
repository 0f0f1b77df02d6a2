"""A prefill and a decode step of a workload on one parallel plan: seconds, FLOPs, bytes and the operators.

The hardware spec's `execution` picks the model: "gpu" (cost.gpu: fused kernels, a roofline per operator, NCCL
collectives) or "eager" (cost.eager: a CPU calibration's op classes one after another). Decode streams the
non-routed weights, the distinct routed experts the batch touches (U(B), see `routing`) and the KV cache the
queries attend to; prefill touches experts for batch * prompt tokens.

A workload's plan is a plan name (cost.plan: ``tp8``, ``ep8``, ``tp2ep4``, ``pp2tp8``, ``tp2x4``) or, for short,
"tp" / "ep": every one of `gpus` GPUs tensor- or expert-parallel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import cached_property

from moelab.cost import eager, gpu
from moelab.cost.dtypes import components_key
from moelab.cost.flops import attention_flops, causal_attention_flops, decode_flops, prefill_flops
from moelab.cost.memory import kv_bytes_per_token, kv_cache_bytes, kv_read_bytes
from moelab.cost.params import count_params
from moelab.cost.plan import Plan, check_plan
from moelab.cost.step import OpCost, StepLoad, busiest_share
from moelab.errors import MoelabError
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec

PLANS = ("tp", "ep")  # the short forms: all `gpus` GPUs one way
COMM_OPERATORS = ("allreduce", "alltoall", "logits_gather", "pipeline_send")


@dataclass(frozen=True)
class Workload:
    """A serving workload: `batch` sequences of `prompt` tokens each generating `gen` tokens."""

    batch: int = 1
    prompt: int = 512
    gen: int = 256
    dtype: str = "bf16"
    kv_dtype: str = "bf16"
    skew: float = 0.0  # routing skew, see routing.expert_loads
    gpus: int = 1
    plan: str = "tp"  # "tp", "ep" or a plan name (cost.plan)
    # Per-component weight dtypes, (component, dtype) pairs (cost.dtypes.COMPONENTS, e.g. routed_experts int4);
    # the components not named are at `dtype`. A dict is accepted and stored sorted.
    components: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", components_key(self.components))
        for key in ("batch", "prompt", "gen", "gpus"):
            if getattr(self, key) <= 0:
                raise MoelabError(f"--{key} must be a positive integer, got {getattr(self, key)}")
        if self.plan not in PLANS and self.parallel.gpus != self.gpus:
            raise MoelabError(f"plan {self.plan} uses {self.parallel.gpus} GPUs, but {self.gpus} were given")

    @cached_property
    def parallel(self) -> Plan:
        """The plan as degrees: "tp" / "ep" spread every GPU one way."""
        if self.plan == "tp":
            return Plan(tp=self.gpus)
        if self.plan == "ep":
            return Plan(ep=self.gpus)
        return Plan.parse(self.plan)

    @property
    def plan_kind(self) -> str:
        """"ep" when the plan splits experts, else "tp" (the eager model's two ways)."""
        return "ep" if self.parallel.ep > 1 else "tp"

    @property
    def decode_context(self) -> float:
        """Mean context over the generation: the prompt plus half the generated tokens."""
        return self.prompt + self.gen / 2


@dataclass(frozen=True)
class Phase:
    """Per-GPU cost of one prefill or one decode step (gpu model: the sum of `operators`)."""

    seconds: float
    flops: float
    bytes: float
    compute_seconds: float
    memory_seconds: float
    comm_seconds: float
    overhead_seconds: float
    bound: str  # "memory" or "compute"
    distinct_experts_per_layer: float
    operators: tuple[OpCost, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "operators"}
        out["operators"] = [op.to_dict() for op in self.operators]
        return out


def _gpu_phase(spec: ModelSpec, hw: HardwareSpec, wl: Workload, load: StepLoad, batch_prefill: bool = False) -> Phase:
    """The operator model's step for one replica's share of the workload (a plan the model cannot take, such as
    ep on a dense model or not dividing its experts, is refused in one line). A static batch's prefill through
    pp > 1 stages in pp micro-batches also waits for the pipeline to fill: 2pp - 1 stage times in all, where
    gpu.step gives pp of them (one micro-batch through every stage)."""
    check_plan(spec, wl.parallel)
    ops, touched = gpu.step(spec, hw, wl.parallel, load, wl.dtype, wl.kv_dtype, wl.skew, wl.components)
    pp = wl.parallel.pp
    if batch_prefill and pp > 1 and load.sequences >= pp:
        fill = (pp - 1) / pp * sum(op.seconds for op in ops)
        ops = (*ops, OpCost("pipeline_fill", 0.0, 0.0, 0.0, 0.0, fill, 0, f"{pp - 1} more stage times"))
    comm = sum(op.seconds for op in ops if op.name in COMM_OPERATORS)
    work = [op for op in ops if op.name not in COMM_OPERATORS]
    compute_bound = sum(op.seconds for op in work if op.bound == "compute")
    memory_bound = sum(op.seconds for op in work if op.bound == "memory")
    return Phase(
        seconds=sum(op.seconds for op in ops),
        flops=sum(op.flops for op in ops),
        bytes=sum(op.bytes for op in work),
        compute_seconds=sum(op.compute_seconds for op in work),
        memory_seconds=sum(op.memory_seconds for op in work),
        comm_seconds=comm,
        overhead_seconds=sum(op.launch_seconds for op in work),
        bound="compute" if compute_bound >= memory_bound else "memory",
        distinct_experts_per_layer=touched,
        operators=ops,
    )


def step_cost(spec: ModelSpec, hw: HardwareSpec, wl: Workload, load: StepLoad) -> Phase:
    """One engine step of one replica (continuous batching: decode tokens and prompt chunks together)."""
    if hw.execution == "gpu":
        return _gpu_phase(spec, hw, wl, load)
    p = count_params(spec)
    tokens = load.tokens
    flops = 2.0 * p.matmul_active * tokens + 2.0 * spec.d_model * spec.vocab_size * load.logit_rows
    attn = load.decode_seqs * attention_flops(spec, load.decode_context)
    if load.prefill_seqs:
        past, chunk = int(round(load.prefill_past)), int(round(load.prefill_past + load.prefill_tokens))
        attn += load.prefill_seqs * (causal_attention_flops(spec, chunk) - causal_attention_flops(spec, past))
    kv_read = kv_read_bytes(spec, wl.kv_dtype, 1, load.decode_context) * load.decode_seqs
    kv_write = tokens * kv_bytes_per_token(spec, wl.kv_dtype)
    return eager.phase(spec, hw, wl, tokens, flops + attn, kv_read, kv_write, attn)


def prefill(spec: ModelSpec, hw: HardwareSpec, wl: Workload) -> Phase:
    """Prefill of the whole batch of prompts (time to first token), writing their KV cache."""
    if hw.execution == "gpu":
        seqs = busiest_share(wl.batch, wl.parallel.replicas)
        return _gpu_phase(spec, hw, wl, StepLoad(prefill_seqs=seqs, prefill_tokens=wl.prompt), batch_prefill=True)
    flops = prefill_flops(spec, count_params(spec), wl.batch, wl.prompt)
    kv_write = kv_cache_bytes(spec, wl.kv_dtype, wl.batch, wl.prompt)
    attn = wl.batch * causal_attention_flops(spec, wl.prompt)
    return eager.phase(spec, hw, wl, wl.batch * wl.prompt, flops, 0.0, kv_write, attn)


def decode_step(spec: ModelSpec, hw: HardwareSpec, wl: Workload, context: float | None = None) -> Phase:
    """One decode step of the batch at `context` positions (default: the workload's mean context)."""
    context = wl.decode_context if context is None else context
    if hw.execution == "gpu":
        seqs = busiest_share(wl.batch, wl.parallel.replicas)
        return _gpu_phase(spec, hw, wl, StepLoad(decode_seqs=seqs, decode_context=context))
    flops = decode_flops(spec, count_params(spec), wl.batch, context)
    kv_read = kv_read_bytes(spec, wl.kv_dtype, wl.batch, int(round(context)))  # attended, not cached
    kv_write = wl.batch * kv_bytes_per_token(spec, wl.kv_dtype)
    return eager.phase(spec, hw, wl, wl.batch, flops, kv_read, kv_write, wl.batch * attention_flops(spec, context))


def crossover_batch(spec: ModelSpec, hw: HardwareSpec, wl: Workload, limit: int = 1 << 20) -> int | None:
    """Smallest decode batch at which the step turns compute-bound; None if not up to `limit`."""
    def compute_bound(batch: int) -> bool:
        return decode_step(spec, hw, replace(wl, batch=batch)).bound == "compute"

    hi = 1
    while not compute_bound(hi):
        if hi >= limit:
            return None
        hi *= 2
    lo = hi // 2  # memory-bound at lo (or lo == 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if compute_bound(mid) else (mid, hi)
    return hi
