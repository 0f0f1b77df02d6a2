"""Regression tests for the hostile review of issue 10, engine side: derived specs not held to user bounds,
hardware lower bounds and no null for an overflow, bench's cheap checks before calibration, the --batches count
cap, one number renderer, and config/YAML messages that say what is wrong."""

import json
import math
import re
from pathlib import Path

import pytest

from moelab import limits
from moelab.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"non-JSON constant {name} in --json output")

    return json.loads(text, parse_constant=refuse)


def one_error_line(err: str) -> bool:
    return err.startswith("moelab: error: ") and err.count("\n") == 1 and "Traceback" not in err


def numbers(obj):
    """Every number in a JSON value, at any depth."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers(v)
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield obj


def run_json(capsys, argv: list[str]):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = strict_json(captured.out)
    assert all(math.isfinite(x) for x in numbers(result))
    return result


# --- 1. derived specs are not held to the bounds on user input ---------------------------------------------

def test_estimate_of_a_huge_workload_is_not_refused_for_a_derived_twin(capsys):
    result = run_json(capsys, ["estimate", "deepseek-v3", "--batch", str(limits.MAX_BATCH),
                               "--prompt", str(limits.MAX_TOKENS), "--json"])
    assert result["model"] == "deepseek-v3" and result["dense_equivalent"]["workload_detail"]["ffn_dim"] > 0
    from moelab.cost.equivalent import dense_twin
    from moelab.spec.presets import load_model

    assert dense_twin(load_model("deepseek-v3"), limits.MAX_FFN + 1).ffn_dim == limits.MAX_FFN + 1  # unbounded twin


def test_decide_on_the_readme_workload_at_65536_gpus(capsys, tmp_path):
    yaml_block = re.search(r"```yaml\n(.*?)```", README.read_text(), re.S).group(1)
    assert re.search(r"^gpus: 8\b", yaml_block, re.M)
    path = tmp_path / "wl.yaml"
    path.write_text(re.sub(r"^gpus: 8\b", "gpus: 65536", yaml_block, flags=re.M))
    result = run_json(capsys, ["decide", "-w", str(path), "--json"])
    assert result["candidates"]


def test_user_specs_are_still_bounded(tmp_path, capsys):
    from moelab.spec.model import spec_from_dict, spec_to_dict
    from moelab.spec.presets import load_model

    raw = spec_to_dict(load_model("mistral-7b"))
    assert "bounded" not in raw
    with pytest.raises(Exception, match="ffn width must be at most"):
        spec_from_dict({**raw, "ffns": [{"dense": {"width": limits.MAX_FFN + 1}}], "bounded": False})
    legacy = {k: v for k, v in raw.items() if k not in ("format", "attentions", "ffns", "layers")}
    legacy.update(attention=raw["attentions"][0], n_layers=32, ffn_dim=limits.MAX_FFN + 1, bounded=False)
    with pytest.raises(Exception, match="ffn width must be at most"):  # the uniform format of older runs too
        spec_from_dict(legacy)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                                  "vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32,
                                  "intermediate_size": limits.MAX_FFN + 1, "num_attention_heads": 32,
                                  "num_key_value_heads": 8}))
    assert main(["estimate", str(config), "--json"]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and ("intermediate_size" in err or "ffn_dim" in err)


# --- 2. hardware lower bounds; an overflow is never printed as null ----------------------------------------

HW = {"name": "slow", "peak_tflops": {"bf16": 989}, "memory_gb": 80, "memory_bandwidth_gbps": 3350,
      "tdp_watts": 700, "usd_per_hour": 2}


def _hardware_file(tmp_path, **changes) -> str:
    path = tmp_path / "hw.json"
    path.write_text(json.dumps({**HW, **changes}))
    return str(path)


@pytest.mark.parametrize("changes, field", [
    ({"memory_bandwidth_gbps": 1e-300}, "memory_bandwidth_gbps"),
    ({"peak_tflops": {"bf16": 1e-300}}, "peak_tflops.bf16"),
    ({"memory_gb": 1e-300}, "memory_gb"),
    ({"intra_node_gbps": 1e-300}, "intra_node_gbps"),
    ({"elementwise_bandwidth_gbps": 1e-300}, "elementwise_bandwidth_gbps"),
    ({"compute_efficiency": 1e-300}, "compute_efficiency"),
])
def test_hardware_rates_below_their_minimum_are_refused(capsys, tmp_path, changes, field):
    assert main(["estimate", "mistral-7b", "--hardware", _hardware_file(tmp_path, **changes), "--json"]) == 2
    captured = capsys.readouterr()
    assert one_error_line(captured.err) and f" {field} (" in captured.err and captured.out == ""


def test_zero_still_means_no_such_term_and_the_minimum_itself_loads(capsys, tmp_path):
    from moelab.schema.hardware import MIN_BANDWIDTH_GBPS, MIN_MEMORY_GB, MIN_TFLOPS

    path = _hardware_file(tmp_path, peak_tflops={"bf16": MIN_TFLOPS, "fp8": 0}, memory_gb=MIN_MEMORY_GB,
                          memory_bandwidth_gbps=MIN_BANDWIDTH_GBPS, elementwise_bandwidth_gbps=0,
                          runtime_overhead_gb=0, intra_node_gbps=MIN_BANDWIDTH_GBPS,
                          inter_node_gbps=MIN_BANDWIDTH_GBPS, compute_efficiency=1e-3)
    result = run_json(capsys, ["estimate", "deepseek-v3", "--hardware", path, "--batch", str(limits.MAX_BATCH),
                               "--prompt", str(limits.MAX_TOKENS), "--gen", str(limits.MAX_TOKENS),
                               "--train-tokens", str(limits.MAX_TRAIN_TOKENS), "--json"])
    assert result["cost"]["usd_per_million_tokens"] > 0 and result["training"]["seconds"] > 0


def test_a_non_finite_modelled_figure_is_an_error_not_null(capsys, monkeypatch):
    import moelab.cost.estimate as estimate_module

    real = estimate_module.serving_economics

    def overflowing(*args, **kwargs):
        return {**real(*args, **kwargs), "usd_per_million_tokens": math.inf, "kwh_per_million_tokens": math.nan}

    monkeypatch.setattr(estimate_module, "serving_economics", overflowing)
    assert main(["estimate", "mistral-7b", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and one_error_line(captured.err)
    assert "energy.kwh_per_million_tokens" in captured.err and "cost.usd_per_million_tokens" in captured.err


def test_compare_and_decide_refuse_a_non_finite_figure(capsys, monkeypatch):
    import moelab.cost.compare as compare_module
    import moelab.decide as decide_module

    real_side = compare_module._side
    with monkeypatch.context() as patch:
        patch.setattr(compare_module, "_side", lambda *a: {**real_side(*a), "step_seconds": math.inf})
        assert main(["compare", "mistral-7b", "mixtral-8x7b", "--json"]) == 2
        assert "rows[0].a.step_seconds" in capsys.readouterr().err
    real_recommend = decide_module.recommend
    monkeypatch.setattr(decide_module, "recommend", lambda wl: {**real_recommend(wl), "odd": [math.nan]})
    assert main(["decide", "--json"]) == 2
    assert "odd[0]" in capsys.readouterr().err


# --- 3. bench refuses what it cannot build before any calibration -----------------------------------------

LLAMA3_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 128256,
                 "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                 "intermediate_size": 14336, "max_position_embeddings": 131072, "rope_theta": 500000.0,
                 "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}


def _no_calibration(*args, **kwargs):
    raise AssertionError("bench started a calibration before refusing its input")


@pytest.mark.parametrize("extra", [[], ["--shrink-to", "1M"]])
def test_bench_refuses_an_unbuilt_rope_before_calibrating(capsys, monkeypatch, tmp_path, extra):
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("moelab.bench.run.calibrated_hardware", _no_calibration)
    monkeypatch.setattr("moelab.bench.calibrate.calibrated_hardware", _no_calibration)
    config = tmp_path / "cfg-proportional.json"  # a rope type transformers has and moelab.nn does not build
    config.write_text(json.dumps({**LLAMA3_CONFIG, "rope_scaling": {"rope_type": "proportional", "factor": 2.0}}))
    assert main(["bench", str(config), *extra]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "rope_scaling type 'proportional' is not implemented in moelab.nn" in err
    assert str(config) in err


def test_bench_refuses_positions_before_calibrating(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("moelab.bench.run.calibrated_hardware", _no_calibration)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**LLAMA3_CONFIG, "rope_scaling": None, "max_position_embeddings": 64}))
    assert main(["bench", str(config), "--shrink-to", "1M", "--prompt", "60", "--gen", "8"]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "exceeds the 64 positions" in err


# --- 4. --batches has a count cap -------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["compare", "mistral-7b", "mixtral-8x7b"], ["bench", "tiny-dense"]])
def test_batches_beyond_the_sweep_cap_are_refused(capsys, monkeypatch, command):
    monkeypatch.setattr("moelab.bench.run.calibrated_hardware", _no_calibration)
    many = ",".join(str(b) for b in range(1, limits.MAX_SWEEP + 2))
    assert main([*command, "--batches", many, "--json"]) == 2
    captured = capsys.readouterr()
    assert one_error_line(captured.err) and f"at most {limits.MAX_SWEEP}" in captured.err and captured.out == ""


def test_batches_at_the_sweep_cap_still_compare(capsys):
    result = run_json(capsys, ["compare", "mistral-7b", "mixtral-8x7b", "--json",
                               "--batches", ",".join(str(b) for b in range(1, limits.MAX_SWEEP + 1))])
    assert len(result["rows"]) == limits.MAX_SWEEP


# --- 5. one renderer of numbers, one number rule; integers print as integers -------------------------------

def test_one_number_renderer_and_integers_print_as_integers():
    from moelab import validation

    assert not hasattr(limits, "show_number")  # one renderer, in moelab.validation
    assert validation.show_value(4294967296) == "4294967296"
    assert validation.show_value(75497472) == "75497472"
    assert validation.show_value(10**39) == str(10**39)
    assert validation.show_value(10**40) == "an integer of 41 digits"
    assert validation.show_value(10**5000) == "an integer of 5001 digits"
    assert validation.show_value(1e-300) == "1e-300"


def test_seed_past_its_bound_prints_as_an_integer(capsys, tmp_path):
    assert main(["train", "--model", "tiny-dense", "--seed", str(2**32), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "4294967296" in err and "e+09" not in err


def test_check_finite_and_the_config_reader_share_one_rule():
    from moelab.errors import MoelabError
    from moelab.spec.hf import spec_from_config

    tiny = {"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 128}
    rule = limits.number_problem(1e300, 0, limits.MAX_ROPE_THETA, low_open=True)
    with pytest.raises(MoelabError) as config_error:
        spec_from_config({**tiny, "rope_theta": 1e300})
    assert f"field 'rope_theta' {rule}" in str(config_error.value)
    with pytest.raises(MoelabError) as flag_error:
        limits.check_finite("--x", math.nan, 1, limits.MAX_EXPERTS)
    assert str(flag_error.value) == f"--x {limits.number_problem(math.nan, 1, limits.MAX_EXPERTS)}"
    assert str(flag_error.value) == "--x must be a finite number in [1, 65536], got nan"


# --- 6. config.json and YAML messages that say what is wrong -----------------------------------------------

TINY = {"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128}


def _config_error(**changes) -> str:
    from moelab.errors import MoelabError
    from moelab.spec.hf import spec_from_config

    with pytest.raises(MoelabError) as e:
        spec_from_config({**TINY, **changes})
    return str(e.value)


def test_zero_kv_heads_is_an_error_and_absent_or_null_means_all_heads():
    from moelab.spec.hf import spec_from_config

    assert "field 'num_key_value_heads' must be at least 1, got 0" in _config_error(num_key_value_heads=0)
    assert spec_from_config({**TINY, "num_key_value_heads": None}).attention.n_kv_heads == 4
    assert spec_from_config({k: v for k, v in TINY.items() if k != "num_key_value_heads"}).attention.n_kv_heads == 4
    assert spec_from_config(TINY).attention.n_kv_heads == 2


def test_zero_expert_groups_are_an_error():
    from moelab.errors import MoelabError
    from moelab.spec.hf import spec_from_config
    from moelab.spec.presets import model_presets

    raw = model_presets()["deepseek-v3"]  # the bundled config.json
    assert spec_from_config(raw).moe.n_group == raw["n_group"] > 1
    with pytest.raises(MoelabError, match="field 'n_group' must be at least 1, got 0"):
        spec_from_config({**raw, "n_group": 0})


def test_a_null_required_field_says_null_not_missing():
    msg = _config_error(num_hidden_layers=None)
    assert "field 'num_hidden_layers' must be an integer, got null" in msg and "missing" not in msg


@pytest.mark.parametrize("text", ["name: x\n<<: {gpus: 8}\n", "base: {a: 1}\nother:\n  <<: {b: 2}\n",
                                  "a: !!merge x\n"])
def test_yaml_merge_keys_are_refused_by_name(text):
    from moelab.errors import MoelabError
    from moelab.userfile import parse_yaml

    with pytest.raises(MoelabError) as e:
        parse_yaml(text, "w.yaml")
    assert "YAML merge keys (<<) are not accepted" in str(e.value) and "constructor" not in str(e.value)
    assert str(e.value).startswith("w.yaml: ")
