"""Qwen3-Next in the engine: the real config's counts equal transformers' (total, and layer by layer on the
meta device), its per-layer pattern, active parameters by the model card's rule, the linear layers' fixed state
against transformers' cache, and one line (exit 2) for switches it cannot model."""

import json
from pathlib import Path

import pytest
import torch

from moelab.cli import main
from moelab.cost.memory import kv_cache_bytes, linear_state_elements
from moelab.cost.params import attention_params, count_params
from moelab.spec.hf import spec_from_config, spec_from_file

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

CONFIGS = Path(__file__).parent / "configs"
REAL = CONFIGS / "qwen3_next_80b_a3b_thinking.json"  # Qwen/Qwen3-Next-80B-A3B-Thinking (SOURCES.json)
EXPECTED = json.loads((CONFIGS / "expected_counts.json").read_text())["qwen3_next_80b_a3b_thinking"]


def raw() -> dict:
    return json.loads(REAL.read_text())


def hf_config(cfg: dict):
    fields = {k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype", "transformers_version")}
    return transformers.AutoConfig.for_model(**fields)


@pytest.fixture(scope="module")
def meta_model():
    """The real config's first 4 layers (3 linear, 1 full) at full width, built by transformers on meta."""
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(hf_config({**raw(), "num_hidden_layers": 4}))


def test_real_config_total_equals_transformers():
    p = count_params(spec_from_file(REAL))
    assert p.total == EXPECTED["total"] == 79_674_391_296
    assert p.embedding == EXPECTED["embedding"] and p.lm_head == EXPECTED["lm_head"]
    assert p.total - p.embedding - p.lm_head - 2048 == EXPECTED["decoder_layers"]  # the final norm is "other"


def test_each_layer_equals_transformers_on_the_meta_device(meta_model):
    spec = spec_from_config({**raw(), "num_hidden_layers": 4})
    for i, (layer, theirs) in enumerate(zip(spec.layers, meta_model.model.layers, strict=True)):
        mixer = theirs.linear_attn if layer.attention.kind == "linear" else theirs.self_attn
        assert attention_params(spec.d_model, layer.attention) == sum(p.numel() for p in mixer.parameters()), i
    p = count_params(spec)
    shared = sum(p.numel() for layer in meta_model.model.layers
                 for m in (layer.mlp.shared_expert, layer.mlp.shared_expert_gate) for p in m.parameters())
    assert p.shared_experts == shared
    assert p.routers == sum(layer.mlp.gate.weight.numel() for layer in meta_model.model.layers)
    assert p.total == sum(p.numel() for p in meta_model.parameters())


def test_real_config_pattern():
    spec = spec_from_file(REAL)
    kinds = [layer.attention.kind for layer in spec.layers]
    assert kinds == ["linear", "linear", "linear", "gqa"] * 12  # full_attention_interval 4
    assert spec.norm == "rms_offset" and spec.norm_placement == "pre" and spec.moe_layers == tuple(range(48))
    full = spec.layers[3].attention
    assert (full.n_heads, full.n_kv_heads, full.head_dim, full.qk_norm) == (16, 2, 256, "head")
    assert full.output_gate and full.rotary_fraction == 0.25 and full.rope and spec.rope_theta == 1e7
    lin = spec.layers[0].attention
    assert not lin.rope and not lin.softmax
    assert (lin.linear.n_k_heads, lin.linear.n_v_heads, lin.linear.k_head_dim, lin.linear.v_head_dim,
            lin.linear.conv_kernel) == (16, 32, 128, 128, 4)
    m = spec.moe
    assert (m.n_experts, m.top_k, m.expert_ffn, m.n_shared, m.shared_ffn) == (512, 10, 512, 1, 512)
    assert m.router == "softmax_topk" and m.norm_topk_prob and m.shared_gate


def test_active_parameters_follow_the_model_card():
    """Model card (huggingface.co/Qwen/Qwen3-Next-80B-A3B-Instruct): "80B in total and 3B activated", 512
    experts with "10 routed experts + 1 shared" activated. Active = everything but the 502 unselected routed
    experts of each of the 48 MoE layers (one expert: 3 * 2048 * 512); ~3B without the embedding and lm_head."""
    p = count_params(spec_from_file(REAL))
    assert p.active == EXPECTED["total"] - 48 * (512 - 10) * 3 * 2048 * 512 == 3_874_929_408
    assert 3.0e9 < p.active - p.embedding - p.lm_head < 3.5e9


def test_linear_layers_keep_transformers_cache_state_instead_of_kv():
    """transformers' cache (cache_utils, linear-attention layers) keeps a (B, n_v, d_k, d_v) recurrent state and
    the conv's last `kernel` inputs of q, k, v per linear layer; the next step reads only the last kernel - 1 of
    them (causal_conv1d_update), which is what the engine counts."""
    cfg = dict(raw(), hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
               linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=12,
               num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=16,
               vocab_size=64)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_config(cfg)).eval()
    with torch.no_grad():
        cache = model(torch.zeros(1, 5, dtype=torch.long), use_cache=True).cache
    spec = spec_from_config(cfg)
    for i, layer in enumerate(spec.layers):
        if layer.attention.kind != "linear":
            continue
        theirs = cache.layers[i]
        recurrent, conv = theirs.recurrent_states[0], theirs.conv_states[0]
        assert tuple(recurrent.shape) == (1, 4, 8, 12)
        kernel = layer.attention.linear.conv_kernel
        assert tuple(conv.shape) == (1, 2 * 2 * 8 + 4 * 12, kernel)
        assert linear_state_elements(layer.attention) == recurrent.numel() + conv.numel() // kernel * (kernel - 1)
    # the real model: KV only on the 12 full layers (K and V of 2 heads of 256), a fixed state on the 36 others
    real = spec_from_file(REAL)
    state = 32 * 128 * 128 + (2 * 16 * 128 + 32 * 128) * 3
    for context in (1, 4096):
        assert kv_cache_bytes(real, "bf16", 2, context) == 2 * 2 * (12 * 2 * 2 * 256 * context + 36 * state)


@pytest.mark.parametrize("edit, words", [
    ({"layer_types": ["sliding_attention"] * 48}, "layer_types"),
    ({"layer_types": ["linear_attention"] * 47}, "layer_types lists 47"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"partial_rotary_factor": 1.5}, "partial_rotary_factor"),
    ({"linear_num_value_heads": 24}, "multiple of key heads"),
    ({"full_attention_interval": 0}, "full_attention_interval"),
])
def test_bad_switches_are_one_line_exit_2(edit, words, tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**raw(), **edit}))
    assert main(["estimate", str(path)]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_layer_types_and_rope_parameters_as_transformers_5_writes_them():
    """transformers 5 writes layer_types and nests partial_rotary_factor in rope_parameters (its value wins)."""
    cfg = {k: v for k, v in raw().items() if k not in ("full_attention_interval", "partial_rotary_factor",
                                                         "rope_theta", "rope_scaling")}
    cfg.update(layer_types=["full_attention", "linear_attention"] * 24, partial_rotary_factor=0.75,
               rope_parameters={"rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 0.5})
    spec = spec_from_config(cfg)
    assert [layer.attention.kind for layer in spec.layers[:4]] == ["gqa", "linear", "gqa", "linear"]
    assert spec.attention.rotary_fraction == 0.5 == hf_config(cfg).rope_parameters["partial_rotary_factor"]
    assert spec.rope_theta == 1e6 and spec.rope_scaling == ()
