"""Spec transforms (dense -> MoE, fine-grained + shared experts, layer layouts) against hand counts."""


import pytest

from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.spec import load_model
from moelab.spec.model import select_layers
from moelab.spec.transform import as_moe, fine_grained, parse_as_moe, with_layout

D, F, LAYERS = 4096, 14336, 32  # Llama-3-8B and Mixtral-8x7B share these
FFN = 3 * D * F  # one SwiGLU FFN: gate, up, down
LLAMA3_8B = 8_030_261_248
MIXTRAL_TOTAL, MIXTRAL_ACTIVE = 46_702_792_704, 12_879_925_248


def test_as_moe_llama_8x2():
    spec = as_moe(load_model("llama-3-8b"), 8, 2)
    assert spec.is_moe and spec.moe_layers == tuple(range(LAYERS))
    assert spec.moe.n_experts == 8 and spec.moe.top_k == 2 and spec.moe.expert_ffn == F
    p = count_params(spec)
    # every FFN becomes 8 copies of itself (7 new) plus a router of 8 x d per layer
    assert p.total == LLAMA3_8B + 7 * FFN * LAYERS + 8 * D * LAYERS == 47_491_321_856
    # a token uses 2 of the 8: one extra FFN per layer, and the router
    assert p.active == LLAMA3_8B + 1 * FFN * LAYERS + 8 * D * LAYERS


def test_as_moe_of_llama_is_mixtral_up_to_the_vocabulary():
    # Mixtral-8x7B is Mistral-7B's shape as an 8x2 MoE; Llama-3-8B differs only in its 128256-entry vocabulary
    p = count_params(as_moe(load_model("llama-3-8b"), 8, 2))
    assert p.total - MIXTRAL_TOTAL == 2 * (128256 - 32000) * D
    assert p.active - MIXTRAL_ACTIVE == 2 * (128256 - 32000) * D


def test_as_moe_1x1_adds_only_a_router():
    p = count_params(as_moe(load_model("llama-3-8b"), 1, 1))
    assert p.total == p.active == LLAMA3_8B + D * LAYERS


def test_as_moe_errors():
    with pytest.raises(MoelabError):
        as_moe(load_model("mixtral-8x7b"), 8, 2)  # already MoE
    with pytest.raises(MoelabError):
        as_moe(load_model("llama-3-8b"), 4, 5)  # top-k above the expert count
    with pytest.raises(MoelabError):
        as_moe(load_model("llama-3-8b"), 0, 0)


@pytest.mark.parametrize("text,expected", [("8x2", (8, 2)), (" 64X6 ", (64, 6)), ("128 x 8", (128, 8))])
def test_parse_as_moe(text, expected):
    assert parse_as_moe(text) == expected


@pytest.mark.parametrize("text", ["8", "8x", "x2", "8*2", "8x2x1", "-8x2", "eightx2"])
def test_parse_as_moe_rejects(text):
    with pytest.raises(MoelabError):
        parse_as_moe(text)


def test_fine_grained_mixtral_4_shared_2():
    old = count_params(load_model("mixtral-8x7b"))
    spec = fine_grained(load_model("mixtral-8x7b"), 4, shared=2)
    m = spec.moe
    assert (m.n_experts, m.top_k, m.expert_ffn) == (8 * 4 - 2, 2 * 4 - 2, F // 4) == (30, 6, 3584)
    assert (m.n_shared, m.shared_ffn) == (2, 3584)
    p = count_params(spec)
    # 32 segments of width f/4 per layer, 30 routed + 2 shared: expert params unchanged, exactly
    assert p.routed_experts + p.shared_experts == old.routed_experts == LAYERS * 8 * FFN
    # a token uses 6 routed + 2 shared segments = 2 whole experts, as before
    assert p.routed_active + p.shared_experts == old.routed_active == LAYERS * 2 * FFN
    # the only change: the router scores 30 experts instead of 8
    router_growth = (30 - 8) * D * LAYERS
    assert p.total == MIXTRAL_TOTAL + router_growth
    assert p.active == MIXTRAL_ACTIVE + router_growth
    assert p.total - p.routers == MIXTRAL_TOTAL - 8 * D * LAYERS
    assert p.active - p.routers == MIXTRAL_ACTIVE - 8 * D * LAYERS


def test_fine_grained_without_shared():
    spec = fine_grained(load_model("mixtral-8x7b"), 2)
    assert (spec.moe.n_experts, spec.moe.top_k, spec.moe.expert_ffn, spec.moe.n_shared) == (16, 4, 7168, 0)
    p = count_params(spec)
    assert p.total == MIXTRAL_TOTAL + 8 * D * LAYERS
    assert p.active == MIXTRAL_ACTIVE + 8 * D * LAYERS


def test_fine_grained_rounds_width_down_when_m_does_not_divide():
    spec = fine_grained(load_model("mixtral-8x7b"), 3)  # 14336 / 3 = 4778.67 -> 4778
    assert spec.moe.expert_ffn == 4778
    p = count_params(spec)
    # 24 experts of 4778 instead of 8 of 14336 = 24 of 4778.67: 2 columns of width lost per layer
    assert p.routed_experts == LAYERS * 24 * 3 * D * 4778
    assert LAYERS * 8 * FFN - p.routed_experts == LAYERS * 3 * D * (8 * 14336 - 24 * 4778)
    assert p.routed_active == LAYERS * 6 * 3 * D * 4778


def test_fine_grained_keeps_existing_shared_experts():
    once = fine_grained(load_model("mixtral-8x7b"), 4, shared=2)
    # splitting again without isolating more shared experts: routed 30*2 of 1792, shared stay 2 of 3584
    twice = fine_grained(once, 2)
    assert (twice.moe.n_experts, twice.moe.top_k, twice.moe.expert_ffn) == (60, 12, 1792)
    assert (twice.moe.n_shared, twice.moe.shared_ffn) == (2, 3584)
    p1, p2 = count_params(once), count_params(twice)
    assert p2.routed_experts == p1.routed_experts
    assert p2.shared_experts == p1.shared_experts
    assert p2.routed_active == p1.routed_active


def test_fine_grained_resets_expert_groups():
    spec = fine_grained(load_model("deepseek-v3"), 2)
    assert (spec.moe.n_group, spec.moe.topk_group) == (1, 1)
    assert (spec.moe.n_experts, spec.moe.top_k, spec.moe.expert_ffn) == (512, 16, 1024)
    assert spec.moe_layers == load_model("deepseek-v3").moe_layers


def test_fine_grained_errors():
    mixtral = load_model("mixtral-8x7b")
    with pytest.raises(MoelabError):
        fine_grained(load_model("llama-3-8b"), 4)  # dense
    with pytest.raises(MoelabError):
        fine_grained(mixtral, 0)
    with pytest.raises(MoelabError):
        fine_grained(mixtral, 4, shared=-1)
    with pytest.raises(MoelabError):
        fine_grained(mixtral, 4, shared=8)  # top-k 2*4 - 8 = 0 routed experts left
    with pytest.raises(MoelabError):
        fine_grained(mixtral, 20000)  # width 14336 // 20000 = 0
    with pytest.raises(MoelabError):  # shared experts of width 3584 already, new ones would be 1792
        fine_grained(fine_grained(mixtral, 4, shared=2), 2, shared=1)


@pytest.mark.parametrize("layout,n,layers", [
    ("dense", 1, ()),
    ("moe", 1, tuple(range(8))),
    ("first_k_dense", 3, (3, 4, 5, 6, 7)),
    ("every_n", 2, (1, 3, 5, 7)),
    ("every_n", 3, (2, 5)),
    ("moe_head", 2, (6, 7)),
    ("moe_head", 8, tuple(range(8))),
])
def test_with_layout(layout, n, layers):
    base = as_moe(load_model("llama-3-8b"), 8, 2)
    small = with_layout(select_layers(base, range(8)), layout, n)
    assert small.moe_layers == layers
    assert small.is_moe == bool(layers)
    p = count_params(small)
    # each MoE layer swaps one dense FFN for 8 experts and a router
    dense_small = count_params(with_layout(small, "dense"))
    assert p.total - dense_small.total == len(layers) * (7 * FFN + 8 * D)


def test_with_layout_errors():
    spec = as_moe(load_model("llama-3-8b"), 8, 2)
    with pytest.raises(MoelabError):
        with_layout(spec, "sparse")
    with pytest.raises(MoelabError):
        with_layout(load_model("llama-3-8b"), "moe")  # no MoE spec to place
    with pytest.raises(MoelabError):
        with_layout(spec, "first_k_dense", 33)
    with pytest.raises(MoelabError):
        with_layout(spec, "every_n", 0)
