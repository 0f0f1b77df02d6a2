"""A hand-made study dict shaped as study.json's stages (the contract in ISSUE16.md and a real study's keys), with
every measured figure the claims read; arguments move the figures the verdict tests turn on."""

from __future__ import annotations


def score(accuracy: float, half: float, n: int = 200) -> dict:
    return {"n": n, "correct": round(accuracy * n), "accuracy": accuracy, "ci_low": accuracy - half,
            "ci_high": accuracy + half, "chance": 0.1, "levels": {}}


def make_study(knowledge=(0.40, 0.70), reasoning=(0.50, 0.30), wide_reasoning=0.60, half=0.05) -> dict:
    """A study dict shaped as study.json's stages (the contract in ISSUE16.md and a real study's keys):
    accuracies as (dense, moe) for the iso-active pair; tiny-dense-wide's reasoning for the iso-total pair."""
    models = {
        "tiny-dense": {"kind": "dense", "scores": {"knowledge": score(knowledge[0], half),
                                                   "reasoning": score(reasoning[0], half)}},
        "tiny-moe": {"kind": "moe", "scores": {"knowledge": score(knowledge[1], half),
                                               "reasoning": score(reasoning[1], half)}},
        "tiny-dense-wide": {"kind": "dense", "scores": {"knowledge": score(0.5, half),
                                                        "reasoning": score(wide_reasoning, half)}},
    }
    served = [{"model": m, "kind": k, "concurrency": c, "tpot_ms_p50": p50, "tpot_ms_p95": p50 * 1.2,
               "tpot_ms_p99": p50 * f, "output_tokens_per_second": tps}
              for m, k, f, base, tps_base in (("tiny-dense", "dense", 1.3, 6.0, 150.0),
                                              ("tiny-moe", "moe", 2.0, 6.6, 120.0))
              for c, p50, tps in ((1, base, tps_base), (32, base * 2, tps_base * 10))]
    return {
        "version": 1,
        "training": {
            "config": {"eval_every": 25},
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
        "task_type": {"basis": "measured at tiny scale", "models": models,
                      "pairs": {"iso_active": ["tiny-dense", "tiny-moe"],
                                "iso_total": ["tiny-dense-wide", "tiny-moe"]}},
        "hybrid": {"models": {"moe": {"accuracy": 0.60, "ci_low": 0.55, "ci_high": 0.65}},
                   "best": {"cascade": {"policy": "cascade", "threshold": 0.5, "accuracy": 0.62, "ci_low": 0.57,
                                        "ci_high": 0.67, "n": 200, "escalation_rate": 0.3}}},
        "laws": {"fits": {"dense": {"alpha": 0.08, "alpha_ci": [0.05, 0.11], "points": 4, "ci_open": []},
                          "moe_experts": {"beta": 0.2, "beta_ci": [0.15, 0.25], "points": 3, "ci_open": []}}},
    }
