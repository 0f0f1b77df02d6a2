"""The byte-level BPE tokenizer: lossless, vocabulary as asked, <|endoftext|> = 0, deterministic, cached."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from moelab.data import EOT, default_cache_dir, split_documents, train_tokenizer
from moelab.data import tokenizer as tokenizer_module
from moelab.data.document import corpus_hash
from moelab.data.tokenizer import tokenizer_path
from moelab.errors import MoelabError

SAMPLES = [
    "def f(x):\n\treturn x ** 2  # square\n",
    "Q: 37 * 48 = ? A: 1776",
    '{"name": "Ünïcødé", "city": "Kraków", "note": null}',
    "日本語のテキスト, ελληνικά, русский, עברית, emoji 😀🚀 and\r\nwindows line ends   with  spaces ",
    "",
    EOT.replace("|", "¦"),
]


def test_round_trip_and_special_token(small_tokenizer):
    assert small_tokenizer.token_to_id(EOT) == 0
    for text in SAMPLES:
        ids = small_tokenizer.encode(text).ids
        assert small_tokenizer.decode(ids) == text
        assert all(0 <= i < small_tokenizer.get_vocab_size() for i in ids)
    assert small_tokenizer.encode(EOT).ids == [0]


def test_vocab_size_respected_and_compresses(small_docs, small_tokenizer):
    assert small_tokenizer.get_vocab_size() == 512
    text = next(d.text for d in small_docs if d.domain == "code")
    assert len(small_tokenizer.encode(text).ids) < 0.6 * len(text.encode())


def test_vocab_too_small(small_docs, tmp_path):
    with pytest.raises(MoelabError, match="at least 257"):
        train_tokenizer(small_docs, 256, tmp_path)
    with pytest.raises(MoelabError, match="empty"):
        train_tokenizer([], 512, tmp_path)


def test_cached_on_disk_and_not_retrained(small_docs, tmp_path, monkeypatch):
    docs = small_docs[:40]
    first = train_tokenizer(docs, 300, tmp_path)
    path = tokenizer_path(tmp_path, corpus_hash(docs), 300)
    assert path.exists() and not list(tmp_path.glob(".*.tmp"))

    def no_training(*args, **kwargs):
        raise AssertionError("retrained despite a cache file")

    monkeypatch.setattr(tokenizer_module, "_fit", no_training)
    second = train_tokenizer(docs, 300, tmp_path)
    assert second.to_str() == first.to_str()
    with pytest.raises(AssertionError, match="retrained"):
        train_tokenizer(docs, 301, tmp_path)  # another vocabulary size is another cache entry
    monkeypatch.undo()
    path.write_text("{corrupt")
    assert train_tokenizer(docs, 300, tmp_path).to_str() == first.to_str()  # a corrupt entry is rebuilt


def test_deterministic_across_processes(small_docs, tmp_path):
    docs = split_documents(small_docs)["train"]
    here = hashlib.sha256(train_tokenizer(docs, 400, tmp_path / "a").to_str().encode()).hexdigest()
    code = ("import hashlib, sys\nfrom moelab.data import default_corpus, split_documents, train_tokenizer\n"
            "docs = split_documents(default_corpus(100_000))['train']\n"
            "print(hashlib.sha256(train_tokenizer(docs, 400, sys.argv[1]).to_str().encode()).hexdigest())")
    there = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert here == there


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MOELAB_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MOELAB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == Path(tmp_path) / ".cache" / "moelab"
