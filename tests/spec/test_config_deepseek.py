"""Engine reads of DeepSeek-V2-Lite and Kimi-K2-Instruct (a DeepSeek-V3 body under model_type kimi_k2): exact
totals (transformers 5.24 meta-device sum(numel), expected_counts.json), actives by the documented rule checked
against transformers' own expert tensors, the per-layer pattern, and bad switches refused in one line (exit 2)."""

import json

import pytest
from tests.spec.family_checks import CONFIGS, meta_model, one_line_exit_2, real

from moelab.cost.params import count_params
from moelab.spec.hf import spec_from_config

EXPECTED = json.loads((CONFIGS / "expected_counts.json").read_text())


def transformers_counts(raw: dict) -> tuple[int, int]:
    """(total, active) of the transformers model built on the meta device from `raw` (kimi_k2 as DeepseekV3).
    Active, the rule moelab documents: every parameter but the routed experts a token does not use, i.e. each
    fused expert tensor (mlp.experts.*, E experts) counts k / E of its size."""
    transformers = pytest.importorskip("transformers")
    fields = {k: v for k, v in raw.items() if k not in ("model_type", "quantization_config", "auto_map")}
    model_type = "deepseek_v3" if raw["model_type"] == "kimi_k2" else raw["model_type"]
    model = meta_model(transformers.AutoConfig.for_model(model_type, **fields))
    k, e = raw["num_experts_per_tok"], raw["n_routed_experts"]
    total = active = 0
    for name, p in model.named_parameters():
        total += p.numel()
        active += p.numel() * k // e if ".mlp.experts." in name else p.numel()
    return total, active


@pytest.mark.parametrize("name", ["deepseek_v2_lite", "kimi_k2_instruct"])
def test_total_equals_transformers_and_active_follows_the_rule(name):
    raw = real(name)
    p = count_params(spec_from_config(raw, name))
    assert p.total == EXPECTED[name]["total"]
    assert (p.total, p.active) == transformers_counts(raw)


def test_v2_lite_matches_the_card_and_an_absent_q_lora_rank_is_the_config_class_default():
    """The hub's DeepSeek-V2-Lite config.json has "q_lora_rank": null (a plain q_proj; mlc's copy dropped the
    key, restored in tests/spec/configs with its evidence in SOURCES.json): the total is the card's 15.7B
    and the active count without the input embedding its 2.4B (deepseek-ai/DeepSeek-V2-Lite model card:
    15.7B total, 2.4B activated). With the key absent, transformers (and moelab) take DeepseekV2Config's 1536."""
    raw = real("deepseek_v2_lite")
    p = count_params(spec_from_config(raw))
    assert p.total == 15706484224 and 2.4e9 <= p.active - p.embedding < 2.5e9
    absent = {k: v for k, v in raw.items() if k != "q_lora_rank"}
    spec = spec_from_config(absent)
    assert spec.attention.q_lora_rank == 1536
    assert (count_params(spec).total, count_params(spec).active) == transformers_counts(absent)


def test_v2_lite_layers():
    spec = spec_from_config(real("deepseek_v2_lite"), "v2-lite")
    assert spec.n_layers == 27 and spec.moe_layers == tuple(range(1, 27))  # first_k_dense_replace 1
    assert spec.layers[0].ffn.width == 10944
    m = spec.moe
    assert (m.n_experts, m.top_k, m.expert_ffn, m.n_shared, m.shared_ffn) == (64, 6, 1408, 2, 1408)
    assert m.router == "softmax_topk" and not m.norm_topk_prob and not m.selection_bias
    assert (m.n_group, m.topk_group, m.routed_scaling_factor) == (1, 1, 1.0)
    a = spec.attention
    assert a.kind == "mla" and (a.n_heads, a.kv_lora_rank, a.qk_nope_head_dim, a.qk_rope_head_dim,
                                a.head_dim) == (16, 512, 128, 64, 128)
    assert a.q_lora_rank is None  # V2-Lite does not compress queries (the hub config's null, restored here)
    assert spec.rope_interleave  # V2 rotates complex pairs (x0, x1), (x2, x3), ...
    scaling = dict(spec.rope_scaling)
    assert (scaling["rope_type"], scaling["factor"], scaling["original_max_position_embeddings"]) == ("yarn", 40, 4096)


def test_kimi_k2_layers():
    spec = spec_from_config(real("kimi_k2_instruct"), "kimi")
    assert spec.family == "kimi_k2" and spec.n_layers == 61 and spec.moe_layers == tuple(range(1, 61))
    assert spec.layers[0].ffn.width == 18432
    m = spec.moe
    assert (m.n_experts, m.top_k, m.expert_ffn, m.n_shared) == (384, 8, 2048, 1)
    assert m.router == "sigmoid" and m.selection_bias and m.norm_topk_prob
    assert (m.n_group, m.topk_group, m.routed_scaling_factor) == (1, 1, 2.827)
    a = spec.attention
    assert (a.n_heads, a.q_lora_rank, a.kv_lora_rank) == (64, 1536, 512)
    assert spec.rope_interleave and spec.rope_theta == 50000.0


def test_n_shared_experts_defaults_follow_the_config_classes():
    for name, default in (("deepseek_v2_lite", 2), ("kimi_k2_instruct", 1)):
        raw = real(name)
        del raw["n_shared_experts"]
        assert spec_from_config(raw).moe.n_shared == default


@pytest.mark.parametrize("name, change, words", [
    ("deepseek_v2_lite", {"scoring_func": "tanh"}, "scoring_func"),
    ("deepseek_v2_lite", {"topk_method": "sinkhorn"}, "topk_method"),
    ("deepseek_v2_lite", {"q_lora_rank": "none"}, "q_lora_rank"),
    ("kimi_k2_instruct", {"n_group": 7}, "n_group"),
    ("kimi_k2_instruct", {"num_experts_per_tok": 400}, "top_k"),
])
def test_bad_switches_are_one_line_exit_2(tmp_path, capsys, name, change, words):
    assert words in one_line_exit_2({**real(name), **change}, tmp_path, capsys)


def test_moe_layer_freq_is_read_as_deepseek_builds_it_and_says_so():
    """transformers never reads moe_layer_freq; DeepSeek's code does (MoE where i % freq == 0): moelab counts
    DeepSeek's model and its spec notes the difference, which estimate shows."""
    raw = {**real("deepseek_v2_lite"), "moe_layer_freq": 2}
    spec = spec_from_config(raw)
    assert spec.moe_layers == tuple(range(2, 27, 2))
    assert any("moe_layer_freq 2" in note and "transformers" in note for note in spec.notes)
    assert not spec_from_config(real("deepseek_v2_lite")).notes
