"""config.json and moelab spec files as a hostile user writes them: each ends in one line and exit 2, fast.

Through `moelab.cli.main` (estimate, train) in-process, and through the readers directly. The cases come from
issue 10: files that are not files, JSON that is not JSON, numbers without bounds, switches moelab cannot
model, and rope types moelab.nn does not build (the engine still estimates those).
"""

import json
import math
import os
import subprocess
import sys

import pytest

from moelab import limits
from moelab.cli import main
from moelab.errors import MoelabError
from moelab.spec import load_model
from moelab.spec.hf import spec_from_config, spec_from_file
from moelab.spec.model import AttentionSpec, MoESpec, build_spec, spec_from_dict, spec_to_dict
from moelab.spec.presets import model_presets
from moelab.spec.transform import parse_as_moe

MIXTRAL = model_presets()["mixtral-8x7b"]
TINY_LLAMA = {"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 128,
              "max_position_embeddings": 256}
UNBUILT_ROPE = {"rope_type": "proportional", "factor": 2.0}  # a transformers rope type moelab.nn does not build
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}


def one_error_line(capsys, argv: list[str]) -> str:
    """Run the CLI; assert exit 2 and exactly one stderr line 'moelab: error: ...'; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("moelab: error: ") and err.count("\n") == 1, err
    return err


def write(path, obj) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


# --- files that are not regular files, JSON that is not strict JSON -----------------------------------------


def test_config_json_that_is_a_directory(capsys, tmp_path):
    (tmp_path / "config.json").mkdir()
    err = one_error_line(capsys, ["estimate", str(tmp_path)])  # MODEL is a folder whose config.json is a folder
    assert "directory" in err
    one_error_line(capsys, ["estimate", str(tmp_path / "config.json")])


def test_fifo_as_config_json_does_not_block(capsys, tmp_path):
    """Old code opened the FIFO and waited for a writer forever; run in a thread so a regression fails."""
    import threading

    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("rc", main(["estimate", str(fifo)])), daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # unblock the reader, then fail
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO as config.json blocked")
    assert result["rc"] == 2
    err = capsys.readouterr().err
    assert "not a regular file" in err and err.count("\n") == 1


def test_dev_zero_as_config_json_is_refused_unread(tmp_path):
    """Old code read /dev/zero until memory ran out: run in a child with a 2 GB address-space cap."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").symlink_to("/dev/zero")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "from moelab.cli import main; sys.exit(main(['estimate', sys.argv[1]]))")
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("moelab: error: ") and done.stderr.count("\n") == 1
    assert "not a regular file" in done.stderr


@pytest.mark.parametrize("text, words", [
    ("[" * 5000 + "]" * 5000, "nested too deeply"),  # RecursionError before
    ('{"model_type": "llama", "vocab_size": ' + "9" * 5000 + "}", "5000 digits"),  # int-digit ValueError before
    ('{"model_type": "llama", "rms_norm_eps": NaN}', "NaN"),  # accepted before
    ('{"model_type": "llama", "model_type": "mixtral"}', "duplicate key"),
])
def test_json_that_is_not_strict_json(capsys, tmp_path, text, words):
    path = tmp_path / "config.json"
    path.write_text(text)
    assert words in one_error_line(capsys, ["estimate", str(path)])


def test_non_utf8_config(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"model_type": "ll\xe9ma"}')
    assert "not UTF-8" in one_error_line(capsys, ["estimate", str(path)])


def test_oversized_config_is_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY_LLAMA, "padding": "x" * (5 * 2**20)}))
    with pytest.raises(MoelabError, match="larger than"):
        spec_from_file(path)


# --- numbers: integers that are integers, finite numbers, documented upper bounds ------------------------


@pytest.mark.parametrize("change, words", [
    ({"num_hidden_layers": 1e30}, "'num_hidden_layers' must be an integer"),
    ({"num_hidden_layers": 10**30}, f"'num_hidden_layers' must be at most {limits.MAX_LAYERS}"),  # hung before
    ({"vocab_size": limits.MAX_VOCAB + 1}, "'vocab_size' must be at most"),
    ({"hidden_size": limits.MAX_WIDTH + 1}, "'hidden_size' must be at most"),
    ({"num_attention_heads": limits.MAX_HEADS + 1}, "'num_attention_heads' must be at most"),
    ({"num_local_experts": limits.MAX_EXPERTS + 1}, "'num_local_experts' must be at most"),
    ({"intermediate_size": limits.MAX_FFN + 1}, "'intermediate_size' must be at most"),
    ({"max_position_embeddings": limits.MAX_POSITIONS + 1}, "'max_position_embeddings' must be at most"),
    ({"num_experts_per_tok": 9}, r"top_k (9) exceeds the number of experts (8)"),
    ({"rope_theta": "abc"}, "'rope_theta' must be a number"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": "abc"}}, "'rope_parameters.rope_theta'"),
    ({"rms_norm_eps": -1e-5}, "'rms_norm_eps' must be a finite number in (0, 1]"),
    ({"rope_theta": 1e300}, "'rope_theta' must be a finite number"),
])
def test_bad_numbers_in_config_json(capsys, tmp_path, change, words):
    err = one_error_line(capsys, ["estimate", write(tmp_path / "config.json", {**MIXTRAL, **change})])
    assert words in err


@pytest.mark.parametrize("change, field", [
    ({"rms_norm_eps": math.nan}, "rms_norm_eps"),
    ({"rope_theta": math.inf}, "rope_theta"),
    ({"routed_scaling_factor": math.nan}, "routed_scaling_factor"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": math.nan, "original_max_position_embeddings": 4096}},
     "rope_scaling.factor"),
])
def test_non_finite_numbers_in_a_config_dict(change, field):
    """A dict (a preset, a test, a caller) can hold NaN even though the JSON reader refuses it."""
    raw = {**model_presets()["deepseek-v3"], **change}
    with pytest.raises(MoelabError, match=field.replace(".", r"\.")):
        spec_from_config(raw)


def test_every_field_error_of_a_config_is_reported_at_once(capsys, tmp_path):
    bad = {**MIXTRAL, "num_hidden_layers": 1e30, "vocab_size": 10**30, "rms_norm_eps": "x", "hidden_act": "gelu",
           "num_experts_per_tok": 9}
    err = one_error_line(capsys, ["estimate", write(tmp_path / "config.json", bad)])
    assert "4 errors" in err
    for field in ("num_hidden_layers", "vocab_size", "rms_norm_eps", "hidden_act"):
        assert field in err
    assert "top_k" not in err  # a cross-field check waits until every field is sound


@pytest.mark.parametrize("kwargs, words", [
    ({"n_layers": 1e30}, "n_layers must be an integer"),
    ({"n_layers": 10**30}, r"n_layers must be an integer in 1\.\.16384"),
    ({"vocab_size": True}, "vocab_size must be an integer"),
    ({"norm_eps": math.nan}, "norm_eps must be a finite number"),
    ({"rope_theta": math.inf}, "rope_theta must be a finite number"),
    ({"rope_scaling": (("factor", math.nan), ("rope_type", "yarn"))}, "rope_scaling factor must be finite"),
    ({"moe_layers": (0, 0)}, "lists a layer twice"),
])
def test_model_spec_checks_types_and_bounds(kwargs, words):
    fields = dict(name="m", family="llama", vocab_size=256, d_model=64, n_layers=2, ffn_dim=128,
                  attention=AttentionSpec(n_heads=4, n_kv_heads=4, head_dim=16),
                  moe=MoESpec(n_experts=4, top_k=2, expert_ffn=64))
    with pytest.raises(MoelabError, match=words):
        build_spec(**{**fields, **kwargs})


@pytest.mark.parametrize("kwargs, words", [
    ({"n_experts": limits.MAX_EXPERTS + 1, "top_k": 2}, "n_experts must be at most"),
    ({"top_k": 2.0}, "top_k must be an integer"),
    ({"routed_scaling_factor": math.nan}, "routed_scaling_factor"),
    ({"top_k": 5}, r"top_k \(5\) exceeds"),
])
def test_moe_spec_checks_types_and_bounds(kwargs, words):
    with pytest.raises(MoelabError, match=words):
        MoESpec(**{"n_experts": 4, "top_k": 2, "expert_ffn": 64, **kwargs})


def test_spec_from_dict_refuses_nonsense_in_one_line():
    good = spec_to_dict(load_model("mixtral-8x7b"))
    for change in ({"n_layers": 1e30}, {"rope_scaling": ["abc"]}, {"attention": "x"}, {"surprise": 1}):
        with pytest.raises(MoelabError) as info:
            spec_from_dict({**good, **change})
        assert "\n" not in str(info.value)


# --- switches: unknown keys are fine, known ones moelab cannot model are refused by name ------------------


def test_unknown_keys_are_ignored():
    raw = {**MIXTRAL, "some_future_switch": {"deep": [1, 2, {"x": None}]}, "quantization_config": {"bits": 4}}
    assert spec_from_config(raw).n_layers == 32


@pytest.mark.parametrize("change, field", [
    ({"topk_method": "sinkhorn"}, "topk_method"),  # silently read as greedy before
    ({"scoring_func": "tanh"}, "scoring_func"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"rope_interleave": "yes"}, "rope_interleave"),
    ({"rope_scaling": {"rope_type": "yarn", "original_max_position_embeddings": 4096}}, "rope_scaling.factor"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 40, "beta_fast": "fast"}}, "rope_scaling.beta_fast"),
    ({"rope_scaling": "yarn"}, "rope_scaling"),
    ({"model_type": ["deepseek_v3"]}, "model_type"),  # an unhashable model_type was a TypeError
])
def test_known_switches_moelab_cannot_model_are_refused_by_name(change, field):
    raw = {**model_presets()["deepseek-v3"], **change}
    with pytest.raises(MoelabError, match=field.replace(".", r"\.")) as info:
        spec_from_config(raw)
    assert "\n" not in str(info.value)


# --- rope types moelab.nn does not build: the engine estimates them, train refuses them -------------------


def test_an_unbuilt_rope_is_estimated_but_not_trained(capsys, tmp_path):
    folder = tmp_path / "proportional"
    folder.mkdir()
    config = write(folder / "config.json", {**TINY_LLAMA, "rope_scaling": UNBUILT_ROPE})
    assert main(["estimate", config, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["total"] > 0
    out = tmp_path / "run"
    err = one_error_line(capsys, ["train", "--model", config, "--out", str(out), "--steps", "1"])
    assert "rope_scaling type 'proportional' is not implemented in moelab.nn (the engine still estimates it" in err
    assert not out.exists()  # refused before any training work


def test_train_shows_the_config_error_itself(capsys, tmp_path):
    """load_train_spec used to replace a bad config's error by 'unknown model'."""
    config = write(tmp_path / "config.json", {**TINY_LLAMA, "num_hidden_layers": 10**30})
    err = one_error_line(capsys, ["train", "--model", config, "--out", str(tmp_path / "run"), "--steps", "1"])
    assert "num_hidden_layers" in err


def test_train_spec_json_through_the_file_reader(capsys, tmp_path):
    good = spec_to_dict(load_model("mistral-7b"))
    spec = write(tmp_path / "spec.json", {**good, "d_model": 1e30})
    assert "d_model must be an integer" in one_error_line(
        capsys, ["train", "--model", spec, "--out", str(tmp_path / "run"), "--steps", "1"])
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 5000 + "]" * 5000)
    assert "nested too deeply" in one_error_line(
        capsys, ["train", "--model", str(deep), "--out", str(tmp_path / "run"), "--steps", "1"])


# --- names and flags --------------------------------------------------------------------------------------


def test_unknown_preset_lists_the_presets(capsys):
    err = one_error_line(capsys, ["estimate", "no-such-model"])
    assert all(name in err for name in model_presets())


def test_a_name_the_os_cannot_take_is_an_unknown_model(capsys):
    """An OSError (file name too long) escaped from Path.exists before."""
    err = one_error_line(capsys, ["estimate", "a" * 5000])
    assert "unknown model" in err and len(err) < 600
    assert "unknown model" in one_error_line(capsys, ["train", "--model", "b" * 5000, "--out", "x"])


@pytest.mark.parametrize("flag, words", [
    ("9" * 5000 + "x2", "expects EXPERTSxTOPK"),  # int() past 4300 digits was a ValueError traceback
    ("100000x2", f"in 1..{limits.MAX_EXPERTS}"),
    ("8x9", "top-k must be in 1..8"),
    ("0x0", "expert count"),
])
def test_as_moe_is_bounded(capsys, flag, words):
    assert words in one_error_line(capsys, ["estimate", "llama-3-8b", "--as-moe", flag])


def test_parse_as_moe_accepts_the_ordinary():
    assert parse_as_moe(" 8 x 2 ") == (8, 2) and parse_as_moe("64X8") == (64, 8)


def test_estimate_imports_neither_torch_nor_the_validation_models(tmp_path):
    """The config reader is plain Python: neither torch nor moelab's pydantic models (typer itself may load
    pydantic for its own use), on a preset or on a config.json."""
    config = write(tmp_path / "config.json", MIXTRAL)
    code = ("import sys; from moelab.cli import main; "
            "assert main(['estimate', 'mixtral-8x7b', '--json']) == 0; assert main(['estimate', sys.argv[1]]) == 0; "
            "assert 'torch' not in sys.modules, 'torch'; "
            "assert not [m for m in sys.modules if m.startswith('moelab.schema')], 'moelab.schema'")
    done = subprocess.run([sys.executable, "-c", code, config], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
