"""The sweep's grid: every spec within its stated tolerance of its target non-embedding active count, counted on
the built torch model (not only by moelab.cost), iso-active pairs, the expert axis, and bad sizes refused."""

import pytest

from moelab.errors import MoelabError
from moelab.laws.grid import (
    MOE_EXPERTS,
    MOE_TOP_K,
    TOLERANCE,
    build_grid,
    grid_spec,
    label,
    non_embedding_active,
    parse_experts,
    parse_kinds,
    parse_size,
    parse_sizes,
)

SIZES = [10_000, 15_000, 20_000, 40_000, 80_000, 100_000, 160_000, 200_000, 400_000, 500_000, 800_000, 1_000_000,
         1_600_000, 2_000_000, 3_000_000, 4_000_000, 8_000_000, 16_000_000, 50_000_000, 300_000_000, 1_000_000_000]


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_every_size_is_within_tolerance(kind):
    for size in SIZES:
        spec = grid_spec(kind, size)
        assert abs(non_embedding_active(spec) - size) / size <= TOLERANCE, (kind, size)
        assert spec.d_model == 32 * spec.n_layers and spec.attention.head_dim == 32
        if kind == "moe":
            assert (spec.moe.n_experts, spec.moe.top_k) == (MOE_EXPERTS, MOE_TOP_K)


def _torch_active(spec) -> int:
    """Non-embedding active parameters of the built torch model: every tensor but the embedding and lm_head, with
    the routed experts' stacked weights counted at top_k of n_experts."""
    from moelab.nn import build_model

    model = build_model(spec)
    total = 0
    for name, p in model.named_parameters():
        if name.startswith(("embed_tokens", "lm_head")):
            continue
        if name.endswith(("gate_up_proj", "down_proj")) and spec.is_moe and p.ndim == 3:
            assert p.shape[0] == spec.moe.n_experts
            total += p.numel() // spec.moe.n_experts * spec.moe.top_k
        else:
            total += p.numel()
    return total


@pytest.mark.parametrize("kind,size", [("dense", 100_000), ("moe", 100_000), ("dense", 500_000), ("moe", 500_000),
                                       ("moe", 2_000_000)])
def test_active_count_matches_the_built_model(kind, size):
    spec = grid_spec(kind, size)
    assert _torch_active(spec) == non_embedding_active(spec)
    assert abs(_torch_active(spec) - size) / size <= TOLERANCE


def test_grid_is_iso_active_and_the_expert_axis_is_too():
    points = build_grid([500_000, 1_000_000, 2_000_000], ["dense", "moe"], [4, 8, 16])
    names = [p.name for p in points]
    assert names == ["dense-500k", "dense-1M", "dense-2M", "moe-500k-e8", "moe-1M-e8", "moe-2M-e8", "moe-1M-e4",
                     "moe-1M-e16"]  # the axis at the median size; its 8-expert point is the size sweep's
    by = {p.name: p for p in points}
    for size in ("500k", "1M", "2M"):
        dense, moe = non_embedding_active(by[f"dense-{size}"].spec), non_embedding_active(by[f"moe-{size}-e8"].spec)
        assert moe == pytest.approx(dense, rel=2 * TOLERANCE)
    axis = [by[n] for n in ("moe-1M-e4", "moe-1M-e8", "moe-1M-e16")]
    assert all(p.axis == "experts" for p in axis if p.experts != 8)
    actives = [non_embedding_active(p.spec) for p in axis]
    assert max(actives) / min(actives) < 1 + 2 * TOLERANCE
    from moelab.cost.params import count_params

    totals = [count_params(p.spec).total for p in axis]
    assert totals == sorted(totals) and totals[-1] > 2.5 * totals[0]  # more experts: more total, same active
    assert [p.name for p in build_grid([1_000_000, 2_000_000, 4_000_000], ["moe"], [4, 8], 4_000_000)] == [
        "moe-1M-e8", "moe-2M-e8", "moe-4M-e8", "moe-4M-e4"]


def test_parsing():
    assert parse_sizes("0.5M, 1M,2M,4M,8M") == [500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000]
    assert parse_sizes("200k,20k,2M") == [20_000, 200_000, 2_000_000]
    assert parse_kinds("moe,dense,moe") == ["moe", "dense"]
    assert parse_experts("16,4,8") == [4, 8, 16] and parse_experts(None) == []
    for bad, match in (("1M", "at least 3 sizes"), ("1M,1M,2M", "twice"), ("1M,2M,lots", "not a parameter count"),
                       ("1e6,2M,3M", "not a parameter count"), ("1k,2M,3M", "between 10k and 1B"),
                       ("1M,2M,5B", "between 10k and 1B"), ("", "at least 3 sizes")):
        with pytest.raises(MoelabError, match=match):
            parse_sizes(bad)
    for bad in ("1,8", "8", "x,y", "4,4", "4,100000"):
        with pytest.raises(MoelabError, match="--experts"):
            parse_experts(bad)
    with pytest.raises(MoelabError, match="--kinds"):
        parse_kinds("dense,sparse")


def test_labels_are_exact_and_name_distinct_folders():
    """1000000 and 1000001 once both labelled "1M" (:g) and shared a run folder: a label is exact now, so it
    parses back to its size (the inverse is the independent check) and distinct sizes never share a name."""
    assert [label(s) for s in (10_000, 500_000, 1_000_000, 1_500_000, 8_000_000)] == ["10k", "500k", "1M", "1.5M",
                                                                                      "8M"]
    assert label(1_000_000) != label(1_000_001) == "1.000001M" and label(10_001) == "10.001k"
    sizes = [10_000, 10_001, 99_999, 999_999, 1_000_000, 1_000_001, 1_234_567, 20_000_000, 1_000_000_000]
    assert [parse_size(label(s)) for s in sizes] == sizes
    assert len({label(s) for s in sizes}) == len(sizes)
    names = [p.name for p in build_grid(parse_sizes("1M,1.000001M,2M"), ["dense", "moe"])]
    assert len(set(names)) == len(names) == 6 and "dense-1.000001M" in names
    with pytest.raises(MoelabError, match="twice"):  # two spellings rounding to one size
        parse_sizes("1M,1.0000004M,2M")
