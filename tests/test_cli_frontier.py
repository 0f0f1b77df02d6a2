"""`moelab frontier`: the JSON contract (per model, the points with exactly the documented keys), the table, the
PNG written to the named path and nowhere else, and one-line errors with exit code 2."""

import json

import pytest

from moelab.cli import main
from moelab.cost.frontier import frontier
from moelab.spec import load_hardware, load_model

KEYS = {"plan", "concurrency", "tokens_per_second_per_user", "tokens_per_second_per_gpu", "ttft_ms", "tpot_ms"}
ARGS = ["--hardware", "H100-SXM", "--gpus", "8", "--input", "512", "--output", "128"]


def test_json_gives_each_models_frontier_with_exactly_the_keys(capsys):
    assert main(["frontier", "mixtral-8x7b", "llama-3-70b", *ARGS, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["model"] for m in out["models"]] == ["mixtral-8x7b", "llama-3-70b"]
    assert [m["kind"] for m in out["models"]] == ["moe", "dense"]
    assert out["hardware"] == "H100-SXM" and out["gpus"] == 8 and "modelled" in out["basis"]
    hw = load_hardware("H100-SXM")
    for m in out["models"]:
        assert m["points"] and all(set(p) == KEYS for p in m["points"])
        # the library's frontier, point for point (the CLI adds nothing and drops nothing)
        assert m["points"] == [p.to_dict() for p in frontier(load_model(m["model"]), hw, 8, 512, 128)]


def test_aliases_and_table(capsys):
    assert main(["frontier", "mistral-7b", "--gpus", "2", "--prompt", "256", "--gen", "64", "--json"]) == 0
    via_alias = json.loads(capsys.readouterr().out)
    assert main(["frontier", "mistral-7b", "--gpus", "2", "--input", "256", "--output", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == via_alias
    assert main(["frontier", "mistral-7b", "--gpus", "2", "--input", "256", "--output", "64"]) == 0
    text = capsys.readouterr().out
    assert "mistral-7b (dense) on 2 x H100-SXM" in text and "modelled means" in text
    first = via_alias["models"][0]["points"][0]
    assert f"{first['tokens_per_second_per_user']:.1f}" in text and first["plan"] in text


def test_plot_writes_one_png_at_the_named_path_only(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "out" / "frontier.png"
    target.parent.mkdir()
    assert main(["frontier", "mixtral-8x7b", "llama-3-70b", *ARGS, "--plot", str(target)]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 10_000
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["out", "out/frontier.png"]
    assert f"plot: {target}" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["mistral-7b", "--gpus", "0"], "--gpus"),
    (["no-such-model"], "no-such-model"),
    (["deepseek-v3", "--gpus", "1"], "fits no plan"),
    (["mistral-7b", "mistral-7b"], "twice"),
    (["mistral-7b", "--dtype", "fp7"], "--dtype"),
    (["mistral-7b", "--input", "0"], "--input"),
    (["mistral-7b", "--plot", "/nonexistent-dir/x.png"], "--plot"),
])
def test_bad_input_is_one_line_and_exit_2(args, words, capsys, tmp_path):
    assert main(["frontier", *args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("moelab: error:") and "\n" not in err and words in err
    assert "Traceback" not in captured.err and captured.out == ""


def test_plot_refuses_a_folder(tmp_path, capsys):
    assert main(["frontier", "mistral-7b", "--gpus", "1", "--plot", str(tmp_path)]) == 2
    assert "--plot" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
