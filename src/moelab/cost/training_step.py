"""One optimizer step of moelab's training loop on a parallel plan (ep x dp processes): seconds and their parts.

The step moelab runs (one process, or torchrun with the routed experts sharded `ep` ways and everything else
data-parallel over all ep * dp ranks), priced on its busiest rank with nothing overlapped:

- compute, per micro-step: the forward of the rank's batch / ranks sequences (cost.eager `phase`, a training
  forward being a prefill of batch x seq with logits at every position and no KV cache kept), the loss
  (cross-entropy over every position's logits, `LOSS_ELEMENTS_PER_LOGIT`), and the backward at
  `BACKWARD_FACTOR` times the forward; per optimizer step: gradient clipping and AdamW over the parameters the
  rank holds (`CLIP_ELEMENTS_PER_PARAM`, `ADAMW_ELEMENTS_PER_PARAM`, fp32) at the elementwise bandwidth.
  Under ep the rank holds E / ep experts of every MoE layer and computes the token-slots routed to them from its
  ep group: tokens * top_k / ranks slots under uniform routing, as many as without ep.
- all-to-alls (ep > 1), per micro-step and MoE layer over the ep group: one of the per-expert counts (E int64)
  and four payloads (dispatch and combine, forward and backward), each rank sending its tokens * top_k * d_model
  activations: the dispatched rows and their gradients in fp32 (autocast leaves the residual stream in fp32),
  the combined expert outputs and their gradients in the compute dtype (bf16 under --bf16).
- all-reduces (ranks > 1): per micro-step and MoE layer the router's expert counts (E fp32, all ranks); per
  optimizer step the replicated gradients (fp32, all ranks: every parameter at ep = 1, the non-expert ones
  otherwise), at dp > 1 and ep > 1 the local experts' gradients over the dp group, the gradient norm (one
  scalar) and the logged losses (`LOGGED_VALUES` scalars).

Collectives are priced as the serving models price them: cost.eager's alpha-beta all-to-all and ring all-reduce
from `hw.link(group)` on eager (CPU) hardware (a calibration measures that link with gloo), cost.collectives'
NCCL model on GPU hardware. GPU compute is the model's training FLOPs at a model-FLOPs utilisation (`mfu`), not
an operator model: a deliberately simple branch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from moelab.cost import collectives, eager
from moelab.cost.dtypes import activation_bytes
from moelab.cost.flops import causal_attention_flops, prefill_flops, training_flops
from moelab.cost.params import count_params
from moelab.cost.plan import Plan, check_plan
from moelab.cost.roofline import Workload
from moelab.errors import MoelabError
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec

TRAIN_DTYPES = ("fp32", "bf16")  # moelab trains in fp32, or with its forward autocast to bf16 (--bf16)

# Backward = 2 x forward, every op class alike: a matmul's backward is two matmuls of its size (dX and dW), so
# training is 6N FLOPs per token against the forward's 2N (Kaplan et al. 2020, "Scaling Laws for Neural Language
# Models", section 2.1; DESIGN.md "Training FLOPs ~ 6 N_active tokens"); an elementwise op's backward reads the
# incoming gradient and its saved input(s) and writes a gradient, about twice its forward traffic. Not fitted:
# timing moelab.train.loop's `_loss`, `.backward()`, clipping and `optimizer.step()` apart (perf_counter, median
# of steps 2-10) on the 2-core CPU at batch 16 x 128 gave backward / forward 1.80-1.93 (tiny-dense) and 1.72
# (tiny-moe) on a quiet machine.
BACKWARD_FACTOR = 2.0
# Cross-entropy over all logits (fp32): log_softmax reads and writes them (2), its backward reads the incoming
# gradient and the saved output and writes the gradient (3), nll_loss's backward writes a dense zero-filled
# gradient (1). torch aten/src/ATen/native/SoftMax.cpp, LossNLL.cpp.
LOSS_ELEMENTS_PER_LOGIT = 6.0
# torch.optim.AdamW as moelab builds it (no fused / foreach on CPU: torch/optim/adam.py `_single_tensor_adam`;
# the same op sequence as `_multi_tensor_adam` on CUDA), elements read + written per parameter: decoupled weight
# decay p.mul_ (2), m.lerp_(g) (3), v.mul_ (2), v.addcmul_(g, g) (4), v.sqrt() (2), / bias correction (2),
# .add_(eps) (2), p.addcdiv_(m, denom) (4). A fused kernel would need 7 (read p, g, m, v; write p, m, v).
# Priced at the calibrated elementwise bandwidth (the forward's small unfused ops); the same timing on the
# 2-core CPU found clipping + AdamW ~1.5x faster than that (tiny-dense 9.4-10.3 ms, 14.5 ms priced): these large
# in-place passes stream at about the plain read bandwidth (the calibration's sum() reached 16.3 GB/s).
ADAMW_ELEMENTS_PER_PARAM = 21.0
# torch.nn.utils.clip_grad_norm_: the norm reads every gradient (1), then every gradient is scaled in place by
# the clamped coefficient, even at 1.0 (2). torch/nn/utils/clip_grad.py.
CLIP_ELEMENTS_PER_PARAM = 3.0
OPTIMIZER_BYTES = 4.0  # parameters, gradients and AdamW moments are fp32 whatever the forward's dtype
LOGGED_VALUES = {False: 1, True: 3}  # dense: the loss; MoE: loss, aux_loss, z_loss (train.loop._loss)
COUNT_BYTES = {"alltoall": 8.0, "allreduce": 4.0}  # per-expert counts: int64 to all-to-all, fp32 to all-reduce
# Assumed model-FLOPs utilisation of a GPU training step: between Megatron-Turing NLG's 30.2% and PaLM's 46.2%
# (Chowdhery et al. 2022, "PaLM", Table 3). Used only on GPU hardware.
DEFAULT_MFU = 0.4


@dataclass(frozen=True)
class Collective:
    """One kind of collective call of the step: its group size, calls per optimizer step, the bytes each rank
    contributes per call (all-reduce: its buffer; all-to-all: what it sends, itself included) and the seconds
    of all its calls."""

    name: str
    kind: str  # "alltoall" or "allreduce"
    group: int
    calls: int
    nbytes: float
    seconds: float


@dataclass(frozen=True)
class TrainingStep:
    """One optimizer step of a training run on a plan, on its busiest rank."""

    plan: str  # Plan name: "tp1" (one process), "ep2", "x2", "ep2x2"
    ranks: int  # processes (GPUs) in all = ep * dp
    tokens: int  # tokens per optimizer step, all ranks together
    compute_seconds: float  # forward + backward + optimizer on one rank (the busiest)
    alltoall_seconds: float  # every all-to-all of the step (dispatch + combine, forward and backward; counts)
    allreduce_seconds: float  # gradient all-reduce + the small statistic all-reduces
    seconds: float  # the sum (collectives are not overlapped with compute in moelab's loop)
    tokens_per_second: float  # tokens / seconds
    alltoall_share: float  # alltoall_seconds / seconds
    # The parts of compute_seconds, and what the rank holds and sends.
    forward_seconds: float = 0.0  # all micro-steps' forwards, the loss's forward traffic included
    backward_seconds: float = 0.0  # all micro-steps' backwards, the loss's backward traffic included
    optimizer_seconds: float = 0.0  # gradient clipping and AdamW, once per step
    params_held: int = 0  # parameters on one rank: the replicated ones and its E / ep experts of each MoE layer
    execution: str = "eager"  # the hardware's model: "eager" (op classes, CPU) or "gpu" (FLOPs at `mfu`)
    collectives: tuple[Collective, ...] = field(default=())

    def to_dict(self) -> dict:
        out = asdict(self)
        out["collectives"] = [asdict(c) for c in self.collectives]
        return out


def plan_name(ep: int, dp: int) -> str:
    """The cost.plan name of ep x dp training processes: ep2, x2 (not tp1x2), ep2x2; one process: tp1."""
    name = Plan(ep=ep, replicas=dp).name
    return name[3:] if name.startswith("tp1x") else name


def _check(spec: ModelSpec, batch: int, seq: int, ep: int, dp: int, grad_accum: int, dtype: str,
           mfu: float) -> None:
    for key, value in (("batch", batch), ("seq", seq), ("ep", ep), ("dp", dp), ("grad_accum", grad_accum)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MoelabError(f"training step: {key} must be a positive integer, got {value!r}")
    if dtype not in TRAIN_DTYPES:
        raise MoelabError(f"training step: dtype must be one of {', '.join(TRAIN_DTYPES)}, got {dtype!r}")
    if not 0 < mfu <= 1:
        raise MoelabError(f"training step: mfu must be in (0, 1], got {mfu!r}")
    check_plan(spec, Plan(ep=ep, replicas=dp))  # ep on a dense model, ep not dividing the experts
    if batch % (ep * dp):
        raise MoelabError(f"training step: batch {batch} does not divide over {ep * dp} processes (ep {ep} x dp "
                          f"{dp}); each needs the same number of sequences")


def _moe_groups(spec: ModelSpec):
    """(MoE spec, layers) of every distinct MoE layer."""
    return [(layer.moe, n) for layer, n in spec.layer_groups if layer.moe is not None]


def _alltoall(hw: HardwareSpec, group: int, nbytes: float) -> float:
    fn = eager.alltoall_seconds if hw.execution == "eager" else collectives.alltoall_seconds
    return fn(hw, group, nbytes) if group > 1 else 0.0


def _allreduce(hw: HardwareSpec, group: int, nbytes: float) -> float:
    fn = eager.allreduce_seconds if hw.execution == "eager" else collectives.nccl_allreduce_seconds
    return fn(hw, group, nbytes) if group > 1 else 0.0


def _collectives(spec: ModelSpec, hw: HardwareSpec, rank_tokens: int, ep: int, dp: int, grad_accum: int,
                 dtype: str, replicated: int, local_experts: int) -> list[Collective]:
    """The step's collective calls, grouped by kind (calls = per optimizer step)."""
    ranks = ep * dp
    if ranks == 1:
        return []
    out: list[Collective] = []

    def add(name: str, kind: str, group: int, calls: int, nbytes: float) -> None:
        if group > 1 and calls > 0:
            each = _alltoall(hw, group, nbytes) if kind == "alltoall" else _allreduce(hw, group, nbytes)
            out.append(Collective(name, kind, group, calls, nbytes, calls * each))

    act = activation_bytes(dtype)
    for m, n in _moe_groups(spec):
        calls = n * grad_accum
        add("router_counts_allreduce", "allreduce", ranks, calls, m.n_experts * COUNT_BYTES["allreduce"])
        if ep > 1:
            add("counts_alltoall", "alltoall", ep, calls, m.n_experts * COUNT_BYTES["alltoall"])
            rows = rank_tokens * m.top_k * spec.d_model
            # autocast keeps the residual stream, so the dispatched rows and their gradients, in float32; the
            # experts' outputs (combine) and their gradients are in the compute dtype
            add("payload_alltoall", "alltoall", ep, 2 * calls, rows * activation_bytes("fp32"))
            add("combine_alltoall", "alltoall", ep, 2 * calls, rows * act)
    add("grad_allreduce", "allreduce", ranks, 1, replicated * OPTIMIZER_BYTES)
    if ep > 1 and dp > 1:
        add("expert_grad_allreduce", "allreduce", dp, 1, local_experts * OPTIMIZER_BYTES)
    add("grad_norm_allreduce", "allreduce", ranks, 1, OPTIMIZER_BYTES)
    add("loss_allreduce", "allreduce", ranks, 1, LOGGED_VALUES[spec.is_moe] * OPTIMIZER_BYTES)
    return out


def _eager_forward(spec: ModelSpec, hw: HardwareSpec, batch: int, seq: int, ep: int, dp: int,
                   dtype: str) -> float:
    """One micro-step's forward on one rank, without its all-to-alls: cost.eager's prefill of the ep group's
    batch / dp sequences spread over its ep ranks (each rank 1 / ep of the sequences, E / ep experts)."""
    group_batch = batch // dp
    wl = Workload(batch=group_batch, prompt=seq, gen=1, dtype=dtype, kv_dtype=dtype, gpus=ep,
                  plan="ep" if ep > 1 else "tp")
    flops = prefill_flops(spec, count_params(spec), group_batch, seq, all_logits=True)
    attn = group_batch * causal_attention_flops(spec, seq)
    ph = eager.phase(spec, hw, wl, group_batch * seq, flops, 0.0, 0.0, attn)
    return ph.seconds - ph.comm_seconds


def training_step(spec: ModelSpec, hw: HardwareSpec, *, batch: int, seq: int, ep: int = 1, dp: int = 1,
                  grad_accum: int = 1, dtype: str = "fp32", mfu: float = DEFAULT_MFU) -> TrainingStep:
    """One optimizer step: `batch` sequences of `seq` tokens per micro-step over all ep * dp ranks (each rank
    batch / ranks of them), `grad_accum` micro-steps; see the module docstring for what is priced.
    `mfu` applies to GPU hardware only. Bad input is one MoelabError line."""
    _check(spec, batch, seq, ep, dp, grad_accum, dtype, mfu)
    ranks = ep * dp
    rank_tokens = batch // ranks * seq
    p = count_params(spec)
    local_experts = p.routed_experts // ep
    replicated = p.total - p.routed_experts if ep > 1 else p.total
    held = replicated + (local_experts if ep > 1 else 0)
    elementwise_bw = hw.elementwise_bandwidth or hw.bandwidth
    optimizer = held * (ADAMW_ELEMENTS_PER_PARAM + CLIP_ELEMENTS_PER_PARAM) * OPTIMIZER_BYTES / elementwise_bw
    if hw.execution == "eager":
        loss = rank_tokens * spec.vocab_size * LOSS_ELEMENTS_PER_LOGIT * OPTIMIZER_BYTES / elementwise_bw
        model_fwd = _eager_forward(spec, hw, batch, seq, ep, dp, dtype)
        loss_fwd = loss * 2 / LOSS_ELEMENTS_PER_LOGIT  # log_softmax's read and write
        forward = grad_accum * (model_fwd + loss_fwd)
        backward = grad_accum * (BACKWARD_FACTOR * model_fwd + loss - loss_fwd)
    else:  # GPU: the step's FLOPs at an assumed utilisation, the optimizer at the memory bandwidth
        optimizer = held * (ADAMW_ELEMENTS_PER_PARAM + CLIP_ELEMENTS_PER_PARAM) * OPTIMIZER_BYTES / hw.bandwidth
        rate = hw.peak(dtype)[1] * mfu
        total = grad_accum * training_flops(spec, p, rank_tokens, seq) / rate
        forward, backward = total / (1 + BACKWARD_FACTOR), total * BACKWARD_FACTOR / (1 + BACKWARD_FACTOR)
    calls = _collectives(spec, hw, rank_tokens, ep, dp, grad_accum, dtype, replicated, local_experts)
    alltoall = sum(c.seconds for c in calls if c.kind == "alltoall")
    allreduce = sum(c.seconds for c in calls if c.kind == "allreduce")
    compute = forward + backward + optimizer
    seconds = compute + alltoall + allreduce
    tokens = batch * seq * grad_accum
    return TrainingStep(
        plan=plan_name(ep, dp), ranks=ranks, tokens=tokens, compute_seconds=compute, alltoall_seconds=alltoall,
        allreduce_seconds=allreduce, seconds=seconds, tokens_per_second=tokens / seconds,
        alltoall_share=alltoall / seconds, forward_seconds=forward, backward_seconds=backward,
        optimizer_seconds=optimizer, params_held=held, execution=hw.execution, collectives=tuple(calls))
