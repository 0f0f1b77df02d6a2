"""Workload files: the default is valid, and every bad field is named in one line."""

import pytest

from moelab.cli import main
from moelab.decide.workload import DEFAULT, TASKS, default_workload, load_workload, workload_from_dict
from moelab.errors import MoelabError


def test_default_workload_is_valid_and_normalised():
    wl = default_workload()
    assert wl.gpus == 8 and wl.batch == 32 and wl.training == "fine-tune"
    assert wl.memory_budget_gb == pytest.approx(8 * 80)
    assert set(wl.task_mix) == set(TASKS) and sum(wl.task_mix.values()) == pytest.approx(1.0)
    assert "mixtral-8x7b" in wl.candidates and "llama-3-70b" in wl.candidates


def test_yaml_file_round_trip(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("hardware: H200\ngpus: 4\nlatency_p99_ms: 40\nbatch: 16\nprompt: 512\ngen: 128\n"
                    "task_mix: {reasoning: 2, code: 2}\ntraining: scratch\ncandidates: [mixtral-8x7b, llama-3-70b]\n"
                    "memory_budget_gb: 300\nbatches: [1, 16, 64]\n")
    wl = load_workload(path)
    assert wl.task_mix == {"reasoning": 0.5, "knowledge": 0.0, "multilingual": 0.0, "code": 0.5}
    assert wl.memory_budget_gb == 300 and wl.batches == (1, 16, 64) and wl.train_tokens == 1e12


@pytest.mark.parametrize("change, field", [
    ({"gpus": 0}, "gpus"),
    ({"gpus": "eight"}, "gpus"),
    ({"latency_p99_ms": -5}, "latency_p99_ms"),
    ({"batch": 2.5}, "batch"),
    ({"task_mix": {"code": "lots"}}, "task_mix.code (must be a number, got 'lots')"),
    ({"task_mix": {"reasoning": -1}}, "task_mix.reasoning"),
    ({"task_mix": {"poetry": 1}}, "unknown key 'task_mix.poetry'"),
    ({"task_mix": {"code": 0}}, "task_mix"),
    ({"training": "pretrain"}, "training"),
    ({"candidates": []}, "candidates"),
    ({"candidates": ["mixtral-8x7b", "gpt-5"]}, "candidates[1]"),
    ({"batches": [0, 8]}, "batches"),
    ({"dtype": "fp3"}, "dtype"),
    ({"memory_budget_gb": 0}, "memory_budget_gb"),
    ({"throughput_tokens_per_s": "fast"}, "throughput_tokens_per_s"),
    ({"hardware": "TPU-v9"}, "hardware"),
    ({"latancy_p99_ms": 50}, "unknown key 'latancy_p99_ms' (did you mean 'latency_p99_ms'"),
])
def test_bad_fields_are_named(change, field):
    with pytest.raises(MoelabError, match="workload.yaml: " + field.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        workload_from_dict({**DEFAULT, **change}, "workload.yaml")


def test_missing_field_is_named():
    raw = {k: v for k, v in DEFAULT.items() if k != "hardware"}
    with pytest.raises(MoelabError, match="missing key 'hardware'"):
        workload_from_dict(raw, "w.yaml")


def test_missing_file_and_bad_yaml_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus: [1, 2\n")
    assert main(["decide", "--workload", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and err.count("\n") == 1
    assert main(["decide", "--workload", str(tmp_path / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert main(["decide", "--workload", str(tmp_path / "list.yaml")]) == 2
    assert "expected a mapping" in capsys.readouterr().err


def test_cli_names_the_bad_field(tmp_path, capsys):
    path = tmp_path / "workload.yaml"
    path.write_text("hardware: H100-SXM\ngpus: 8\nlatency_p99_ms: 50\nbatch: 8\nprompt: 10\ngen: 10\n"
                    "task_mix: {code: lots}\ntraining: scratch\ncandidates: [mistral-7b]\n")
    assert main(["decide", "--workload", str(path)]) == 2
    assert capsys.readouterr().err.strip() == \
        "moelab: error: workload.yaml: task_mix.code (must be a number, got 'lots')"
