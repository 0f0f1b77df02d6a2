"""Every quote, setup excerpt and source excerpt of the claims table occurs in its seed (whitespace-normalised), and
every seed figure is parsed from the quoted text."""

import pytest
from conftest import normalise

from moelab.claims import claims_table
from moelab.claims.registry import REGISTRY, SETUP_QUOTES
from moelab.claims.rules import parse_number, parse_range


@pytest.mark.parametrize("cid", sorted(REGISTRY))
def test_quote_occurs_in_its_seed(cid, seed_texts):
    c = REGISTRY[cid]
    assert normalise(c.quote) in seed_texts[c.seed], f"{cid}: quote not in seed {c.seed}"
    for source in c.sources:
        assert normalise(source) in seed_texts[c.seed], f"{cid}: source excerpt {source!r} not in seed {c.seed}"


def test_setup_excerpts_occur_in_their_seed(seed_texts):
    assert len(SETUP_QUOTES) >= 5
    for seed, text in SETUP_QUOTES:
        assert normalise(text) in seed_texts[seed], text


def test_quote_is_brief():
    assert max(len(c.quote) for c in REGISTRY.values()) <= 200


@pytest.mark.parametrize("cid", sorted(REGISTRY))
def test_seed_value_is_parsed_from_the_quote(cid):
    c = REGISTRY[cid]
    if c.claimed is None:
        assert c.seed_value is None
        return
    assert c.claimed in c.quote
    if c.is_range:
        lo, hi = parse_range(c.claimed)
        assert c.seed_value == (lo * c.scale, hi * c.scale)
    elif c.over is not None:
        assert c.over in c.quote
        assert c.seed_value == parse_number(c.claimed) / parse_number(c.over)
    else:
        assert c.seed_value == parse_number(c.claimed) * c.scale


def test_row_seed_values_match_the_registry():
    rows = {r["id"]: r for r in claims_table(None)}
    assert rows["deepseek-v3-expert-combinations"]["seed_value"] == 4.3e9  # "≈ 4.3 billion"
    assert rows["ds-moe-speedup"]["seed_value"] == [1.5, 1.9]  # "1.5–1.9×"
    assert rows["training-flops-dense"]["seed_value"] == 2.4e24
    assert rows["gpu-cost-dense"]["seed_value"] == 110592
    assert rows["inference-activations-ratio"]["seed_value"] == 0.5  # 0.5 GB over 1 GB
    assert rows["dense-70b-eight-gpus"]["seed_value"] == 8
