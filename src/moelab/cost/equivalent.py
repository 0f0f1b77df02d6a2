"""Dense equivalents of a MoE: the seeds' size heuristic, and the dense model with the same workload cost."""

from __future__ import annotations

from dataclasses import replace

from moelab.cost.params import count_params
from moelab.cost.plan import Plan
from moelab.cost.roofline import Workload, decode_step
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import FFNSpec, LayerSpec, ModelSpec


def heuristic_dense_equivalent(spec: ModelSpec) -> float:
    """total / (E^0.44 / k^0.63): the seeds' rule of thumb for the dense size a MoE performs like."""
    total = count_params(spec).total
    if not spec.is_moe:
        return float(total)
    return total / (spec.moe.n_experts ** 0.44 / spec.moe.top_k ** 0.63)


def dense_twin(spec: ModelSpec, ffn_dim: int) -> ModelSpec:
    """The dense model of the same shape (width, depth, attention, vocabulary) with FFN width `ffn_dim`.

    A derived spec (bounded=False): the twin of a large MoE on a huge workload may need an FFN wider than
    limits.MAX_FFN, a bound on what users give, not on what moelab computes."""
    ffn = FFNSpec(ffn_dim)
    kinds = {id(layer.attention): LayerSpec(layer.attention, ffn) for layer, _ in spec.layer_groups}
    for layer in spec.layers:  # an attention equal to a group's but another object: its own LayerSpec
        kinds.setdefault(id(layer.attention), LayerSpec(layer.attention, ffn))
    return replace(spec, name=f"{spec.name}-dense-f{ffn_dim}", expert_storage=None, bounded=False,
                   layers=tuple(kinds[id(layer.attention)] for layer in spec.layers))


def dense_plan(plan: Plan) -> Plan:
    """The twin's plan on the same GPUs: the same pp and tp, and the ep groups (data-parallel attention) as
    replicas, since the twin has no experts to split."""
    return Plan(pp=plan.pp, tp=plan.tp, replicas=plan.replicas * plan.ep)


def workload_dense_equivalent(spec: ModelSpec, hw: HardwareSpec, wl: Workload) -> dict:
    """The dense twin whose modelled decode step on this workload (on the twin of its plan, `dense_plan`) takes
    as long as the model's own.

    Decode step time grows with the FFN width, so bisection on the width finds it, to within 0.5% of the width
    (far finer than the model's own error). At batch 1 a MoE costs about its active size; at large batches,
    where every expert is read, about its total size.
    """
    dense_wl = replace(wl, plan=dense_plan(wl.parallel).name)
    target = decode_step(spec, hw, wl).seconds

    def step(ffn: int) -> float:
        return decode_step(dense_twin(spec, ffn), hw, dense_wl).seconds

    lo, hi = 1, max(spec.ffn_dim, 1)
    if step(lo) >= target:
        return {"params": count_params(dense_twin(spec, lo)).total, "ffn_dim": lo, "decode_step_seconds": target,
                "note": "cheaper than any dense twin of the same shape; the smallest twin is reported"}
    while step(hi) < target and hi < 1 << 30:
        hi *= 2
    while hi - lo > max(1, hi // 200):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if step(mid) < target else (lo, mid)
    return {"params": count_params(dense_twin(spec, hi)).total, "ffn_dim": hi, "decode_step_seconds": target,
            "note": f"decode step time at batch {wl.batch}, context {wl.decode_context:g}"}
