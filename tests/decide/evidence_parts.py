"""Hand-made study parts for the decision's tests, shaped by issue 16's contracts: study["task_type"] (cells as
moelab.eval.score.score writes them, intervals from its wilson()) and study["hybrid"] (points composed by
moelab.hybrid.curve from per-query measurements, as moelab.hybrid.run assembles them); and the training and bench
parts of an older study."""

from moelab.eval.score import wilson
from moelab.hybrid import curve, policies
from moelab.hybrid.table import Answer, Query

MODELS = {"tiny-dense": ("dense", 1_574_016, 1_574_016), "tiny-moe": ("moe", 3_937_408, 1_578_112),
          "tiny-dense-wide": ("dense", 3_900_000, 3_900_000)}
PAIRS = {"iso_active": ["tiny-dense", "tiny-moe"], "iso_total": ["tiny-dense-wide", "tiny-moe"]}
# MoE ahead on knowledge at equal active size, dense ahead on reasoning at equal total size, both clearly
CLEAR = {"tiny-dense": {"knowledge": (20, 100), "reasoning": (40, 100)},
         "tiny-moe": {"knowledge": (60, 100), "reasoning": (30, 100)},
         "tiny-dense-wide": {"knowledge": (30, 100), "reasoning": (70, 100)}}


def cell(correct: int, n: int, chance: float = 0.05) -> dict:
    lo, hi = wilson(correct, n)
    return {"n": n, "correct": correct, "accuracy": correct / n, "ci_low": lo, "ci_high": hi, "chance": chance,
            "levels": {}}


def task_type(scores: dict[str, dict[str, tuple[int, int]]], chance: float = 0.05, pairs: dict = PAIRS,
              floor_warnings: tuple[str, ...] = ()) -> dict:
    """study["task_type"] from {model: {probe set: (correct, n)}}."""
    models = {}
    for name, sets in scores.items():
        kind, total, active = MODELS[name]
        models[name] = {"kind": kind, "params_total": total, "params_active": active,
                        "scores": {s: cell(k, n, chance) for s, (k, n) in sets.items()}}
    items = {s: n for sets in scores.values() for s, (_, n) in sets.items()}
    return {"basis": "measured at tiny scale", "ci": "Wilson 95%", "per_level": 24, "items": items,
            "models": models, "pairs": pairs, "floor_warnings": list(floor_warnings), "seconds": 12.5}


def queries(n: int = 40) -> list[Query]:
    """Per-query answers: the dense model right unless i % 3 == 0 (then unsure: confidence 0.3), the MoE right
    unless i % 4 == 0; the router flags the queries the dense model gets wrong."""
    out = []
    for i in range(n):
        dense_right, moe_right = i % 3 != 0, i % 4 != 0
        out.append(Query(id=f"q{i}", set="knowledge" if i % 2 else "reasoning", level="1",
                         domain="facts" if i % 2 else "math",
                         dense=Answer("a", dense_right, 0.9 if dense_right else 0.3, 0.010, 12, 3, 1.0e7),
                         moe=Answer("a", moe_right, 0.8, 0.020, 12, 3, 2.5e7),
                         p_moe=0.1 if dense_right else 0.8, router_seconds=1e-4))
    return out


def hybrid(n: int = 40, thresholds: tuple[float, ...] = (0.2, 0.5, 0.95)) -> dict:
    """study["hybrid"] as moelab.hybrid.run writes it (the parts the decision reads)."""
    qs = queries(n)
    points = curve.sweep(qs, thresholds)
    best = {"cascade": curve.best(points, "cascade"), "route": curve.best(points, "route", "classifier"),
            "route_domain": curve.best(points, "route", "domain")}

    def model(name: str, kind: str, point) -> dict:
        _, total, active = MODELS[name]
        return {"name": name, "run": f"runs/{name}", "params_active": active, "params_total": total,
                "accuracy": point.accuracy, "ci_low": point.ci_low, "ci_high": point.ci_high, "n": point.n,
                "latency_s_mean": point.latency_s_mean, "flops_per_query": point.flops_per_query,
                "sets": point.sets, "kind": kind}

    return {"engine": "moelab", "engine_note": "moelab's own generation", "basis": "measured at tiny scale",
            "items": n, "thresholds": list(thresholds), "ci": "Wilson 95%",
            "models": {"dense": model("tiny-dense", "dense", policies.dense(qs)),
                       "moe": model("tiny-moe", "moe", policies.moe(qs))},
            "points": [p.to_dict() for p in points],
            "best": {k: (v.to_dict() if v is not None else None) for k, v in best.items()}, "seconds": 3.0}


def training_and_bench() -> dict:
    """The training and bench parts of a study (a MoE that reaches the target on fewer FLOPs; CPU tails 1.2)."""
    rows = [{"model": "tiny-dense", "params_total": 1, "params_active": 1,
             "to_target": {"step": 20, "tokens": 4000, "flops": 3.0e10, "wall_seconds": 2.0},
             "final_val": {"math": 4.1, "prose": 3.4, "mean": 3.75}, "tokens_per_second": 2000},
            {"model": "tiny-moe", "params_total": 3, "params_active": 1,
             "to_target": {"step": 16, "tokens": 3200, "flops": 2.4e10, "wall_seconds": 2.5},
             "final_val": {"math": 3.9, "prose": 3.3, "mean": 3.6}, "tokens_per_second": 1400}]
    bench_rows = [{"model": m, "phase": "decode", "batch": b, "measured_s": 1e-3 * b, "predicted_s": 1.1e-3 * b,
                   "rel_error": 0.1, "p50_s": 1e-3 * b, "p95_s": 1.1e-3 * b, "p99_s": 1.2e-3 * b,
                   "tokens_per_second": 1000} for m in ("tiny-dense", "tiny-moe") for b in (1, 8)]
    return {"training": {"target_loss": 4.0, "rows": rows,
                         "pairs": {"dense": "tiny-dense", "moe": "tiny-moe", "moe_fine": "tiny-moe-fine"}},
            "bench": {"device": "cpu", "rows": bench_rows, "summary": {"decode": {"median_abs_rel_error": 0.1, "n": 4}},
                      "flip": {"measured_batch": 16, "predicted_batch": 12}}}
