"""A hand-made table of per-query results that the policy and curve tests compose by hand."""

from moelab.hybrid.table import Answer, Query


def _a(correct: bool, confidence: float, seconds: float, flops: float) -> Answer:
    return Answer(text="x", correct=correct, confidence=confidence, seconds=seconds, prompt_tokens=5,
                  generated_tokens=2, flops=flops)


# (set, domain, dense answer, MoE answer, P(MoE needed), router seconds)
TABLE = [
    Query("k1", "knowledge", "name", "facts", _a(False, 0.30, 1.0, 10.0), _a(True, 0.9, 3.0, 20.0), 0.80, 0.01),
    Query("k2", "knowledge", "name", "facts", _a(True, 0.90, 2.0, 10.0), _a(True, 0.8, 4.0, 20.0), 0.60, 0.02),
    Query("r1", "reasoning", "1", "math", _a(True, 0.55, 1.0, 12.0), _a(False, 0.4, 2.0, 24.0), 0.20, 0.03),
    Query("r2", "reasoning", "2", "math", _a(False, 0.10, 3.0, 14.0), _a(False, 0.2, 5.0, 28.0), 0.40, 0.04),
]
DENSE_S, MOE_S = [1.0, 2.0, 1.0, 3.0], [3.0, 4.0, 2.0, 5.0]
DENSE_F, MOE_F = [10.0, 10.0, 12.0, 14.0], [20.0, 20.0, 24.0, 28.0]
ROUTER_S = [0.01, 0.02, 0.03, 0.04]
