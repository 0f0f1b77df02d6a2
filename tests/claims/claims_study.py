"""A hand-made study dict shaped as study.json's stages (the contract in ISSUE16.md and a real study's keys), with
every measured figure the claims read; arguments move the figures the verdict tests turn on. Probe cells are
Wilson-shaped (moelab.eval.score.wilson), the laws stage is moelab.laws.fits.fit_sweep's own output on a sweep
of five sizes, and the hybrid stage stores per-query answers as moelab.hybrid.table.Query does."""

from __future__ import annotations

from moelab.eval.score import wilson
from moelab.laws.fits import fit_sweep

N = 200
SIZES = (100_000, 200_000, 400_000, 800_000, 1_600_000)
WIGGLE = (1.005, 0.995, 1.005, 0.995, 1.005)  # +-0.5% about the law, so the fits' intervals have a width


def score(correct: int, n: int = N, chance: float = 0.1) -> dict:
    """A score cell as moelab.eval.score.score writes it: Wilson 95% bounds, the floor."""
    lo, hi = wilson(correct, n)
    return {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0, "ci_low": lo, "ci_high": hi,
            "chance": chance, "levels": {}}


def sweep_row(kind: str, size: int, loss: float, experts: int = 0, axis: str = "size") -> dict:
    return {"kind": kind, "name": f"{kind}-{size}-{experts}", "size": size, "params_active": size,
            "params_total": size * max(experts, 1), "compute": 6.0 * size * 1e6, "experts": experts,
            "tokens": 1_000_000, "final_val": loss, "axis": axis}


def laws(dense_losses=None, alpha: float = 0.08, beta: float = 0.2) -> dict:
    """fit_sweep's result on five dense sizes (pure power law of exponent `alpha`, or `dense_losses`) and an MoE
    expert axis at one size (pure power law in C*E of exponent `beta`)."""
    losses = dense_losses or [6.0 * (6.0 * s * 1e6) ** -alpha * w for s, w in zip(SIZES, WIGGLE, strict=True)]
    rows = [sweep_row("dense", s, loss) for s, loss in zip(SIZES, losses, strict=True)]
    rows += [sweep_row("moe", s, 6.0 * (6.0 * s * 1e6 * 8) ** -beta * w, 8) for s, w in zip(SIZES, WIGGLE,
                                                                                             strict=True)]
    rows += [sweep_row("moe", 400_000, 6.0 * (6.0 * 400_000 * 1e6 * e) ** -beta, e, "experts") for e in (4, 16, 32)]
    return fit_sweep({"rows": rows})


def queries(kinds: dict[tuple[bool, bool], tuple[int, float]]) -> list[dict]:
    """Per-query answers: {(dense correct, MoE correct): (count, dense confidence)}."""
    out = []
    for (d, m), (count, conf) in kinds.items():
        for _ in range(count):
            answer = {"text": "", "seconds": 0.01, "prompt_tokens": 8, "generated_tokens": 1, "flops": 1e6}
            out.append({"id": f"q{len(out)}", "set": "reasoning", "level": "1", "domain": "math",
                        "dense": {**answer, "correct": d, "confidence": conf},
                        "moe": {**answer, "correct": m, "confidence": 0.5}, "p_moe": 0.5})
    return out


# The default cascade: the dense confidence singles out the queries only the MoE answers (0.2), so threshold
# 0.25 escalates 15% of the queries and keeps every MoE answer: 130 right against the MoE's 120.
GOOD_CASCADE = {(True, True): (90, 0.9), (True, False): (10, 0.8), (False, True): (30, 0.2), (False, False): (70, 0.3)}
# The confidence says nothing: the queries only the MoE answers look as sure as the easy ones.
BLIND_CASCADE = {**GOOD_CASCADE, (False, True): (30, 0.9)}


def make_study(knowledge=(80, 140), reasoning=(100, 60), wide_reasoning=120, chance=0.1, cascade=None) -> dict:
    """A study dict: correct answers out of N as (dense, moe) for the iso-active pair; tiny-dense-wide's
    reasoning for the iso-total pair."""
    models = {
        "tiny-dense": {"kind": "dense", "params_total": 1e6,
                       "scores": {"knowledge": score(knowledge[0], chance=chance),
                                  "reasoning": score(reasoning[0], chance=chance)}},
        "tiny-moe": {"kind": "moe", "params_total": 3e6,
                     "scores": {"knowledge": score(knowledge[1], chance=chance),
                                "reasoning": score(reasoning[1], chance=chance)}},
        "tiny-dense-wide": {"kind": "dense", "params_total": 3e6,
                            "scores": {"knowledge": score(100, chance=chance),
                                       "reasoning": score(wide_reasoning, chance=chance)}},
    }
    served = [{"model": m, "kind": k, "concurrency": c, "tpot_ms_p50": p50, "tpot_ms_p95": p50 * 1.2,
               "tpot_ms_p99": p50 * f, "output_tokens_per_second": tps, "engine": "vllm",
               "source": "vLLM 0.11.0 (cpu) on 127.0.0.1"}
              for m, k, f, base, tps_base in (("tiny-dense", "dense", 1.3, 6.0, 150.0),
                                              ("tiny-moe", "moe", 2.0, 6.6, 120.0))
              for c, p50, tps in ((1, base, tps_base), (32, base * 2, tps_base * 10))]
    return {
        "version": 1,
        "training": {
            "config": {"eval_every": 25}, "target_loss": 3.3,
            "pairs": {"dense": "tiny-dense", "moe": "tiny-moe"},
            "rows": [{"model": "tiny-dense", "to_target": {"step": 300, "tokens": 614400, "flops": 5.0e12,
                                                           "wall_seconds": 70.0, "train_seconds": 56.0}},
                     {"model": "tiny-moe", "to_target": {"step": 250, "tokens": 512000, "flops": 4.2e12,
                                                         "wall_seconds": 72.0, "train_seconds": 70.0}}],
        },
        "serving": {"rows": served},
        "scaling": {"rows": [{"kind": "dense", "ranks": 4, "speedup": 1.6}, {"kind": "moe", "ranks": 4,
                                                                             "speedup": 1.25}],
                    "alltoall_share": {"ranks": 4, "measured": 0.33, "predicted": 0.07}},
        "mitigations": {
            "variants": [{"name": "base MoE", "loss": {"mean": 3.1}, "loss_delta_mean": 0.0},
                         {"name": "int8 experts", "loss_delta_mean": 0.0001},
                         {"name": "int4 experts", "loss_delta_mean": 0.003}],
            "upcycling": {"arms": {"dense_continued": {"final_val": {"mean": 3.22}},
                                   "upcycled": {"final_val": {"mean": 3.275}}}},
        },
        "task_type": {"basis": "measured at tiny scale", "models": models, "ci": "Wilson 95%",
                      "items": {"knowledge": N, "reasoning": N},
                      "pairs": {"iso_active": ["tiny-dense", "tiny-moe"],
                                "iso_total": ["tiny-dense-wide", "tiny-moe"]}},
        "hybrid": {"engine": "moelab", "items": N, "thresholds": [0.1, 0.25, 0.5, 0.85, 0.95],
                   "queries": queries(cascade or GOOD_CASCADE)},
        "laws": laws(),
    }
