"""Two models side by side across decode batch sizes, and the batch at which the throughput winner flips.

What a row means. Without `gpus`, each model is served at each batch on the fewest GPUs (a power of two) that
hold it there, which is what an operator provisions for that batch; so a model's GPU count can step up from one
row to the next, every row carries it, and a flip found at a batch where either model's GPU count changes
carries `gpus_changed: true` and says so in its `note` ("A moves from 4 to 8 GPUs here"): a per-GPU winner
that changes exactly there may be an artefact of the provisioning step, not of the architectures. With `gpus`,
both models stay on that count at every row, which is the question "these GPUs, which model" a careful user
asks when they name a count; `plan` fixes the plan too (it must serve both models). Each side's row names its
plan (the best that fits there, unless fixed), replicas and KV-limited max_concurrency. A model that does not
fit (memory per GPU above the usable capacity) is marked `fits: false`, never wins a row against one that fits,
and a flip caused by a change of fit says so too.
"""

from __future__ import annotations

from dataclasses import replace

from moelab.cost.economics import serving_economics
from moelab.cost.estimate import resolve_gpus
from moelab.cost.finite import require_finite
from moelab.cost.parallel import best_plan, evaluate, plans
from moelab.cost.plan import Plan, check_plan
from moelab.cost.roofline import Workload
from moelab.errors import MoelabError
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec


def _side(spec: ModelSpec, hw: HardwareSpec, wl: Workload, gpus: int | None, plan: Plan | None = None) -> dict:
    wl = resolve_gpus(spec, hw, wl, gpus, plan)
    chosen = evaluate(spec, hw, wl, wl.parallel) if plan is not None else best_plan(plans(spec, hw, wl))
    money = serving_economics(hw, wl, chosen.prefill, chosen.decode)
    return {
        "gpus": wl.gpus,
        "plan": chosen.plan,
        "replicas": chosen.replicas,
        "fits": chosen.fits,
        "max_concurrency": chosen.max_concurrency,
        "memory_per_gpu_bytes": chosen.memory_per_gpu_bytes,
        "capacity_per_gpu_bytes": hw.memory_bytes * hw.memory_utilization,
        "step_seconds": chosen.decode.seconds,
        "bound": chosen.decode.bound,
        "tokens_per_second": chosen.tokens_per_second,
        "tokens_per_second_per_gpu": chosen.tokens_per_second_per_gpu,
        "usd_per_million_tokens": money["usd_per_million_tokens"],
        "distinct_experts_per_layer": chosen.decode.distinct_experts_per_layer,
    }


def _winner(a: dict, b: dict) -> str:
    """The side that fits, if only one does; else the higher decode tokens/s per GPU."""
    if a["fits"] != b["fits"]:
        return "a" if a["fits"] else "b"
    return "a" if a["tokens_per_second_per_gpu"] >= b["tokens_per_second_per_gpu"] else "b"


def _flip_causes(before: dict, at: dict) -> dict:
    """What else changes between the row before a flip and the flip's row: GPU counts, fit, in words."""
    notes, gpus_changed, fits_changed = [], False, False
    for side in ("a", "b"):
        x, y = before[side], at[side]
        if x["gpus"] != y["gpus"]:
            gpus_changed = True
            notes.append(f"{side.upper()} moves from {x['gpus']} to {y['gpus']} GPUs here")
        if x["fits"] != y["fits"]:
            fits_changed = True
            notes.append(f"{side.upper()} {'stops' if x['fits'] else 'starts'} fitting on {y['gpus']} GPUs here")
    return {"gpus_changed": gpus_changed, "fits_changed": fits_changed,
            "gpus": {"a": [before["a"]["gpus"], at["a"]["gpus"]], "b": [before["b"]["gpus"], at["b"]["gpus"]]},
            "note": f"({'; '.join(notes)})" if notes else ""}


def compare(spec_a: ModelSpec, spec_b: ModelSpec, hw: HardwareSpec, wl: Workload, batches: list[int],
            gpus: int | None = None, plan: Plan | str | None = None) -> dict:
    """Decode throughput per GPU of A and B at each batch (each on its own GPU count and best plan unless `gpus`
    or `plan`; see the module docstring for why, and for what a flip's `gpus_changed` and `note` say)."""
    cache: dict[int, dict] = {}
    plan = Plan.parse(plan) if isinstance(plan, str) else plan
    if plan is not None:
        if gpus is not None and gpus != plan.gpus:
            raise MoelabError(f"--gpus {gpus} contradicts --plan {plan.name}, which uses {plan.gpus} GPUs")
        check_plan(spec_a, plan)
        check_plan(spec_b, plan)
        gpus = plan.gpus

    def row(batch: int) -> dict:
        if batch not in cache:
            b_wl = replace(wl, batch=batch)
            a, b = _side(spec_a, hw, b_wl, gpus, plan), _side(spec_b, hw, b_wl, gpus, plan)
            cache[batch] = {"batch": batch, "a": a, "b": b, "winner": _winner(a, b)}
        return cache[batch]

    rows = [row(b) for b in sorted(set(batches))]
    flips = []
    names = {"a": spec_a.name, "b": spec_b.name}
    for left, right in zip(rows, rows[1:], strict=False):
        if left["winner"] == right["winner"]:
            continue
        lo, hi = left["batch"], right["batch"]  # winner at lo differs from winner at hi: bisect
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if row(mid)["winner"] == left["winner"] else (lo, mid)
        flips.append({"batch": hi, "from": names[left["winner"]], "to": names[right["winner"]],
                      **_flip_causes(row(lo), row(hi))})
    return require_finite({
        "a": spec_a.name,
        "b": spec_b.name,
        "moe": {"a": spec_a.is_moe, "b": spec_b.is_moe},
        "hardware": hw.name,
        "metric": "decode tokens/s per GPU",
        "gpus": gpus,
        "plan": plan.name if plan is not None else None,
        "gpus_basis": (f"fixed by --plan {plan.name}" if plan is not None else "fixed by --gpus" if gpus else
                       "fewest GPUs (power of two) that hold each model at each batch"),
        "plan_basis": ("fixed by --plan" if plan is not None else
                       "each model's best plan (fastest decode that fits) at each row"),
        "rows": rows,
        "flips": flips,
    }, "compare")
