"""GLM-4.5 (glm4_moe), Phi-3.5-MoE (phimoe) and Granite MoE (granitemoe) in the engine: totals equal
transformers' meta-device sum(numel), actives by the documented rule checked against the expert tensors
transformers builds and against the published figures, each layer's switches, refused switches as one line
(exit 2).

Configs: the real ones in tests/spec/configs when SOURCES.json lists them (none was found when this was written:
NOT_FOUND.json); until then transformers 5.24's own default config of each class, stated as such: PhimoeConfig()
is Phi-3.5-MoE's shape, Glm4MoeConfig() GLM-4.5-Air's (given head_dim=128: its default 4096 / 96 does not
divide, and GLM-4.5-Air's config.json sets 128 -- see the test), GraniteMoeConfig() is no released model."""

import json

import pytest
from tests.spec.family_checks import CONFIGS, meta_model, one_line_exit_2, total
from tests.spec.family_checks import unselected as unselected_named
from transformers import AutoConfig

from moelab.cost.params import count_params
from moelab.spec.hf import spec_from_config

EXPECTED = json.loads((CONFIGS / "expected_counts.json").read_text())
MINE = ("glm4_moe", "phimoe", "granitemoe")
REAL = [row for row in json.loads((CONFIGS / "SOURCES.json").read_text()) if row["model_type"] in MINE]

# transformers' default config of each class, and variants that turn every switch the other way
CASES = {
    "glm4_moe-default": ("glm4_moe", dict(head_dim=128)),
    "glm4_moe-switches": ("glm4_moe", dict(head_dim=128, hidden_size=5120, num_hidden_layers=6, first_k_dense_replace=3,
                                          n_routed_experts=160, moe_intermediate_size=1536, intermediate_size=12288,
                                          use_qk_norm=True, attention_bias=True, n_shared_experts=2,
                                          partial_rotary_factor=0.25)),
    "glm4_moe-no-shared": ("glm4_moe", dict(head_dim=128, num_hidden_layers=4, first_k_dense_replace=0,
                                            n_shared_experts=0, tie_word_embeddings=True)),
    "phimoe-default": ("phimoe", {}),
    "phimoe-biases": ("phimoe", dict(attention_bias=True, lm_head_bias=True, num_hidden_layers=4)),
    "phimoe-tied": ("phimoe", dict(tie_word_embeddings=True, num_hidden_layers=4, lm_head_bias=True)),
    "granitemoe-default": ("granitemoe", {}),
    "granitemoe-switches": ("granitemoe", dict(attention_bias=True, tie_word_embeddings=True, num_hidden_layers=4,
                                               num_local_experts=40, num_experts_per_tok=8, embedding_multiplier=12.0,
                                               residual_multiplier=0.22, logits_scaling=6.0,
                                               attention_multiplier=0.015625)),
}


def config(case: str):
    model_type, fields = CASES[case]
    return AutoConfig.for_model(model_type, **fields)


def spec_of(cfg, name="m"):
    return spec_from_config(cfg.to_dict(), name)


def unselected(model, experts: int, top_k: int) -> int:
    """Parameters of the routed expert tensors a token does not use: transformers keeps each MoE layer's experts
    as experts.gate_up_proj (E, 2f, d) and experts.down_proj (E, d, f); a token uses top_k of the E slices."""
    return unselected_named(model, experts, top_k, ("experts.gate_up_proj", "experts.down_proj"))


@pytest.mark.parametrize("case", CASES)
def test_total_equals_transformers(case):
    cfg = config(case)
    p = count_params(spec_of(cfg))
    model = meta_model(cfg)
    assert p.total == total(model)
    assert p.embedding == model.get_input_embeddings().weight.numel()


@pytest.mark.parametrize("case", CASES)
def test_active_is_total_minus_unselected_routed_experts(case):
    """The documented rule (DESIGN.md): active = everything but the routed experts a token does not use; for
    phimoe top_k is 2 (sparsemixer's two passes), for the others num_experts_per_tok."""
    cfg = config(case)
    spec = spec_of(cfg)
    p = count_params(spec)
    m = spec.moe
    assert p.active == p.total - unselected(meta_model(cfg), m.n_experts, m.top_k)
    assert p.active < p.total


def test_phi35_moe_shape_matches_its_card():
    """PhimoeConfig() is Phi-3.5-MoE's architecture (biases aside). microsoft/Phi-3.5-MoE-instruct's card:
    42B parameters in total, 6.6B active (two of 16 experts)."""
    p = count_params(spec_of(config("phimoe-default")))
    assert (p.total, p.active) == (41_872_793_600, 6_640_640_000)
    assert abs(p.total - 42e9) / 42e9 < 0.005 and abs(p.active - 6.6e9) / 6.6e9 < 0.01


def test_glm45_air_shape_matches_its_readme():
    """Glm4MoeConfig() (head_dim 128) is GLM-4.5-Air's shape: zai-org/GLM-4.5's README gives it 106B in total,
    12B active. The 12B leaves out the embedding and lm_head (1.24B); the MTP layer is not counted (transformers
    does not build it)."""
    p = count_params(spec_of(config("glm4_moe-default")))
    assert (p.total, p.active) == (106_851_586_048, 13_423_464_448)
    assert abs(p.total - 106e9) / 106e9 < 0.01
    assert abs(p.active - p.embedding - p.lm_head - 12e9) / 12e9 < 0.02


def test_each_layer_is_what_transformers_builds():
    glm = spec_of(config("glm4_moe-switches"))
    assert glm.moe_layers == (3, 4, 5) and glm.ffn_dim == 12288  # first_k_dense_replace dense layers first
    a, m = glm.attention, glm.moe
    assert (a.qkv_bias, a.o_bias, a.qk_norm, a.rotary_fraction) == (True, False, "head", 0.25)
    assert (m.router, m.selection_bias, m.n_shared, m.shared_ffn, m.norm_topk_prob) == ("sigmoid", True, 2, 1536,
                                                                                         True)
    assert spec_of(config("glm4_moe-default")).attention.rotary_fraction == 0.5  # Glm4MoeConfig's default
    phi = spec_of(config("phimoe-biases"))
    a, m = phi.attention, phi.moe
    assert (phi.norm, phi.lm_head_bias, phi.norm_eps, a.qkv_bias, a.o_bias) == ("layer", True, 1e-5, True, True)
    assert (m.router, m.top_k, m.sparsemixer_eps, phi.moe_layers) == ("sparsemixer", 2, 0.01, (0, 1, 2, 3))
    windowed = spec_from_config({**config("phimoe-default").to_dict(), "sliding_window": 2048})
    assert windowed.attention.sliding_window == 2048 and windowed.attention.cached(100_000) == 2048
    granite = spec_of(config("granitemoe-switches"))
    assert (granite.embedding_scale, granite.residual_scale, granite.logits_scale) == (12.0, 0.22, 6.0)
    assert granite.attention.scale == 0.015625 and granite.tie_embeddings and granite.moe.router == "topk_softmax"
    # GraniteMoeConfig's attention_multiplier defaults to 1.0: a softmax scale of 1, not 1/sqrt(head_dim)
    assert spec_of(config("granitemoe-default")).attention.scale == 1.0


def test_phimoe_reads_longrope_mscale_as_its_attention_factor():
    factors = [1.0] * 64
    cfg = config("phimoe-default").to_dict()
    cfg["rope_parameters"] = dict(rope_type="longrope", rope_theta=1e4, short_factor=factors, long_factor=factors,
                                  short_mscale=1.243163121016122, long_mscale=1.243163121016122,
                                  original_max_position_embeddings=4096)
    scaling = dict(spec_from_config(cfg).rope_scaling)
    assert scaling["attention_factor"] == 1.243163121016122 and scaling["rope_type"] == "longrope"


@pytest.mark.parametrize("model_type, edit, words", [
    ("phimoe", {"num_experts_per_tok": 4}, "num_experts_per_tok"),  # sparsemixer routes exactly two
    ("phimoe", {"router_jitter_noise": -0.1}, "router_jitter_noise"),
    ("glm4_moe", {"head_dim": 128, "rope_parameters": {"rope_type": "default", "partial_rotary_factor": 1.5}},
     "partial_rotary_factor"),
    ("glm4_moe", {"head_dim": 128, "rope_parameters": None, "partial_rotary_factor": 0}, "partial_rotary_factor"),
    ("glm4_moe", {"head_dim": 128, "n_group": 3}, "n_group"),  # 3 does not divide 128 experts
    ("glm4_moe", {}, "not divisible"),  # 4096 / 96 without head_dim
    ("granitemoe", {"attention_multiplier": -1.0}, "attention_multiplier"),
    ("granitemoe", {"logits_scaling": 0}, "logits_scaling"),
])
def test_bad_switches_are_one_line_exit_2(model_type, edit, words, tmp_path, capsys):
    raw = {**AutoConfig.for_model(model_type).to_dict(), **edit}
    assert words in one_line_exit_2(raw, tmp_path, capsys)


@pytest.mark.skipif(not REAL, reason="no real glm4_moe / phimoe / granitemoe config in tests/spec/configs yet "
                                     "(tests/spec/configs/NOT_FOUND.json)")
@pytest.mark.parametrize("row", REAL or [None], ids=lambda r: r["name"] if r else "none")
def test_real_config_total_equals_transformers(row):
    raw = json.loads((CONFIGS / f"{row['name']}.json").read_text())
    p = count_params(spec_from_config(raw, row["name"]))
    assert p.total == EXPECTED[row["name"]]["total"]
    assert p.embedding == EXPECTED[row["name"]]["embedding"] and p.lm_head == EXPECTED[row["name"]]["lm_head"]
