"""Engine reads of Phi-3 / Phi-4-mini, OLMo 2 and Llama 3.1 / 3.2 real configs: exact totals (transformers 5.24
meta-device sum(numel), tests/spec/configs/expected_counts.json), the per-layer pattern, the rope fields the
forward pass needs, and bad switches refused in one line (exit 2)."""

import json

import pytest
from tests.spec.family_checks import CONFIGS, one_line_exit_2, real

from moelab.cli import main
from moelab.cost.params import count_params
from moelab.spec.hf import spec_from_config

EXPECTED = json.loads((CONFIGS / "expected_counts.json").read_text())
NAMES = ("phi3_5_mini_instruct", "phi4_mini_instruct", "olmo2_1124_7b", "llama3_1_8b", "llama3_2_1b")


@pytest.mark.parametrize("name", NAMES)
def test_total_equals_transformers_and_dense_active_is_total(name):
    spec = spec_from_config(real(name), name)
    p = count_params(spec)
    row = EXPECTED[name]
    assert p.total == row["total"]
    assert p.embedding == row["embedding"] and p.lm_head == row["lm_head"]  # tied: lm_head 0, as transformers
    assert p.total - p.embedding - p.lm_head - spec.d_model == row["decoder_layers"]  # final norm is "other"
    assert not spec.is_moe and p.active == p.total  # dense: every parameter is used by every token


def test_phi3_5_longrope_fields_and_window_on_every_layer():
    raw = real("phi3_5_mini_instruct")
    spec = spec_from_config(raw, "phi3.5")
    scaling = dict(spec.rope_scaling)
    assert scaling["rope_type"] == "longrope"  # the config says "type": "longrope"
    assert scaling["original_max_position_embeddings"] == 4096  # the top-level field, copied in
    assert scaling["short_factor"] == tuple(float(x) for x in raw["rope_scaling"]["short_factor"])
    assert len(scaling["long_factor"]) == 48 == 96 // 2  # head_dim 3072 / 32 = 96, rotary_dim / 2 entries
    assert {layer.attention.sliding_window for layer in spec.layers} == {262144}
    a = spec.attention
    assert (a.n_heads, a.n_kv_heads, a.head_dim, a.rotary_fraction) == (32, 32, 96, 1.0)
    assert not (a.qkv_bias or a.o_bias or spec.mlp_bias)
    # the window (262144) exceeds max_position_embeddings (131072): the KV cache is never capped
    assert a.cached(131072) == 131072


def test_phi4_mini_partial_rotary_and_tied_embeddings():
    spec = spec_from_config(real("phi4_mini_instruct"), "phi4-mini")
    a = spec.attention
    assert (a.n_heads, a.n_kv_heads, a.head_dim) == (24, 8, 128)
    assert {layer.attention.rotary_fraction for layer in spec.layers} == {0.75}  # 96 of 128 dims rotate
    assert len(dict(spec.rope_scaling)["short_factor"]) == 48 == int(128 * 0.75) // 2
    assert spec.tie_embeddings


def _phi3(**change) -> dict:
    raw = real("phi3_5_mini_instruct")
    raw.update(change)
    return raw


def test_phi3_original_max_follows_transformers():
    """Phi3Config: the top-level original_max_position_embeddings (default 4096) overrides the rope dict's."""
    scaling = dict(real("phi3_5_mini_instruct")["rope_scaling"], original_max_position_embeddings=2048)
    spec = spec_from_config(_phi3(rope_scaling=scaling, original_max_position_embeddings=8192))
    assert dict(spec.rope_scaling)["original_max_position_embeddings"] == 8192
    raw = _phi3(rope_scaling=scaling)
    del raw["original_max_position_embeddings"]
    assert dict(spec_from_config(raw).rope_scaling)["original_max_position_embeddings"] == 4096


@pytest.mark.parametrize("old", ["su", "yarn"])
def test_phi3_old_rope_names_are_longrope(old):
    scaling = {**real("phi3_5_mini_instruct")["rope_scaling"], "type": old}
    assert dict(spec_from_config(_phi3(rope_scaling=scaling)).rope_scaling)["rope_type"] == "longrope"


def test_phi3_transformers5_rope_parameters_with_partial_factor():
    """transformers 5 saves rope_parameters with partial_rotary_factor inside: it is read, not kept as scaling."""
    raw = real("phi4_mini_instruct")
    rope = raw.pop("rope_scaling")
    raw.pop("partial_rotary_factor")
    raw["rope_parameters"] = {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                              "short_factor": rope["short_factor"], "long_factor": rope["long_factor"],
                              "original_max_position_embeddings": 4096}
    spec = spec_from_config(raw)
    assert spec.attention.rotary_fraction == 0.75 and "partial_rotary_factor" not in dict(spec.rope_scaling)
    assert spec == spec_from_config(real("phi4_mini_instruct"))


def test_olmo2_post_norms_and_full_qk_norms():
    spec = spec_from_config(real("olmo2_1124_7b"), "olmo2")
    assert spec.norm_placement == "post" and spec.norm == "rms"
    assert {layer.attention.qk_norm for layer in spec.layers} == {"full"}
    assert spec.rope_theta == 500000.0 and spec.norm_eps == 1e-6


@pytest.mark.parametrize("name, factor, original", [("llama3_1_8b", 8.0, 8192), ("llama3_2_1b", 32.0, 8192)])
def test_llama3_rope_scaling(name, factor, original):
    spec = spec_from_config(real(name), name)
    scaling = dict(spec.rope_scaling)
    assert scaling["rope_type"] == "llama3" and scaling["factor"] == factor
    assert scaling["original_max_position_embeddings"] == original
    assert (scaling["low_freq_factor"], scaling["high_freq_factor"]) == (1.0, 4.0)
    assert spec.tie_embeddings == (name == "llama3_2_1b")


@pytest.mark.parametrize("name, change, words", [
    ("phi3_5_mini_instruct", {"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "longrope"),
    ("phi3_5_mini_instruct", {"partial_rotary_factor": 1.5}, "rotary_fraction"),
    ("phi3_5_mini_instruct", {"original_max_position_embeddings": "4k"}, "original_max_position_embeddings"),
    ("olmo2_1124_7b", {"attention_bias": "no"}, "attention_bias"),
    ("olmo2_1124_7b", {"hidden_act": "relu"}, "hidden_act"),
])
def test_bad_switches_are_one_line_exit_2(tmp_path, capsys, name, change, words):
    assert words in one_line_exit_2({**real(name), **change}, tmp_path, capsys)


@pytest.mark.parametrize("name", NAMES)
def test_real_config_estimates(tmp_path, capsys, name):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(real(name)))
    assert main(["estimate", str(path)]) == 0
