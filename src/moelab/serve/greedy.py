"""Does the served model compute what moelab computes? Greedy token ids through a server against moelab's own.

For each prompt (token ids), moelab decodes greedily with its KV cache (as TransformerLM.generate does) and keeps
the top-2 logit margin of every step; the server is asked for the same prompt at temperature 0 with
`return_token_ids` (vLLM's completions extension) and ignore_eos. The two sequences must be equal. Two
correct implementations may still part where moelab's top two logits are within `NEAR_TIE_LOGITS` of each
other (kernels round differently: vLLM's CPU GEMMs and fused-MoE kernels are not moelab's eager matmuls), so
a divergence at such a step is counted as a near-tie, and the rest of that sequence is not compared (the
contexts differ from there). Any other divergence is a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from moelab.errors import MoelabError
from moelab.serve.load import Endpoint, completion_request, post_sync

NEAR_TIE_LOGITS = 0.01  # top-2 logit margin below which a float32 divergence is a tie, not a bug


@dataclass
class GreedyCheck:
    prompts: int = 0
    tokens_compared: int = 0
    matched: int = 0  # sequences equal to the end
    near_ties: int = 0  # sequences that parted at a near-tie
    mismatches: list[dict] = field(default_factory=list)  # {prompt, step, moelab, served, margin}
    min_margin_seen: float | None = None  # the smallest top-2 margin over the compared steps
    threshold: float = NEAR_TIE_LOGITS

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.prompts > 0

    def to_dict(self) -> dict:
        return {"prompts": self.prompts, "tokens_compared": self.tokens_compared, "matched": self.matched,
                "near_ties": self.near_ties, "mismatches": self.mismatches, "ok": self.ok,
                "near_tie_logits": self.threshold, "min_margin_seen": self.min_margin_seen}


def moelab_greedy(model, prompt: list[int], max_tokens: int) -> tuple[list[int], list[float]]:
    """(greedy ids, top-2 logit margin at each step) from moelab's model, one token per step through its cache."""
    import torch

    with torch.no_grad():
        ids = torch.tensor([prompt], dtype=torch.long)
        cache = model.new_cache(len(prompt) + max_tokens)
        logits = model(ids, cache)
        out, margins = [], []
        for _ in range(max_tokens):
            last = logits[0, -1].double()
            top = torch.topk(last, 2).values
            token = int(last.argmax())
            out.append(token)
            margins.append(float(top[0] - top[1]))
            logits = model(torch.tensor([[token]], dtype=torch.long), cache)
    return out, margins


def served_greedy(endpoint: Endpoint, prompt: list[int], max_tokens: int, timeout_s: float = 120.0) -> list[int]:
    """The server's greedy ids for `prompt` (vLLM's return_token_ids)."""
    body = completion_request(endpoint.model_id, prompt, max_tokens, stream=False)
    body["return_token_ids"] = True
    answer = post_sync(endpoint, body, timeout_s)
    try:
        ids = answer["choices"][0]["token_ids"]
    except (KeyError, IndexError, TypeError):
        raise MoelabError(f"greedy check: endpoint '{endpoint.name}' returned no token_ids (not vLLM?)") from None
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise MoelabError(f"greedy check: endpoint '{endpoint.name}' returned token_ids that are not integers")
    return ids


def compare(ours: list[int], margins: list[float], served: list[int], threshold: float = NEAR_TIE_LOGITS) -> dict:
    """{"steps": compared, "result": "match" | "near_tie" | "mismatch", "step", "moelab", "served", "margin"}."""
    if len(served) != len(ours):
        return {"steps": 0, "result": "mismatch", "step": None, "moelab": len(ours), "served": len(served),
                "margin": None, "why": "lengths differ"}
    for step, (a, b) in enumerate(zip(ours, served, strict=True)):
        if a != b:
            kind = "near_tie" if margins[step] < threshold else "mismatch"
            return {"steps": step + 1, "result": kind, "step": step, "moelab": a, "served": b,
                    "margin": margins[step]}
    return {"steps": len(ours), "result": "match"}


def check(model, endpoint: Endpoint, prompts: list[list[int]], max_tokens: int,
          threshold: float = NEAR_TIE_LOGITS) -> GreedyCheck:
    """Compare every prompt's greedy continuation (module docstring)."""
    result = GreedyCheck(threshold=threshold)
    for index, prompt in enumerate(prompts):
        ours, margins = moelab_greedy(model, prompt, max_tokens)
        found = compare(ours, margins, served_greedy(endpoint, prompt, max_tokens), threshold)
        result.prompts += 1
        result.tokens_compared += found["steps"]
        seen = margins[:found["steps"]]
        if seen:
            low = min(seen)
            result.min_margin_seen = low if result.min_margin_seen is None else min(result.min_margin_seen, low)
        if found["result"] == "match":
            result.matched += 1
        elif found["result"] == "near_tie":
            result.near_ties += 1
        else:
            result.mismatches.append({"prompt": index, **{k: v for k, v in found.items() if k != "result"}})
    return result
