"""Qwen3-Next in moelab.nn: Gated DeltaNet and gated full attention give transformers' logits both ways (tiny
random configs with every switch of the real one), cached decoding equals a full forward, and the chunked delta
rule equals the token-by-token recurrence."""

import pytest
import torch
from tests.nn.family_checks import (
    assert_loads_in_transformers,
    assert_loads_with_equal_logits,
    decode_stepwise,
    fresh_model,
    hf_random_model,
    logits_on,
)
from tests.nn.test_hf_interop import rel_err

from moelab.cost.memory import linear_state_elements
from moelab.nn import build_model, load_pretrained
from moelab.nn.linear_attention import CHUNK, chunked_delta_rule, recurrent_delta_rule
from moelab.spec.hf import spec_from_config

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")

# The real config (tests/spec/configs/qwen3_next_80b_a3b_thinking.json) shrunk: 4 layers, 3 linear + 1 full.
TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=128, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=1e6,
            partial_rotary_factor=0.25, full_attention_interval=4, linear_conv_kernel_dim=4, linear_num_key_heads=2,
            linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=12, num_experts=8,
            num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48, norm_topk_prob=True,
            decoder_sparse_step=1, mlp_only_layers=[])
CASES = {
    "3-linear-1-full-moe-shared": TINY,
    # one value head per key head, kernel 2, biased attention, no shared expert, a dense layer, two full layers
    "variant": {**TINY, "linear_num_value_heads": 2, "linear_conv_kernel_dim": 2, "attention_bias": True,
                "shared_expert_intermediate_size": 0, "norm_topk_prob": False, "mlp_only_layers": [1],
                "partial_rotary_factor": 0.5, "full_attention_interval": 2},
}
IDS = torch.randint(0, 128, (2, CHUNK + 20), generator=torch.Generator().manual_seed(2))  # crosses a chunk edge


logits = logits_on(IDS)


def hf_model(case: str):
    return hf_random_model("qwen3_next", CASES[case])


@pytest.mark.parametrize("case", CASES)
def test_transformers_checkpoint_loads_with_equal_logits(case, tmp_path):
    hf = hf_model(case)
    hf.save_pretrained(tmp_path)
    model = assert_loads_with_equal_logits(tmp_path, hf, logits)
    kinds = [layer.attention.kind for layer in model.spec.layers]
    assert kinds == [t.replace("linear_attention", "linear").replace("full_attention", "gqa")
                     for t in hf.config.layer_types] and "linear" in kinds and "gqa" in kinds


def test_the_multi_token_prediction_head_of_real_checkpoints_is_skipped(tmp_path):
    """Qwen3-Next checkpoints carry mtp.* tensors that transformers ignores on load; so does moelab."""
    from safetensors.torch import load_file, save_file

    hf = hf_model("3-linear-1-full-moe-shared")
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["mtp.fc.weight"] = torch.ones(64, 128)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert_loads_with_equal_logits(tmp_path, hf, logits)


@pytest.mark.parametrize("case", CASES)
def test_moelab_checkpoint_loads_in_transformers(case, tmp_path):
    """A model built from the spec writes its own config.json (Qwen3-Next's writer) that transformers loads."""
    model = fresh_model(spec_from_config({"model_type": "qwen3_next", **CASES[case]}))
    _, written = assert_loads_in_transformers(model, tmp_path, logits, 1e-4)
    assert written["model_type"] == "qwen3_next" and len(written["layer_types"]) == 4
    again = load_pretrained(tmp_path)
    assert rel_err(logits(again), logits(model)) < 1e-6


def test_cached_decoding_equals_a_full_forward_and_transformers(tmp_path):
    hf = hf_model("3-linear-1-full-moe-shared")
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    full = logits(model)
    cache = model.new_cache()
    steps = decode_stepwise(model, IDS, CHUNK + 5, cache)  # prefill past one chunk, then one token at a time
    assert rel_err(steps, full) < 1e-4
    # the state kept per linear layer: the conv's last kernel - 1 inputs and the recurrent state
    for i, layer in enumerate(model.spec.layers):
        if layer.attention.kind == "linear":
            state = cache.states[i]
            assert sum(t[0].numel() for t in state.values()) == linear_state_elements(layer.attention)
    prompt = IDS[:, :10]
    ours = model.generate(prompt, max_new_tokens=8)
    theirs = hf.generate(prompt, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert torch.equal(ours, theirs)


def test_chunked_delta_rule_equals_the_recurrence():
    """In float64, any length (shorter than a chunk, several chunks with a ragged end) and a nonzero start."""
    g = torch.Generator().manual_seed(0)
    for t in (1, 7, 2 * CHUNK + 3):
        q = torch.nn.functional.normalize(torch.randn(2, 3, t, 8, generator=g, dtype=torch.float64), dim=-1)
        k = torch.nn.functional.normalize(torch.randn(2, 3, t, 8, generator=g, dtype=torch.float64), dim=-1)
        v = torch.randn(2, 3, t, 5, generator=g, dtype=torch.float64)
        decay = -3 * torch.rand(2, 3, t, generator=g, dtype=torch.float64)
        beta = torch.rand(2, 3, t, generator=g, dtype=torch.float64)
        start = torch.randn(2, 3, 8, 5, generator=g, dtype=torch.float64)
        out_r, state_r = recurrent_delta_rule(q, k, v, decay, beta, start)
        out_c, state_c = chunked_delta_rule(q, k, v, decay, beta, start)
        assert rel_err(out_c, out_r) < 1e-10 and rel_err(state_c, state_r) < 1e-10


def test_gradients_reach_every_linear_attention_weight():
    model = build_model(spec_from_config({"model_type": "qwen3_next", **TINY}))
    model(IDS).logsumexp(-1).mean().backward()
    mixer = model.layers[0].self_attn
    for name, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
