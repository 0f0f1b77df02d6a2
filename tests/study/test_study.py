"""`moelab study --quick` end to end: every stage runs for real and the report folder is complete."""

import csv
import json

import pytest

from moelab.cli import main
from moelab.study.plan import FRONTIER_PAIRS, PAIRS


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:  # fresh caches and runs store: the corpus and calibration are built
        mp.setenv("MOELAB_HOME", str(out / "home"))
        mp.setenv("MOELAB_CACHE", str(out / "cache"))
        assert main(["study", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def test_every_stage_ran(study_dir):
    study = json.loads((study_dir / "study.json").read_text())
    assert study["quick"] is True
    assert set(study["stage_seconds"]) >= {"train", "calibrate and bench", "frontier", "decide", "report"}
    training, plan = study["training"], study["plan"]
    assert [r["model"] for r in training["rows"]] == list(PAIRS.values())
    # each run folder: every step in metrics.jsonl, final weights; the numbers below are read from those files
    evals = {}
    for row in training["rows"]:
        run = study_dir / "runs" / row["model"]
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in lines] == list(range(1, plan["steps"] + 1))
        assert lines[-1]["tokens"] == plan["steps"] * plan["batch_size"] * plan["seq_len"]
        assert (run / "final" / "model.safetensors").is_file() and (run / "final" / "meta.json").is_file()
        evals[row["model"]] = [r for r in lines if "val" in r]
        assert row["final_val"]["mean"] == evals[row["model"]][-1]["val"]["mean"]
    # the target is the dense model's final validation loss as its own metrics.jsonl records it (not another
    # model's), and each model's to_target is its first evaluation at or below it, or None
    target = training["target_loss"]
    assert target == evals[PAIRS["dense"]][-1]["val"]["mean"]
    for row in training["rows"]:
        first = next((r for r in evals[row["model"]] if r["val"]["mean"] <= target), None)
        expected = first and {k: first[k] for k in ("step", "tokens", "flops", "wall_seconds", "train_seconds")}
        assert row["to_target"] == expected, row["model"]
    assert set(training["expert_load"]) == {PAIRS["moe"], PAIRS["moe_fine"]}
    # calibrate and bench: the files the stage wrote are what study.json holds
    hardware = json.loads((study_dir / "hardware.json").read_text())
    assert study["calibration"] == {**hardware, "path": str(study_dir / "hardware.json")}
    assert hardware["peak_tflops"]["fp32"] > 0
    bench = study["bench"]
    assert json.loads((study_dir / "bench.json").read_text())["rows"] == bench["rows"]
    assert sorted((r["model"], r["phase"], r["batch"]) for r in bench["rows"]) == sorted(
        (m, p, b) for m in (PAIRS["dense"], PAIRS["moe"]) for p in ("prefill", "decode") for b in plan["bench_batches"])
    assert (bench["workload"]["prompt"], bench["workload"]["gen"]) == (plan["bench_prompt"], plan["bench_gen"])
    assert bench["flip"] is not None
    assert len(study["frontier"]["pairs"]) == len(FRONTIER_PAIRS)
    assert study["decision"]["recommendation"]["choice"]


def test_report_folder(study_dir):
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["recommendation"]["choice"] and summary["key_figures"]
    for name in summary["files"]:
        assert (study_dir / name).is_file(), name
        if name.endswith(".csv"):
            with (study_dir / name).open() as f:
                assert len(list(csv.reader(f))) >= 1
    html = (study_dir / "report.html").read_text()
    assert "<svg" in html and summary["recommendation"]["choice"].split(":")[0] in html.lower()


def test_bad_workload_is_one_line(tmp_path, capsys):
    bad = tmp_path / "w.yaml"
    bad.write_text("gpus: -1\n")
    assert main(["study", "--workload", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("moelab: error:")


def test_mitigations_stage(study_dir):
    """The mitigations the stage measured are the transforms' own files: bytes and losses from their summaries,
    decode rows from the bench JSON beside them, the upcycling arms from its result."""
    study = json.loads((study_dir / "study.json").read_text())
    mi, plan = study["mitigations"], study["plan"]
    assert "mitigations" in study["stage_seconds"] and not mi["failures"]
    folder = study_dir / "mitigations"
    by = {v["transform"]: v for v in reversed(mi["variants"])}
    assert mi["variants"][0]["transform"] is None and mi["variants"][0]["loss_delta_mean"] == 0.0
    assert set(by) == {None, "prune", "quantize", "offload", "upcycle"}
    pruned = json.loads((folder / "pruned" / "summary.json").read_text())
    assert by["prune"]["weight_bytes"] == pruned["weight_bytes"]["after"] < pruned["weight_bytes"]["before"]
    assert by["prune"]["loss_delta"] == pytest.approx(pruned["loss"]["delta"])
    assert all(len(layer["kept"]) == plan["prune_keep"] for layer in pruned["layers"])
    quantized = json.loads((folder / "int4" / "summary.json").read_text())
    assert by["quantize"]["weight_bytes"] == quantized["weight_bytes"]["after"]["total"]
    assert by["quantize"]["memory_share"] < 0.5  # int4 experts: the experts are most of the weights
    bench = json.loads((folder / "bench-int4.json").read_text())
    decode = {r["model"]: r for r in bench["rows"] if r["phase"] == "decode" and r["batch"] == mi["bench"]["batch"]}
    assert set(decode) == {PAIRS["moe"], quantized["model"]}  # the variant beside the base, in one process
    assert by["quantize"]["decode"]["p50_s"] == decode[quantized["model"]]["p50_s"] > 0
    assert by["quantize"]["speed_ratio"] == decode[PAIRS["moe"]]["p50_s"] / decode[quantized["model"]]["p50_s"]
    offload = by["offload"]["decode"]["offload"]
    assert offload["resident"] in plan["offload_resident"] and offload["misses_per_step"] > 0
    assert by["offload"]["loss_delta_mean"] == 0.0 and by["offload"]["memory_share"] < 1
    up = mi["upcycling"]
    assert not up["skipped"] and set(up["arms"]) == {"dense_continued", "upcycled", "moe_scratch"}
    assert json.loads((study_dir / "upcycling" / "result.json").read_text())["arms"] == up["arms"]
    assert up["verdict"].startswith("Upcycled ")
    assert mi["frontier"] and all(r["basis"] == "modelled" for r in mi["frontier"])
    html = (study_dir / "report.html").read_text()
    assert "id='mitigations'" in html and "id='fig-mitigations'" in html
    for name in ("mitigations.csv", "upcycling.csv", "mitigations_frontier.csv"):
        assert (study_dir / name).is_file()
