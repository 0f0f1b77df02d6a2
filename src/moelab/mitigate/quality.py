"""What a transform costs in quality: validation loss per domain before and after, on the source run's corpus.

The corpus is the one the source run trained on (its config's data, vocabulary and byte cap; read from the
cache `moelab train` filled). A calibration slice (pruning's usage count) comes from the training split, never
the validation split the loss delta is measured on. "Rare" domains are those with under half the mean domain's
share of training tokens: the seeds' "pruning may hurt rare cases" is read off them separately.
"""

from __future__ import annotations

import torch

from moelab.mitigate.runs import SourceRun

RARE_SHARE = 0.5  # a domain with less than this fraction of the mean domain's training tokens is "rare"
EVAL_TOKENS = 16384  # validation tokens per domain (moelab train's default --eval-tokens)


def run_corpus(source: SourceRun):
    """The tokenized corpus the source run trained on (moelab.data.prepare with the run's config)."""
    from moelab.data import prepare

    config = source.config
    corpus, _ = prepare(config.get("data"), config.get("vocab_size", source.spec.vocab_size),
                        max_bytes_per_domain=config.get("max_bytes_per_domain", 1_500_000))
    return corpus


def seq_len(source: SourceRun) -> int:
    return int(source.config.get("seq_len", 128))


def domain_loss(model, corpus, length: int, tokens: int = EVAL_TOKENS) -> dict[str, float]:
    """Mean next-token cross-entropy per validation domain and their "mean" (train.evaluate.domain_losses)."""
    from moelab.train.evaluate import domain_losses

    return domain_losses(model, corpus.val, length, tokens)[0]


def calibration_streams(corpus, tokens: int) -> dict[str, torch.Tensor]:
    """Up to `tokens` tokens of each domain's training text, in corpus order: the slice usage is counted on."""
    out = {}
    for i, domain in enumerate(corpus.domains):
        ids = corpus.train_ids[corpus.train_domains == i]
        out[domain] = ids[:tokens]
    return out


def rare_domains(corpus) -> list[str]:
    """Domains with under RARE_SHARE of the mean domain's training tokens."""
    counts = torch.bincount(corpus.train_domains.long(), minlength=len(corpus.domains)).double()
    mean = counts.mean()
    return [d for d, n in zip(corpus.domains, counts.tolist(), strict=True) if n < RARE_SHARE * mean]


def loss_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """after - before per domain (and "mean"): positive is worse."""
    return {d: after[d] - before[d] for d in before if d in after}
