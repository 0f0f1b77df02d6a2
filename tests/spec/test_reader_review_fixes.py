"""Fixes from a hostile review of the family readers: wrongly typed nested DBRX fields (attn_config, ffn_config),
non-integer Llama 4 per-layer lists, and rope_scaling values that are neither scalars nor flat lists of finite
numbers. Each bad value is one line naming the field (exit 2 from the CLI); transformers 5.24's strict configs
are the reference for what is refused and what is accepted."""

import math
import re
import typing

import pytest
from tests.spec.family_checks import one_line_exit_2, real
from transformers import DbrxConfig, Llama4TextConfig
from transformers.modeling_rope_utils import RopeParameters

from moelab.errors import MoelabError
from moelab.spec.hf import spec_from_config


def refused(raw: dict) -> str:
    with pytest.raises(MoelabError) as e:
        spec_from_config(raw, "t")
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def transformers_refuses(build) -> bool:
    try:
        build()
    except Exception:  # huggingface_hub's StrictDataclassFieldValidationError (a TypeError / ValueError)
        return True
    return False


# --- DBRX: ffn_config.ffn_act_fn -----------------------------------------------------------------------------


def dbrx_with(block: str, **change) -> dict:
    raw = real("dbrx_instruct")
    raw[block] = {**raw[block], **change}
    return raw


@pytest.mark.parametrize("act, field", [
    (["silu"], "ffn_config.ffn_act_fn"),  # /tmp/review/hostile/dbrx_ffn_act_list: was a TypeError traceback
    ({"name": ["silu"]}, "ffn_config.ffn_act_fn.name"),  # dbrx_ffn_act_name_list: the same
    ({"name": {"x": 1}}, "ffn_config.ffn_act_fn.name"),
    ({"name": None}, "ffn_config.ffn_act_fn.name"),  # transformers: ACT2FN[None], a KeyError at build time
    ({"name": 1}, "ffn_config.ffn_act_fn.name"),
    ("silu", "ffn_config.ffn_act_fn"),  # DbrxFFNConfig.ffn_act_fn: dict | None, a bare name is refused
    (False, "ffn_config.ffn_act_fn"),  # was read as "absent" (a falsy value)
    (0, "ffn_config.ffn_act_fn"),
    ([], "ffn_config.ffn_act_fn"),
])
def test_dbrx_bad_ffn_act_fn_is_one_line_naming_the_field(act, field, tmp_path, capsys):
    err = one_line_exit_2(dbrx_with("ffn_config", ffn_act_fn=act), tmp_path, capsys)
    assert f"'{field}'" in err, err


def test_dbrx_ffn_act_fn_transformers_refuses_what_is_not_an_object():
    for act in (["silu"], "silu", False, 0, []):
        assert transformers_refuses(lambda act=act: DbrxConfig(ffn_config={"ffn_act_fn": act})), act


@pytest.mark.parametrize("act", [None, {}, {"name": "silu"}, {"name": "swish"}])
def test_dbrx_ffn_act_fn_null_or_without_name_is_silu_as_in_transformers(act):
    # transformers: None -> {"name": "silu"} (DbrxFFNConfig.__post_init__); DbrxExpertGLU reads
    # ffn_act_fn.get("name", "silu"); ACT2FN's "swish" is SiLU
    assert not transformers_refuses(lambda: DbrxConfig(ffn_config={"ffn_act_fn": act}))
    assert spec_from_config(dbrx_with("ffn_config", ffn_act_fn=act), "t") == spec_from_config(
        real("dbrx_instruct"), "t")


# --- DBRX: every other nested field, every wrong JSON type ---------------------------------------------------

_WRONG = ([8], {"v": 8}, True, "8")


@pytest.mark.parametrize("block, key", [
    ("attn_config", "kv_n_heads"), ("attn_config", "clip_qkv"), ("attn_config", "rope_theta"),
    ("ffn_config", "ffn_hidden_size"), ("ffn_config", "moe_num_experts"), ("ffn_config", "moe_top_k"),
    ("ffn_config", "moe_normalize_expert_weights"),
])
@pytest.mark.parametrize("value", _WRONG, ids=("list", "dict", "bool", "string"))
def test_dbrx_nested_fields_of_the_wrong_type_are_one_line_naming_the_field(block, key, value):
    msg = refused(dbrx_with(block, **{key: value}))
    assert f"'{block}.{key}'" in msg, msg


@pytest.mark.parametrize("block, key", [
    ("attn_config", "kv_n_heads"), ("attn_config", "rope_theta"), ("ffn_config", "ffn_hidden_size"),
    ("ffn_config", "moe_num_experts"), ("ffn_config", "moe_top_k"),
])
def test_dbrx_nested_fields_that_must_be_numbers_refuse_null(block, key):
    assert f"'{block}.{key}'" in refused(dbrx_with(block, **{key: None}))


@pytest.mark.parametrize("block", ["attn_config", "ffn_config"])
@pytest.mark.parametrize("value", [[1], "x", True, 3])
def test_dbrx_blocks_that_are_not_objects_are_refused(block, value):
    assert f"field '{block}' must be an object" in refused({**real("dbrx_instruct"), block: value})


# --- Llama 4: no_rope_layers, moe_layers, layer_types -------------------------------------------------------


def scout_text(**change) -> dict:
    return {**real("llama4_scout_17b_16e_instruct")["text_config"], **change}


@pytest.mark.parametrize("value", [
    [True, True, True, False] * 12,  # /tmp/review/hostile/l4_no_rope_bools: was accepted as 1/0
    [1, 1, 1, False] * 12,
    [1.0] * 48,
    ["1"] * 48,
    [[1]] * 48,
    [2] * 48,
    0, False, "", {},  # falsy non-lists were read as "absent"
    "1", {"a": 1},
])
def test_llama4_no_rope_layers_of_non_integers_is_one_line(value, tmp_path, capsys):
    err = one_line_exit_2(scout_text(no_rope_layers=value), tmp_path, capsys)
    assert "field 'no_rope_layers' must be a list of 0 (NoPE) or 1 (RoPE) as integers" in err, err
    # the reference: Llama4TextConfig.no_rope_layers is list[int] | None, strictly checked
    assert transformers_refuses(lambda: Llama4TextConfig(num_hidden_layers=48, no_rope_layers=value)) or \
        value == [2] * 48  # 2 is an integer transformers keeps (and reads by truth value); moelab refuses it


def test_llama4_no_rope_layers_of_0_and_1_or_empty_is_read_as_transformers_reads_it():
    n = 48
    given = [1, 1, 0, 1] * 12
    cfg = Llama4TextConfig(num_hidden_layers=n, no_rope_layers=given)
    spec = spec_from_config(scout_text(no_rope_layers=given), "t")
    assert [layer.attention.rope for layer in spec.layers] == [bool(v) for v in cfg.no_rope_layers]
    # an empty list is "absent" in transformers (`if self.no_rope_layers`): the interval's default
    empty = spec_from_config(scout_text(no_rope_layers=[]), "t")
    default = Llama4TextConfig(num_hidden_layers=n, no_rope_layers=[], no_rope_layer_interval=4).no_rope_layers
    assert [layer.attention.rope for layer in empty.layers] == [bool(v) for v in default]
    assert empty == spec_from_config({k: v for k, v in scout_text().items() if k != "no_rope_layers"}, "t")


@pytest.mark.parametrize("value", [[True], [0, False], [1.0], ["1"], [[1]], "1", {"a": 1}, 0, False])
def test_llama4_moe_layers_of_non_integers_is_one_line(value, tmp_path, capsys):
    err = one_line_exit_2(scout_text(moe_layers=value), tmp_path, capsys)
    assert "field 'moe_layers' must be a list of integers" in err, err
    assert transformers_refuses(lambda: Llama4TextConfig(num_hidden_layers=48, moe_layers=value))


@pytest.mark.parametrize("value", [[True] * 48, [1] * 48, [["full_attention"]] * 48, "full_attention",
                                   {"a": "full_attention"}, 0, False])
def test_llama4_layer_types_of_non_names_is_one_line(value, tmp_path, capsys):
    err = one_line_exit_2(scout_text(layer_types=value), tmp_path, capsys)
    assert "field 'layer_types' must be a list of 'chunked_attention' or 'full_attention'" in err, err


# --- rope_scaling: values that are neither scalars nor flat lists of finite numbers ------------------------


def test_transformers_defines_no_dict_valued_rope_key():
    """RopeParameters (transformers 5.24 modeling_rope_utils.py) types every key as a scalar or a list; the only
    dict in rope_parameters is a per-layer-type one (Gemma 3), which its family reads itself."""
    for key, hint in typing.get_type_hints(RopeParameters).items():
        assert "dict" not in str(hint).lower(), (key, hint)


def longrope(**change) -> dict:
    raw = real("phi3_5_mini_instruct")
    raw["rope_scaling"] = {**raw["rope_scaling"], **change}
    return raw


@pytest.mark.parametrize("value", [
    [[1]],  # /tmp/review/hostile/oss_rope_list_of_lists: was dropped, then "... got None"
    [[1.0]] * 48,
    [True] * 48,
    [],
    ["1.0"] * 48,
    [1.0] * 47 + [None],
    [1.0] * 47 + [math.inf],
    {"a": 1.0},
])
def test_rope_scaling_bad_list_is_one_line_naming_the_field(value):
    msg = refused(longrope(short_factor=value))
    assert "field 'rope_scaling.short_factor' must be a list of finite numbers" in msg \
        or "field 'rope_scaling.short_factor' must be a number" in msg, msg
    assert "got None" not in msg, msg


def test_rope_scaling_list_of_lists_reproducer_is_one_line_exit_2(tmp_path, capsys):
    raw = real("gpt_oss_20b")
    raw["rope_scaling"] = {"rope_type": "longrope", "short_factor": [[1]], "long_factor": [1.0]}
    err = one_line_exit_2(raw, tmp_path, capsys)
    assert "field 'rope_scaling.short_factor' must be a list of finite numbers, got [[1]]" in err, err


@pytest.mark.parametrize("value", [{"a": 1}, {}, [[1]], [1, [2]], [False], []])
def test_rope_scaling_unknown_key_of_a_nested_value_is_refused(value, tmp_path, capsys):
    raw = real("gpt_oss_20b")  # /tmp/review/hostile/oss_rope_nested_dict_value: was accepted, 'foo' dropped
    raw["rope_scaling"] = {**raw["rope_scaling"], "foo": value}
    assert "'rope_scaling.foo'" in one_line_exit_2(raw, tmp_path, capsys)


def test_rope_parameters_nested_value_names_rope_parameters():
    raw = {k: v for k, v in real("llama3_1_8b").items() if k not in ("rope_scaling", "rope_theta")}
    raw["rope_parameters"] = {**real("llama3_1_8b")["rope_scaling"], "rope_theta": 5e5, "extra_factor": [[1]]}
    assert "field 'rope_parameters.extra_factor' must be a list of finite numbers" in refused(raw)


def test_rope_scaling_null_values_and_flat_lists_still_read():
    raw = real("llama3_1_8b")
    base = spec_from_config(raw, "t")
    raw["rope_scaling"] = {**raw["rope_scaling"], "attention_factor": None}  # null: unset, as transformers
    assert spec_from_config(raw, "t") == base
    spec = spec_from_config(real("phi3_5_mini_instruct"), "t")
    items = dict(spec.rope_scaling)
    assert items["short_factor"] == tuple(float(x) for x in real("phi3_5_mini_instruct")["rope_scaling"]
                                          ["short_factor"])


def test_gemma3_per_layer_type_rope_parameters_still_read():
    raw = real("gemma3_27b")
    text = raw.get("text_config", raw)
    text = {**text, "model_type": "gemma3_text", "rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}
    text.pop("rope_scaling", None)
    spec = spec_from_config(text, "t")
    assert dict(spec.rope_scaling) == {"factor": 8.0, "rope_type": "linear"}
    assert re.search("gemma3", spec.family)


@pytest.mark.parametrize("key, value, kind", [
    ("factor", "x", "a number"), ("factor", [8.0], "a number"), ("factor", True, "a number"),
    ("low_freq_factor", {"a": 1}, "a number"), ("high_freq_factor", "4", "a number"),
    ("original_max_position_embeddings", "8192", "an integer"), ("original_max_position_embeddings", [8192],
                                                                 "an integer"),
])
def test_rope_scaling_typed_scalar_keys_of_the_wrong_kind_are_refused(key, value, kind):
    raw = real("llama3_1_8b")  # rope_type llama3: these were kept as given ("x", (8.0,), True)
    raw["rope_scaling"] = {**raw["rope_scaling"], key: value}
    assert f"field 'rope_scaling.{key}' must be {kind}, got" in refused(raw)


def test_rope_scaling_list_keys_that_are_not_lists_are_refused():
    # /tmp/review/hostile/phi3_rope_su_str: estimate accepted it, only moelab.nn refused it
    raw = real("phi3_mini_4k_instruct")
    raw["rope_scaling"] = {"type": "su", "short_factor": "x", "long_factor": [1.0]}
    assert "field 'rope_scaling.short_factor' must be a list of finite numbers, got 'x'" in refused(raw)


@pytest.mark.parametrize("key, value", [("factor", "32"), ("original_max_position_embeddings", "4096"),
                                        ("truncate", "no"), ("beta_fast", [32.0])])
def test_yarn_bad_key_is_one_message_not_two(key, value):
    raw = real("gpt_oss_20b")
    raw["rope_scaling"] = {**raw["rope_scaling"], key: value}
    msg = refused(raw)
    assert msg.count(f"'rope_scaling.{key}'") == 1 and "errors:" not in msg, msg
