"""count_params against the oracle: the parameter count of the transformers model built from the same config.

Every case is a small config (hidden 64, 2-4 layers, vocab 96) built on the meta device, so nothing is
allocated. The same dict is read by `spec_from_config`; its `.total` must equal
`sum(p.numel() for p in model.parameters())` exactly, for every family and every switch that changes it.
A case transformers cannot build fails rather than skips, so a regression cannot hide behind a missing oracle.
"""

from __future__ import annotations

import json
import warnings
from functools import cache
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from moelab.cost.params import count_params  # noqa: E402
from moelab.spec.hf import spec_from_config  # noqa: E402

# ids 0..2 lie inside the tiny vocab, so generation-config checks stay quiet
_COMMON = dict(vocab_size=96, hidden_size=64, num_attention_heads=4, max_position_embeddings=128,
               pad_token_id=0, bos_token_id=1, eos_token_id=2, hidden_act="silu")

BASE: dict[str, dict[str, Any]] = {
    "llama": dict(_COMMON, intermediate_size=96, num_hidden_layers=2, num_key_value_heads=2),
    "mistral": dict(_COMMON, intermediate_size=96, num_hidden_layers=2, num_key_value_heads=2),
    "qwen2": dict(_COMMON, intermediate_size=96, num_hidden_layers=2, num_key_value_heads=2),
    # Qwen3Config defaults head_dim to 128, not hidden/heads: real configs state it, so do these
    "qwen3": dict(_COMMON, intermediate_size=96, num_hidden_layers=2, num_key_value_heads=2, head_dim=16),
    "mixtral": dict(_COMMON, intermediate_size=48, num_hidden_layers=2, num_key_value_heads=2,
                    num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(_COMMON, intermediate_size=96, num_hidden_layers=4, num_key_value_heads=2,
                      num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=48, decoder_sparse_step=1, mlp_only_layers=[],
                      qkv_bias=True),
    "qwen3_moe": dict(_COMMON, intermediate_size=96, num_hidden_layers=4, num_key_value_heads=2,
                      num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      decoder_sparse_step=1, mlp_only_layers=[]),
    "olmoe": dict(_COMMON, intermediate_size=32, num_hidden_layers=2, num_key_value_heads=2,
                  num_experts=4, num_experts_per_tok=2),
    "deepseek_v2": dict(_COMMON, intermediate_size=96, num_hidden_layers=3, num_key_value_heads=4,
                        n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                        n_shared_experts=1, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=None,
                        qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=16,
                        topk_method="greedy", n_group=1, topk_group=1),
    "deepseek_v3": dict(_COMMON, intermediate_size=96, num_hidden_layers=3, num_key_value_heads=4,
                        n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                        n_shared_experts=1, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=24,
                        qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=16, n_group=2, topk_group=1),
}


ABSENT = "<absent>"  # an override that removes the field from the config


def case(case_id: str, family: str, **overrides: Any):
    return pytest.param(family, overrides, id=f"{family}-{case_id}")


CASES = [
    # dense families
    case("gqa", "llama"),
    case("mha", "llama", num_key_value_heads=4),
    case("tied", "llama", tie_word_embeddings=True),
    case("untied", "llama", tie_word_embeddings=False),
    case("attention_bias", "llama", attention_bias=True),
    case("mlp_bias", "llama", mlp_bias=True),
    case("both_biases-tied", "llama", attention_bias=True, mlp_bias=True, tie_word_embeddings=True),
    case("gqa", "mistral"),
    case("mha", "mistral", num_key_value_heads=4),
    case("head_dim32", "mistral", head_dim=32),
    case("head_dim8-mqa", "mistral", head_dim=8, num_key_value_heads=1),
    case("tied", "mistral", tie_word_embeddings=True),
    case("gqa", "qwen2"),  # q/k/v bias is always on
    case("mha", "qwen2", num_key_value_heads=4),
    case("tied", "qwen2", tie_word_embeddings=True),
    case("untied", "qwen2", tie_word_embeddings=False),
    case("gqa", "qwen3"),
    case("mha", "qwen3", num_key_value_heads=4),
    case("attention_bias", "qwen3", attention_bias=True),
    case("head_dim32", "qwen3", head_dim=32),
    case("head_dim_absent", "qwen3", head_dim=ABSENT),  # transformers falls back to Qwen3Config's 128
    case("head_dim32-bias-tied", "qwen3", head_dim=32, attention_bias=True, tie_word_embeddings=True),
    case("tied", "qwen3", tie_word_embeddings=True),
    case("untied", "qwen3", tie_word_embeddings=False),
    # Mixtral
    case("4experts", "mixtral"),
    case("8experts", "mixtral", num_local_experts=8),
    case("8experts-top1", "mixtral", num_local_experts=8, num_experts_per_tok=1),
    case("mha", "mixtral", num_key_value_heads=4),
    case("tied", "mixtral", tie_word_embeddings=True),
    # Qwen2-MoE
    case("default", "qwen2_moe"),
    case("no_qkv_bias", "qwen2_moe", qkv_bias=False),
    case("no_shared", "qwen2_moe", shared_expert_intermediate_size=0),
    case("sparse_step2", "qwen2_moe", decoder_sparse_step=2),
    case("mlp_only_layers", "qwen2_moe", mlp_only_layers=[0, 2]),
    case("step2-mlp_only", "qwen2_moe", decoder_sparse_step=2, mlp_only_layers=[1]),
    case("mha", "qwen2_moe", num_key_value_heads=4),
    case("tied", "qwen2_moe", tie_word_embeddings=True),
    # Qwen3-MoE
    case("default", "qwen3_moe"),
    case("sparse_step2", "qwen3_moe", decoder_sparse_step=2),
    case("mlp_only_layers", "qwen3_moe", mlp_only_layers=[0, 3]),
    case("attention_bias", "qwen3_moe", attention_bias=True),
    case("head_dim32", "qwen3_moe", head_dim=32),
    case("mha", "qwen3_moe", num_key_value_heads=4),
    case("tied", "qwen3_moe", tie_word_embeddings=True),
    # OLMoE (q/k norms over the full projection width)
    case("gqa", "olmoe"),
    case("mha", "olmoe", num_key_value_heads=4),
    case("attention_bias", "olmoe", attention_bias=True),
    case("8experts", "olmoe", num_experts=8),
    case("tied", "olmoe", tie_word_embeddings=True),
    # DeepSeek-V2
    case("q_lora_none-greedy", "deepseek_v2"),
    case("q_lora24", "deepseek_v2", q_lora_rank=24),
    case("group_limited_greedy", "deepseek_v2", topk_method="group_limited_greedy", n_group=2, topk_group=1),
    case("attention_bias", "deepseek_v2", attention_bias=True),
    case("attention_bias-q_lora24", "deepseek_v2", attention_bias=True, q_lora_rank=24),
    case("mlp_bias", "deepseek_v2", mlp_bias=True),
    case("mlp_bias-shared2", "deepseek_v2", mlp_bias=True, n_shared_experts=2),
    case("mlp_bias-shared0", "deepseek_v2", mlp_bias=True, n_shared_experts=0),
    case("shared0", "deepseek_v2", n_shared_experts=0),
    case("shared2", "deepseek_v2", n_shared_experts=2),
    case("first_dense0", "deepseek_v2", first_k_dense_replace=0),
    case("first_dense2", "deepseek_v2", first_k_dense_replace=2),
    case("tied", "deepseek_v2", tie_word_embeddings=True),
    # DeepSeek-V3
    case("q_lora24", "deepseek_v3"),
    case("q_lora_none", "deepseek_v3", q_lora_rank=None),
    case("shared0", "deepseek_v3", n_shared_experts=0),
    case("shared2", "deepseek_v3", n_shared_experts=2),
    case("first_dense0", "deepseek_v3", first_k_dense_replace=0),
    case("first_dense2", "deepseek_v3", first_k_dense_replace=2),
    case("8experts-group4-topk2", "deepseek_v3", n_routed_experts=8, n_group=4, topk_group=2),
    case("group1", "deepseek_v3", n_group=1, topk_group=1),
    case("attention_bias", "deepseek_v3", attention_bias=True),
    case("attention_bias-q_lora_none", "deepseek_v3", attention_bias=True, q_lora_rank=None),
    case("tied", "deepseek_v3", tie_word_embeddings=True),
]


@cache
def _build(family: str, frozen: tuple[tuple[str, Any], ...]):
    """The transformers config and model (meta device), or the exception transformers raised."""
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in frozen}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = transformers.AutoConfig.for_model(family, **fields)
            with torch.device("meta"):
                model = transformers.AutoModelForCausalLM.from_config(cfg)
    except Exception as e:  # noqa: BLE001 - any failure to build means the case cannot be checked: build() fails it
        return None, None, e
    return cfg, model, None


def fields_of(family: str, overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in {**BASE[family], **overrides}.items() if v != ABSENT}


def build(family: str, overrides: dict[str, Any]):
    fields = fields_of(family, overrides)
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in fields.items()))
    cfg, model, error = _build(family, frozen)
    if error is not None:  # a failure, not a skip: a case the oracle cannot build would hide a regression
        pytest.fail(f"transformers {transformers.__version__} cannot build {family} {overrides}, so the count "
                    f"cannot be checked: {error!r}", pytrace=False)
    return cfg, model


def oracle_total(model) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once


def spec_for(family: str, overrides: dict[str, Any]):
    return spec_from_config({"model_type": family, **fields_of(family, overrides)}, name=family)


@pytest.mark.parametrize("family, overrides", CASES)
def test_total_matches_transformers(family, overrides):
    _, model = build(family, overrides)
    assert count_params(spec_for(family, overrides)).total == oracle_total(model)


@pytest.mark.parametrize("family, overrides", CASES)
def test_total_from_the_config_json_transformers_writes(family, overrides):
    """The file save_pretrained writes (every field spelled out by transformers) reads to the same count."""
    cfg, model = build(family, overrides)
    raw = json.loads(cfg.to_json_string())
    assert count_params(spec_from_config(raw, name=family)).total == oracle_total(model)


def routed_experts_by_layer(model) -> dict[str, tuple[int, int]]:
    """{layer prefix: (parameters of its routed experts, expert count)}, read off the model's parameters."""
    layers: dict[str, tuple[int, int]] = {}
    for name, p in model.named_parameters():
        if "mlp.experts." not in name:
            continue
        prefix = name.split("mlp.experts.")[0]
        numel, n_experts = layers.get(prefix, (0, None))
        # fused (E, ., .) tensors in transformers 5; per-expert modules "experts.<i>." in older versions
        rest = name.split("mlp.experts.")[1]
        count = int(rest.split(".")[0]) + 1 if rest.split(".")[0].isdigit() else p.shape[0]
        layers[prefix] = (numel + p.numel(), max(count, n_experts or 0))
    return layers


@pytest.mark.parametrize("family, overrides", CASES)
def test_active_is_total_minus_unselected_experts(family, overrides):
    cfg, model = build(family, overrides)
    total = oracle_total(model)
    top_k = getattr(cfg, "num_experts_per_tok", None)
    unselected = 0
    for numel, n_experts in routed_experts_by_layer(model).values():
        assert numel * (n_experts - top_k) % n_experts == 0
        unselected += numel * (n_experts - top_k) // n_experts  # numel * (1 - top_k / n_experts), exactly
    is_moe = family in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3")
    assert (unselected > 0) == is_moe
    counted = count_params(spec_for(family, overrides))
    assert counted.total - counted.active == unselected
    assert counted.active == total - unselected


def test_every_family_is_covered():
    families = {p.values[0] for p in CASES}
    assert families == set(BASE)
