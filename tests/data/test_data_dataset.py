"""tokenize_corpus and prepare: streams decode back to the documents, domains line up, the cache is exact."""

import json

import pytest
import torch

from moelab.data import dataset as dataset_module
from moelab.data import prepare, split_documents, tokenize_corpus, train_batch


def _equal(a, b):
    assert a.domains == b.domains and a.vocab_size == b.vocab_size and a.corpus_hash == b.corpus_hash
    assert torch.equal(a.train_ids, b.train_ids) and torch.equal(a.train_domains, b.train_domains)
    for d in a.domains:
        assert torch.equal(a.val[d], b.val[d]) and torch.equal(a.test[d], b.test[d])


@pytest.fixture(scope="module")
def tokenized(small_docs, small_tokenizer, tmp_path_factory):
    cache = tmp_path_factory.mktemp("tokens")
    return tokenize_corpus(small_docs, small_tokenizer, cache), cache


def test_streams_decode_to_the_split_documents(small_docs, small_tokenizer, tokenized):
    corpus, _ = tokenized
    split = split_documents(small_docs)
    assert corpus.domains == ["code", "json", "math", "prose"]
    assert corpus.vocab_size == 512
    assert corpus.train_ids.dtype == torch.int32 and corpus.train_domains.dtype == torch.uint8
    assert corpus.train_ids.shape == corpus.train_domains.shape
    ids = corpus.train_ids.tolist()
    assert ids[-1] == 0 and ids.count(0) == len(split["train"])
    # each document's tokens, then <|endoftext|>: split the stream at 0 and decode
    bounds = [-1] + [i for i, t in enumerate(ids) if t == 0]
    domains = corpus.train_domains.tolist()
    for doc, start, end in zip(split["train"], bounds[:-1], bounds[1:], strict=True):
        assert small_tokenizer.decode(ids[start + 1:end]) == doc.text
        assert set(domains[start + 1:end + 1]) == {corpus.domains.index(doc.domain)}
    for name, streams in (("val", corpus.val), ("test", corpus.test)):
        assert sorted(streams) == corpus.domains
        for domain, stream in streams.items():
            texts = [d.text for d in split[name] if d.domain == domain]
            assert stream.dtype == torch.int32 and stream.numel() > 0
            chunks, current = [], []
            for t in stream.tolist():
                if t == 0:
                    chunks.append(small_tokenizer.decode(current))
                    current = []
                else:
                    current.append(t)
            assert chunks == texts and not current


def test_cache_hit_equal_and_not_recomputed(small_docs, small_tokenizer, tokenized, monkeypatch):
    corpus, cache = tokenized
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".safetensors")
    assert json.loads((cache / files[0]).read_text())["domains"] == corpus.domains

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(dataset_module, "_tokenize", no_tokenizing)
    _equal(tokenize_corpus(small_docs, small_tokenizer, cache), corpus)
    with pytest.raises(AssertionError, match="again"):
        tokenize_corpus(small_docs[:-1], small_tokenizer, cache)  # another corpus is another entry
    monkeypatch.undo()
    (cache / files[1]).write_bytes(b"garbage")
    _equal(tokenize_corpus(small_docs, small_tokenizer, cache), corpus)  # a corrupt entry is rebuilt


def test_prepare_default_and_from_file(tmp_path, small_cap):
    corpus, tokenizer = prepare(None, 600, tmp_path, max_bytes_per_domain=small_cap)
    assert corpus.domains == ["code", "json", "math", "prose"] and tokenizer.get_vocab_size() == 600
    again, _ = prepare(None, 600, tmp_path, max_bytes_per_domain=small_cap)
    _equal(again, corpus)
    assert torch.equal(train_batch(corpus, 3, 4, 16, 0)[0], train_batch(again, 3, 4, 16, 0)[0])

    data = tmp_path / "mine.jsonl"
    lines = [json.dumps({"text": f"record {i}: " + "lorem ipsum " * 20, "domain": "ab"[i % 2]}) for i in range(40)]
    data.write_text("\n".join(lines))
    mine, tok = prepare(data, 300, tmp_path / "c2")
    assert mine.domains == ["a", "b"] and all(mine.val[d].numel() > 0 for d in "ab")
    assert tok.get_vocab_size() <= 300 and mine.vocab_size == tok.get_vocab_size()
