"""How many distinct experts a batch of tokens touches, under uniform or skewed routing.

Each token picks k of E experts. Expert i is picked by a token with probability q_i = k * load_i, where
load_i is expert i's share of routed token-slots (sum 1). Tokens route independently, so a batch of B
tokens touches expert i with probability 1 - (1 - q_i)^B and the expected count of distinct experts is

    U(B) = sum_i 1 - (1 - q_i)^B        (uniform: U(B) = E * (1 - (1 - k/E)^B))

`skew` s shapes the loads as Zipf, load_i proportional to 1 / i^s (s = 0 is uniform); no expert can be
picked by more than every token, so shares above 1/k are capped and the excess spread over the rest.
"""

from __future__ import annotations

from moelab.errors import MoelabError


def expert_loads(n_experts: int, top_k: int, skew: float = 0.0) -> list[float]:
    """Each expert's share of routed token-slots (sums to 1, each at most 1/top_k), most loaded first."""
    if not 0 < top_k <= n_experts:
        raise MoelabError(f"top_k must be in 1..{n_experts}, got {top_k}")
    if skew < 0:
        raise MoelabError(f"routing skew must be >= 0, got {skew}")
    weights = [1.0 / (i + 1) ** skew for i in range(n_experts)]
    cap = 1.0 / top_k
    loads = [0.0] * n_experts
    free, remaining = list(range(n_experts)), 1.0
    while free:  # water-filling: cap the heaviest at 1/k, share what is left in proportion
        scale = remaining / sum(weights[i] for i in free)
        over = [i for i in free if weights[i] * scale > cap]
        if not over:
            for i in free:
                loads[i] = weights[i] * scale
            break
        for i in over:
            loads[i] = cap
        remaining -= cap * len(over)
        free = [i for i in free if i not in over]
    return loads


def distinct_experts(n_experts: int, top_k: int, tokens: float, skew: float = 0.0) -> float:
    """Expected number of distinct experts a batch of `tokens` tokens routes to, in one MoE layer."""
    if tokens < 0:
        raise MoelabError(f"token count must be >= 0, got {tokens}")
    if not 0 < top_k <= n_experts:
        raise MoelabError(f"top_k must be in 1..{n_experts}, got {top_k}")
    if skew == 0.0:
        return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)
    return sum(1.0 - (1.0 - top_k * load) ** tokens for load in expert_loads(n_experts, top_k, skew))
