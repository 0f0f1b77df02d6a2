"""What one engine step processes (a StepLoad) and what one operator of it costs (an OpCost).

A step of a serving engine with continuous batching carries decode tokens of the running sequences and, with
chunked prefill, prompt tokens of new ones; a static prefill or decode step is the special case with one kind.
Counts are per model replica (the whole batch the replica serves), means where a count need not be whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moelab.errors import MoelabError


def busiest_share(count: float, groups: int) -> float:
    """Sequences the busiest of `groups` groups (replicas, data-parallel attention groups, pipeline micro-batches)
    gets of `count`: whole sequences when the count is whole (a sequence is never split), else the mean share,
    at least one sequence's worth of what there is (a modelled mean such as a serving load)."""
    if groups == 1:
        return count
    if abs(count - round(count)) < 1e-9:
        return float(math.ceil(round(count) / groups))
    return max(count / groups, min(count, 1.0))


@dataclass(frozen=True)
class StepLoad:
    """Tokens one replica processes in one step."""

    decode_seqs: float = 0.0  # sequences generating one token each
    decode_context: float = 0.0  # mean positions each of them has cached (the new token attends to them + itself)
    prefill_seqs: float = 0.0  # sequences whose prompt, or a chunk of it, runs in this step
    prefill_tokens: float = 0.0  # prompt tokens per prefilling sequence in this step
    prefill_past: float = 0.0  # positions each prefilling sequence has cached before this chunk

    def __post_init__(self) -> None:
        for key, value in self.__dict__.items():
            if not value >= 0:
                raise MoelabError(f"step load: {key} must be >= 0, got {value!r}")
        if self.tokens <= 0:
            raise MoelabError("step load: a step must process at least one token")

    @property
    def tokens(self) -> float:
        return self.decode_seqs + self.prefill_seqs * self.prefill_tokens

    @property
    def logit_rows(self) -> float:
        """Positions whose logits the step computes: one per decoding sequence and per prompt chunk."""
        return self.decode_seqs + self.prefill_seqs

    @property
    def sequences(self) -> float:
        return self.decode_seqs + self.prefill_seqs

    def busiest(self, groups: int) -> StepLoad:
        """The share of this step the busiest of `groups` groups runs (busiest_share of each kind)."""
        return StepLoad(busiest_share(self.decode_seqs, groups), self.decode_context,
                        busiest_share(self.prefill_seqs, groups), self.prefill_tokens, self.prefill_past)


@dataclass(frozen=True)
class OpCost:
    """One operator class of a step on one GPU, summed over the layers it runs in."""

    name: str
    flops: float
    bytes: float
    compute_seconds: float  # FLOPs at the achieved FLOP/s for the operator's shape
    memory_seconds: float  # bytes at the achieved bandwidth
    launch_seconds: float  # fixed cost: kernel launches, per-call collective latency, per-layer overheads
    launches: int
    detail: str = ""  # e.g. the collective's algorithm, rows per expert

    @property
    def seconds(self) -> float:
        return max(self.compute_seconds, self.memory_seconds) + self.launch_seconds

    @property
    def bound(self) -> str:
        if self.compute_seconds == self.memory_seconds == 0:
            return "overhead"
        return "compute" if self.compute_seconds >= self.memory_seconds else "memory"

    def to_dict(self) -> dict:
        return {"name": self.name, "seconds": self.seconds, "flops": self.flops, "bytes": self.bytes,
                "compute_seconds": self.compute_seconds, "memory_seconds": self.memory_seconds,
                "launch_seconds": self.launch_seconds, "launches": self.launches, "bound": self.bound,
                "detail": self.detail}
