"""What would flip the decision: the decision re-run with one workload input moved at a time (p99 target,
memory budget, throughput target, quality floor, reasoning share, TTFT / TPOT limits, typical batch), reporting
the nearest value on each side that changes it; plus the batch at which the modelled throughput winner between
the best dense and the best MoE flips.

The values tried are the candidates' own figures (and a hair either side of each), so a threshold sits exactly
at a candidate's footprint (or a dense and a MoE replica together, for a hybrid), latency or throughput.
Each row: {input, direction ("below"/"above"/None), threshold, from, to, text}; `from`/`to` are wording.label
phrases.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from moelab.decide import wording
from moelab.decide.candidates import gb

if TYPE_CHECKING:
    from moelab.decide.recommend import Context


def _scan(ctx: Context, base: dict, key: str, current: float | None, values: list[float], make) -> list[dict]:
    """The nearest value of `key` below and above `current` that changes the recommendation."""
    now = wording.label(base["recommendation"])
    out = []
    for side, seq in (("below", sorted((v for v in values if current is not None and v < current), reverse=True)),
                      ("above", sorted(v for v in values if current is None or v > current))):
        for v in seq:
            rec = ctx.decide(make(v))["recommendation"]
            if wording.label(rec) != now:
                out.append({"input": key, "direction": side, "threshold": v, "from": now, "to": wording.label(rec)})
                break
    return out


def _with_reasoning(wl, r: float):
    """The workload with reasoning share r, the other tasks keeping their proportions."""
    mix, rest = wl.task_mix, 1 - wl.task_mix["reasoning"]
    others = {k: (v / rest if rest > 0 else 1 / 3) * (1 - r) for k, v in mix.items() if k != "reasoning"}
    return replace(wl, task_mix={"reasoning": r, **others})


def _input_flips(ctx: Context, base: dict) -> list[dict]:
    wl, cands, eps = ctx.wl, base["candidates"], 1e-6
    lat = sorted({c["latency_ms"] for c in cands} | {round(d["step_seconds"] * ctx.tail.ratio * 1e3, 3)
                                                     for f in ctx.figures for d in f["deployments"]})
    pairs = {round(a["memory_gb"] + b["memory_gb"], 2) for a in cands for b in cands  # a hybrid's two replicas
             if a["kind"] == "dense" and b["kind"] == "moe"}
    mem = sorted({c["memory_gb"] for c in cands} | pairs | {gb(d["memory_bytes"]) for f in ctx.figures
                                                             for d in f["deployments"]})
    floors = sorted({c["dense_equivalent_b"] for c in cands} | {0.0})
    found = (_scan(ctx, base, "latency_p99_ms", wl.latency_p99_ms, [v - eps for v in lat] + lat,
                   lambda v: replace(wl, latency_p99_ms=v))
             + _scan(ctx, base, "memory_budget_gb", wl.memory_budget_gb, [v - 0.01 for v in mem] + mem,
                     lambda v: replace(wl, memory_budget_gb=v)))
    if wl.throughput_tokens_per_s is not None:
        tp = sorted({c["tokens_per_second"] for c in cands})
        found += _scan(ctx, base, "throughput_tokens_per_s", wl.throughput_tokens_per_s, [v + 0.5 for v in tp] + tp,
                       lambda v: replace(wl, throughput_tokens_per_s=v))
    found += _scan(ctx, base, "quality_floor_b", wl.quality_floor_b, [v + 0.01 for v in floors] + floors,
                   lambda v: replace(wl, quality_floor_b=v))
    shares = _scan(ctx, base, "reasoning_share", wl.task_mix["reasoning"], [i / 100 for i in range(101)],
                   lambda r: _with_reasoning(wl, r))
    if not shares:
        now = wording.label(base["recommendation"])
        shares = [{"input": "reasoning_share", "direction": None, "threshold": None, "from": now, "to": now}]
    return found + shares + _serving_flips(ctx, base) + _batch_flips(ctx, base)


def _serving_flips(ctx: Context, base: dict) -> list[dict]:
    """The nearest TTFT and TPOT limits (at the candidates' own modelled figures) that change the decision."""
    wl, out = ctx.wl, []
    for key in ("ttft_ms", "tpot_ms"):
        current = getattr(wl, key)
        if current is None:
            continue
        values = sorted({getattr(sp, key) for f in ctx.figures for sp in f.get("serving") or [] if sp.fits})
        out += _scan(ctx, base, key, current, [v - 1e-9 * v for v in values] + values,
                     lambda v, key=key: replace(wl, **{key: v}))
    return out


def _batch_flips(ctx: Context, base: dict) -> list[dict]:
    """The nearest typical batch in the workload's sweep (re-modelled) at which the recommendation changes."""
    wl, now = ctx.wl, wording.label(base["recommendation"])
    out = []
    for side, seq in (("below", sorted((b for b in wl.batches if b < wl.batch), reverse=True)),
                      ("above", sorted(b for b in wl.batches if b > wl.batch))):
        for b in seq:
            sub = ctx.at_batch(b)
            to = wording.label(sub.decide(sub.wl)["recommendation"])
            if to != now:
                out.append({"input": "batch", "direction": side, "threshold": b, "from": now, "to": to})
                break
    return out or [{"input": "batch", "direction": None, "threshold": None, "from": now, "to": now}]


def _winner_flip(ctx: Context, base: dict) -> dict | None:
    """The throughput winner's flip between the best dense and the best MoE (None without both kinds)."""
    flip, best = base["throughput_flip"], base["best"]
    if not (best["dense"] and best["moe"]):
        return None
    winner = None
    if not flip:
        row = ctx.pair_compare(best["dense"], best["moe"])["rows"][0]
        winner = best["dense"] if row["winner"] == "a" else best["moe"]
    return {"input": "throughput_winner_batch", "direction": "above", "threshold": flip["batch"] if flip else None,
            "from": flip["from"] if flip else None, "to": flip["to"] if flip else None,
            "gpus_changed": bool(flip and flip.get("gpus_changed")),
            "text": wording.winner_flip_text(flip, best, winner, ctx.policy)}


def flips(ctx: Context, base: dict) -> list[dict]:
    """Every flip row of the decision `base` (Context.decide's result), the throughput winner's first."""
    rows = [{**f, "text": wording.flip_text(f, ctx.wl)} for f in _input_flips(ctx, base)]
    winner = _winner_flip(ctx, base)
    return ([winner] if winner else []) + rows
