"""moelab.nn against transformers for DeepSeek-V2 (MLA with or without a q LoRA, softmax greedy routing that never
renormalises, complex-pair rotary, YaRN, shared experts, mlp_bias, first_k_dense_replace) and Kimi-K2 (a
DeepSeek-V3 body under model_type kimi_k2): tiny random configs shrunk from DeepSeek-V2-Lite's and
Kimi-K2-Instruct's, logits equal both ways, KV-cache decoding equal to the full forward and to transformers'."""

import json
from functools import partial

import pytest
import torch
from tests.nn.family_checks import (
    assert_loads_in_transformers,
    assert_loads_with_equal_logits,
    assert_moelab_reload_is_exact,
    decode_stepwise,
    fresh_model,
    hf_decode_stepwise,
    logits_on,
)
from tests.nn.test_hf_interop import assert_same_state, hf_load, randomise, rel_err

from moelab.errors import MoelabError
from moelab.nn import load_pretrained
from moelab.spec.hf import spec_from_file

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")

TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
            vocab_size=128, max_position_embeddings=256, rms_norm_eps=1e-6, kv_lora_rank=16, qk_nope_head_dim=8,
            qk_rope_head_dim=4, v_head_dim=8, moe_intermediate_size=32, pad_token_id=None, bos_token_id=None,
            eos_token_id=None)
# DeepSeek-V2-Lite's switches (tests/spec/configs/deepseek_v2_lite.json), original_max 8 < the 12 test tokens
V2_YARN = dict(type="yarn", factor=40, mscale=0.707, mscale_all_dim=0.707, original_max_position_embeddings=8,
               beta_fast=32, beta_slow=1)
V2_LITE = dict(model_type="deepseek_v2", **TINY, q_lora_rank=None, n_routed_experts=8, num_experts_per_tok=3,
               n_shared_experts=2, first_k_dense_replace=1, moe_layer_freq=1, topk_method="greedy", n_group=1,
               topk_group=1, norm_topk_prob=False, scoring_func="softmax", routed_scaling_factor=1.0,
               attention_bias=False, rope_scaling=V2_YARN)
# Kimi-K2-Instruct's switches (tests/spec/configs/kimi_k2_instruct.json)
KIMI_YARN = dict(type="yarn", factor=32.0, mscale=1.0, mscale_all_dim=1.0, original_max_position_embeddings=8,
                 beta_fast=1.0, beta_slow=1.0)
KIMI = dict(model_type="kimi_k2", **TINY, q_lora_rank=24, n_routed_experts=12, num_experts_per_tok=4,
            n_shared_experts=1, first_k_dense_replace=1, moe_layer_freq=1, n_group=1, topk_group=1,
            topk_method="noaux_tc", scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.827,
            rope_theta=50000.0, rope_scaling=KIMI_YARN, num_nextn_predict_layers=0, attention_bias=False)
CASES = {
    "v2-lite": V2_LITE,
    "v2-qlora-biases": {**V2_LITE, "q_lora_rank": 24, "attention_bias": True, "mlp_bias": True,
                        "routed_scaling_factor": 2.0, "rope_scaling": None},
    "v2-no-shared-all-moe": {**V2_LITE, "n_shared_experts": 0, "first_k_dense_replace": 0},
    "v2-no-shared-mlp_bias": {**V2_LITE, "n_shared_experts": 0, "mlp_bias": True},
    "v2-group-of-one": {**V2_LITE, "topk_method": "group_limited_greedy", "n_group": 8, "topk_group": 4},
    # full DeepSeek-V2's routing: groups of several experts ranked by their best score
    "v2-groups-by-max": {**V2_LITE, "topk_method": "group_limited_greedy", "n_group": 4, "topk_group": 2},
    "kimi_k2": KIMI,
}
IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(2))


def hf_config(case: str):
    """transformers' config: kimi_k2 is not a transformers model_type, so its fields build DeepseekV3."""
    cfg = dict(CASES[case])
    family = cfg.pop("model_type")
    return transformers.AutoConfig.for_model("deepseek_v3" if family == "kimi_k2" else family, **cfg)


def hf_model(case: str):
    torch.manual_seed(0)
    return randomise(transformers.AutoModelForCausalLM.from_config(hf_config(case)))


def save_hf(case: str, folder):
    """The transformers model saved to `folder`, its config.json saying the case's model_type (kimi_k2 as the
    published checkpoint does: architectures DeepseekV3ForCausalLM, model_type kimi_k2)."""
    hf = hf_model(case)
    hf.save_pretrained(folder)
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    raw["model_type"] = CASES[case]["model_type"]
    path.write_text(json.dumps(raw))
    return hf


def hf_reload(case: str, folder):
    if CASES[case]["model_type"] != "kimi_k2":
        return hf_load(folder)
    model, info = transformers.DeepseekV3ForCausalLM.from_pretrained(folder, config=hf_config(case),
                                                                     output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


logits = logits_on(IDS)


@pytest.mark.parametrize("case", CASES)
def test_transformers_checkpoint_loads_with_equal_logits(case, tmp_path):
    hf = save_hf(case, tmp_path)
    model = assert_loads_with_equal_logits(tmp_path, hf, logits)
    assert model.spec.family == CASES[case]["model_type"]
    assert model.spec.rope_interleave  # V2's complex pairs; Kimi's rope_interleave default


@pytest.mark.parametrize("case", CASES)
def test_moelab_checkpoint_loads_in_transformers_and_back(case, tmp_path):
    save_hf(case, tmp_path / "hf")
    loaded = load_pretrained(tmp_path / "hf")
    # the config.json it came with, written back
    _, kept = assert_loads_in_transformers(loaded, tmp_path / "kept", logits, 1e-6, load=partial(hf_reload, case))
    assert kept["model_type"] == CASES[case]["model_type"]
    assert_same_state(load_pretrained(tmp_path / "kept"), loaded)
    fresh = fresh_model(spec_from_file(tmp_path / "hf"))
    # a generated config.json (kimi_k2: written as deepseek_v3)
    assert_loads_in_transformers(fresh, tmp_path / "new", logits, 1e-4, load=partial(hf_reload, case))
    assert_moelab_reload_is_exact(tmp_path / "new", fresh, logits)


@pytest.mark.parametrize("case", ["v2-lite", "v2-qlora-biases", "kimi_k2"])
def test_kv_cache_decoding_equals_full_forward_and_transformers(case, tmp_path):
    hf = save_hf(case, tmp_path)
    model = load_pretrained(tmp_path)
    ours, theirs = decode_stepwise(model, IDS, 5), hf_decode_stepwise(hf, IDS, 5)
    assert rel_err(ours, logits(model)) < 1e-4  # YaRN does not depend on the length: no switch
    assert rel_err(ours, theirs) < 1e-4


@pytest.mark.parametrize("change, words", [
    (dict(norm_topk_prob=True), "norm_topk_prob"),
    (dict(moe_layer_freq=2), "moe_layer_freq"),
])
def test_v2_switches_transformers_builds_differently_are_refused(tmp_path, change, words):
    """transformers' V2 ignores norm_topk_prob and moe_layer_freq, which DeepSeek's own code honours: moelab.nn
    builds neither reading."""
    save_hf("v2-lite", tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(MoelabError, match=words) as e:
        load_pretrained(tmp_path)
    assert "\n" not in str(e.value)
