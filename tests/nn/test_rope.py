"""moelab.nn's Rotary against transformers 5.24's own rope code (modeling_rope_utils.py and the rotary layers and
apply_rotary_pos_emb of llama, phi3 and glm4_moe): every rope_scaling type, partial rotary, the length switches
of dynamic NTK and LongRoPE, and the one-line refusals of bad parameters."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import Glm4MoeConfig, LlamaConfig, Phi3Config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.glm4_moe import modeling_glm4_moe
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.phi3 import modeling_phi3

from moelab.errors import MoelabError
from moelab.nn.layers import ROPE_TYPES, Rotary, check_rope_buildable, rotary_dim_of

BASE = 10000.0
HEAD = 16  # head_dim of every small config here


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def llama(scaling: dict, max_position: int = 256) -> LlamaConfig:
    return LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=HEAD, max_position_embeddings=max_position,
                       rope_parameters={"rope_theta": BASE, **scaling})


def moelab_rotary(scaling: dict, max_position: int, rotary_dim: int | None = None) -> Rotary:
    return Rotary(HEAD, BASE, dict(scaling), max_position, rotary_dim=rotary_dim)


def hf_tables(module, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = module(torch.zeros(1), positions[None])
    return cos[0], sin[0]


LINEAR = {"rope_type": "linear", "factor": 4.0}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 16.0}
YARN_DS = {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 64, "mscale": 1.0,
           "mscale_all_dim": 0.7}


@pytest.mark.parametrize("scaling", [LINEAR, LLAMA3, YARN, YARN_DS], ids=["linear", "llama3", "yarn", "yarn-ds"])
def test_static_types_match_transformers(scaling):
    config = llama(scaling)
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](config)
    ours = moelab_rotary(scaling, 256)
    torch.testing.assert_close(ours.inv_freq, inv_freq, rtol=1e-6, atol=0)
    assert ours.attention_factor == pytest.approx(attention_factor, rel=1e-12)
    assert not torch.allclose(ours.inv_freq, Rotary(HEAD, BASE).inv_freq)  # the scaling did something
    hf = LlamaRotaryEmbedding(config)
    for positions in (torch.arange(40), torch.arange(200, 256), torch.tensor([300])):  # below and above 64
        cos, sin = ours.tables(positions, torch.float32)
        assert cos.shape == (len(positions), HEAD)
        close(cos, hf_tables(hf, positions)[0])
        close(sin, hf_tables(hf, positions)[1])


@pytest.mark.parametrize("scaling", [LINEAR, LLAMA3, YARN, YARN_DS, {"rope_type": "dynamic", "factor": 3.0}],
                         ids=["linear", "llama3", "yarn", "yarn-ds", "dynamic"])
def test_every_type_uses_the_rotary_dims_under_partial_rotary(scaling):
    config = llama({**scaling, "partial_rotary_factor": 0.5})
    ours = moelab_rotary(scaling, 256, rotary_dim=rotary_dim_of(HEAD, 0.5))
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](config, seq_len=300)
    cos, _ = ours.tables(torch.arange(300), torch.float32)
    assert cos.shape == (300, 8)
    torch.testing.assert_close(ours.inv_freq, inv_freq, rtol=1e-6, atol=0)
    assert ours.attention_factor == pytest.approx(attention_factor, rel=1e-12)


def test_llama3_covers_all_three_bands():
    # wavelengths 2 pi / inv_freq against original / high (16) and original / low (64): kept, smoothed, divided
    wavelen = 2 * math.pi / Rotary(HEAD, BASE).inv_freq
    assert (wavelen < 16).any() and ((wavelen >= 16) & (wavelen <= 64)).any() and (wavelen > 64).any()


def test_yarn_attention_factor_reaches_the_tables():
    ours = moelab_rotary(YARN, 256)
    assert ours.attention_factor == pytest.approx(0.1 * math.log(4.0) + 1.0)
    cos, _ = ours.tables(torch.tensor([0]), torch.float32)
    close(cos, torch.full((1, HEAD), ours.attention_factor))


def test_dynamic_follows_transformers_through_a_cache_like_sequence_of_calls():
    scaling = {"rope_type": "dynamic", "factor": 3.0}
    config = llama(scaling, max_position=256)
    hf, ours = LlamaRotaryEmbedding(config), moelab_rotary(scaling, 256)
    plain = Rotary(HEAD, BASE).inv_freq
    torch.testing.assert_close(ours.inv_freq, ROPE_INIT_FUNCTIONS["dynamic"](config)[0], rtol=1e-6, atol=0)
    # prefill within 256, prefill past it, two decode steps, a shorter prompt still past 256 (keeps the longest
    # seen), one within 256 (resets to plain), and growth again
    calls = [torch.arange(100), torch.arange(300), torch.tensor([300]), torch.tensor([301]), torch.arange(280),
             torch.arange(100), torch.arange(256), torch.arange(257)]
    expected_longest = [256, 300, 301, 302, 302, 256, 256, 257]
    for positions, longest in zip(calls, expected_longest, strict=True):
        cos, sin = ours.tables(positions, torch.float32)
        hf_cos, hf_sin = hf_tables(hf, positions)
        close(cos, hf_cos)
        close(sin, hf_sin)
        torch.testing.assert_close(ours.inv_freq, hf.inv_freq, rtol=1e-6, atol=0)
        assert ours.longest == longest == int(hf.max_seq_len_cached)
        assert torch.equal(ours.inv_freq, plain) == (longest == 256)
    ref, _ = ROPE_INIT_FUNCTIONS["dynamic"](config, seq_len=257)
    torch.testing.assert_close(ours.inv_freq, ref, rtol=1e-6, atol=0)


def phi3(scaling: dict, max_position: int = 1024, original: int = 64, partial: float = 0.75) -> Phi3Config:
    return Phi3Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=max_position, original_max_position_embeddings=original,
                      partial_rotary_factor=partial,
                      rope_parameters={"rope_theta": BASE, **scaling})


def longrope_factors(n: int = 6) -> tuple[list[float], list[float]]:
    g = torch.Generator().manual_seed(0)
    return (1 + torch.rand(n, generator=g)).tolist(), (1 + 8 * torch.rand(n, generator=g)).tolist()


@pytest.mark.parametrize("extra", [{}, {"factor": 2.0}, {"attention_factor": 1.5}], ids=["phi3", "factor", "attn"])
def test_longrope_switches_at_the_original_length_like_transformers(extra):
    short, long = longrope_factors()
    scaling = {"rope_type": "longrope", "short_factor": short, "long_factor": long, **extra}
    config = phi3(scaling)
    rotary_dim = rotary_dim_of(HEAD, 0.75)  # 12: 6 factors
    ours = moelab_rotary({**scaling, "original_max_position_embeddings": 64}, 1024, rotary_dim)
    hf = modeling_phi3.Phi3RotaryEmbedding(config)
    inv_short, attention_factor = ROPE_INIT_FUNCTIONS["longrope"](config)
    inv_long, _ = ROPE_INIT_FUNCTIONS["longrope"](config, seq_len=65)
    torch.testing.assert_close(ours.inv_freq, inv_short, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours.long_inv_freq, inv_long, rtol=1e-6, atol=0)
    default = math.sqrt(1 + math.log(extra.get("factor", 1024 / 64)) / math.log(64))
    assert ours.attention_factor == pytest.approx(attention_factor, rel=1e-12)
    assert attention_factor == pytest.approx(extra.get("attention_factor", default))
    # seq_len = max(positions) + 1: 64 is short, 65 long, a decode step at 100 long, then a short prompt again
    for positions, is_long in ((torch.arange(64), False), (torch.arange(65), True), (torch.tensor([100]), True),
                               (torch.arange(10), False)):
        cos, sin = ours.tables(positions, torch.float32)
        hf_cos, hf_sin = hf_tables(hf, positions)
        assert cos.shape == (len(positions), rotary_dim)
        close(cos, hf_cos)
        close(sin, hf_sin)
        other = ours.long_inv_freq if not is_long else ours.inv_freq
        wrong = (positions.float()[:, None] * other).cos() * ours.attention_factor
        assert not torch.allclose(cos[:, :rotary_dim // 2], wrong, atol=1e-4)  # the other set would differ


def test_longrope_factors_as_spec_tuples():
    short, long = longrope_factors()
    as_dict = {"rope_type": "longrope", "short_factor": short, "long_factor": long,
               "original_max_position_embeddings": 64}
    as_items = tuple(sorted({**as_dict, "short_factor": tuple(short), "long_factor": tuple(long)}.items()))
    a, b = Rotary(HEAD, BASE, as_dict, 1024, rotary_dim=12), Rotary(HEAD, BASE, dict(as_items), 1024, rotary_dim=12)
    positions = torch.arange(70)
    assert torch.equal(a.tables(positions, torch.float32)[0], b.tables(positions, torch.float32)[0])
    check_rope_buildable(as_items, 1024, rotary_dim=12)


def test_partial_rotary_matches_glm4_moe_apply_rotary_pos_emb():
    config = Glm4MoeConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=HEAD,
                           partial_rotary_factor=0.5, max_position_embeddings=256,
                           rope_parameters={"rope_type": "default", "rope_theta": BASE})
    rotary_dim = rotary_dim_of(HEAD, 0.5)
    ours = Rotary(HEAD, BASE, None, 256, rotary_dim=rotary_dim)
    hf = modeling_glm4_moe.Glm4MoeRotaryEmbedding(config)
    positions = torch.arange(5, 37)
    cos, sin = ours.tables(positions, torch.float32)
    hf_cos, hf_sin = hf_tables(hf, positions)
    assert cos.shape == (32, rotary_dim)
    close(cos, hf_cos)
    close(sin, hf_sin)
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 4, 32, HEAD, generator=g), torch.randn(2, 2, 32, HEAD, generator=g)
    hf_q, hf_k = modeling_glm4_moe.apply_rotary_pos_emb(q, k, hf_cos[None], hf_sin[None])
    close(ours.rotate(q, cos, sin), hf_q)
    close(ours.rotate(k, cos, sin), hf_k)
    assert torch.equal(ours.rotate(q, cos, sin)[..., rotary_dim:], q[..., rotary_dim:])  # passed through
    assert not torch.allclose(ours.rotate(q, cos, sin)[..., :rotary_dim], q[..., :rotary_dim])


def test_partial_longrope_rotation_matches_phi3_apply_rotary_pos_emb():
    short, long = longrope_factors()
    scaling = {"rope_type": "longrope", "short_factor": short, "long_factor": long}
    hf = modeling_phi3.Phi3RotaryEmbedding(phi3(scaling))
    ours = moelab_rotary({**scaling, "original_max_position_embeddings": 64}, 1024, rotary_dim=12)
    positions = torch.arange(90)
    cos, sin = ours.tables(positions, torch.float32)
    hf_cos, hf_sin = hf_tables(hf, positions)
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(1, 4, 90, HEAD, generator=g), torch.randn(1, 4, 90, HEAD, generator=g)
    hf_q, hf_k = modeling_phi3.apply_rotary_pos_emb(q, k, hf_cos[None], hf_sin[None])
    close(ours.rotate(q, cos, sin), hf_q)
    close(ours.rotate(k, cos, sin), hf_k)


def test_full_rotary_is_unchanged_by_default():
    rotary = Rotary(HEAD, BASE, None, None, False)
    assert rotary.rotary_dim == HEAD and rotary.kind == "default"
    cos, sin = rotary.tables(torch.arange(8), torch.bfloat16)
    assert cos.shape == sin.shape == (8, HEAD) and cos.dtype == torch.bfloat16


def test_rotary_dim_of_real_configs():
    assert rotary_dim_of(128, 0.5) == 64  # GLM-4.5 (zai-org/GLM-4.5 config.json: head_dim 128, factor 0.5)
    assert rotary_dim_of(128, 0.75) == 96  # Phi-4-mini (microsoft/Phi-4-mini-instruct: 3072 / 24, factor 0.75)
    assert rotary_dim_of(128) == 128


def test_rope_types_are_the_transformers_ones_we_build():
    assert set(ROPE_TYPES) - {"default"} <= set(ROPE_INIT_FUNCTIONS)
    assert "proportional" in ROPE_INIT_FUNCTIONS and "proportional" not in ROPE_TYPES


SHORT = [1.0] * 6
LONGROPE = {"rope_type": "longrope", "short_factor": SHORT, "long_factor": SHORT,
            "original_max_position_embeddings": 64}


@pytest.mark.parametrize("scaling,max_position,rotary_dim,message", [
    ({"rope_type": "proportional"}, 256, None, "rope_scaling type 'proportional' is not implemented in moelab.nn"),
    ({"rope_type": "su"}, 256, None, "rope_scaling type 'su' is not implemented"),
    ({"rope_type": "linear"}, 256, None, "'linear' needs rope_scaling.factor to be a positive number, got None"),
    ({"rope_type": "linear", "factor": 0}, 256, None, "rope_scaling.factor to be a positive number, got 0"),
    ({"rope_type": "dynamic", "factor": "2"}, 256, None, "rope_scaling.factor to be a positive number, got '2'"),
    ({"rope_type": "dynamic", "factor": True}, 256, None, "rope_scaling.factor"),
    ({"rope_type": "dynamic", "factor": 2.0}, None, None, "'dynamic' needs max_position_embeddings"),
    ({"rope_type": "dynamic", "factor": 2.0}, 0, None, "max_position_embeddings must be a positive integer"),
    ({**LLAMA3, "factor": math.inf}, 256, None, "'llama3' needs rope_scaling.factor to be a positive number"),
    ({k: v for k, v in LLAMA3.items() if k != "low_freq_factor"}, 256, None, "rope_scaling.low_freq_factor"),
    ({k: v for k, v in LLAMA3.items() if k != "high_freq_factor"}, 256, None, "rope_scaling.high_freq_factor"),
    ({**LLAMA3, "high_freq_factor": 0.5}, 256, None, "rope_scaling.high_freq_factor (0.5) not below low_freq_factor"),
    ({k: v for k, v in LLAMA3.items() if k != "original_max_position_embeddings"}, None, None,
     "'llama3' needs original_max_position_embeddings or max_position_embeddings"),
    ({**LLAMA3, "original_max_position_embeddings": 64.5}, 256, None,
     "rope_scaling.original_max_position_embeddings to be a positive integer, got 64.5"),
    ({"rope_type": "yarn"}, 256, None, "'yarn' needs a positive factor, got None"),
    ({**YARN, "beta_fast": "fast"}, 256, None, "rope_scaling.beta_fast to be a number"),
    ({k: v for k, v in LONGROPE.items() if k != "short_factor"}, 256, None,
     "'longrope' needs rope_scaling.short_factor as a list of positive numbers, got None"),
    ({**LONGROPE, "long_factor": 2.0}, 256, None, "rope_scaling.long_factor as a list of positive numbers, got 2.0"),
    ({**LONGROPE, "long_factor": [1.0, -1.0]}, 256, None, "rope_scaling.long_factor as a list of positive numbers, "
                                                          "got the entry -1.0"),
    ({**LONGROPE, "short_factor": []}, 256, None, "rope_scaling.short_factor as a list of positive numbers, got an "
                                                  "empty list"),
    (LONGROPE, 256, 16, "rope_scaling.short_factor with rotary_dim / 2 = 8 entries, got 6"),
    ({k: v for k, v in LONGROPE.items() if k != "original_max_position_embeddings"}, None, 12,
     "'longrope' needs original_max_position_embeddings or max_position_embeddings"),
    ({**LONGROPE, "factor": -2.0}, 256, 12, "rope_scaling.factor to be a positive number, got -2.0"),
    (LONGROPE, None, 12, "'longrope' needs rope_scaling.factor or max_position_embeddings"),
    ({**LONGROPE, "attention_factor": "x"}, 256, 12, "rope_scaling.attention_factor to be a number"),
])
def test_bad_parameters_are_refused_in_one_line(scaling, max_position, rotary_dim, message):
    with pytest.raises(MoelabError) as caught:
        check_rope_buildable(scaling, max_position, where="cfg.json", rotary_dim=rotary_dim)
    text = str(caught.value)
    assert message in text and text.startswith("cfg.json: ") and "\n" not in text
    with pytest.raises(MoelabError, match="rope_scaling|max_position_embeddings"):
        Rotary(HEAD, BASE, scaling, max_position, rotary_dim=rotary_dim or 12)


@pytest.mark.parametrize("rotary_dim", [0, 7, 18, 12.0])
def test_bad_rotary_dim_is_refused(rotary_dim):
    with pytest.raises(MoelabError, match=f"rotary_dim must be a positive even number <= 16, got {rotary_dim!r}"):
        Rotary(HEAD, BASE, rotary_dim=rotary_dim)


@pytest.mark.parametrize("head_dim,factor,message", [(16, 0, "in \\(0, 1\\], got 0"), (16, 1.5, "got 1.5"),
                                                     (16, "0.5", "got '0.5'"), (10, 0.3, "gives 3 rotary dims"),
                                                     (16, 0.01, "gives 0 rotary dims")])
def test_bad_partial_rotary_factor_is_refused(head_dim, factor, message):
    with pytest.raises(MoelabError, match=message):
        rotary_dim_of(head_dim, factor)
