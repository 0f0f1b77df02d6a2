"""Hugging Face folders as a hostile or unlucky user hands them over: each is one line, never a traceback.

Shard indexes that point outside the folder, truncated safetensors files, indexes that are not indexes,
config.json that is not a file, and rope types moelab.nn does not build. Through `load_pretrained` and
through `moelab bench` (in-process via `moelab.cli.main`).
"""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from moelab.cli import main
from moelab.errors import MoelabError
from moelab.nn import build_model, load_pretrained, save_pretrained
from moelab.nn.layers import Rotary
from moelab.spec.hf import spec_from_config

TINY = {"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48, "max_position_embeddings": 128}
INDEX = "model.safetensors.index.json"


def saved(folder, config=TINY):
    """A moelab model saved as an HF folder; returns its state as transformers names it."""
    torch.manual_seed(0)
    save_pretrained(build_model(spec_from_config(config)), folder)
    return load_file(folder / "model.safetensors")


def shard(folder, tensors: dict, names: dict[str, str]) -> None:
    """Split `tensors` into the shard files `names` maps them to, with an index, instead of one file."""
    (folder / "model.safetensors").unlink(missing_ok=True)
    for file in set(names.values()):
        if not os.path.isabs(file) and ".." not in file:
            save_file({k: v for k, v in tensors.items() if names[k] == file}, folder / file)
    (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": names}))


def one_error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("moelab: error: ") and err.count("\n") == 1, err
    return err


# --- shard indexes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../../../../etc/hostname", "/etc/hostname", "../outside/model.safetensors",
                                 "sub/../../outside/model.safetensors"])
def test_a_shard_outside_the_folder_is_never_opened(tmp_path, bad):
    folder = tmp_path / "model"
    tensors = saved(folder)
    # a real, loadable safetensors file outside the folder: the old loader read it without a word
    (tmp_path / "outside").mkdir()
    save_file({"model.norm.weight": tensors["model.norm.weight"]}, tmp_path / "outside" / "model.safetensors")
    names = {k: "model-00001-of-00002.safetensors" for k in tensors}
    names["model.norm.weight"] = bad
    shard(folder, tensors, names)
    with pytest.raises(MoelabError, match="is not a .safetensors file inside") as info:
        load_pretrained(folder)
    assert "\n" not in str(info.value)


def test_a_good_sharded_folder_loads_even_through_cache_style_links(tmp_path):
    """Hugging Face's cache links every file of a snapshot to a blob two folders up: that must still load."""
    folder = tmp_path / "snapshots" / "abc"
    tensors = saved(folder)
    names = {k: ("model-00001-of-00002.safetensors" if "layers.0." in k else "model-00002-of-00002.safetensors")
             for k in tensors}
    shard(folder, tensors, names)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for file in set(names.values()):
        os.replace(folder / file, blobs / file)
        (folder / file).symlink_to(os.path.relpath(blobs / file, folder))
    model = load_pretrained(folder)
    assert torch.equal(model.norm.weight, tensors["model.norm.weight"])


@pytest.mark.parametrize("index, words", [
    ("[1, 2, 3]", 'no "weight_map" object'),
    ('{"metadata": {}}', 'no "weight_map" object'),
    ('{"weight_map": ["model.safetensors"]}', 'no "weight_map" object'),
    ('{"weight_map": {"model.norm.weight": 7}}', "a shard name must be a file name"),
    ('{"weight_map": {"model.norm.weight": "gone.safetensors"}}', "shard gone.safetensors is missing"),
    ("{not json", "not valid JSON"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
])
def test_an_index_that_is_not_an_index(tmp_path, index, words):
    saved(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / INDEX).write_text(index)
    with pytest.raises(MoelabError, match=words) as info:
        load_pretrained(tmp_path)
    assert "\n" not in str(info.value)


def test_a_shard_that_is_a_fifo_is_refused(tmp_path):
    tensors = saved(tmp_path)
    shard(tmp_path, tensors, {k: "model-00001-of-00001.safetensors" for k in tensors})
    (tmp_path / "model-00001-of-00001.safetensors").unlink()
    os.mkfifo(tmp_path / "model-00001-of-00001.safetensors")
    with pytest.raises(MoelabError, match="not a regular file"):
        load_pretrained(tmp_path)


def test_missing_tensors_across_shards_are_one_line(tmp_path):
    tensors = saved(tmp_path)
    kept = {k: v for k, v in tensors.items() if "layers.1." not in k}
    shard(tmp_path, kept, {k: "model-00001-of-00001.safetensors" for k in kept})
    with pytest.raises(MoelabError, match=r"missing tensor model\.layers\.1\..*more\)") as info:
        load_pretrained(tmp_path)
    assert "\n" not in str(info.value)


# --- damaged weights and configs ----------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [4, 40, 0.5])
def test_a_truncated_safetensors_file_names_the_file(tmp_path, keep):
    saved(tmp_path)
    path = tmp_path / "model.safetensors"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * keep) if isinstance(keep, float) else keep)
    with pytest.raises(MoelabError, match="model.safetensors: not a readable safetensors file") as info:
        load_pretrained(tmp_path)
    assert "\n" not in str(info.value)


def test_bench_on_a_truncated_hf_folder_is_one_line(capsys, tmp_path):
    saved(tmp_path)
    path = tmp_path / "model.safetensors"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    err = one_error_line(capsys, ["bench", str(tmp_path), "-H", "h100-sxm", "--batches", "1", "--prompt", "4",
                                  "--gen", "1", "--repeats", "1"])
    assert "not a readable safetensors file" in err


def test_config_json_that_is_not_a_file(tmp_path):
    saved(tmp_path)
    (tmp_path / "config.json").unlink()
    (tmp_path / "config.json").mkdir()
    with pytest.raises(MoelabError, match="config.json is a directory"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").rmdir()
    os.mkfifo(tmp_path / "config.json")  # the old loader blocked here for a writer
    with pytest.raises(MoelabError, match="not a regular file"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("change, field", [
    ({"layer_types": "full_attention"}, "layer_types"),
    ({"use_sliding_window": True, "sliding_window": 4, "max_window_layers": "all"}, "max_window_layers"),
])
def test_per_layer_switches_of_the_wrong_type(tmp_path, change, field):
    config = {**TINY, "model_type": "qwen2"}
    saved(tmp_path, config)
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(MoelabError, match=field):
        load_pretrained(tmp_path)


# --- rope types moelab.nn does not build --------------------------------------------------------------------

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}


UNBUILT = {"rope_type": "proportional", "factor": 2.0}  # a transformers rope type moelab.nn does not build


@pytest.mark.parametrize("scaling", [UNBUILT, {"rope_type": "made_up", "factor": 2.0}])
def test_unbuilt_rope_types_are_refused_by_name(scaling):
    spec = spec_from_config({**TINY, "rope_scaling": scaling})  # the engine reads it
    with pytest.raises(MoelabError, match=f"rope_scaling type '{scaling['rope_type']}' is not implemented in "
                                          r"moelab.nn \(the engine still estimates it"):
        build_model(spec)


def test_yarn_without_positions_is_refused():
    with pytest.raises(MoelabError, match="original_max_position_embeddings"):
        Rotary(16, 10000.0, {"rope_type": "yarn", "factor": 4.0}, max_position=None)


def test_load_pretrained_and_bench_refuse_an_unbuilt_rope(capsys, tmp_path):
    saved(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "rope_scaling": UNBUILT}))
    with pytest.raises(MoelabError, match="'proportional' is not implemented in moelab.nn"):
        load_pretrained(tmp_path)
    config = tmp_path / "cfg" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({**TINY, "rope_scaling": UNBUILT}))
    err = one_error_line(capsys, ["bench", str(config), "-H", "h100-sxm", "--batches", "1", "--prompt", "4",
                                  "--gen", "1", "--repeats", "1"])
    assert "rope_scaling type 'proportional' is not implemented in moelab.nn" in err
