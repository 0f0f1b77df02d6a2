"""The command line: JSON contracts, tables, and one-line errors with exit code 2."""

import itertools
import json
import subprocess
import sys

import pytest

from moelab.cli import main
from moelab.cost.plan import Plan

ESTIMATE_KEYS = [
    "params.total", "params.active", "memory.weights_bytes", "memory.kv_cache_bytes", "memory.total_bytes",
    "memory.min_gpus", "prefill.seconds", "prefill.bound", "decode.step_seconds", "decode.tokens_per_second",
    "decode.bound", "decode.distinct_experts_per_layer", "decode.crossover_batch", "dense_equivalent.heuristic",
    "dense_equivalent.workload", "energy.joules_per_million_tokens", "cost.usd_per_million_tokens",
]


def run_json(capsys, *args):
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def dig(obj, dotted):
    for key in dotted.split("."):
        obj = obj[key]
    return obj


def test_estimate_json_contract(capsys):
    r = run_json(capsys, "estimate", "mixtral-8x7b", "--hardware", "H100-SXM", "--batch", "8")
    for key in ESTIMATE_KEYS:
        dig(r, key)  # present
    assert r["decode"]["bound"] in ("memory", "compute") and r["prefill"]["bound"] in ("memory", "compute")
    assert r["decode"]["distinct_experts_per_layer"] == pytest.approx(8 * (1 - (1 - 2 / 8) ** 8))
    assert r["params"]["total"] == 46_702_792_704
    assert r["memory"]["min_gpus"] == 2  # 93 GB of bf16 weights do not fit one 80 GB H100


def test_estimate_flags(capsys, tmp_path):
    base = run_json(capsys, "estimate", "llama-3-8b")
    moe = run_json(capsys, "estimate", "llama-3-8b", "--as-moe", "8x2")
    assert moe["params"]["total"] > 5 * base["params"]["total"]
    fine = run_json(capsys, "estimate", "llama-3-8b", "--as-moe", "8x2", "--fine-grained", "4", "--shared", "2")
    # the same expert parameters, split finer; only the router grows (30 experts instead of 8, per layer)
    router_growth = 32 * 4096 * (30 - 8)
    assert fine["params"]["total"] == moe["params"]["total"] + router_growth
    assert fine["params"]["active"] == moe["params"]["active"] + router_growth
    int4 = run_json(capsys, "estimate", "llama-3-8b", "--dtype", "int4", "--kv-dtype", "fp8")
    assert int4["memory"]["weights_bytes"] < 0.4 * base["memory"]["weights_bytes"]
    assert int4["memory"]["kv_cache_bytes"] == pytest.approx(base["memory"]["kv_cache_bytes"] / 2)
    many = run_json(capsys, "estimate", "deepseek-v3", "--gpus", "16", "--batch", "64", "--prompt", "1000")
    assert many["parallel"]["gpus"] == 16 and Plan.parse(many["parallel"]["plan"]).gpus == 16
    assert many["parallel"]["plan"] in [p["plan"] for p in many["parallel"]["plans"]]
    hw = tmp_path / "gpu.json"
    hw.write_text(json.dumps({"peak_tflops": {"bf16": 100}, "memory_gb": 200, "memory_bandwidth_gbps": 1000,
                              "tdp_watts": 300, "usd_per_hour": 1.0}))
    custom = run_json(capsys, "estimate", "llama-3-8b", "--hardware", str(hw))
    assert custom["hardware"] == "gpu" and custom["memory"]["min_gpus"] == 1


def test_compare_finds_the_flip(capsys):
    """The per-GPU decode winners of a dense and a MoE model on 8 GPUs each, recomputed here from `estimate` one
    batch at a time, change exactly where `compare` reports its flips (the flip batch is the first batch of the
    new winner, found between the listed batches)."""
    batches = [1, 8, 32, 128, 512]
    for (a, b), gpus in itertools.product((("llama-3-70b", "mixtral-8x22b"), ("llama-3-8b", "qwen3-30b-a3b"),
                                           ("mistral-7b", "mixtral-8x7b")), ("8", "4")):
        r = run_json(capsys, "compare", a, b, "--gpus", gpus, "--batches", ",".join(map(str, batches)))
        if r["flips"]:
            break
    assert r["flips"], "one of these pairs flips inside the sweep on H100s (else the test checks nothing)"
    assert [row["batch"] for row in r["rows"]] == batches

    def per_gpu(model, batch):
        """(fits, tokens/s per GPU): a model that does not fit its GPUs ranks below one that does."""
        e = run_json(capsys, "estimate", model, "--gpus", gpus, "--batch", str(batch))
        assert e["parallel"]["gpus"] == int(gpus)
        return e["memory"]["fits"], e["decode"]["tokens_per_second"] / int(gpus)

    listed = [a if per_gpu(a, n) >= per_gpu(b, n) else b for n in batches]
    assert [row["winner"] for row in r["rows"]] == ["a" if w == a else "b" for w in listed]
    assert len(r["flips"]) == sum(x != y for x, y in zip(listed, listed[1:], strict=False))
    for flip in r["flips"]:
        batch = flip["batch"]
        assert per_gpu(flip["to"], batch) >= per_gpu(flip["from"], batch)
        assert per_gpu(flip["from"], batch - 1) >= per_gpu(flip["to"], batch - 1)


def test_tables_render(capsys):
    for args in (["models"], ["hardware"], ["estimate", "qwen3-30b-a3b"], ["compare", "mistral-7b", "mixtral-8x7b"]):
        assert main(args) == 0
    text = capsys.readouterr().out
    assert "deepseek-v3" in text and "MI300X" in text and "winner" in text


@pytest.mark.parametrize(
    "args",
    [
        ["estimate", "no-such-model"],
        ["estimate", "mixtral-8x7b", "--hardware", "TPU"],
        ["estimate", "mixtral-8x7b", "--batch", "-3"],
        ["estimate", "mixtral-8x7b", "--batch", "0"],
        ["estimate", "mixtral-8x7b", "--dtype", "fp4"],
        ["estimate", "mixtral-8x7b", "--as-moe", "8x2"],
        ["estimate", "llama-3-8b", "--as-moe", "8x9"],
        ["estimate", "llama-3-8b", "--as-moe", "eight"],
        ["estimate", "llama-3-8b", "--shared", "2"],
        ["estimate", "mixtral-8x7b", "--gpus", "0"],
        ["estimate"],
        ["compare", "mixtral-8x7b", "mistral-7b", "--batches", "1,x"],
        ["compare", "mixtral-8x7b", "mistral-7b", "--batches", "0"],
        ["no-such-command"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("moelab: error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("content, field", [
    ("{broken", "not valid JSON"),
    ('{"model_type": "mixtral"}', "missing field"),
    ('{"model_type": "mixtral", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, '
     '"vocab_size": 10, "intermediate_size": 32, "num_local_experts": 4, "num_experts_per_tok": 5}', "top_k"),
])
def test_bad_config_file(capsys, tmp_path, content, field):
    path = tmp_path / "config.json"
    path.write_text(content)
    assert main(["estimate", str(path)]) == 2
    err = capsys.readouterr().err
    assert field in err and err.count("\n") == 1


def test_console_script_and_no_torch():
    """The installed `moelab` runs; the engine path never imports torch."""
    code = ("import sys; from moelab.cli import main; main(['estimate', 'deepseek-v3', '--json']); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["params"]["total"] > 6e11
