"""FLOPs of answering one query with one model: the cost engine's prefill of the prompt and its decode steps.

A greedy answer (moelab.eval.generate, batch 1, KV cache) processes the prompt and its generated tokens once each:
one prefill of the P prompt tokens (logits at the last position only), then one decode step per generated token,
the i-th attending to P + i positions. `generated_tokens` is the answer's token_ids: greedy_answer keeps every
generated token but a last one that adds only the stop (or is <|endoftext|>), and that token was read off the
logits of the last token kept, so n kept tokens are exactly n decode steps whenever the answer ended on such a
token (the usual case: the newline is a token of its own); an answer that ended inside a kept token or at the
token limit is priced one decode step high. Both terms are moelab.cost.flops's (2 x active matmul parameters per
token, top-k and shared experts included, attention summed layer by layer, and the lm_head). Torch-free.
"""

from __future__ import annotations

from moelab.cost.flops import decode_flops, prefill_flops
from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.spec.model import ModelSpec


def answer_flops(spec: ModelSpec, prompt_tokens: int, generated_tokens: int) -> float:
    """Forward FLOPs of one greedy answer: prefill(P) + sum over decode steps i = 1..n at context P + i."""
    for name, value, low in (("prompt_tokens", prompt_tokens, 1), ("generated_tokens", generated_tokens, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise MoelabError(f"answer_flops: {name} must be an integer >= {low}, got {value!r}")
    p = count_params(spec)
    total = prefill_flops(spec, p, 1, prompt_tokens)
    for i in range(1, generated_tokens + 1):
        total += decode_flops(spec, p, 1, prompt_tokens + i)
    return total
