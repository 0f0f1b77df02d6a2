"""Reading HF config.json files: presets, family switches, and errors that name the field."""

import json

import pytest

from moelab.errors import MoelabError
from moelab.spec import load_hardware, load_model
from moelab.spec.hardware import hardware_presets
from moelab.spec.hf import spec_from_config, spec_from_file
from moelab.spec.presets import model_presets

MIXTRAL = model_presets()["mixtral-8x7b"]


def test_every_preset_loads():
    for name in model_presets():
        spec = load_model(name)
        assert spec.n_layers > 0 and spec.d_model > 0


def test_family_switches_are_read():
    ds = load_model("deepseek-v3")
    assert ds.attention.kind == "mla" and ds.attention.q_lora_rank == 1536
    assert ds.moe.router == "sigmoid" and ds.moe.selection_bias and ds.moe.routed_scaling_factor == 2.5
    assert (ds.moe.n_group, ds.moe.topk_group, ds.moe.n_shared) == (8, 4, 1)
    assert ds.moe_layers == tuple(range(3, 61))  # first_k_dense_replace = 3
    qwen = load_model("qwen3-30b-a3b")
    assert qwen.attention.qk_norm == "head" and qwen.attention.head_dim == 128 and qwen.moe.norm_topk_prob
    mixtral = load_model("mixtral-8x7b")
    assert mixtral.moe.router == "topk_softmax" and mixtral.n_dense_layers == 0
    assert load_model("mistral-7b").attention.sliding_window == 4096
    assert load_model("qwen3-235b-a22b").attention.sliding_window is None  # use_sliding_window false


def test_qwen2_moe_layout_switches():
    raw = {"model_type": "qwen2_moe", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 6,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "num_experts": 4,
           "num_experts_per_tok": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48,
           "decoder_sparse_step": 2, "mlp_only_layers": [3]}
    spec = spec_from_config(raw)
    assert spec.moe_layers == (1, 5)  # (i + 1) % 2 == 0 and not in mlp_only_layers
    assert spec.moe.shared_gate and spec.moe.shared_ffn == 48 and spec.attention.qkv_bias


def test_spec_from_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(MIXTRAL))
    assert spec_from_file(tmp_path).n_layers == 32
    assert load_model(str(tmp_path)).moe.n_experts == 8


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_hidden_layers": None}, "num_hidden_layers"),
        ({"num_experts_per_tok": 9}, r"top_k \(9\) exceeds"),
        ({"hidden_size": "4096"}, "hidden_size"),
        ({"hidden_size": -4096}, "hidden_size.*negative"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
        ({"model_type": "gpt9"}, "unknown model_type"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"num_local_experts": 0}, "n_experts"),
    ],
)
def test_bad_configs_name_the_field(change, message):
    raw = {**MIXTRAL, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(MoelabError, match=message):
        spec_from_config(raw)


def test_broken_json_and_missing_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(MoelabError, match="not valid JSON"):
        spec_from_file(bad)
    with pytest.raises(MoelabError, match="no such file"):
        spec_from_file(tmp_path / "missing.json")
    with pytest.raises(MoelabError, match="unknown model"):
        load_model("no-such-model")


def test_hardware_presets_and_files(tmp_path):
    presets = hardware_presets()
    assert set(presets) >= {"A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIe", "H200", "B200", "L40S", "RTX-4090",
                            "MI300X"}
    h100 = load_hardware("h100-sxm")
    assert h100.peak_flops["bf16"] == pytest.approx(989.4e12) and h100.memory_bytes == 80e9
    assert all(hw.sources.get("datasheet") for hw in presets.values())
    custom = tmp_path / "box.yaml"
    custom.write_text("peak_tflops: {bf16: 100, fp32: 10}\nmemory_gb: 16\nmemory_bandwidth_gbps: 500\n"
                      "tdp_watts: 200\nusd_per_hour: 0.5\ncompute_efficiency: 0.5\n")
    hw = load_hardware(str(custom))
    assert hw.flops("bf16") == pytest.approx(50e12) and hw.flops("fp8") == pytest.approx(50e12)
    custom.write_text("peak_tflops: {bf16: 100}\nmemory_gb: 16\n")
    with pytest.raises(MoelabError, match="memory_bandwidth_gbps"):
        load_hardware(str(custom))
    custom.write_text("peak_tflops: [1, 2\n")
    with pytest.raises(MoelabError, match="not valid YAML"):
        load_hardware(str(custom))
    with pytest.raises(MoelabError, match="unknown hardware"):
        load_hardware("TPU-v9")
