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
    training = study["training"]
    assert [r["model"] for r in training["rows"]] == list(PAIRS.values())
    dense = next(r for r in training["rows"] if r["model"] == PAIRS["dense"])
    # the target is the dense model's final validation loss, which it reaches at its last evaluation
    assert training["target_loss"] == dense["final_val"]["mean"]
    assert dense["to_target"]["step"] == study["plan"]["steps"]
    assert set(training["expert_load"]) == {PAIRS["moe"], PAIRS["moe_fine"]}
    assert study["calibration"]["peak_tflops"]["fp32"] > 0
    bench = study["bench"]
    assert {r["model"] for r in bench["rows"]} == {PAIRS["dense"], PAIRS["moe"]}
    assert {r["phase"] for r in bench["rows"]} == {"prefill", "decode"}
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
