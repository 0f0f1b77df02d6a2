"""The per-query measurements every hybrid point is composed from: each scored query answered once by each model.

A `Query` holds the dense model's and the MoE's `Answer` to one probe item (its text, exact-match verdict,
confidence, measured wall seconds, tokens and FLOPs) and the router's probability that the MoE is needed, with
the seconds the router took (features and classifier, before any generation). Policies never generate: they
choose, per query, whose answer is given and whose cost is paid (moelab.hybrid.policies).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Answer:
    """One model's answer to one query, as measured."""

    text: str
    correct: bool
    confidence: float  # exp(mean token log-probability) of the answer, in [0, 1]
    seconds: float  # wall time of this query: prefill + decode (+ the HTTP round trip for a served model)
    prompt_tokens: int
    generated_tokens: int
    flops: float  # moelab.hybrid.cost.answer_flops of this answer


@dataclass(frozen=True)
class Query:
    id: str
    set: str  # "knowledge" | "reasoning"
    level: str
    domain: str
    dense: Answer
    moe: Answer
    p_moe: float = 0.0  # the router's P(MoE needed), from the prompt alone
    router_seconds: float = 0.0  # the router's time for this query (features + classifier)

    def to_dict(self) -> dict:
        return asdict(self)
