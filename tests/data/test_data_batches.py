"""Batches: training windows are a pure function of (seed, step); eval windows tile the stream without overlap."""

import pytest
import torch

from moelab.data import TokenizedCorpus, eval_batches, train_batch, train_batch_domains
from moelab.errors import MoelabError

N = 5000


@pytest.fixture
def corpus():
    ids = torch.arange(N, dtype=torch.int32)  # token value == position: windows are easy to check
    domains = (torch.arange(N) * 3 // N).to(torch.uint8)
    return TokenizedCorpus(ids, domains, {}, {}, ["a", "b", "c"], N, "h")


def test_train_batch_shapes_shift_and_bounds(corpus):
    inputs, targets = train_batch(corpus, step=7, batch_size=32, seq_len=64, seed=3)
    assert inputs.shape == targets.shape == (32, 64)
    assert inputs.dtype == targets.dtype == torch.int64
    assert torch.equal(targets[:, :-1], inputs[:, 1:])
    assert torch.equal(inputs, inputs[:, :1] + torch.arange(64))  # contiguous windows of the stream
    assert torch.equal(targets, inputs + 1)
    assert inputs.min() >= 0 and targets.max() <= N - 1
    assert torch.equal(train_batch_domains(corpus, 7, 32, 64, 3), corpus.train_domains[inputs[:, 0]].long())


def test_train_batch_is_a_function_of_seed_and_step(corpus):
    a = train_batch(corpus, 5, 8, 32, seed=1)
    b = train_batch(corpus, 5, 8, 32, seed=1)
    torch.manual_seed(123)  # the global RNG plays no part
    c = train_batch(corpus, 5, 8, 32, seed=1)
    assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(a, b, c, strict=True))
    assert not torch.equal(train_batch(corpus, 6, 8, 32, seed=1)[0], a[0])
    assert not torch.equal(train_batch(corpus, 5, 8, 32, seed=2)[0], a[0])
    starts = torch.cat([train_batch(corpus, s, 16, 32, 0)[0][:, 0] for s in range(200)])
    assert starts.max() >= N - 33 - 200 and starts.min() <= 200, "offsets cover the whole stream"


def test_train_batch_edge_cases(corpus):
    short = TokenizedCorpus(torch.arange(10, dtype=torch.int32), torch.zeros(10, dtype=torch.uint8), {}, {},
                            ["a"], 10, "h")
    inputs, targets = train_batch(short, 0, 4, 9, 0)  # exactly one possible window
    assert torch.equal(inputs, torch.arange(9).expand(4, 9)) and torch.equal(targets, inputs + 1)
    with pytest.raises(MoelabError, match="fewer than"):
        train_batch(short, 0, 4, 10, 0)
    with pytest.raises(MoelabError):
        train_batch(corpus, 0, 0, 10, 0)


@pytest.mark.parametrize("length, seq_len, max_tokens", [(1000, 32, 10_000), (1000, 32, 300), (999, 100, 999),
                                                         (50_000, 64, 16384)])
def test_eval_batches_tile_without_overlap(length, seq_len, max_tokens):
    stream = torch.arange(length, dtype=torch.int32)
    batches = eval_batches(stream, seq_len, max_tokens)
    assert all(x.shape == y.shape and x.shape[0] <= 16 and x.shape[1] == seq_len for x, y in batches)
    assert all(x.dtype == torch.int64 for x, _ in batches)
    inputs = torch.cat([x for x, _ in batches]).flatten()
    targets = torch.cat([y for _, y in batches]).flatten()
    n = min(length - 1, max_tokens) // seq_len * seq_len
    assert torch.equal(inputs, torch.arange(n))  # in order, no overlap, no gap
    assert torch.equal(targets, torch.arange(1, n + 1))
    again = eval_batches(stream, seq_len, max_tokens)
    assert len(again) == len(batches) and all(torch.equal(a[0], b[0]) for a, b in zip(again, batches, strict=True))


def test_eval_batches_short_streams():
    x, y = eval_batches(torch.arange(10, dtype=torch.int32), 32, 1000)[0]
    assert torch.equal(x, torch.arange(9)[None]) and torch.equal(y, torch.arange(1, 10)[None])
    assert eval_batches(torch.zeros(1, dtype=torch.int32), 32, 1000) == []
    assert eval_batches(torch.zeros(0, dtype=torch.int32), 32, 1000) == []
