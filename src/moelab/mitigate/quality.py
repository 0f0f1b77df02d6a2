"""What a transform costs in quality: validation loss per domain before and after, on the source run's corpus.

The corpus is the one the source run trained on (its config's data, vocabulary and byte cap, read through
train.config.TrainConfig; rebuilt from the cache `moelab train` filled) and must tokenize as the run did: the
tokenizer rebuilt here is compared with the run's own tokenizer.json (runs.check_tokenizer, the check train
--init-from makes too). A calibration slice (pruning's usage count) comes from the training split, never
the validation split the loss delta is measured on. "Rare" domains are those with under half the mean domain's
share of training tokens: the seeds' "pruning may hurt rare cases" is read off them separately.
"""

from __future__ import annotations

from pathlib import Path

import torch

from moelab.errors import MoelabError
from moelab.mitigate.runs import SourceRun, check_tokenizer, train_config

RARE_SHARE = 0.5  # a domain with less than this fraction of the mean domain's training tokens is "rare"
EVAL_TOKENS = 16384  # validation tokens per domain (moelab train's default --eval-tokens)


def run_corpus(source: SourceRun):
    """The tokenized corpus the source run trained on (moelab.data.prepare with the run's validated config), its
    tokenizer the run's own; one line when it cannot be rebuilt here."""
    from moelab.data import prepare

    cfg = train_config(source)
    refusal = f"RUN {source.run_folder}: the corpus this run trained on cannot be rebuilt here"
    data = Path(cfg.data).expanduser() if cfg.data is not None else None
    if data is not None and not data.exists():
        # moelab train keeps --data as it was given: a relative path is relative to the folder train ran in
        where = "" if data.is_absolute() else (" (a path relative to the folder moelab train ran in, as train "
                                               "records --data: run this command from that folder)")
        raise MoelabError(f"{refusal}: its corpus {cfg.data} is missing{where}")
    try:
        corpus, tokenizer = prepare(cfg.data, cfg.vocab_size, max_bytes_per_domain=cfg.max_bytes_per_domain,
                                    corpus=cfg.corpus)
    except MoelabError as e:
        raise MoelabError(f"{refusal}: {e}") from None
    check_tokenizer(source, tokenizer.to_str(), refusal)
    return corpus


def seq_len(source: SourceRun) -> int:
    """The run's training sequence length (the length its validation loss was measured at)."""
    return train_config(source).seq_len


def eval_tokens(source: SourceRun, given: int | None = None) -> int:
    """Validation tokens per domain: `given`, else the run's own (its config's eval_tokens, as train measured its
    validation loss), else EVAL_TOKENS; so a run's "loss before" is the same number in every transform."""
    if given is not None:
        return given
    return train_config(source).eval_tokens if "eval_tokens" in source.config else EVAL_TOKENS


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
