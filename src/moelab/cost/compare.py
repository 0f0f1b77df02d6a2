"""Two models side by side across decode batch sizes, and the batch at which the throughput winner flips."""

from __future__ import annotations

from dataclasses import replace

from moelab.cost.economics import serving_economics
from moelab.cost.estimate import resolve_gpus
from moelab.cost.parallel import plans
from moelab.cost.roofline import Workload
from moelab.spec.hardware import HardwareSpec
from moelab.spec.model import ModelSpec


def _side(spec: ModelSpec, hw: HardwareSpec, wl: Workload, gpus: int | None) -> dict:
    wl = resolve_gpus(spec, hw, wl, gpus)
    chosen = next(r for r in plans(spec, hw, wl) if r.plan == wl.plan)
    money = serving_economics(hw, wl, chosen.prefill, chosen.decode)
    return {
        "gpus": wl.gpus,
        "plan": wl.plan,
        "fits": chosen.fits,
        "step_seconds": chosen.decode.seconds,
        "bound": chosen.decode.bound,
        "tokens_per_second": chosen.tokens_per_second,
        "tokens_per_second_per_gpu": chosen.tokens_per_second_per_gpu,
        "usd_per_million_tokens": money["usd_per_million_tokens"],
        "distinct_experts_per_layer": chosen.decode.distinct_experts_per_layer,
    }


def _winner(a: dict, b: dict) -> str:
    return "a" if a["tokens_per_second_per_gpu"] >= b["tokens_per_second_per_gpu"] else "b"


def compare(spec_a: ModelSpec, spec_b: ModelSpec, hw: HardwareSpec, wl: Workload, batches: list[int],
            gpus: int | None = None) -> dict:
    """Decode throughput per GPU of A and B at each batch (each on its own GPU count unless `gpus`)."""
    def row(batch: int) -> dict:
        b_wl = replace(wl, batch=batch)
        a, b = _side(spec_a, hw, b_wl, gpus), _side(spec_b, hw, b_wl, gpus)
        return {"batch": batch, "a": a, "b": b, "winner": _winner(a, b)}

    rows = [row(b) for b in sorted(set(batches))]
    flips = []
    for left, right in zip(rows, rows[1:], strict=False):
        if left["winner"] == right["winner"]:
            continue
        lo, hi = left["batch"], right["batch"]  # winner at lo differs from winner at hi: bisect
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if row(mid)["winner"] == left["winner"] else (lo, mid)
        names = {"a": spec_a.name, "b": spec_b.name}
        flips.append({"batch": hi, "from": names[left["winner"]], "to": names[right["winner"]]})
    return {
        "a": spec_a.name,
        "b": spec_b.name,
        "hardware": hw.name,
        "metric": "decode tokens/s per GPU",
        "rows": rows,
        "flips": flips,
    }
