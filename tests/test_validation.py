"""Hardware and workload files: every bad file gets one line naming all of its errors, every good one loads.

Each case of issue 10 about these files is here: NaN/Inf, unknown keys (with the closest known key), coerced or
huge numbers, zero links, `sources` as a list, non-UTF-8 text, alias bombs, duplicate keys, deep nesting, huge
integers, files that are not regular files, and several errors reported together. What presets, `moelab
hardware --json`, `moelab calibrate` and the README write must still load.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from moelab.cli import main
from moelab.decide.workload import DEFAULT, TASKS, load_workload, workload_from_dict
from moelab.errors import MoelabError
from moelab.spec.hardware import hardware_presets, load_hardware
from moelab.validation import MAX_LINE_CHARS, format_errors

ROOT = Path(__file__).resolve().parents[1]
GOOD_HW = {"peak_tflops": {"bf16": 100, "fp32": 10}, "memory_gb": 16, "memory_bandwidth_gbps": 500,
           "tdp_watts": 200, "usd_per_hour": 0.5}
GOOD_WL = {"hardware": "H100-SXM", "gpus": 8, "latency_p99_ms": 50, "batch": 8, "prompt": 10, "gen": 10,
           "task_mix": {"code": 1}, "training": "scratch", "candidates": ["mistral-7b"]}
ALIAS_BOMB_8 = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(7))


def cli_error(capsys, *args) -> str:
    """The one stderr line of a command that must exit 2."""
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("moelab: error: ") and "Traceback" not in err
    return err.strip().removeprefix("moelab: error: ")


def hw_error(tmp_path, text: str | bytes, name: str = "hw.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(MoelabError) as info:
        load_hardware(str(path))
    message = str(info.value)
    assert "\n" not in message and len(message) <= MAX_LINE_CHARS + 200
    return message


def yaml_of(mapping: dict) -> str:
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in mapping.items())


# --- the error line ---------------------------------------------------------------------------------------


def test_format_errors_one_several_and_capped():
    assert format_errors("hw.yaml", ["a (x)"]) == "hw.yaml: a (x)"
    assert format_errors("hw.yaml", ["a (x)", "b\n  (y)", "c"]) == "hw.yaml: 3 errors: a (x); b (y); c"
    many = format_errors("w.yaml", [f"field_{i} (must be a number, got {'x' * 30!r})" for i in range(50)])
    assert len(many) <= MAX_LINE_CHARS and many.startswith("w.yaml: 50 errors: field_0 ")
    shown = many.count("must be a number")
    assert many.endswith(f"; … and {50 - shown} more")
    assert len(format_errors("w.yaml", ["x" * 10_000])) <= MAX_LINE_CHARS


# --- hardware files ---------------------------------------------------------------------------------------


def test_nan_and_inf_are_refused(tmp_path):
    msg = hw_error(tmp_path, yaml_of(GOOD_HW).replace("memory_bandwidth_gbps: 500", "memory_bandwidth_gbps: .nan"))
    assert "memory_bandwidth_gbps (must be a finite number, got nan)" in msg
    msg = hw_error(tmp_path, yaml_of(GOOD_HW).replace("tdp_watts: 200", "tdp_watts: .inf"))
    assert "tdp_watts (must be a finite number, got inf)" in msg
    assert "NaN is not a JSON number" in hw_error(tmp_path, json.dumps(GOOD_HW).replace("500", "NaN"), "hw.json")


def test_unknown_key_names_the_closest_known_one(tmp_path):
    msg = hw_error(tmp_path, yaml_of({**GOOD_HW, "memory_bandwith_gbps": 900}))
    assert msg == "hw.yaml: unknown key 'memory_bandwith_gbps' (did you mean 'memory_bandwidth_gbps'?)"
    msg = hw_error(tmp_path, yaml_of({**GOOD_HW, "peak_tflops": {"bf16": 100, "fp4": 5}}))
    assert "peak_tflops.fp4 (key must be 'fp32', 'tf32', 'bf16', 'fp16', 'fp8' or 'int8', got 'fp4')" in msg


def test_gpus_per_node_must_be_an_integer_not_truncated(tmp_path):
    assert "gpus_per_node (must be an integer, got 2.7)" in hw_error(tmp_path, yaml_of({**GOOD_HW,
                                                                                         "gpus_per_node": 2.7}))
    for bad in (True, "8", 0):
        assert "gpus_per_node" in hw_error(tmp_path, yaml_of({**GOOD_HW, "gpus_per_node": bad}))
    assert load_hardware(str(_write(tmp_path, {**GOOD_HW, "gpus_per_node": 4}))).gpus_per_node == 4


def _write(tmp_path, mapping: dict, name: str = "ok.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(mapping))
    return path


@pytest.mark.parametrize("key, value", [("memory_gb", 1e18), ("memory_bandwidth_gbps", 1e7), ("gpus_per_node", 2**40),
                                        ("tdp_watts", 1e300), ("peak_tflops", {"bf16": 1e20})])
def test_huge_numbers_are_refused(tmp_path, key, value):
    assert "less than or equal to" in hw_error(tmp_path, yaml_of({**GOOD_HW, key: value}))


def test_a_zero_link_is_refused_before_anything_runs(tmp_path, capsys):
    msg = hw_error(tmp_path, yaml_of({**GOOD_HW, "intra_node_gbps": 0}))
    assert msg == "hw.yaml: intra_node_gbps (must be greater than or equal to 0.001, got 0)"
    path = _write(tmp_path, {**GOOD_HW, "inter_node_gbps": 0})
    assert "inter_node_gbps" in cli_error(capsys, "estimate", "llama-3-8b", "--hardware", str(path))


def test_efficiencies_are_in_zero_one(tmp_path):
    msg = hw_error(tmp_path, yaml_of({**GOOD_HW, "compute_efficiency": 0, "link_efficiency": 1.5}))
    assert "2 errors" in msg and "compute_efficiency" in msg and "link_efficiency" in msg
    assert load_hardware(str(_write(tmp_path, {**GOOD_HW, "compute_efficiency": 1}))).compute_efficiency == 1


def test_sources_as_a_list_is_an_error_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "hw.yaml"
    path.write_text(yaml_of(GOOD_HW) + "sources: [datasheet, guess]\n")
    assert cli_error(capsys, "estimate", "llama-3-8b", "--hardware", str(path)) == \
        "hw.yaml: sources (must be a mapping, got ['datasheet', 'guess'])"


def test_non_utf8_hardware_file(tmp_path, capsys):
    path = tmp_path / "hw.yaml"
    path.write_bytes(yaml_of(GOOD_HW).encode() + "name: caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in cli_error(capsys, "estimate", "llama-3-8b", "--hardware", str(path))


def test_alias_bomb_is_refused_before_it_expands(tmp_path):
    assert "YAML aliases are not accepted" in hw_error(tmp_path, yaml_of(GOOD_HW) + ALIAS_BOMB_8.replace("a:", "q:"))


def test_duplicate_key_deep_nesting_and_huge_integer(tmp_path):
    assert "duplicate key 'memory_gb'" in hw_error(tmp_path, yaml_of(GOOD_HW) + "memory_gb: 32\n")
    assert "nested too deeply" in hw_error(tmp_path, '{"sources": ' + "[" * 50_000 + "]" * 50_000 + "}", "hw.json")
    assert "digits" in hw_error(tmp_path, json.dumps(GOOD_HW).replace(": 16", ": " + "9" * 5000), "hw.json")
    assert "digits" in hw_error(tmp_path, yaml_of(GOOD_HW).replace(": 16", ": " + "9" * 5000))


def test_not_a_regular_file(tmp_path, capsys):
    assert "a directory" in cli_error(capsys, "estimate", "llama-3-8b", "--hardware", str(tmp_path))
    assert "not a regular file" in cli_error(capsys, "estimate", "llama-3-8b", "--hardware", "/dev/zero")
    fifo = tmp_path / "hw.yaml"
    os.mkfifo(fifo)
    # in a child process, so that a reader that blocks cannot hang the suite
    code = f"from moelab.cli import main; raise SystemExit(main(['estimate', 'llama-3-8b', '-H', {str(fifo)!r}]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not a regular file" in done.stderr


def test_every_error_of_a_file_at_once(tmp_path):
    text = yaml_of({"peak_tflops": {"bf16": 100}, "memory_gb": -1, "memory_bandwidth_gbps": "fast",
                    "intra_node_gbps": 0, "gpus_per_node": 2.7, "tdp_watts": 200, "sources": ["x"],
                    "memory_bandwith_gbps": 1})
    msg = hw_error(tmp_path, text)
    assert msg.startswith("hw.yaml: 7 errors: ")
    for part in ("usd_per_hour", "memory_gb", "memory_bandwidth_gbps", "intra_node_gbps", "gpus_per_node",
                 "sources", "memory_bandwith_gbps"):
        assert part in msg
    assert msg.count(";") == 6


def test_empty_file_and_keys_that_are_not_strings(tmp_path):
    assert hw_error(tmp_path, "") == "hw.yaml: a hardware file must be a mapping of keys to values, got an empty file"
    assert "key 1 (keys must be strings)" in hw_error(tmp_path, yaml_of(GOOD_HW) + "1: 2\n")
    assert "got an empty file" in wl_error(tmp_path, "")


def test_a_huge_value_is_shown_short(tmp_path):
    msg = hw_error(tmp_path, yaml_of({**GOOD_HW, "name": [list(range(100))] * 100}))
    assert msg.startswith("hw.yaml: name (must be a string, got [[0, 1, 2, 3, ...], ") and len(msg) < 150


def test_rich_markup_in_a_name_is_accepted(tmp_path, capsys):
    path = _write(tmp_path, {**GOOD_HW, "name": "box [/red] [bold]"})
    assert load_hardware(str(path)).name == "box [/red] [bold]"
    assert main(["estimate", "llama-3-8b", "--hardware", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hardware"] == "box [/red] [bold]"


def test_presets_and_their_json_round_trip(tmp_path):
    presets = hardware_presets()
    assert len(presets) >= 9
    for name, hw in presets.items():
        again = load_hardware(str(_write(tmp_path, hw.to_dict(), f"{name}.json")))
        for key, value in hw.to_dict().items():
            assert again.to_dict()[key] == (pytest.approx(value) if isinstance(value, float) else value), key


def test_hardware_json_output_loads_as_a_file(tmp_path, capsys):
    assert main(["hardware", "--json"]) == 0
    for entry in json.loads(capsys.readouterr().out):
        assert load_hardware(str(_write(tmp_path, entry))).name == entry["name"]


def test_what_calibrate_writes_loads(tmp_path, monkeypatch):
    """calibrate() with its probes replaced by fixed figures: every key it writes, `measurements` included."""
    torch = pytest.importorskip("torch")
    from moelab.bench import alltoall, calibrate, probes

    def gemv(device, nbytes, dtype="fp32", rows=(2, 4, 8), quick=False):
        return {"bandwidth": 6e9, "weight_bytes": nbytes, "per_rows": {str(r): 6e9 for r in rows}}

    def no_alltoall(*args, **kwargs):
        raise RuntimeError("gloo unavailable")

    fakes = {
        "matmul_flops": lambda device, dt, quick=False: {"flops": 9e10, "per_shape_flops": {"1024x1024x1024": 9e10}},
        "last_level_cache_bytes": lambda: 50331648,
        "stream_bandwidth": lambda device, nbytes: {"bandwidth": 3e9, "samples": [3e9, 3.1e9]},
        "gemv_bandwidth": gemv,
        "attention": lambda *a, **k: {"pair_s": 2e-6, "prefill_flops": 3e10, "decode_bandwidth": 2e9},
        "in_situ": lambda *a, **k: {"gemm_flops": 5e10, "elementwise_bandwidth": 2e9, "attention_flops": 1e10,
                                    "attention_bandwidth": 1e9, "gemm_weight_bandwidth": 2e10,
                                    "op_seconds": {"mm": 0.01}},
        "fresh_pages": lambda *a, **k: {"bandwidth": 4e9, "threshold_bytes": 32.5e6,
                                        "extra_s_per_gb": {"32": 0.01, "64": 0.7}},
        "overheads": lambda *a, **k: {"step_s": 3e-4, "layer_s": 2e-4, "moe_layer_s": 1e-4, "expert_s": 5e-4,
                                      "raw_median_s": {"model_1": 6e-4, "model_5": 1.1e-3}},
        "op_overhead": lambda device="cpu": 2e-6,
        "moe_in_situ": lambda *a, **k: {"moe_layer_s": 9e-3, "expert_s": 5e-4, "residual_s": {"1": 0.04, "16": -0.3}},
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(probes, name, fake)
    monkeypatch.setattr(alltoall, "measure", no_alltoall)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    hw = calibrate.calibrate("cpu", quick=True)
    assert {"measurements", "sources", "name", "fresh_page_mb", "cache_gb"} <= set(hw)
    path = calibrate.write_hardware(hw, tmp_path / "calibrated.json")
    spec = load_hardware(str(path))
    assert spec.name == hw["name"] and spec.memory_bandwidth == pytest.approx(6e9)


# --- workload files ---------------------------------------------------------------------------------------


def wl_error(tmp_path, text: str, name: str = "workload.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MoelabError) as info:
        load_workload(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_readme_workload_example_loads(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"A workload file.*?```yaml\n(.*?)```", readme, re.S)
    assert block, "the README's workload example is gone"
    path = tmp_path / "readme.yaml"
    path.write_text(block.group(1))
    wl = load_workload(path)
    assert wl.train_tokens == 2e9 and wl.gpus == 8 and len(wl.candidates) == 5


def test_workload_docstring_example_loads(tmp_path):
    import moelab.decide.workload as module

    block = re.search(r"```yaml\n(.*?)```", module.__doc__, re.S)
    path = tmp_path / "doc.yaml"
    path.write_text(block.group(1))
    assert load_workload(path).quality_floor_b == 25


def test_workload_alias_bomb_is_one_short_line(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(yaml_of(GOOD_WL) + ALIAS_BOMB_8.replace("a:", "q:"))
    msg = cli_error(capsys, "decide", "--workload", str(path))
    assert "aliases are not accepted" in msg and len(msg) < 500


def test_workload_duplicate_key(tmp_path):
    assert "duplicate key 'gpus' at line" in wl_error(tmp_path, yaml_of(GOOD_WL) + "gpus: 16\n")


def test_workload_unknown_key_and_nested_unknown_key(tmp_path):
    msg = wl_error(tmp_path, yaml_of({**GOOD_WL, "latancy_p99_ms": 40, "task_mix": {"coding": 1}}))
    assert "unknown key 'latancy_p99_ms' (did you mean 'latency_p99_ms'?)" in msg
    assert "unknown key 'task_mix.coding' (did you mean 'task_mix.code'?)" in msg


@pytest.mark.parametrize("key, value, expect", [
    ("gpus", 10**18, "gpus (must be less than or equal to 1048576, got 1000000000000000000)"),
    ("gpus", 10**60, "gpus (must be less than or equal to 1048576, got an integer of 61 digits)"),
    ("gpus", 2.0, "gpus (must be an integer, got 2.0)"),
    ("gpus", "8", "gpus (must be an integer, got '8')"),
    ("batch", True, "batch (must be an integer, got true)"),
    ("batch", 10**7, "batch (must be less than or equal to"),
    ("prompt", 10**9, "prompt (must be less than or equal to"),
    ("latency_p99_ms", float("nan"), "latency_p99_ms (must be a finite number, got nan)"),
    ("train_tokens", 1e30, "train_tokens (must be less than or equal to"),
    ("training", "pretrain", "training (must be 'scratch' or 'fine-tune', got 'pretrain')"),
    ("task_mix", {"code": 0}, "task_mix must give at least one share above 0"),
    ("task_mix", {"code": 1e308, "reasoning": 1e308}, "task_mix.code (must be less than or equal to"),
    ("candidates", ["mistral-7b", "mistral-7b"], "candidates (must not repeat a model"),
    ("candidates", [], "candidates (must have at least 1 item, got [])"),
    ("candidates", ["m"] * 65, "candidates (must have at most 64 items"),
    ("name", "n" * 300, "name (must have at most 256 characters"),
    ("batches", [1, 0], "batches[1] (must be greater than or equal to 1, got 0)"),
    ("dtype", "fp3", "dtype (must be 'fp32', 'bf16', 'fp16', 'fp8', 'int8' or 'int4', got 'fp3')"),
    ("name", ["x"], "name (must be a string, got ['x'])"),
])
def test_workload_field_errors(key, value, expect):
    with pytest.raises(MoelabError) as info:
        workload_from_dict({**GOOD_WL, key: value}, "w.yaml")
    assert expect in str(info.value)


def test_workload_missing_keys_and_not_a_mapping():
    with pytest.raises(MoelabError, match="w.yaml: 2 errors: missing key 'hardware'; missing key 'gpus'"):
        workload_from_dict({k: v for k, v in GOOD_WL.items() if k not in ("hardware", "gpus")}, "w.yaml")
    with pytest.raises(MoelabError, match="expected a mapping"):
        workload_from_dict([1, 2], "w.yaml")


def test_workload_hardware_and_candidates_that_fail_join_the_same_line(tmp_path):
    (tmp_path / "gpu.yaml").write_text(yaml_of({**GOOD_HW, "intra_node_gbps": 0}))
    msg = wl_error(tmp_path, yaml_of({**GOOD_WL, "gpus": 0, "hardware": "gpu.yaml",
                                      "candidates": ["mistral-7b", "gpt-5", "no/such/config.json"]}))
    assert msg.startswith("workload.yaml: 4 errors: gpus (must be greater than or equal to 1, got 0); ")
    assert "hardware (gpu.yaml: intra_node_gbps (must be greater than or equal to 0.001, got 0))" in msg
    assert "candidates[1] (" in msg and "candidates[2] (" in msg and "candidates[0]" not in msg


def test_workload_relative_paths_resolve_from_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "team"
    folder.mkdir()
    (folder / "gpu.json").write_text(json.dumps({**GOOD_HW, "name": "team-gpu"}))
    (folder / "model").mkdir()
    (folder / "model" / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 128}))
    (folder / "w.yaml").write_text(yaml_of({**GOOD_WL, "hardware": "gpu.json", "candidates": ["model", "mistral-7b"]}))
    monkeypatch.chdir(tmp_path)
    wl = load_workload(folder / "w.yaml")
    assert wl.hardware == str(folder / "gpu.json") and wl.candidates[0] == str(folder / "model")
    assert wl.memory_budget_gb == pytest.approx(8 * 16)


def test_workload_null_means_not_given_and_defaults_hold():
    wl = workload_from_dict({**GOOD_WL, "throughput_tokens_per_s": None, "train_tokens": None, "dtype": None,
                             "task_mix": {"code": 1, "reasoning": 3}}, "w.yaml")
    assert wl.throughput_tokens_per_s is None and wl.train_tokens == 1e12 and wl.dtype == "bf16"
    assert wl.task_mix == {"reasoning": 0.75, "knowledge": 0.0, "multilingual": 0.0, "code": 0.25}
    assert set(wl.task_mix) == set(TASKS)
    assert workload_from_dict(DEFAULT, "default").candidates == tuple(DEFAULT["candidates"])
    assert workload_from_dict({**GOOD_WL, "candidates": "mistral-7b"}, "w.yaml").candidates == ("mistral-7b",)


# --- moelab schema ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, required", [("workload", "candidates"), ("hardware", "memory_bandwidth_gbps")])
def test_schema_command_prints_a_json_schema(capsys, kind, required):
    assert main(["schema", kind]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].startswith("https://json-schema.org/") and required in schema["required"]
    assert schema["additionalProperties"] is False


def test_schema_lists_what_the_models_accept():
    from moelab.cost.dtypes import WEIGHT_BYTES
    from moelab.schema import json_schema
    from moelab.spec.hardware import DTYPES, HardwareSpec

    hw = json_schema("hardware")["properties"]
    assert set(hardware_presets()["H100-SXM"].to_dict()) <= set(hw)
    assert set(hw["peak_tflops"]["propertyNames"]["enum"]) == set(DTYPES)
    assert len(hw) == len(HardwareSpec.__dataclass_fields__) + 1  # + measurements
    wl = json_schema("workload")
    assert set(wl["properties"]) >= set(DEFAULT)
    assert set(wl["properties"]["dtype"]["anyOf"][0]["enum"]) == set(WEIGHT_BYTES)


def test_schema_unknown_kind(capsys):
    assert cli_error(capsys, "schema", "model") == "unknown schema 'model' (schemas: hardware, workload, manifest)"


def test_presets_are_built_without_pydantic():
    """Bundled presets are trusted data: only a user's file pays for pydantic's import (the CLI's typer imports it
    anyway to coerce flags, so this holds for the library)."""
    code = ("import sys; from moelab.spec.hardware import hardware_presets, load_hardware; "
            "from moelab.spec.presets import load_model; hardware_presets(); load_hardware('H100-SXM'); "
            "load_model('mixtral-8x7b'); print('pydantic' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
