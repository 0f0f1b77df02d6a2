"""Deterministic batches: training windows as a pure function of (seed, step), evaluation windows in order."""

from __future__ import annotations

import torch

from moelab.errors import MoelabError

EVAL_WINDOWS_PER_BATCH = 16


def step_seed(seed: int, step: int) -> int:
    """The generator seed of training step `step` under run seed `seed`."""
    return (seed * 1_000_003 + step) % 2**63


def window_offsets(stream_len: int, step: int, batch_size: int, seq_len: int, seed: int) -> torch.Tensor:
    """(B,) int64 start offsets of the step's windows of seq_len + 1 tokens, uniform over the stream."""
    if batch_size <= 0 or seq_len <= 0:
        raise MoelabError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
    if stream_len < seq_len + 1:
        raise MoelabError(f"the training stream has {stream_len} tokens, fewer than seq_len + 1 = {seq_len + 1}")
    g = torch.Generator().manual_seed(step_seed(seed, step))
    return torch.randint(0, stream_len - seq_len, (batch_size,), generator=g)


def train_batch(corpus, step: int, batch_size: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (B, T) int64, targets (B, T) int64) of training step `step`; targets are inputs shifted by one.

    Stateless: the same (seed, step) always gives the same batch, so a resumed run sees exactly the data it
    would have seen, and two models trained with one seed see the same windows in the same order.
    """
    ids_N = corpus.train_ids
    offsets_B = window_offsets(ids_N.numel(), step, batch_size, seq_len, seed)
    windows_BT1 = ids_N[offsets_B[:, None] + torch.arange(seq_len + 1)].long()
    return windows_BT1[:, :-1].contiguous(), windows_BT1[:, 1:].contiguous()


def train_batch_domains(corpus, step: int, batch_size: int, seq_len: int, seed: int) -> torch.Tensor:
    """(B,) int64 domain index (into corpus.domains) of the token at each window's start in train_batch."""
    offsets_B = window_offsets(corpus.train_ids.numel(), step, batch_size, seq_len, seed)
    return corpus.train_domains[offsets_B].long()


def eval_batches(tokens_1d: torch.Tensor, seq_len: int, max_tokens: int,
                 windows_per_batch: int = EVAL_WINDOWS_PER_BATCH) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive non-overlapping windows from the start of a stream, covering up to `max_tokens` predicted
    tokens, as [(inputs (b, T) int64, targets (b, T) int64)] with b <= windows_per_batch.

    Window i reads tokens [i*T, (i+1)*T) and predicts [i*T + 1, (i+1)*T + 1). A stream too short for one full
    window gives a single shorter one (T = len - 1); an empty or one-token stream gives no batch.
    """
    if seq_len <= 0 or windows_per_batch <= 0:
        raise MoelabError(f"seq_len and windows_per_batch must be positive, got {seq_len} and {windows_per_batch}")
    tokens = tokens_1d.reshape(-1)
    predictable = min(tokens.numel() - 1, max_tokens)
    if predictable <= 0:
        return []
    if predictable < seq_len:
        return [(tokens[None, :predictable].long(), tokens[None, 1:predictable + 1].long())]
    n_windows = predictable // seq_len
    used = n_windows * seq_len
    inputs_WT = tokens[:used].long().view(n_windows, seq_len)
    targets_WT = tokens[1:used + 1].long().view(n_windows, seq_len)
    return [(inputs_WT[i:i + windows_per_batch], targets_WT[i:i + windows_per_batch])
            for i in range(0, n_windows, windows_per_batch)]
