"""GLM-4.5 (glm4_moe), Phi-3.5-MoE (phimoe) and Granite MoE (granitemoe) in moelab.nn: tiny random configs that
keep every switch of the real ones; logits equal transformers' both ways, and KV-cache decoding equals a full
forward. References: transformers 5.24 models/glm4_moe, models/phimoe, models/granitemoe."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.nn.family_checks import (
    assert_loads_in_transformers,
    assert_loads_with_equal_logits,
    assert_moelab_reload_is_exact,
    decode_stepwise,
    hf_random_model,
    logits_on,
)
from tests.nn.test_hf_interop import randomise, rel_err

from moelab.errors import MoelabError
from moelab.nn import build_model, load_pretrained
from moelab.nn.routers import sparsemixer
from moelab.spec.hf import spec_from_config, spec_from_file

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")

BASE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=128, max_position_embeddings=256, rms_norm_eps=1e-5)
# GLM-4.5: partial rotary 0.5, q/k/v biases, q/k norms, dense first layer, shared expert, grouped sigmoid routing
GLM = dict(model_type="glm4_moe", **BASE, head_dim=16, partial_rotary_factor=0.5, attention_bias=True,
           use_qk_norm=True, first_k_dense_replace=1, n_routed_experts=8, num_experts_per_tok=2,
           moe_intermediate_size=32, n_shared_experts=1, n_group=2, topk_group=1, routed_scaling_factor=2.5,
           norm_topk_prob=True, num_nextn_predict_layers=1, rope_theta=10000.0)
LONGROPE = dict(rope_type="longrope", rope_theta=10000.0, short_factor=[1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0, 3.5],
                long_factor=[1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 9.0], short_mscale=1.2, long_mscale=1.2,
                original_max_position_embeddings=64)
PHIMOE = dict(model_type="phimoe", **{**BASE, "num_hidden_layers": 2, "intermediate_size": 32}, num_local_experts=4,
              num_experts_per_tok=2, attention_bias=True, lm_head_bias=True, sliding_window=5,
              router_jitter_noise=0.01, rope_parameters=LONGROPE)
GRANITE = dict(model_type="granitemoe", **{**BASE, "num_hidden_layers": 2, "intermediate_size": 32},
               num_local_experts=4, num_experts_per_tok=2, embedding_multiplier=12.0, residual_multiplier=0.22,
               logits_scaling=6.0, attention_multiplier=0.1, tie_word_embeddings=True)
CASES = {
    "glm4_moe": GLM,
    # GLM-4.5-Air's switches: no q/k norm, one group, no scaling, plus no shared expert and full rotary
    "glm4_moe-air": {**GLM, "use_qk_norm": False, "n_group": 1, "routed_scaling_factor": 1.0, "n_shared_experts": 0,
                     "norm_topk_prob": False, "partial_rotary_factor": 1.0, "head_dim": 32},
    "phimoe": PHIMOE,
    # a wide sparsemixer eps: the second pass often keeps several experts in its softmax
    "phimoe-eps": {**PHIMOE, "router_jitter_noise": 0.4, "attention_bias": False, "lm_head_bias": False,
                   "sliding_window": None, "rope_parameters": None, "rope_theta": 1e6},
    "granitemoe": GRANITE,
    "granitemoe-bias": {**GRANITE, "attention_bias": True, "tie_word_embeddings": False},
}
IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(2))
logits = logits_on(IDS)


def _randomise(model):
    """randomise() plus the GLM selection biases (>= 0, as test_hf_interop keeps DeepSeek's), which it leaves at
    zero for transformers' Glm4Moe model."""
    randomise(model)
    spec = getattr(model, "spec", None)
    if not ("Glm4Moe" in type(model).__name__ or spec is not None and spec.moe and spec.moe.selection_bias):
        return model.eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias") or name.endswith("mlp.gate.bias"):
                b.copy_(0.3 * torch.rand(b.shape, generator=g))
    return model.eval()


def hf_model(case: str):
    cfg = dict(CASES[case])
    return hf_random_model(cfg.pop("model_type"), cfg, randomise=_randomise)


@pytest.mark.parametrize("case", CASES)
def test_transformers_checkpoint_loads_with_equal_logits(case, tmp_path):
    hf = hf_model(case)
    hf.save_pretrained(tmp_path)
    model = assert_loads_with_equal_logits(tmp_path, hf, logits)
    assert model.spec.family == CASES[case]["model_type"]
    if case.startswith("glm4_moe"):
        assert all(layer.gate.bias.min() > 0 for layer in model.moe_layers())  # the selection biases were loaded


@pytest.mark.parametrize("case", CASES)
def test_moelab_checkpoint_loads_in_transformers_and_back(case, tmp_path):
    hf = hf_model(case)
    hf.save_pretrained(tmp_path / "hf")
    loaded = load_pretrained(tmp_path / "hf")
    _, kept = assert_loads_in_transformers(loaded, tmp_path / "kept", logits, 1e-6)  # its own config.json back
    assert kept["model_type"] == CASES[case]["model_type"]
    torch.manual_seed(3)
    fresh = _randomise(build_model(spec_from_file(tmp_path / "hf")))  # a generated config.json
    _, written = assert_loads_in_transformers(fresh, tmp_path / "new", logits, 1e-4)
    assert written["model_type"] == CASES[case]["model_type"]
    assert_moelab_reload_is_exact(tmp_path / "new", fresh, logits)


@pytest.mark.parametrize("case", CASES)
def test_kv_cache_decoding_equals_a_full_forward(case):
    """Prefill 5 tokens, then one at a time: partial rotary, q/k norms, Phi-MoE's window of 5, Granite's scales."""
    torch.manual_seed(0)
    model = _randomise(build_model(spec_from_config(CASES[case])))
    full = logits(model)
    assert rel_err(decode_stepwise(model, IDS, 5), full) < 1e-5


def test_the_file_layouts_are_transformers_own(tmp_path):
    """Phi-MoE keeps block_sparse_moe.experts.N.w1/w2/w3 and .gate; Granite stores its experts fused."""
    hf_model("phimoe").save_pretrained(tmp_path / "phi")
    names = set(load_file(tmp_path / "phi" / "model.safetensors"))
    assert {"model.layers.1.block_sparse_moe.experts.3.w3.weight", "model.layers.0.block_sparse_moe.gate.weight",
            "lm_head.bias", "model.norm.bias"} <= names
    hf_model("granitemoe").save_pretrained(tmp_path / "granite")
    tensors = load_file(tmp_path / "granite" / "model.safetensors")
    assert tensors["model.layers.0.block_sparse_moe.input_linear.weight"].shape == (4, 64, 64)
    assert tensors["model.layers.0.block_sparse_moe.output_linear.weight"].shape == (4, 64, 32)
    assert "model.layers.0.block_sparse_moe.router.layer.weight" in tensors


def test_transformers_in_memory_names_load(tmp_path):
    """A file in the layout transformers >= 5 holds in memory (fused experts, mlp.router) loads too."""
    for case in ("phimoe", "granitemoe"):
        hf = hf_model(case)
        hf.save_pretrained(tmp_path / case)
        (tmp_path / case / "model.safetensors").unlink()
        save_file({k: v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"
                   or not hf.config.tie_word_embeddings}, tmp_path / case / "model.safetensors")
        assert_loads_with_equal_logits(tmp_path / case, hf, logits)


def test_glm_multi_token_prediction_layers_are_ignored(tmp_path):
    """GLM-4.5 checkpoints carry num_nextn_predict_layers MTP layers after the last decoder layer; transformers
    does not build them, nor does moelab. A layer beyond them is still unexpected."""
    hf = hf_model("glm4_moe")
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["model.layers.3.eh_proj.weight"] = torch.ones(64, 128)
    tensors["model.layers.3.self_attn.q_proj.weight"] = torch.ones(64, 64)
    save_file(tensors, tmp_path / "model.safetensors")
    assert_loads_with_equal_logits(tmp_path, hf, logits)
    tensors["model.layers.4.eh_proj.weight"] = torch.ones(64, 128)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(MoelabError, match="unexpected tensor model.layers.4.eh_proj.weight"):
        load_pretrained(tmp_path)


def test_sparsemixer_equals_transformers_in_eval():
    """Bit-equal to transformers' phimoe sparsemixer (eval), near-ties and every eps included."""
    from transformers.models.phimoe.modeling_phimoe import sparsemixer as reference

    g = torch.Generator().manual_seed(0)
    for eps in (0.0, 0.01, 0.3, 1.0):
        scores = torch.randn(400, 16, generator=g) * torch.rand(400, 1, generator=g) * 3
        scores[:40, 1] = scores[:40, 0] * (1 - 1e-3)  # a runner-up within the mask's reach
        want_weights, want_experts = reference(scores, eps, False)
        experts, weights = sparsemixer(scores, 2, eps)
        assert torch.equal(experts, want_experts) and torch.equal(weights, want_weights)
    assert torch.equal(sparsemixer(scores, 2, 0.0)[1][:, 0], torch.ones(400))  # eps 0: the best expert alone


def test_phimoe_rope_that_transformers_computes_otherwise_is_refused(tmp_path):
    hf = hf_model("phimoe")
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["rope_parameters"]["long_mscale"] = 1.5
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MoelabError, match="short_mscale and long_mscale"):
        load_pretrained(tmp_path)
