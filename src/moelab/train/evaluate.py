"""Validation loss per domain (and, for DS-MoE, with dense and with sparse top-k experts)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moelab.data import eval_batches
from moelab.nn.model import TransformerLM


@torch.no_grad()
def domain_losses(model: TransformerLM, streams: dict[str, torch.Tensor], seq_len: int, max_tokens: int) -> dict:
    """Mean next-token cross-entropy per domain over up to `max_tokens` tokens of each stream, and their mean."""
    was_training = model.training
    model.eval()
    losses = {}
    for domain, tokens in sorted(streams.items()):
        total, count = 0.0, 0
        for inputs, targets in eval_batches(tokens, seq_len, max_tokens):
            logits = model(inputs.long())
            total += F.cross_entropy(logits.float().flatten(0, 1), targets.long().flatten(), reduction="sum").item()
            count += targets.numel()
        if count:
            losses[domain] = total / count
    losses["mean"] = sum(losses.values()) / max(len(losses), 1)
    model.train(was_training)
    return losses
