"""The transformer LM: built from a spec, counted by the engine, decoded through its KV cache."""

import pytest
import torch

from moelab.cost.params import count_params
from moelab.nn import build_model
from moelab.nn.moe import MoELayer
from moelab.spec.hf import spec_from_config
from moelab.spec.transform import with_layout

BASE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=101)
CONFIGS = {
    "llama": dict(model_type="llama", **BASE),
    "mistral-window": dict(model_type="mistral", **BASE, sliding_window=5),
    "qwen2-tied": dict(model_type="qwen2", **BASE, tie_word_embeddings=True),
    "qwen3": dict(model_type="qwen3", **BASE, head_dim=32),
    "mixtral": dict(model_type="mixtral", **BASE, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(model_type="qwen2_moe", **BASE, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=48, decoder_sparse_step=2),
    "olmoe": dict(model_type="olmoe", **BASE, num_experts=8, num_experts_per_tok=2),
    "deepseek_v3": dict(model_type="deepseek_v3", **{**BASE, "num_key_value_heads": 4}, n_routed_experts=8,
                        num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1, first_k_dense_replace=1,
                        q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8,
                        n_group=4, topk_group=2, routed_scaling_factor=2.5,
                        rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=64,
                                          mscale=1.0, mscale_all_dim=1.0, beta_fast=32, beta_slow=1)),
}


def _model(name):
    torch.manual_seed(0)
    return build_model(spec_from_config(CONFIGS[name], name)).eval()


@pytest.mark.parametrize("name", CONFIGS)
def test_engine_counts_the_built_model(name):
    model = _model(name)
    assert sum(p.numel() for p in model.parameters()) == count_params(model.spec).total


@pytest.mark.parametrize("name", CONFIGS)
def test_kv_cache_decoding_equals_full_forward(name):
    model = _model(name)
    ids = torch.randint(0, 101, (2, 14))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        steps = [model(ids[:, :6], cache)]  # prefill, then one token at a time (and one chunk of 3)
        steps += [model(ids[:, t:t + 1], cache) for t in range(6, 11)]
        steps.append(model(ids[:, 11:14], cache))
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    assert cache.length == 14


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe", "deepseek_v3", "olmoe"])
def test_active_count_is_what_one_token_uses(name):
    """Back-propagate one token: experts without gradient are the unselected ones; the rest is active."""
    model = _model(name)
    model.train()
    logits = model(torch.tensor([[7]]))
    logits.sum().backward()
    unused = 0
    for layer in model.modules():
        if isinstance(layer, MoELayer):
            used = layer.gate_up_proj.grad.flatten(1).abs().sum(1) > 0
            assert used.sum() == layer.spec.top_k
            expert_size = layer.gate_up_proj[0].numel() + layer.down_proj[0].numel()
            unused += int((~used).sum()) * expert_size
    p = count_params(model.spec)
    assert p.total - unused == p.active


def test_generate_is_greedy_decoding():
    model = _model("mixtral")
    prompt = torch.randint(0, 101, (1, 5))
    out = model.generate(prompt, 4)
    ids = prompt
    for _ in range(4):  # without the cache: recompute everything each step
        ids = torch.cat([ids, model(ids)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, ids)


@pytest.mark.parametrize("layout, n, expected", [
    ("dense", 1, ()), ("moe", 1, (0, 1, 2, 3)), ("first_k_dense", 1, (1, 2, 3)), ("every_n", 2, (1, 3)),
    ("moe_head", 1, (3,)),
])
def test_layouts(layout, n, expected):
    spec = with_layout(spec_from_config(CONFIGS["mixtral"]), layout, n)
    assert spec.moe_layers == expected
    model = build_model(spec)
    moe_layers = [i for i, layer in enumerate(model.layers) if isinstance(layer.mlp, MoELayer)]
    assert tuple(moe_layers) == expected
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).total
