"""Validation loss per domain (and, for DS-MoE, with dense and with sparse top-k experts), and which experts
each domain's tokens are routed to (the seeds' "experts specialise by domain", measured)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moelab.data import eval_batches
from moelab.nn.model import TransformerLM


@torch.no_grad()
def domain_losses(model: TransformerLM, streams: dict[str, torch.Tensor], seq_len: int,
                  max_tokens: int) -> tuple[dict[str, float], dict[str, list[list[float]]]]:
    """(mean next-token cross-entropy per domain and their "mean", per domain the share of token-slots each
    expert of each MoE layer received) over up to `max_tokens` tokens of each stream. Evaluation never
    touches training state: the model is in eval mode under no_grad, so MoE layers leave their balancing
    load (the aux-free bias update's input) alone."""
    was_training = model.training
    model.eval()
    losses, loads = {}, {}
    layers = model.moe_layers()
    device = next(model.parameters()).device
    for domain, tokens in sorted(streams.items()):
        total, count = 0.0, 0
        counts = [torch.zeros(layer.spec.n_experts) for layer in layers]
        for inputs, targets in eval_batches(tokens, seq_len, max_tokens):
            logits = model(inputs.long().to(device))
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float64 stays float64
            total += F.cross_entropy(logits.flatten(0, 1), targets.long().to(device).flatten(),
                                     reduction="sum").item()
            count += targets.numel()
            for acc, layer in zip(counts, layers, strict=True):
                acc += layer.last_counts.cpu()
        if count:
            losses[domain] = total / count
            if layers:
                loads[domain] = [[round(v, 5) for v in (c / c.sum()).tolist()] for c in counts]
    if losses:  # no domain with a token to predict has no score at all (never a mean of 0.0)
        losses["mean"] = sum(losses.values()) / len(losses)
    model.train(was_training)
    return losses, loads


def scorable(streams: dict[str, torch.Tensor]) -> list[str]:
    """The domains whose validation stream has at least one token to predict (two tokens)."""
    return sorted(domain for domain, tokens in streams.items() if tokens.numel() >= 2)
