"""A byte-level BPE tokenizer trained locally on a corpus, cached on disk by corpus hash and vocabulary size."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from moelab.data.cache import atomic_write_text, default_cache_dir, resolve_cache_dir
from moelab.data.document import Document, corpus_hash
from moelab.errors import MoelabError

__all__ = ["EOT", "default_cache_dir", "eot_id", "tokenizer_path", "train_tokenizer"]

EOT = "<|endoftext|>"  # id 0; separates documents in token streams
RECIPE = "bbpe1"  # bump when the training recipe changes, so that old cache files are not reused
MIN_VOCAB = 256 + 1  # every byte, plus <|endoftext|>

log = logging.getLogger(__name__)


def tokenizer_path(cache_dir: Path, docs_hash: str, vocab_size: int) -> Path:
    """The cache file of the tokenizer for a corpus hash and vocabulary size."""
    return cache_dir / f"tokenizer-{RECIPE}-{docs_hash[:20]}-v{vocab_size}.json"


def eot_id(tokenizer: Tokenizer) -> int:
    """The id of <|endoftext|> (0 for tokenizers built here)."""
    token_id = tokenizer.token_to_id(EOT)
    if token_id is None:
        raise MoelabError(f"the tokenizer has no {EOT} token")
    return token_id


def _fit(docs: Sequence[Document], vocab_size: int) -> Tokenizer:
    """Train byte-level BPE (ByteLevel pre-tokenizer and decoder, <|endoftext|> = id 0) on the documents' texts."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tokenizer.train_from_iterator((doc.text for doc in docs), trainer=trainer, length=len(docs))
    return tokenizer


def train_tokenizer(docs: Sequence[Document], vocab_size: int = 2048,
                    cache_dir: str | Path | None = None) -> Tokenizer:
    """The byte-level BPE tokenizer of `docs` with at most `vocab_size` tokens: loaded from the cache when there,
    else trained and written there atomically. cache_dir defaults to default_cache_dir()."""
    if vocab_size < MIN_VOCAB:
        raise MoelabError(f"vocab_size must be at least {MIN_VOCAB} (256 bytes + {EOT}), got {vocab_size}")
    if not docs:
        raise MoelabError("cannot train a tokenizer on an empty corpus")
    path = tokenizer_path(resolve_cache_dir(cache_dir), corpus_hash(docs), vocab_size)
    if path.exists():
        try:
            return Tokenizer.from_file(str(path))
        except Exception as e:  # a corrupt cache file is rebuilt, never fatal
            log.warning("ignoring unreadable tokenizer cache %s: %s", path, e)
    tokenizer = _fit(docs, vocab_size)
    if tokenizer.token_to_id(EOT) != 0:
        raise MoelabError(f"internal: {EOT} did not get id 0")
    atomic_write_text(path, tokenizer.to_str())
    return tokenizer
