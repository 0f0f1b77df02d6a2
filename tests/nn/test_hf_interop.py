"""HF checkpoints in and out: logits equal transformers' own, both ways, for every family and its switches."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from moelab.errors import MoelabError
from moelab.nn import build_model, load_pretrained, save_pretrained
from moelab.nn.hf import hf_config
from moelab.spec.hf import spec_from_config, spec_from_file
from moelab.spec.transform import as_moe

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")

BASE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=128, max_position_embeddings=256, rms_norm_eps=1e-5)
MLA = dict(num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
           n_shared_experts=1, first_k_dense_replace=1, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4,
           v_head_dim=8)
YARN = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=64, mscale=0.5,
            mscale_all_dim=1.0, beta_fast=32, beta_slow=1)
CASES = {
    "llama-biases": dict(model_type="llama", **BASE, attention_bias=True, mlp_bias=True),
    "llama-tied": dict(model_type="llama", **BASE, tie_word_embeddings=True),
    "mistral-window": dict(model_type="mistral", **BASE, sliding_window=5),
    "qwen2": dict(model_type="qwen2", **BASE),
    # per-layer windows: Qwen2 slides on layers >= max_window_layers, Qwen2-MoE on even layers below it
    "qwen2-window-from-1": dict(model_type="qwen2", **BASE, use_sliding_window=True, sliding_window=4,
                                max_window_layers=1),
    "qwen2_moe-window-0-2": dict(model_type="qwen2_moe", **{**BASE, "num_hidden_layers": 4}, num_experts=4,
                                 num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                                 use_sliding_window=True, sliding_window=4, max_window_layers=4),
    "qwen2-tied": dict(model_type="qwen2", **BASE, tie_word_embeddings=True),
    "qwen3": dict(model_type="qwen3", **BASE, head_dim=32),
    "qwen3-bias": dict(model_type="qwen3", **BASE, head_dim=16, attention_bias=True),
    "mixtral": dict(model_type="mixtral", **BASE, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(model_type="qwen2_moe", **{**BASE, "num_hidden_layers": 4}, num_experts=8,
                      num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                      decoder_sparse_step=2, mlp_only_layers=[3], norm_topk_prob=False),  # MoE only in layer 1
    "qwen2_moe-no_shared": dict(model_type="qwen2_moe", **BASE, num_experts=4, num_experts_per_tok=2,
                                moe_intermediate_size=32, shared_expert_intermediate_size=0, norm_topk_prob=True),
    "qwen3_moe-norm": dict(model_type="qwen3_moe", **BASE, head_dim=16, num_experts=8, num_experts_per_tok=2,
                           moe_intermediate_size=32, norm_topk_prob=True, mlp_only_layers=[0]),
    "qwen3_moe-plain": dict(model_type="qwen3_moe", **BASE, head_dim=16, num_experts=8, num_experts_per_tok=3,
                            moe_intermediate_size=32, norm_topk_prob=False),
    "olmoe": dict(model_type="olmoe", **BASE, num_experts=8, num_experts_per_tok=2, attention_bias=True),
    # rms_norm_eps far from 1e-6: the MLA latent norms must keep eps 1e-6 as the reference does
    "deepseek_v3-qlora-yarn": dict(model_type="deepseek_v3", **{**BASE, **MLA, "rms_norm_eps": 1e-3}, q_lora_rank=24,
                                   n_group=4, topk_group=2, routed_scaling_factor=2.5,
                                   rope_parameters=YARN),
    "deepseek_v3-plain": dict(model_type="deepseek_v3", **{**BASE, **MLA}, q_lora_rank=None, n_group=2,
                              topk_group=1, routed_scaling_factor=1.0, norm_topk_prob=False,
                              rope_interleave=False, attention_bias=True),
}
IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(2))


def randomise(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Every weight random and O(1)-preserving; norms and biases away from 1 and 0 so that they matter.

    DeepSeek selection biases are random but >= 0 (see test docstring below)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() == 0:  # a Qwen2-MoE shared expert of width 0
                continue
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5)
        deepseek = "Deepseek" in type(model).__name__ or getattr(model, "spec", None) and model.spec.moe \
            and model.spec.moe.selection_bias
        for name, b in model.named_buffers():
            if deepseek and (name.endswith("e_score_correction_bias") or name.endswith("mlp.gate.bias")):
                b.copy_(0.3 * torch.rand(b.shape, generator=g))
    return model.eval()


def hf_model(case: str):
    cfg = dict(CASES[case])
    family = cfg.pop("model_type")
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(family, **cfg)
    return randomise(transformers.AutoModelForCausalLM.from_config(config))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        out = model(IDS)
    return out.logits if hasattr(out, "logits") else out


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a - ref).abs().max() / ref.abs().max()).item()


def hf_load(path):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info.get("mismatched_keys"), info
    return model.eval()


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("case", CASES)
def test_transformers_checkpoint_loads_with_equal_logits(case, tmp_path):
    """DeepSeek group masking: transformers fills unkept groups with -inf, like the reference and moelab; the
    biases are kept >= 0 anyway so that an implementation filling 0.0 would choose the same experts."""
    hf = hf_model(case)
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    assert model.spec.family == CASES[case]["model_type"]
    assert rel_err(logits(model), logits(hf)) < 1e-4
    if case.startswith("deepseek"):
        assert all(layer.gate.bias.min() > 0 for layer in model.moe_layers())  # the nonzero biases were loaded


@pytest.mark.parametrize("case", CASES)
def test_moelab_checkpoint_loads_in_transformers_and_back(case, tmp_path):
    hf = hf_model(case)
    hf.save_pretrained(tmp_path / "hf")
    loaded = load_pretrained(tmp_path / "hf")
    # 1. a model that came from a checkpoint writes its own config.json back
    save_pretrained(loaded, tmp_path / "kept")
    assert json.loads((tmp_path / "kept" / "config.json").read_text())["model_type"] == CASES[case]["model_type"]
    assert rel_err(logits(hf_load(tmp_path / "kept")), logits(loaded)) < 1e-6
    # 2. a model built from a spec gets a generated config.json with everything transformers needs
    torch.manual_seed(3)
    fresh = randomise(build_model(spec_from_file(tmp_path / "hf")), seed=4)
    save_pretrained(fresh, tmp_path / "new")
    assert not [p for p in (tmp_path / "new").iterdir() if p.name.endswith(".tmp")]
    ours = logits(fresh)
    assert rel_err(logits(hf_load(tmp_path / "new")), ours) < 1e-4
    back = load_pretrained(tmp_path / "new")
    assert_same_state(back, fresh)
    assert torch.equal(logits(back), ours)


def test_sharded_checkpoint(tmp_path):
    hf = hf_model("deepseek_v3-qlora-yarn")
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 2
    assert rel_err(logits(load_pretrained(tmp_path)), logits(hf)) < 1e-4


def test_fused_in_memory_layout_is_accepted(tmp_path):
    """transformers >= 5 holds experts fused (mlp.experts.gate_up_proj (E, 2f, d)); a file in that layout loads."""
    hf = hf_model("mixtral")
    hf.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    assert "model.layers.0.mlp.experts.gate_up_proj" in state
    (tmp_path / "model.safetensors").unlink()
    save_file(state, tmp_path / "model.safetensors")
    assert rel_err(logits(load_pretrained(tmp_path)), logits(hf)) < 1e-4


def test_dtype_choices(tmp_path):
    hf = hf_model("deepseek_v3-plain").to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    assert load_pretrained(tmp_path).embed_tokens.weight.dtype == torch.float32
    auto = load_pretrained(tmp_path, dtype="auto")
    assert auto.embed_tokens.weight.dtype == torch.bfloat16
    assert all(layer.gate.bias.dtype == torch.float32 for layer in auto.moe_layers())  # as transformers keeps it
    assert load_pretrained(tmp_path, dtype=torch.float16).lm_head.weight.dtype == torch.float16
    with pytest.raises(MoelabError, match="dtype"):
        load_pretrained(tmp_path, dtype="int8")


def _rewrite(path, edit):
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors")


def test_bad_checkpoints_name_the_tensor(tmp_path):
    hf_model("qwen2_moe").save_pretrained(tmp_path)
    name = "model.layers.1.mlp.experts.5.up_proj.weight"
    _rewrite(tmp_path, lambda t: t.pop(name))
    with pytest.raises(MoelabError, match=f"missing tensor {name}"):
        load_pretrained(tmp_path)
    extra = "model.layers.0.mlp.extra.weight"
    _rewrite(tmp_path, lambda t: t.update({name: torch.zeros(32, 64), extra: torch.ones(3)}))
    with pytest.raises(MoelabError, match=f"unexpected tensor {extra}"):
        load_pretrained(tmp_path)
    _rewrite(tmp_path, lambda t: (t.pop(extra), t.update({name: torch.zeros(31, 64)})))
    with pytest.raises(MoelabError, match=rf"{name} has shape \(31, 64\)"):
        load_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(MoelabError, match="no model.safetensors"):
        load_pretrained(tmp_path)


def test_unsupported_switches_are_refused(tmp_path):
    hf = hf_model("olmoe")
    hf.config.clip_qkv = 8.0
    hf.save_pretrained(tmp_path)
    with pytest.raises(MoelabError, match="clip_qkv"):
        load_pretrained(tmp_path)


def test_selection_bias_only_saves_where_the_family_has_one(tmp_path):
    model = build_model(spec_from_config(CASES["qwen3_moe-plain"]))
    model.moe_layers()[0].gate.bias[3] = 0.5
    with pytest.raises(MoelabError, match="selection bias"):
        save_pretrained(model, tmp_path)


def test_a_moe_made_from_a_dense_spec_is_saved_as_mixtral(tmp_path):
    spec = as_moe(spec_from_config(CASES["mistral-window"], "m"), 4, 2)
    torch.manual_seed(0)
    model = randomise(build_model(spec))
    assert hf_config(model)["model_type"] == "mixtral"
    save_pretrained(model, tmp_path)
    assert rel_err(logits(hf_load(tmp_path)), logits(model)) < 1e-4
