"""Greedy answers, one query at a time: prefill the prompt, decode through the KV cache, stop at a newline.

Each answer keeps the log-probability of every token it generated (natural log, of the greedy token under the
model's full softmax) and the wall time of its query, so a cascade can read a confidence (exp of the mean
log-probability) and a latency off the same call that produced the answer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from moelab.data.tokenizer import EOT
from moelab.errors import MoelabError

MAX_NEW_TOKENS = 16  # the probes' answers are at most ~8 tokens; a model that has not stopped by then is wrong
DECODE_THREADS = 1  # batch-1 decoding of a tiny model: measured here 1.3 s for 18 answers on one thread, 36 s on
# two (a shared 2-core machine under load: two intra-op threads spin against each other on 128-wide matmuls)


@dataclass
class Generation:
    text: str  # the answer: decoded text before the stop, stripped
    token_ids: list[int] = field(default_factory=list)  # the generated tokens up to the stop (see greedy_answer)
    logprobs: list[float] = field(default_factory=list)  # per token in token_ids: log p(token) (natural log)
    seconds: float = 0.0  # wall time of this query: prefill + decode

    @property
    def confidence(self) -> float:
        """exp(mean token log-probability) in [0, 1]; 0.0 when nothing was generated."""
        if not self.logprobs:
            return 0.0
        return min(1.0, math.exp(sum(self.logprobs) / len(self.logprobs)))


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def greedy_answer(model, tokenizer, prompt: str, max_new_tokens: int = MAX_NEW_TOKENS,
                  stop: str = "\n") -> Generation:
    """The model's greedy continuation of `prompt` (batch 1, KV cache: model.new_cache / model(ids, cache)).

    Decoding stops when the decoded text contains `stop`, at <|endoftext|>, or after max_new_tokens. token_ids and
    logprobs hold every generated token except a final one that adds nothing but the stop (or is <|endoftext|>);
    text is the decoded answer before the stop, stripped.
    """
    if max_new_tokens < 1:
        raise MoelabError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    if not ids:
        raise MoelabError("the prompt encodes to no tokens")
    capacity = len(ids) + max_new_tokens
    limit = getattr(getattr(model, "spec", None), "max_position", None)
    if limit is not None and capacity > limit:
        raise MoelabError(f"prompt ({len(ids)} tokens) plus {max_new_tokens} new tokens exceed the model's "
                          f"{limit} positions")
    eot = tokenizer.token_to_id(EOT)
    started = time.perf_counter()
    cache = model.new_cache(capacity)
    logits = model(torch.tensor([ids], dtype=torch.long, device=_device(model)), cache)
    out_ids: list[int] = []
    logprobs: list[float] = []
    text = ""
    for _ in range(max_new_tokens):
        logp_V = torch.log_softmax(logits[0, -1].float(), dim=-1)
        token = int(logp_V.argmax())
        if token == eot:
            break
        candidate = tokenizer.decode([*out_ids, token])
        if stop and stop in candidate:
            head = candidate.split(stop, 1)[0]
            if head.strip() != text.strip():  # the stopping token carries answer text too: keep it
                out_ids.append(token)
                logprobs.append(float(logp_V[token]))
            text = head
            break
        out_ids.append(token)
        logprobs.append(float(logp_V[token]))
        text = candidate
        if len(out_ids) == max_new_tokens:
            break
        logits = model(torch.tensor([[token]], dtype=torch.long, device=_device(model)), cache)
    return Generation(text.strip(), out_ids, logprobs, time.perf_counter() - started)


@contextmanager
def decode_threads(n: int = DECODE_THREADS) -> Iterator[None]:
    """torch's intra-op threads set to `n` for the block (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def answer_all(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS,
               on_answer: Callable[[int], None] | None = None) -> list[Generation]:
    """greedy_answer for each prompt in order (the model put in eval mode, DECODE_THREADS intra-op threads);
    `on_answer(i)` after each."""
    model.eval()
    out = []
    with decode_threads():
        for i, prompt in enumerate(prompts):
            out.append(greedy_answer(model, tokenizer, prompt, max_new_tokens))
            if on_answer is not None:
                on_answer(i)
    return out
