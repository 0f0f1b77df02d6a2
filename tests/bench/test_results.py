"""moelab.bench.results: `vllm bench serve` result files, `moelab bench --json` files and fit manifests.

The vLLM fixtures carry the keys vllm/benchmarks/serve.py writes with --save-result (vllm-project/vllm, `main`:
`result_json` in `main_async` -- date, endpoint_type, backend, label, model_id, tokenizer_id, num_prompts,
request_rate ("inf" when unlimited), burstiness, max_concurrency -- merged with `benchmark()`'s `result` --
duration, completed, failed, total_input_tokens, total_output_tokens, request_throughput, request_goodput,
output_throughput, total_token_throughput, max_output_tokens_per_s, max_concurrent_requests, rtfx, latencies,
queue_times and mean_/median_/std_/pNN_ of ttft, tpot, itl and e2el in ms). With --append-result every run is one
JSON object on its own line."""

from __future__ import annotations

import json
import math

import pytest

from moelab.bench.results import (
    manifest_measurements,
    moelab_measurements,
    read_moelab_bench,
    read_vllm_serve,
    read_vllm_serve_runs,
    vllm_measurements,
)
from moelab.errors import MoelabError


def vllm_run(concurrency=64, **changes):
    """One run as `vllm bench serve --save-result` writes it (random dataset, 1000 in / 1000 out, 640 prompts)."""
    run = {
        "date": "20260101-120000", "endpoint_type": "vllm", "backend": "vllm", "label": None,
        "model_id": "meta-llama/Llama-3.3-70B-Instruct", "tokenizer_id": "meta-llama/Llama-3.3-70B-Instruct",
        "num_prompts": 640, "request_rate": "inf", "burstiness": 1.0, "max_concurrency": concurrency,
        "duration": 181.7, "completed": 640, "failed": 0, "total_input_tokens": 640_000,
        "total_output_tokens": 638_912, "request_throughput": 3.52, "request_goodput": None,
        "output_throughput": 3516.3, "total_token_throughput": 7038.6, "max_output_tokens_per_s": 4032.0,
        "max_concurrent_requests": 64, "rtfx": 0.0, "latencies": [17.9] * 4, "queue_times": [0.0] * 4,
        "mean_ttft_ms": 612.4, "median_ttft_ms": 588.1, "std_ttft_ms": 101.2, "p99_ttft_ms": 1033.9,
        "mean_tpot_ms": 17.6, "median_tpot_ms": 17.5, "std_tpot_ms": 0.8, "p99_tpot_ms": 19.9,
        "mean_itl_ms": 17.6, "median_itl_ms": 16.9, "std_itl_ms": 5.1, "p99_itl_ms": 41.0,
        "mean_e2el_ms": 18203.0, "median_e2el_ms": 18150.0, "std_e2el_ms": 310.0, "p99_e2el_ms": 18904.0,
    }
    run.update(changes)
    return run


def moelab_bench_file():
    """The shape of `moelab bench --json` (bench.run.bench): rows per model, phase and batch."""
    rows = [{"model": model, "phase": phase, "batch": b, "prompt": 128,
             "context": 128 if phase == "prefill" else 143.5,
             "measured_s": (0.02 if phase == "prefill" else 0.004) * (1 + b / 16), "predicted_s": 0.01,
             "rel_error": 0.1}
            for model in ("tiny-moe", "tiny-dense") for b in (1, 4) for phase in ("prefill", "decode")]
    return {"device": "cpu", "dtype": "fp32", "hardware": {"name": "cpu-calibrated"}, "models": [],
            "workload": {"batches": [1, 4], "prompt": 128, "gen": 32, "repeats": 5, "quick": False},
            "rel_error_definition": "(predicted_s - measured_s) / measured_s", "rows": rows, "summary": {}}


@pytest.fixture()
def write(tmp_path):
    def _write(name, obj):
        path = tmp_path / name
        path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return path
    return _write


def test_reads_a_vllm_run_in_its_own_keys(write):
    run = read_vllm_serve(write("r.json", vllm_run()))
    assert run["completed"] == 640 and run["max_concurrency"] == 64 and math.isinf(run["request_rate"])
    assert run["mean_ttft_ms"] == 612.4 and run["p99_itl_ms"] == 41.0 and run["output_throughput"] == 3516.3
    assert run["model_id"] == "meta-llama/Llama-3.3-70B-Instruct"
    assert "latencies" not in run  # per-request lists are not figures


def test_vllm_measurements_in_the_manifests_setting(write):
    run = read_vllm_serve(write("r.json", vllm_run()))
    ms = vllm_measurements(run, source="r.json", model="llama-3-70b", hardware="H100-SXM", plan="tp2", dtype="fp8")
    assert [(m.metric, m.value) for m in ms] == [("ttft_ms", 612.4), ("tpot_ms", 17.6),
                                                 ("output_tokens_per_second", 3516.3)]
    m = ms[0]
    assert (m.mode, m.concurrency, m.num_prompts, m.input, m.output, m.kv_dtype) == ("serving", 64, 640, 1000, 998,
                                                                                    "fp8")
    per_gpu = vllm_measurements(run, source="r.json", model="llama-3-70b", hardware="H100-SXM", plan="tp2",
                                dtype="fp8", metrics=["output_tokens_per_second_per_gpu", "itl_ms"],
                                statistic="median")
    assert [m.value for m in per_gpu] == [3516.3 / 2, 16.9]
    uncapped = read_vllm_serve(write("o.json", vllm_run(concurrency=None)))
    assert vllm_measurements(uncapped, source="o", model="x", hardware="H", plan="tp1", dtype="bf16")[0].mode == \
        "offline"


def test_appended_runs_one_per_line(write):
    text = "\n".join(json.dumps(vllm_run(c)) for c in (1, 8, 64))
    path = write("sweep.json", text)
    assert [r["max_concurrency"] for r in read_vllm_serve_runs(path)] == [1, 8, 64]
    with pytest.raises(MoelabError, match="holds 3 runs"):
        read_vllm_serve(path)


def test_nan_in_an_unused_figure_is_read_a_used_one_refused(write):
    path = write("nan.json", json.dumps(vllm_run(std_ttft_ms=float("nan"), mean_tpot_ms=float("nan"))))
    run = read_vllm_serve(path)
    assert math.isnan(run["std_ttft_ms"])
    with pytest.raises(MoelabError, match="mean_tpot_ms is nan"):
        vllm_measurements(run, source=str(path), model="x", hardware="H", plan="tp1", dtype="bf16")


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ("", "the file is empty"),
    ("[1, 2]", "a JSON list, not an object"),
    (json.dumps({"results": []}), "no 'completed', 'request_throughput', 'output_throughput'"),
    (json.dumps(moelab_bench_file()), "`moelab bench --json` output, not a vllm bench serve result; give format"),
    (json.dumps(vllm_run(completed=0)), "no request completed"),
    (json.dumps(vllm_run(completed="640")), "completed must be a count"),
    (json.dumps(vllm_run(request_rate=-1)), "request_rate must be a positive number"),
    (json.dumps(vllm_run(spec_decode_acceptance_rate=71.0)), "speculative decoding"),
])
def test_foreign_or_broken_vllm_files_are_one_line_naming_the_file(write, content, message):
    path = write("bad.json", content)
    with pytest.raises(MoelabError, match=message) as e:
        read_vllm_serve(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_vllm_setting_contradictions_are_refused(write):
    run = read_vllm_serve(write("r.json", vllm_run()))
    kw = dict(source="r.json", model="x", hardware="H", plan="tp1", dtype="bf16")
    with pytest.raises(MoelabError, match="concurrency 8, the run's max_concurrency was 64"):
        vllm_measurements(run, concurrency=8, **kw)
    with pytest.raises(MoelabError, match="says input 128, the file's requests had 1000"):
        vllm_measurements(run, input=128, **kw)
    with pytest.raises(MoelabError, match="not a static batch"):
        vllm_measurements(run, mode="static", **kw)
    open_loop = read_vllm_serve(write("rate.json", vllm_run(concurrency=None, request_rate=4.0)))
    with pytest.raises(MoelabError, match="open-loop run at 4 requests/s"):
        vllm_measurements(open_loop, **kw)
    no_tpot = read_vllm_serve(write("t.json", {k: v for k, v in vllm_run().items() if "tpot" not in k}))
    with pytest.raises(MoelabError, match="no mean_tpot_ms"):
        vllm_measurements(no_tpot, **kw)


def test_reads_moelab_bench_rows(write):
    path = write("bench.json", moelab_bench_file())
    result = read_moelab_bench(path)
    assert (result["dtype"], result["prompt"], result["gen"], len(result["rows"])) == ("fp32", 128, 32, 8)
    ms = moelab_measurements(result, model="tiny-moe", hardware="cpu")
    assert {(m.metric, m.batch) for m in ms} == {("ttft_ms", 1), ("tpot_ms", 1), ("ttft_ms", 4), ("tpot_ms", 4)}
    first = next(m for m in ms if m.metric == "ttft_ms" and m.batch == 4)
    assert first.value == pytest.approx(0.02 * 1.25 * 1e3) and first.mode == "static" and first.plan == "tp1"
    assert (first.input, first.output, first.dtype) == (128, 32, "fp32")
    with pytest.raises(MoelabError, match="rows of tiny-moe, tiny-dense; say whose with bench_model"):
        moelab_measurements(result, model="other", hardware="cpu")
    with pytest.raises(MoelabError, match="dtype bf16, the bench ran fp32"):
        moelab_measurements(result, model="tiny-moe", hardware="cpu", dtype="bf16")
    with pytest.raises(MoelabError, match="vllm bench serve result, not moelab bench output"):
        read_moelab_bench(write("v.json", vllm_run()))
    with pytest.raises(MoelabError, match="not a moelab bench --json file"):
        read_moelab_bench(write("x.json", "nope"))
    broken = moelab_bench_file()
    broken["rows"][3]["measured_s"] = None
    with pytest.raises(MoelabError, match=r"rows\[3\]: measured_s must be a positive number"):
        read_moelab_bench(write("b.json", broken))


def test_manifest_paths_relative_to_it(tmp_path, write):
    sub = tmp_path / "runs"
    sub.mkdir()
    (sub / "c64.json").write_text(json.dumps(vllm_run()))
    write("bench.json", moelab_bench_file())
    manifest = write("m.yaml", "entries:\n"
                               "  - {file: runs/c64.json, format: vllm, model: llama-3-70b, plan: tp2, dtype: fp8}\n"
                               "  - {file: bench.json, format: moelab, model: tiny-dense, metrics: [tpot_ms]}\n")
    ms = manifest_measurements(manifest, "H100-SXM")
    assert len(ms) == 3 + 2
    assert ms[0].name.endswith("runs/c64.json:mean_ttft_ms") and ms[0].hardware == "H100-SXM"
    assert {m.metric for m in ms[3:]} == {"tpot_ms"}


@pytest.mark.parametrize(("text", "message"), [
    ("entries:\n  - {file: missing.json, format: vllm, model: m, plan: tp1, dtype: bf16}\n", "missing.json' not found"),
    ("entries:\n  - {file: a.json, format: vllm, model: m}\n", "does not say its plan or dtype"),
    ("entries:\n  - {file: a.json, format: vllm, model: m, plan: tp1, dtype: bf16, concurency: 4}\n", "concurency"),
    ("entries:\n  - {file: a.json, format: sglang, model: m}\n", "format"),
    ("entries: []\n", "entries"),
    ("- 1\n", "must be a mapping with `entries`"),
    ("entries:\n  - {file: a.json, format: moelab, model: m, concurrency: 4}\n", "does not apply to a moelab"),
])
def test_bad_manifests_are_one_line(write, text, message):
    path = write("m.yaml", text)
    with pytest.raises(MoelabError, match=message) as e:
        manifest_measurements(path, "H100-SXM")
    assert "\n" not in str(e.value)


def test_manifest_model_config_path_relative_to_it(tmp_path, write):
    from pathlib import Path

    from moelab.bench.results import model_specs

    config = Path(__file__).resolve().parents[1] / "spec" / "configs" / "llama3_1_8b.json"
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "llama.json").write_text(config.read_text())
    write("r.json", vllm_run())
    manifest = write("m.yaml", "entries:\n  - {file: r.json, format: vllm, model: cfg/llama.json, plan: tp1, "
                               "dtype: bf16}\n")
    ms = manifest_measurements(manifest, "H100-SXM")
    assert ms[0].model == str(tmp_path / "cfg" / "llama.json")
    spec = model_specs(ms)[ms[0].model]
    assert spec.n_layers == 32 and spec.d_model == 4096  # Llama 3.1 8B
