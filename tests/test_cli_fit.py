"""`moelab fit`: manifest of result files -> a hardware file that --hardware loads, errors on inputs and holdouts.

The result files are `vllm bench serve`-shaped JSON (the keys vllm/benchmarks/serve.py writes) whose figures the
engine made on a hardware spec with known values (the H100-SXM preset with some values changed), so a fit from
the preset must find those values again and the file it writes must predict what they did."""

from __future__ import annotations

import json

import pytest

from moelab.cli import main
from moelab.cost.fit import PARAMETERS, value_of, with_values
from moelab.cost.measurement import Measurement, predict
from moelab.spec.hardware import load_hardware
from moelab.spec.presets import load_model

PARAMS = ("gemm_efficiency.bf16", "bandwidth_efficiency", "step_overhead_us")


def _truth():
    hw = load_hardware("H100-SXM")
    start = {k: value_of(hw, PARAMETERS[k]) for k in PARAMS}
    truth = {"gemm_efficiency.bf16": start["gemm_efficiency.bf16"] * 0.7,
             "bandwidth_efficiency": start["bandwidth_efficiency"] * 0.8,
             "step_overhead_us": start["step_overhead_us"] + 400.0}
    return hw, with_values(hw, truth), truth


def _vllm_file(path, spec, truth_hw, concurrency, input, output, plan="tp1"):
    """A --save-result JSON whose figures the engine made on `truth_hw` (llama-3-8b bf16)."""
    figures = {}
    for metric in ("ttft_ms", "tpot_ms", "output_tokens_per_second"):
        m = Measurement(model="llama-3-8b", hardware="H100-SXM", plan=plan, dtype="bf16", kv_dtype="bf16",
                        input=input, output=output, mode="serving", metric=metric, value=1.0,
                        concurrency=concurrency, num_prompts=10 * concurrency)
        figures[metric] = predict(m, spec, truth_hw)
    n = 10 * concurrency
    path.write_text(json.dumps({
        "date": "20260101-120000", "endpoint_type": "vllm", "backend": "vllm", "label": None,
        "model_id": "meta-llama/Meta-Llama-3-8B", "tokenizer_id": "meta-llama/Meta-Llama-3-8B", "num_prompts": n,
        "request_rate": "inf", "burstiness": 1.0, "max_concurrency": concurrency, "duration": 60.0,
        "completed": n, "failed": 0, "total_input_tokens": n * input, "total_output_tokens": n * output,
        "request_throughput": figures["output_tokens_per_second"] / output, "request_goodput": None,
        "output_throughput": figures["output_tokens_per_second"],
        "total_token_throughput": figures["output_tokens_per_second"] * (input + output) / output,
        "mean_ttft_ms": figures["ttft_ms"], "median_ttft_ms": figures["ttft_ms"], "p99_ttft_ms": figures["ttft_ms"],
        "mean_tpot_ms": figures["tpot_ms"], "median_tpot_ms": figures["tpot_ms"], "p99_tpot_ms": figures["tpot_ms"],
        "mean_itl_ms": figures["tpot_ms"], "median_itl_ms": figures["tpot_ms"], "p99_itl_ms": figures["tpot_ms"],
    }))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A fit manifest of 4 runs (12 figures) and a holdout manifest of 2 other runs."""
    folder = tmp_path_factory.mktemp("fit")
    hw, truth_hw, truth = _truth()
    spec = load_model("llama-3-8b")
    lines = {"fit": [], "holdout": []}
    for split, settings in (("fit", ((1, 1024, 256), (16, 1024, 256), (64, 4096, 512), (256, 512, 128))),
                            ("holdout", ((8, 2048, 256), (128, 1024, 1024)))):
        for c, i, o in settings:
            name = f"c{c}-{i}-{o}.json"
            _vllm_file(folder / name, spec, truth_hw, c, i, o)
            lines[split].append(f"  - {{file: {name}, format: vllm, model: llama-3-8b, plan: tp1, dtype: bf16}}")
    for split, entries in lines.items():
        (folder / f"{split}.yaml").write_text("entries:\n" + "\n".join(entries) + "\n")
    return folder, truth


def test_fit_round_trip(runs, capsys):
    folder, truth = runs
    out = folder / "my-h100.yaml"
    assert main(["fit", str(folder / "fit.yaml"), "--hardware", "H100-SXM", "--out", str(out),
                 "--params", ",".join(PARAMS), "--holdout", str(folder / "holdout.yaml"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["points"] == 12 and r["median_abs_error_after"] < 1e-3 < r["median_abs_error_before"]
    assert r["holdout"][0]["points"] == 6 and r["holdout"][0]["median_abs_error_after"] < 1e-3
    for key, value in truth.items():
        assert r["params"][key]["after"] == pytest.approx(value, rel=0.01)
    fitted = load_hardware(str(out))  # what --hardware reads
    base = load_hardware("H100-SXM")
    assert fitted.gemm_share("bf16") == pytest.approx(truth["gemm_efficiency.bf16"], rel=0.01)
    assert fitted.step_overhead_s * 1e6 == pytest.approx(truth["step_overhead_us"], rel=0.01)
    assert fitted.peak_flops == base.peak_flops and fitted.memory_bytes == base.memory_bytes  # the base's fields
    assert fitted.name == "my-h100"
    assert "fitted by moelab fit on 12 points from fit.yaml" in fitted.sources["bandwidth_efficiency"]
    assert main(["estimate", "llama-3-8b", "--hardware", str(out), "--json"]) == 0
    estimate = json.loads(capsys.readouterr().out)
    assert main(["estimate", "llama-3-8b", "--hardware", "H100-SXM", "--json"]) == 0
    assert estimate["decode"]["step_seconds"] > json.loads(capsys.readouterr().out)["decode"]["step_seconds"]


def test_fit_table_and_json_file(runs, capsys):
    folder, _ = runs
    out = folder / "fitted.json"
    assert main(["fit", str(folder / "fit.yaml"), "-H", "H100-SXM", "--out", str(out),
                 "--params", "bandwidth_efficiency,step_overhead_us", "--holdout", str(folder / "holdout.yaml"),
                 "--loss", "soft_l1"]) == 0
    text = capsys.readouterr().out
    assert "bandwidth_efficiency" in text and "holdout:" in text and f"wrote {out}" in text
    assert json.loads(out.read_text())["bandwidth_efficiency"] < 1
    assert load_hardware(str(out)).name == "fitted"


def _error(capsys, *args):
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("moelab: error: ") and err.count("\n") == 1
    return err


def test_fit_bad_input_is_one_line(runs, tmp_path, capsys):
    folder, _ = runs
    manifest = str(folder / "fit.yaml")
    out = str(tmp_path / "o.yaml")
    missing = tmp_path / "m.yaml"
    missing.write_text("entries:\n  - {file: gone.json, format: vllm, model: llama-3-8b, plan: tp1, dtype: bf16}\n")
    assert "gone.json' not found" in _error(capsys, "fit", str(missing), "-H", "H100-SXM", "--out", out)
    foreign = tmp_path / "f.yaml"
    (tmp_path / "x.json").write_text(json.dumps({"rows": [], "workload": {}, "rel_error_definition": ""}))
    foreign.write_text("entries:\n  - {file: x.json, format: vllm, model: llama-3-8b, plan: tp1, dtype: bf16}\n")
    assert "give format: moelab" in _error(capsys, "fit", str(foreign), "-H", "H100-SXM", "--out", out)
    one = tmp_path / "one.yaml"
    one.write_text(f"entries:\n  - {{file: {folder / 'c1-1024-256.json'}, format: vllm, model: llama-3-8b, "
                   "plan: tp1, dtype: bf16}\n")
    assert "3 usable points for 4 parameters" in _error(
        capsys, "fit", str(one), "-H", "H100-SXM", "--out", out, "--params", ",".join(PARAMS) + ",gemm_half_rows")
    assert "moe_gemm_efficiency changes no prediction" in _error(
        capsys, "fit", manifest, "-H", "H100-SXM", "--out", out, "--params", "moe_gemm_efficiency")
    assert "is a folder" in _error(capsys, "fit", manifest, "-H", "H100-SXM", "--out", str(tmp_path))
    assert "not a parameter" in _error(capsys, "fit", manifest, "-H", "H100-SXM", "--out", out, "--params", "speed")
    assert "unknown hardware" in _error(capsys, "fit", manifest, "-H", "H999", "--out", out)
    assert "--loss must be one of squared, soft_l1" in _error(capsys, "fit", manifest, "-H", "H100-SXM", "--out", out,
                                                              "--loss", "huber")
    assert not (tmp_path / "o.yaml").exists()  # nothing written on failure


def test_fit_never_overwrites_its_own_inputs(runs, capsys):
    folder, _ = runs
    manifest = folder / "fit.yaml"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for out in (manifest, folder / "c1-1024-256.json", folder / "holdout.yaml"):
        err = _error(capsys, "fit", str(manifest), "-H", "H100-SXM", "--holdout", str(folder / "holdout.yaml"),
                     "--out", str(out))
        assert "own input files" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
