"""The issue's own reproducers as explicit fuzz cases: every run starts with them, then draws the rest.

Issue 10 names the inputs that broke moelab (`--skew inf`, `--capacity-factor nan`, `--seed 2**70`, a `[/red]`
name, `intra_node_gbps: 0`, `sources` as a list, `gpus_per_node: 2.7`, `num_hidden_layers: 1e30`, /dev/zero
and a FIFO as config.json, alias bombs, ...). They run as Hypothesis explicit examples under the same contract;
a few are known-valid (`must_succeed`: the README's workload, a hardware name holding rich markup, YAML 1.2's
`1e3`), so a fix that refuses good input shows too.
"""

from __future__ import annotations

import json

from fuzz_cases import DIR, FIFO, Case, tiny_spec_dict
from fuzz_inputs import (
    DIGITS_5000,
    HARDWARE_PRESETS,
    MODEL_PRESETS,
    Doc,
    Raw,
    alias_bomb_yaml,
    deep_json,
    tiny_config,
    to_yaml,
)

README_WORKLOAD = b"""name: chat-assistant
hardware: H100-SXM          # a preset or a hardware file
gpus: 8
memory_budget_gb: 640       # optional: default gpus x GPU memory
latency_p99_ms: 50          # per output token
throughput_tokens_per_s: 3000
batch: 32                   # typical decode batch
prompt: 1024
gen: 256
task_mix: {reasoning: 0.25, knowledge: 0.35, multilingual: 0.15, code: 0.25}
training: fine-tune         # or scratch
train_tokens: 2e9
quality_floor_b: 25         # smallest acceptable dense-equivalent size, billions
candidates: [mixtral-8x7b, llama-3-70b, mistral-7b, qwen3-235b-a22b, deepseek-v3]
"""
SMALL_WORKLOAD = README_WORKLOAD.replace(b"llama-3-70b, mistral-7b, qwen3-235b-a22b, deepseek-v3", b"mistral-7b")


def hw_yaml(**override) -> Doc:
    """The H100-SXM preset as a user's YAML file, with fields replaced (a value of None drops the field)."""
    fields = {**HARDWARE_PRESETS["H100-SXM"], **override}
    return Doc(to_yaml([(k, v) for k, v in fields.items() if v is not None]).encode())


def config(name: str = "mixtral-8x7b", **override) -> Doc:
    return Doc(json.dumps({**MODEL_PRESETS[name], **override}).encode())


def raw_config(name: str, key: str, raw: str) -> Doc:
    """A preset's config.json with one value written as raw text (NaN, a 5000-digit int, deep nesting)."""
    return Doc(json.dumps({**MODEL_PRESETS[name], key: "@@"}).replace('"@@"', raw).encode())


def tiny_llama(**override) -> Doc:
    return Doc(json.dumps({**tiny_config(), **override}).encode())


# a rope type transformers has and moelab.nn does not build (llama3, linear, dynamic, yarn, longrope are built)
UNBUILT_ROPE = {"rope_scaling": {"rope_type": "proportional", "factor": 2.0}}
INTRA_ZERO_WORKLOAD = {"wk.yaml": Doc(SMALL_WORKLOAD.replace(b"hardware: H100-SXM", b"hardware: gpu.yaml")),
                       "gpu.yaml": hw_yaml(intra_node_gbps=0)}


QUICK_BENCH = ["--batches", "1", "--prompt", "8", "--gen", "2", "--repeats", "1"]


def case(command: str, argv: list[str], files: dict | None = None, invalid: str | None = None, **kw) -> Case:
    json_out = "--json" in argv or command == "schema"
    writes = kw.pop("writes", [])
    return Case(command, [command, *argv], files or {}, [invalid] if invalid else [], json_out, writes, explicit=True,
                **kw)


def seeds() -> dict[str, list[Case]]:
    ok = {"must_succeed": True}
    estimate = [
        case("estimate", ["mixtral-8x7b", "--skew", "inf", "--json"], invalid="--skew inf"),
        case("estimate", ["mixtral-8x7b", "--skew", "nan", "--json"], invalid="--skew nan"),
        case("estimate", ["mixtral-8x7b", "--gpus", "1e18"], invalid="--gpus 1e18"),
        case("estimate", ["mixtral-8x7b", "--gpus", str(2**70), "--json"], invalid="--gpus 2**70"),
        case("estimate", ["mixtral-8x7b", "--train-tokens", "1e300", "--json"], invalid="--train-tokens 1e300"),
        case("estimate", ["mixtral-8x7b", "--mfu", "nan", "--json"], invalid="--mfu nan"),
        case("estimate", ["mixtral-8x7b", "-H", "hw.yaml"], {"hw.yaml": hw_yaml(name="[/red]")}, **ok),
        case("estimate", ["mixtral-8x7b", "-H", "hw.yaml", "--json"], {"hw.yaml": hw_yaml(memory_gb=Raw("1e3"))},
             **ok),
        case("estimate", ["mixtral-8x7b", "-H", "hw.yaml", "--json"], {"hw.yaml": hw_yaml(intra_node_gbps=0)},
             invalid="hardware intra_node_gbps: 0"),
        case("estimate", ["mixtral-8x7b", "-H", "hw.yaml", "--json"],
             {"hw.yaml": hw_yaml(memory_bandwidth_gbps=Raw(".nan"))}, invalid="hardware memory_bandwidth_gbps: .nan"),
        case("estimate", ["mixtral-8x7b", "-H", "hw.yaml"], {"hw.yaml": hw_yaml(sources=["datasheet"])},
             invalid="hardware sources: a list"),
        case("estimate", ["mixtral-8x7b", "-H", "hw.yaml", "--json"], {"hw.yaml": hw_yaml(gpus_per_node=2.7)},
             invalid="hardware gpus_per_node: 2.7"),
        case("estimate", ["mixtral-8x7b", "-H", "hw.yaml", "--json"],
             {"hw.yaml": hw_yaml(memory_bandwith_gbps=1000)}, invalid="hardware: typo memory_bandwith_gbps"),
        case("estimate", ["mixtral-8x7b", "-H", "hw.yaml"],
             {"hw.yaml": Doc(hw_yaml().data + b"bomb:\n  " + alias_bomb_yaml(8).replace("\n", "\n  ").encode())},
             invalid="hardware: an 8-level alias bomb"),
        case("estimate", ["mixtral-8x7b", "-H", "hw.yaml"],
             {"hw.yaml": Doc(hw_yaml().data + b"bomb:\n  " + alias_bomb_yaml(10).replace("\n", "\n  ").encode())},
             invalid="hardware: a 10-level alias bomb"),
        case("estimate", ["mixtral-8x7b", "-H", "hw.yaml"], {"hw.yaml": Doc(hw_yaml().data + b"# caf\xe9\n")},
             invalid="hardware: non-UTF-8 YAML"),
        case("estimate", ["mixtral-8x7b", "-H", "hw.json"],
             {"hw.json": Doc(json.dumps(HARDWARE_PRESETS["H100-SXM"]).replace("3350", "NaN").encode())},
             invalid="hardware: NaN in JSON"),
        case("estimate", ["m.json", "--json"], {"m.json": raw_config("mistral-7b", "num_hidden_layers", "1e30")},
             invalid="config num_hidden_layers: 1e30"),
        case("estimate", ["m.json"], {"m.json": raw_config("mistral-7b", "hidden_size", DIGITS_5000)},
             invalid="config: a 5000-digit int"),
        case("estimate", ["m.json"], {"m.json": raw_config("mistral-7b", "extra", deep_json(100000))},
             invalid="config: nesting 100000"),
        case("estimate", ["m.json"], {"m.json": raw_config("mistral-7b", "rms_norm_eps", "NaN")},
             invalid="config rms_norm_eps: NaN"),
        case("estimate", ["m.json"], {"m.json": config("mistral-7b", rope_theta="abc")},
             invalid="config rope_theta: 'abc'"),
        case("estimate", ["m.json"], {"m.json": config("mixtral-8x7b", num_experts_per_tok=9)},
             invalid="config: top_k 9 of 8 experts"),
        case("estimate", ["m.json"], {"m.json": Doc(config("mistral-7b").data[:-1] + b', "hidden_size": 1}')},
             invalid="config: a duplicate key"),
        case("estimate", ["c"], {"c/config.json": DIR}, invalid="config.json is a directory"),
        case("estimate", ["/dev/zero"], invalid="/dev/zero as config.json"),
        case("estimate", ["f.json"], {"f.json": FIFO}, invalid="a FIFO as config.json"),
    ]
    compare = [
        case("compare", ["mistral-7b", "mixtral-8x7b", "--skew", "inf", "--json"], invalid="--skew inf"),
        case("compare", ["mistral-7b", "mixtral-8x7b", "--batches", "0,nan"], invalid="--batches 0,nan"),
        case("compare", ["mistral-7b", "mixtral-8x7b", "--batches", f"1,{2**70}", "--json"],
             invalid="--batches 2**70"),
        case("compare", ["mistral-7b", "mixtral-8x7b", "-H", "hw.yaml"], {"hw.yaml": hw_yaml(name="[/red]")}, **ok),
        case("compare", ["mistral-7b", "mistral-7b", "--as-moe", "8x2", "--json"], **ok),
    ]
    decide = [
        case("decide", ["--workload", "wl.yaml", "--json"], {"wl.yaml": Doc(README_WORKLOAD)}, **ok),
        case("decide", ["--workload", "wl.yaml"], {"wl.yaml": Doc(SMALL_WORKLOAD.replace(
            b"name: chat-assistant", b'name: "[/red]"'))}, **ok),
        case("decide", ["--workload", "wl.yaml", "--json"], {"wl.yaml": Doc(SMALL_WORKLOAD.replace(
            b"throughput_tokens_per_s: 3000\n", b""))}, **ok),
        case("decide", ["-w", "wl.yaml", "--json"], {"wl.yaml": Doc(SMALL_WORKLOAD + b"gpus: 16\n")},
             invalid="workload: a duplicate key"),
        case("decide", ["-w", "wl.yaml", "--json"], {"wl.yaml": Doc(SMALL_WORKLOAD.replace(b"gpus: 8", b"gpus: 2.7"))},
             invalid="workload gpus: 2.7"),
        case("decide", ["-w", "wl.yaml", "--json"], {"wl.yaml": Doc(SMALL_WORKLOAD.replace(b"gpus: 8", b"gpus: 1e18"))},
             invalid="workload gpus: 1e18"),
        case("decide", ["-w", "wl.yaml", "--json"], {"wl.yaml": Doc(SMALL_WORKLOAD.replace(
            b"latency_p99_ms: 50", b"latency_p99_ms: .nan"))}, invalid="workload latency_p99_ms: .nan"),
        case("decide", ["-w", "wk.yaml", "--json"], dict(INTRA_ZERO_WORKLOAD),
             invalid="workload hardware intra_node_gbps: 0"),
        case("decide", ["-w", "wl.yaml"], {"wl.yaml": Doc(SMALL_WORKLOAD + b"bomb:\n  " + alias_bomb_yaml(9).replace(
            "\n", "\n  ").encode())}, invalid="workload: an alias bomb"),
        case("decide", ["-w", "wl.yaml"], {"wl.yaml": Doc(SMALL_WORKLOAD.replace(b"chat-assistant", b"caf\xe9"))},
             invalid="workload: non-UTF-8"),
        case("decide", ["-w", "wl.yaml"], {"wl.yaml": Doc(SMALL_WORKLOAD.replace(b"latency_p99_ms", b"latency_p99"))},
             invalid="workload: typo latency_p99"),
    ]
    calibrate = [
        case("calibrate", ["--device", "gpu"], invalid="--device gpu"),
        case("calibrate", ["--out", "outdir"], {"outdir": DIR}, invalid="--out a directory", writes=["outdir"]),
        case("calibrate", ["--json"], calibration="valid", **ok),
        case("calibrate", ["--out", "hw/out.json", "--json"], calibration="valid", writes=["hw/out.json"], **ok),
        case("calibrate", ["--json"], calibration="corrupt", may_reach_work=True),
    ]
    bench = [
        case("bench", ["tiny-dense", "-H", "H100-SXM", "--prompt", "100000"],
             invalid="--prompt 100000 on a 1024-position model"),
        case("bench", ["m.json", "-H", "H100-SXM"], {"m.json": tiny_llama(**UNBUILT_ROPE)},
             invalid="an unbuilt rope type in bench"),
        case("bench", ["tiny-dense", "--dtype", "fp64"], invalid="--dtype fp64"),
        case("bench", ["tiny-dense", "--batches", "0"], invalid="--batches 0"),
        case("bench", ["tiny-dense", "--repeats", "0", "--json"], invalid="--repeats 0"),
        case("bench", ["tiny-dense", "--prompt", "nan"], invalid="--prompt nan"),
        case("bench", ["mixtral-8x7b", "-H", "hw.yaml"], {"hw.yaml": hw_yaml(memory_gb=Raw(".inf"))},
             invalid="hardware memory_gb: .inf"),
        case("bench", ["run", "-H", "H100-SXM", *QUICK_BENCH], {"run/final/meta.json": Doc(json.dumps(
            {"spec": tiny_spec_dict()}).encode()), "run/final/model.safetensors": Doc(b"\x10\x00\x00\x00")},
            invalid="a truncated model.safetensors in a run folder"),
        case("bench", ["hf", "-H", "H100-SXM", *QUICK_BENCH], {"hf/config.json": tiny_llama(),
             "hf/model.safetensors": Doc(b"\xff" * 64)}, invalid="an HF folder with a corrupt safetensors"),
        case("bench", ["hf", "-H", "H100-SXM", *QUICK_BENCH], {"hf/config.json": tiny_llama(),
             "hf/a.safetensors": Doc(b"\x00" * 8), "hf/model.safetensors.index.json": Doc(json.dumps(
                 {"weight_map": {"model.embed_tokens.weight": "../../../../etc/hostname"}}).encode())},
             invalid="an HF index whose shard is outside the folder"),
    ]
    train = [
        case("train", ["--model", "tiny-moe", "--out", "o", "--capacity-factor", "nan"], writes=["o"],
             invalid="--capacity-factor nan"),
        case("train", ["--model", "tiny-dense", "--out", "o", "--seed", str(2**70)], writes=["o"],
             invalid="--seed 2**70"),
        case("train", ["--model", "tiny-dense", "--out", "taken"], {"taken": Doc(b"x")}, writes=["taken"],
             invalid="--out an existing file"),
        case("train", ["--model", "tiny-dense", "--out", "o", "--resume"], writes=["o"],
             invalid="--resume without a checkpoint"),
        case("train", ["--model", "m.json", "--out", "o"], {"m.json": tiny_llama(**UNBUILT_ROPE)}, writes=["o"],
             invalid="an unbuilt rope type in train"),
        case("train", ["--model", "tiny-dense", "--out", "o", "--data", "/dev/zero"], writes=["o"],
             invalid="--data /dev/zero"),
        case("train", ["--model", "tiny-dense", "--out", "o", "--data", "c.txt"], {"c.txt": FIFO}, writes=["o"],
             invalid="--data a FIFO"),
        case("train", ["--model", "tiny-dense", "--out", "o", "--data", "c.txt"], {"c.txt": Doc(b"")}, writes=["o"],
             invalid="--data an empty file"),
        case("train", ["--model", "tiny-dense", "--out", "o", "--steps", str(2**70)], writes=["o"],
             invalid="--steps 2**70"),
    ]
    def spec(name: str) -> Doc:
        return Doc(json.dumps({**tiny_spec_dict(), "name": name}).encode())

    train_compare = [
        case("train-compare", ["a.json", "b.json", "--target-loss", "3", "--out", "o"],
             {"a.json": spec("../../escaped"), "b.json": spec("{CASE}/escaped")}, writes=["o"], may_reach_work=True),
        case("train-compare", ["tiny-dense", "tiny-moe", "--target-loss", "nan", "--out", "o"], writes=["o"],
             invalid="--target-loss nan"),
        case("train-compare", ["tiny-dense", "--target-loss", "3", "--out", "o"], writes=["o"],
             invalid="one model"),
        case("train-compare", ["tiny-dense", "tiny-moe", "--target-loss", "3", "--seed", str(2**70), "--out", "o"],
             writes=["o"], invalid="--seed 2**70"),
    ]
    runs = [
        case("runs", ["--json"], store="garbage"), case("runs", [], store="directory"),
        case("runs", ["--json"], store="corrupt-row"), case("runs", [str(2**70), "--json"], store="rows"),
        case("runs", ["1", "--json"], store="rows", **ok),
        case("runs", ["--json"], store="locked"),  # another process writing: the answer may wait, not 5 s
    ]
    study = [
        case("study", ["--workload", "wk.yaml", "--out", "o", "--quick"], dict(INTRA_ZERO_WORKLOAD), writes=["o"],
             invalid="study workload hardware intra_node_gbps: 0"),
        case("study", ["--out", "taken", "--quick"], {"taken": Doc(b"x")}, writes=["taken"],
             invalid="--out an existing file"),
        case("study", ["--workload", "/dev/zero", "--quick"], writes=["runs/study"], invalid="--workload /dev/zero"),
        case("study", ["--workload", "wl.yaml", "--quick"], {"wl.yaml": Doc(SMALL_WORKLOAD + b"gpus: 4\n")},
             writes=["runs/study"], invalid="study workload: a duplicate key"),
    ]
    schema = [
        case("schema", ["workload"], **ok), case("schema", ["hardware"], **ok),
        case("schema", ["config"], invalid="schema config"),
    ]
    models = [case("models", ["--json"], **ok), case("models", [], **ok)]
    hardware = [case("hardware", ["--json"], **ok), case("hardware", [], **ok)]
    return {"estimate": estimate, "compare": compare, "decide": decide, "calibrate": calibrate, "bench": bench,
            "train": train, "train-compare": train_compare, "runs": runs, "study": study, "schema": schema,
            "models": models, "hardware": hardware}

