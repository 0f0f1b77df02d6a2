"""gpt-oss in moelab.nn: logits equal transformers' GptOssForCausalLM both ways (sinks, windows smaller than the
sequence, YaRN, biased experts and router, the clamped SwiGLU with its clamps biting), KV-cache decoding equal
to a full forward, the expert-bias dispatch backends against transformers' GptOssExperts, and MXFP4
dequantization against transformers' own."""

import json

import pytest
import torch
from tests.nn.family_checks import (
    assert_loads_in_transformers,
    assert_loads_with_equal_logits,
    assert_moelab_reload_is_exact,
    decode_stepwise,
    fresh_model,
    hf_random_model,
)
from tests.nn.test_hf_interop import IDS, hf_load, logits, rel_err

from moelab.errors import MoelabError
from moelab.nn import load_pretrained, save_pretrained
from moelab.nn.dispatch import BACKENDS, dispatch
from moelab.nn.gpt_oss import dequantize_mxfp4, down_swap, gate_up_bias_from_file, gate_up_from_file
from moelab.spec.hf import spec_from_config, spec_from_file

transformers = pytest.importorskip("transformers")
from transformers.integrations.mxfp4 import convert_moe_packed_tensors  # noqa: E402
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts  # noqa: E402

transformers.logging.set_verbosity_error()

# The real configs' switches (tests/spec/configs/gpt_oss_20b.json), shrunk: window 5 < the 12 tokens of IDS
YARN = dict(rope_type="yarn", rope_theta=150000.0, factor=4.0, original_max_position_embeddings=64, beta_fast=32.0,
            beta_slow=1.0, truncate=False)
TINY = dict(hidden_size=64, intermediate_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=128, max_position_embeddings=256, rms_norm_eps=1e-5, num_local_experts=4,
            num_experts_per_tok=2, sliding_window=5, rope_parameters=YARN, attention_bias=True)
CASES = {
    "alternating": TINY,
    "unbiased-attention-own-pattern": {**TINY, "num_hidden_layers": 3, "attention_bias": False,
                                       "layer_types": ["full_attention", "sliding_attention", "sliding_attention"],
                                       "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
                                       "num_experts_per_tok": 3},
}


def hf_model(cfg: dict, clamp_scale: float = 1.0):
    model = hf_random_model("gpt_oss", cfg)
    with torch.no_grad():  # large enough that the SwiGLU clamps (gate <= 7, |up| <= 7) change the result
        for layer in model.model.layers:
            layer.mlp.experts.gate_up_proj.mul_(clamp_scale)
    return model


def clamped_share(model) -> float:
    """The share of gate/up pre-activations transformers clamped in the last forward."""
    seen = []
    for layer in model.model.layers:
        experts = layer.mlp.experts
        original = experts._apply_gate

        def spy(gate_up, original=original, limit=experts.limit):
            gate, up = gate_up[..., ::2], gate_up[..., 1::2]
            seen.append(((gate > limit).float().mean() + (up.abs() > limit).float().mean()).item() / 2)
            return original(gate_up)

        experts._apply_gate = spy
    logits(model)
    for layer in model.model.layers:
        del layer.mlp.experts._apply_gate
    return sum(seen) / len(seen)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("clamp_scale", [1.0, 40.0])
def test_transformers_checkpoint_loads_with_equal_logits(case, clamp_scale, tmp_path):
    hf = hf_model(CASES[case], clamp_scale)
    if clamp_scale > 1:
        assert clamped_share(hf) > 0.05
    assert any(layer.self_attn.sinks.abs().min() > 0 for layer in hf.model.layers)
    hf.save_pretrained(tmp_path)
    model = assert_loads_with_equal_logits(tmp_path, hf, logits)
    spec = model.spec
    assert [layer.attention.sliding_window for layer in spec.layers] == [
        5 if t == "sliding_attention" else None for t in hf.config.layer_types]
    assert all(layer.attention.sinks for layer in spec.layers) and spec.activation == "clamped_swiglu"
    # the loaded tensors are transformers' own (codecs: interleaved gate/up columns, transposed down)
    experts = hf.model.layers[1].mlp.experts
    mine = model.layers[1].mlp
    assert torch.equal(mine.gate_up_proj[:, :32], experts.gate_up_proj[..., ::2].transpose(1, 2))
    assert torch.equal(mine.gate_up_proj_bias[:, 32:], experts.gate_up_proj_bias[:, 1::2])
    assert torch.equal(mine.gate.linear_bias, hf.model.layers[1].mlp.router.bias)


@pytest.mark.parametrize("case", CASES)
def test_moelab_checkpoint_loads_in_transformers_and_back(case, tmp_path):
    hf = hf_model(CASES[case])
    hf.save_pretrained(tmp_path / "hf")
    # a model built from the spec gets its config.json from the family's write()
    fresh = fresh_model(spec_from_file(tmp_path / "hf"))
    with torch.no_grad():
        for layer in fresh.moe_layers():
            layer.gate_up_proj.mul_(10.0)  # some clamping
    theirs, config = assert_loads_in_transformers(fresh, tmp_path / "new", logits, 1e-4)
    assert config["model_type"] == "gpt_oss" and config["layer_types"] == hf.config.layer_types
    assert torch.equal(theirs.model.layers[0].self_attn.sinks, fresh.layers[0].self_attn.sinks)
    assert_moelab_reload_is_exact(tmp_path / "new", fresh, logits)


def test_kv_cache_decoding_equals_the_full_forward(tmp_path):
    """Prefill 4 tokens, then one at a time past the window (5): each step's logits equal the full forward's,
    and greedy generation equals transformers' own."""
    hf = hf_model(TINY, clamp_scale=10.0)
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    full = logits(model)
    assert rel_err(decode_stepwise(model, IDS, 4), full) < 1e-5
    prompt = IDS[:, :6]
    ours = model.generate(prompt, max_new_tokens=8)
    with torch.no_grad():
        theirs = hf.generate(prompt, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dispatch_with_expert_biases_equals_transformers_experts(backend):
    """Every backend, from moelab's layout, against transformers' GptOssExperts on its own layout (float32)."""
    config = transformers.AutoConfig.for_model("gpt_oss", **TINY)
    experts = GptOssExperts(config)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in experts.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() == 2 else 0.4))
    x = torch.randn(20, 64, generator=g)
    idx = torch.stack([torch.randperm(4, generator=g)[:2] for _ in range(20)])
    w = torch.rand(20, 2, generator=g)
    with torch.no_grad():
        ref = experts(x, idx, w)
        out = dispatch(backend, x, idx, w, gate_up_from_file(experts.gate_up_proj), down_swap(experts.down_proj),
                       activation="clamped_swiglu", gate_up_bias=gate_up_bias_from_file(experts.gate_up_proj_bias),
                       down_bias=experts.down_proj_bias)
        unbiased = dispatch(backend, x, idx, w, gate_up_from_file(experts.gate_up_proj),
                            down_swap(experts.down_proj), activation="clamped_swiglu")
    assert rel_err(out, ref) < 1e-5
    assert rel_err(unbiased, ref) > 1e-2  # the biases matter here


def test_dequantize_mxfp4_equals_transformers():
    """Random blocks and every finite E8M0 scale near 2^0, in the layout of a real checkpoint's gate_up_proj
    (E, 2f, d / 32, 16) and down_proj (E, d, f / 32, 16)."""
    g = torch.Generator().manual_seed(7)
    for shape in ((4, 64, 2, 16), (4, 64, 1, 16)):
        blocks = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        scales = torch.randint(127 - 20, 127 + 20, shape[:-1], dtype=torch.uint8, generator=g)
        for dtype in (torch.float32, torch.bfloat16):
            ref = convert_moe_packed_tensors(blocks.clone(), scales.clone(), dtype=dtype)
            mine = dequantize_mxfp4(blocks, scales, dtype)
            assert mine.dtype == dtype and mine.shape == ref.shape == (4, shape[2] * 32, 64)
            assert torch.equal(mine, ref)
    # one block by hand: byte 0x2F holds 0xF (-6.0) low then 0x2 (1.0) high; scale 128 doubles
    blocks = torch.zeros(1, 1, 1, 16, dtype=torch.uint8)
    blocks[..., 0] = 0x2F
    out = dequantize_mxfp4(blocks, torch.full((1, 1, 1), 128, dtype=torch.uint8))
    assert out[0, :3, 0].tolist() == [-12.0, 2.0, 0.0]


def _mxfp4(shape_E_rows_in: tuple, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random MXFP4 blocks and scales of a (E, rows, in) weight: in / 32 blocks of 16 bytes per row."""
    e, rows, width = shape_E_rows_in
    blocks = torch.randint(0, 256, (e, rows, width // 32, 16), dtype=torch.uint8, generator=g)
    scales = torch.randint(127 - 4, 127 - 1, (e, rows, width // 32), dtype=torch.uint8, generator=g)
    return blocks, scales


def test_an_mxfp4_checkpoint_loads_dequantized_with_equal_logits(tmp_path):
    """A checkpoint as OpenAI ships them: experts as *_blocks/*_scales and quantization_config mxfp4. The
    reference is transformers' model holding the same weights dequantized by transformers' own function."""
    from safetensors.torch import load_file, save_file

    hf = hf_model(TINY)
    g = torch.Generator().manual_seed(3)
    packed = {}
    with torch.no_grad():
        for i, layer in enumerate(hf.model.layers):
            experts = layer.mlp.experts
            for name, (e, inner, outer) in (("gate_up_proj", experts.gate_up_proj.shape),
                                            ("down_proj", experts.down_proj.shape)):
                blocks, scales = _mxfp4((e, outer, inner), g)  # stored per output row, blocks along the input
                getattr(experts, name).copy_(convert_moe_packed_tensors(blocks.clone(), scales.clone(),
                                                                        dtype=torch.float32))
                packed[f"model.layers.{i}.mlp.experts.{name}"] = (blocks, scales)
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    for name, (blocks, scales) in packed.items():
        del tensors[name]
        tensors[f"{name}_blocks"], tensors[f"{name}_scales"] = blocks, scales
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn",
                                     "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = assert_loads_with_equal_logits(tmp_path, hf, logits)
    assert model.spec.expert_storage == "mxfp4"
    out = tmp_path / "saved"  # saved back dequantized, without the quantization_config
    save_pretrained(model, out)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert rel_err(logits(hf_load(out)), logits(hf)) < 1e-4


def test_other_swiglu_constants_are_refused(tmp_path):
    hf = hf_model(TINY)
    hf.config.swiglu_limit = 5.0
    hf.save_pretrained(tmp_path)
    with pytest.raises(MoelabError, match="swiglu_limit"):
        load_pretrained(tmp_path)
    assert spec_from_config({**TINY, "model_type": "gpt_oss", "swiglu_limit": 5.0}).activation == "clamped_swiglu"
