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
    assert result["model"] == "deepseek-v3"
    assert result["dense_equivalent"]["workload_detail"]["ffn_dim"] > limits.MAX_FFN


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
    with pytest.raises(Exception, match="ffn_dim must be at most"):
        spec_from_dict({**raw, "ffn_dim": limits.MAX_FFN + 1, "bounded": False})
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                                  "vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32,
                                  "intermediate_size": limits.MAX_FFN + 1, "num_attention_heads": 32,
                                  "num_key_value_heads": 8}))
    assert main(["estimate", str(config), "--json"]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and ("intermediate_size" in err or "ffn_dim" in err)
