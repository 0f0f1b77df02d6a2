"""`moelab bench` on the command line: JSON, tables, and one-line errors with exit code 2."""

import json

import pytest

from moelab.cli import main


def test_bench_json_and_table(capsys, hw_file):
    args = ["bench", "tiny-dense", "--batches", "1,2", "--prompt", "8", "--gen", "2", "--repeats", "1",
            "--hardware", hw_file]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["phase"] for r in out["rows"]} == {"prefill", "decode"} and out["flip"] is None
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "measured" in text and "median |error|" in text


@pytest.mark.parametrize("args, message", [
    (["bench", "no-such-model"], "unknown model"),
    (["bench", "tiny-dense", "--batches", "1,-2"], "--batches"),
    (["bench", "tiny-dense", "--batches", "x"], "--batches"),
    (["bench", "tiny-dense", "--device", "cuda"], "cuda"),
    (["bench", "tiny-dense", "--device", "tpu"], "--device"),
    (["bench", "mixtral-8x7b", "--shrink-to", "lots"], "--shrink-to"),
    (["bench", "mixtral-8x7b", "--shrink-to", "-5M"], "--shrink-to"),
    (["bench", "mixtral-8x7b"], "--shrink-to"),  # far too large for this machine
    (["bench", "tiny-dense", "--dtype", "int4"], "--dtype"),
    (["bench", "tiny-dense", "--prompt", "0"], "prompt"),
    (["calibrate", "--device", "cuda"], "cuda"),
])
def test_bad_input_exits_2_with_one_line(capsys, args, message, hw_file):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if args[0] == "bench":
        args = [*args, "--hardware", hw_file]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("moelab: error:") and err.count("\n") == 1 and message in err
