"""The tokenized corpus: one training stream with a domain per token, held-out streams per domain, cached.

Also home of the batch API (re-exported from moelab.data.batches) and of prepare(), the one call training needs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from moelab.data.batches import eval_batches, train_batch, train_batch_domains
from moelab.data.cache import atomic_write, atomic_write_text, resolve_cache_dir
from moelab.data.corpus import default_corpus, load_corpus
from moelab.data.document import Document, corpus_hash
from moelab.data.split import split_documents
from moelab.data.tokenizer import eot_id, train_tokenizer
from moelab.errors import MoelabError

__all__ = ["TokenizedCorpus", "eval_batches", "prepare", "tokenize_corpus", "train_batch", "train_batch_domains"]

RECIPE = "tok1"  # bump when the layout of the cached tensors changes
MAX_DOMAINS = 256  # train_domains is uint8

log = logging.getLogger(__name__)


@dataclass
class TokenizedCorpus:
    train_ids: torch.Tensor  # (N,) int32: every train document's tokens, each followed by <|endoftext|>
    train_domains: torch.Tensor  # (N,) uint8: index into `domains` of each train token
    val: dict[str, torch.Tensor]  # domain -> (N_d,) int32 held-out stream (every domain present, maybe empty)
    test: dict[str, torch.Tensor]  # domain -> (N_d,) int32
    domains: list[str]  # sorted
    vocab_size: int
    corpus_hash: str

    def tokens_per_domain(self) -> dict[str, dict[str, int]]:
        """{domain: {"train", "val", "test": token counts}}."""
        train = torch.bincount(self.train_domains.long(), minlength=len(self.domains)).tolist()
        return {d: {"train": train[i], "val": self.val[d].numel(), "test": self.test[d].numel()}
                for i, d in enumerate(self.domains)}


def _tokenizer_hash(tokenizer: Tokenizer) -> str:
    return hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()


def _stream(docs: Sequence[Document], tokenizer: Tokenizer, eot: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N,) int32, doc lengths (D,) int64 incl. the <|endoftext|> after each) of `docs` in order."""
    if not docs:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # _fast (no offsets): tokenizers>=0.21
    encodings = encode([doc.text for doc in docs], add_special_tokens=False)
    parts = []
    for enc in encodings:
        parts.append(np.asarray(enc.ids, dtype=np.int32))
        parts.append(np.asarray([eot], dtype=np.int32))
    lengths = np.asarray([len(enc.ids) + 1 for enc in encodings], dtype=np.int64)
    return np.concatenate(parts), lengths


def _tokenize(docs: Sequence[Document], tokenizer: Tokenizer, docs_hash: str) -> TokenizedCorpus:
    domains = sorted({doc.domain for doc in docs})
    if len(domains) > MAX_DOMAINS:
        raise MoelabError(f"at most {MAX_DOMAINS} domains are supported, the corpus has {len(domains)}")
    index = {d: i for i, d in enumerate(domains)}
    split = split_documents(docs)
    if not split["train"]:
        raise MoelabError("the corpus split left no training documents")
    eot = eot_id(tokenizer)
    ids, lengths = _stream(split["train"], tokenizer, eot)
    doc_domains = np.asarray([index[doc.domain] for doc in split["train"]], dtype=np.uint8)
    held_out = {}
    for name in ("val", "test"):
        held_out[name] = {d: torch.from_numpy(_stream([x for x in split[name] if x.domain == d], tokenizer, eot)[0])
                          for d in domains}
    return TokenizedCorpus(torch.from_numpy(ids), torch.from_numpy(np.repeat(doc_domains, lengths)),
                           held_out["val"], held_out["test"], domains, tokenizer.get_vocab_size(), docs_hash)


def _cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    stem = f"tokens-{RECIPE}-{key[:20]}"
    return cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json"


def _save(corpus: TokenizedCorpus, key: str, tensors_path: Path, meta_path: Path) -> None:
    tensors = {"train_ids": corpus.train_ids, "train_domains": corpus.train_domains}
    for i, d in enumerate(corpus.domains):
        tensors[f"val.{i}"], tensors[f"test.{i}"] = corpus.val[d], corpus.test[d]
    atomic_write(tensors_path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp)))
    meta = {"key": key, "domains": corpus.domains, "vocab_size": corpus.vocab_size, "corpus_hash": corpus.corpus_hash}
    atomic_write_text(meta_path, json.dumps(meta, indent=1))  # written last: its presence marks a complete entry


def _load(key: str, tensors_path: Path, meta_path: Path) -> TokenizedCorpus | None:
    if not (meta_path.exists() and tensors_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != key:
            return None
        t = load_file(str(tensors_path))
        domains = list(meta["domains"])
        return TokenizedCorpus(t["train_ids"], t["train_domains"], {d: t[f"val.{i}"] for i, d in enumerate(domains)},
                               {d: t[f"test.{i}"] for i, d in enumerate(domains)}, domains, int(meta["vocab_size"]),
                               meta["corpus_hash"])
    except Exception as e:  # a corrupt cache entry is rebuilt, never fatal
        log.warning("ignoring unreadable token cache %s: %s", tensors_path, e)
        return None


def tokenize_corpus(docs: Sequence[Document], tokenizer: Tokenizer,
                    cache_dir: str | Path | None = None) -> TokenizedCorpus:
    """Split `docs` by document (split_documents defaults) and tokenize every split; cached under cache_dir
    (default: default_cache_dir()) by corpus hash and tokenizer, as safetensors + JSON written atomically."""
    if not docs:
        raise MoelabError("cannot tokenize an empty corpus")
    docs_hash = corpus_hash(docs)
    key = hashlib.sha256(f"{RECIPE}\0{docs_hash}\0{_tokenizer_hash(tokenizer)}".encode()).hexdigest()
    tensors_path, meta_path = _cache_paths(resolve_cache_dir(cache_dir), key)
    cached = _load(key, tensors_path, meta_path)
    if cached is not None:
        return cached
    corpus = _tokenize(docs, tokenizer, docs_hash)
    _save(corpus, key, tensors_path, meta_path)
    return corpus


def prepare(data: str | Path | None = None, vocab_size: int = 2048, cache_dir: str | Path | None = None,
            max_bytes_per_domain: int = 1_500_000, corpus: str = "default") -> tuple[TokenizedCorpus, Tokenizer]:
    """(tokenized corpus, tokenizer) of the built-in corpus `corpus` (data None: moelab.data.corpus.CORPORA) or
    of load_corpus(data) (then `corpus` must be "default": a named corpus and --data are two different corpora).

    The tokenizer is trained on the training split only, so held-out text never shapes the vocabulary. Both the
    tokenizer and the token tensors come from the cache when present.
    """
    if data is not None and corpus != "default":
        raise MoelabError(f"--corpus {corpus} names a built-in corpus; it cannot be combined with --data")
    docs = default_corpus(max_bytes_per_domain, corpus) if data is None else load_corpus(data)
    tokenizer = train_tokenizer(split_documents(docs)["train"], vocab_size, cache_dir)
    return tokenize_corpus(docs, tokenizer, cache_dir), tokenizer
