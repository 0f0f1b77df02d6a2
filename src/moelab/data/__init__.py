"""Corpora, tokenizer and deterministic batches for training: everything between text on disk and (B, T) ids."""

from moelab.data.batches import eval_batches, train_batch, train_batch_domains
from moelab.data.cache import default_cache_dir
from moelab.data.corpus import DOMAINS, Document, corpus_hash, default_corpus, load_corpus, split_documents
from moelab.data.dataset import TokenizedCorpus, prepare, tokenize_corpus
from moelab.data.tokenizer import EOT, train_tokenizer

__all__ = [
    "DOMAINS", "EOT", "Document", "TokenizedCorpus", "corpus_hash", "default_cache_dir", "default_corpus",
    "eval_batches", "load_corpus", "prepare", "split_documents", "tokenize_corpus", "train_batch",
    "train_batch_domains", "train_tokenizer",
]
