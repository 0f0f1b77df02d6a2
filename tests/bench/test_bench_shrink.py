"""Shrinking keeps the expert structure and lands near the target size."""

import pytest

from moelab.bench.shrink import layer_pattern, parse_size, shrink
from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.spec import load_model


@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-v3", "qwen3-30b-a3b", "llama-3-8b"])
@pytest.mark.parametrize("target", ["50M", "5M"])
def test_shrink_keeps_structure(name, target):
    spec = load_model(name)
    small = shrink(spec, target)
    assert count_params(small).total == pytest.approx(parse_size(target), rel=0.3)
    assert layer_pattern(small)[0] == layer_pattern(spec)[0]
    assert small.attention.kind == spec.attention.kind
    assert small.tie_embeddings == spec.tie_embeddings
    if spec.attention.kind == "gqa":
        a, b = spec.attention, small.attention
        assert b.n_heads // b.n_kv_heads == a.n_heads // a.n_kv_heads
    if spec.is_moe:
        m, s = spec.moe, small.moe
        assert (s.n_experts, s.top_k, s.n_shared, s.router, s.n_group, s.topk_group, s.selection_bias) == (
            m.n_experts, m.top_k, m.n_shared, m.router, m.n_group, m.topk_group, m.selection_bias)
        assert small.n_moe_layers >= 1 and small.n_layers <= spec.n_layers


def test_shrink_keeps_first_k_dense():
    small = shrink(load_model("deepseek-v3"), "50M")
    assert layer_pattern(small) == ("first_k_dense", 3)  # DeepSeek-V3's first three layers stay dense


def test_parse_size():
    assert parse_size("50M") == 5e7 and parse_size("1.5B") == 1.5e9 and parse_size("200k") == 2e5
    assert parse_size(1234) == 1234.0
    for bad in ("abc", "-5M", "0", "5X"):
        with pytest.raises(MoelabError):
            parse_size(bad)
    with pytest.raises(MoelabError):
        shrink(load_model("mixtral-8x7b"), "100B")  # not smaller
