"""Gemma 2 and Gemma 3 in the engine: exact totals of the real configs, the per-layer pattern (windows, RoPE
bases, scales, soft caps) against transformers' own config classes, windowed KV cache bytes, both spellings of
Gemma 3's RoPE, and refused switches as one line with exit 2.

Real configs and sources: tests/spec/configs (SOURCES.json); totals: expected_counts.json (transformers 5.24,
meta device). Gemma is dense: every parameter is active for every token (active == total)."""

import json
from pathlib import Path

import pytest

from moelab.cli import main
from moelab.cost.memory import kv_cache_bytes
from moelab.cost.params import count_params
from moelab.errors import MoelabError
from moelab.spec.hf import spec_from_config

CONFIGS = Path(__file__).parent / "configs"
EXPECTED = json.loads((CONFIGS / "expected_counts.json").read_text())
GEMMA = ("gemma2_2b", "gemma2_9b", "gemma3_1b_it", "gemma3_27b")


def real(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def text(raw: dict) -> dict:
    return raw.get("text_config", raw)


def hf_layer_types(raw: dict) -> list[str]:
    """layer_types as transformers' own config class derives them (its __post_init__)."""
    transformers = pytest.importorskip("transformers")
    fields = {k: v for k, v in text(raw).items() if k != "model_type"}
    model_type = "gemma2" if raw["model_type"] == "gemma2" else "gemma3_text"
    return transformers.AutoConfig.for_model(model_type, **fields).layer_types


@pytest.mark.parametrize("name", GEMMA)
def test_totals_equal_transformers_and_every_parameter_is_active(name):
    p = count_params(spec_from_config(real(name), name))
    assert p.total == EXPECTED[name]["total"]
    assert p.active == p.total  # dense


@pytest.mark.parametrize("name", GEMMA)
def test_per_layer_pattern_matches_transformers(name):
    raw = real(name)
    cfg = text(raw)
    spec = spec_from_config(raw, name)
    types = hf_layer_types(raw)
    gemma3 = raw["model_type"] != "gemma2"
    global_theta = cfg["rope_theta"]
    # the rule itself, independently of transformers: Gemma 2 slides on even layers, Gemma 3 on five of six
    assert types == ["full_attention" if (i + 1) % (6 if gemma3 else 2) == 0 else "sliding_attention"
                     for i in range(cfg["num_hidden_layers"])]
    for a, t in zip((layer.attention for layer in spec.layers), types, strict=True):
        sliding = t == "sliding_attention"
        assert a.sliding_window == (cfg["sliding_window"] if sliding else None)
        assert a.head_dim == cfg["head_dim"] and a.n_kv_heads == cfg["num_key_value_heads"]
        # softmax scale: query_pre_attn_scalar ** -0.5 (None: it is head_dim ** -0.5 anyway)
        assert (a.scale or a.head_dim ** -0.5) == cfg["query_pre_attn_scalar"] ** -0.5
        assert a.softcap == (None if gemma3 else cfg["attn_logit_softcapping"])
        assert a.qk_norm == ("head" if gemma3 else "none")
        theta, scaling = spec.layer_rope(a)
        if gemma3 and sliding:
            assert (theta, scaling) == (cfg["rope_local_base_freq"], ())
        else:
            assert theta == global_theta
            assert dict(scaling) == (cfg.get("rope_scaling") or {})
    assert spec.logits_softcap == cfg["final_logit_softcapping"]
    assert spec.embedding_scale == cfg["hidden_size"] ** 0.5
    assert (spec.norm, spec.norm_placement, spec.activation, spec.tie_embeddings) == \
        ("rms_offset", "sandwich", "gelu_tanh", True)


def test_gemma3_27b_scale_and_global_rope_scaling():
    spec = spec_from_config(real("gemma3_27b"), "g")
    assert spec.attention.scale == 168 ** -0.5  # query_pre_attn_scalar 168 with head_dim 128
    assert dict(spec.rope_scaling) == {"rope_type": "linear", "factor": 8.0}
    assert spec.layers[5].attention.rope_scaling is None and spec.layers[0].attention.rope_scaling == ()


@pytest.mark.parametrize("name", GEMMA)
@pytest.mark.parametrize("context", [300, 8192, 32768])
def test_kv_cache_caches_only_the_window_on_sliding_layers(name, context):
    raw = real(name)
    cfg = text(raw)
    spec = spec_from_config(raw, name)
    per_token = 2 * cfg["num_key_value_heads"] * cfg["head_dim"] * 2  # K and V, bf16
    hand = sum(per_token * (min(context, cfg["sliding_window"]) if t == "sliding_attention" else context)
               for t in hf_layer_types(raw))
    assert kv_cache_bytes(spec, "bf16", 3, context) == 3 * hand
    if context > cfg["sliding_window"]:
        assert hand < per_token * context * cfg["num_hidden_layers"]


def test_gemma3_transformers5_spelling_reads_the_same():
    """A config transformers 5 re-serialises (rope_parameters keyed by layer type, layer_types written out)
    reads as the same model as the legacy hub file (rope_theta, rope_local_base_freq, rope_scaling)."""
    transformers = pytest.importorskip("transformers")
    for name in ("gemma3_1b_it", "gemma3_27b"):
        raw = real(name)
        config = transformers.AutoConfig.for_model(raw["model_type"],
                                                   **{k: v for k, v in raw.items() if k != "model_type"})
        written = config.to_dict()
        assert "rope_local_base_freq" not in text(written) and "sliding_attention" in text(written)["rope_parameters"]
        assert spec_from_config(written, name) == spec_from_config(raw, name)


def test_gemma_defaults_follow_transformers():
    """Absent fields take Gemma's defaults: gelu_pytorch_tanh (hidden_act is not read), tied embeddings, soft
    caps 50/30 on Gemma 2 and none on Gemma 3, window 4096, head_dim and query_pre_attn_scalar 256."""
    base = dict(hidden_size=512, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=6, vocab_size=1000,
                intermediate_size=1024)
    g2 = spec_from_config({"model_type": "gemma2", "hidden_act": "silu", **base})
    assert g2.activation == "gelu_tanh" and g2.tie_embeddings and g2.logits_softcap == 30.0
    assert [layer.attention.sliding_window for layer in g2.layers] == [4096, None] * 3
    assert g2.attention.softcap == 50.0 and g2.attention.head_dim == 256 and g2.attention.scale is None
    g3 = spec_from_config({"model_type": "gemma3_text", **base})
    assert g3.logits_softcap is None and g3.attention.softcap is None and g3.rope_theta == 1e6
    assert [layer.attention.rope_theta for layer in g3.layers] == [1e4] * 5 + [None]
    off = spec_from_config({"model_type": "gemma2", **base, "attn_logit_softcapping": None,
                            "final_logit_softcapping": None, "hidden_activation": "silu"})
    assert off.attention.softcap is None and off.logits_softcap is None and off.activation == "silu"
    # Gemma3Attention never passes attn_logit_softcapping to the attention: read as no cap, with a note
    ignored = spec_from_config({"model_type": "gemma3_text", **base, "attn_logit_softcapping": 50.0})
    assert ignored.attention.softcap is None and ignored.notes


@pytest.mark.parametrize("edit, words", [
    ({"use_bidirectional_attention": True}, "use_bidirectional_attention"),
    ({"hidden_activation": "relu"}, "hidden_activation"),
    ({"attn_logit_softcapping": -1.0}, "attn_logit_softcapping"),
    ({"query_pre_attn_scalar": 0}, "query_pre_attn_scalar"),
    ({"layer_types": ["sliding_attention"] * 3}, "layer_types"),
])
def test_bad_gemma2_switch_is_one_line_exit_2(tmp_path, capsys, edit, words):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**real("gemma2_2b"), **edit}))
    assert main(["estimate", str(path)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


@pytest.mark.parametrize("edit, words", [
    ({"rope_parameters": {"rope_type": "linear", "factor": 8.0}}, "keyed by"),
    ({"rope_parameters": {"full_attention": 3}}, "rope_parameters.full_attention"),
    ({"sliding_window_pattern": 0}, "sliding_window_pattern"),
    ({"rope_local_base_freq": "big"}, "sliding_attention.rope_theta"),
    ({"rope_scaling": {"rope_type": "yarn"}}, "factor"),
])
def test_bad_gemma3_switch_is_one_line_exit_2(tmp_path, capsys, edit, words):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**real("gemma3_1b_it"), **edit}))
    assert main(["estimate", str(path)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_multimodal_gemma3_reads_its_text_config():
    raw = real("gemma3_27b")
    assert spec_from_config(raw, "g") == spec_from_config({**raw["text_config"], "model_type": "gemma3"}, "g")
    with pytest.raises(MoelabError, match="text_config"):
        spec_from_config({**raw, "text_config": 3})
