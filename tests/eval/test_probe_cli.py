"""`moelab probe` on a tiny run trained a few steps on the study corpus (through `moelab train --corpus study`):
the JSON's shape and counts, the table, the corpus notes; bad input one line and exit 2."""

import json
import shutil

import pytest

from moelab.cli import main
from moelab.eval.probes import probe_items


def test_train_records_the_corpus(study_run):
    meta = json.loads((study_run / "final" / "meta.json").read_text())
    assert meta["config"]["corpus"] == "study"


def test_probe_json(study_run, capsys):
    capsys.readouterr()
    assert main(["probe", str(study_run), "--per-level", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["per_level"] == 2 and out["ci"] == "Wilson 95%" and len(out["runs"]) == 1
    r = out["runs"][0]
    assert r["kind"] == "dense" and r["corpus"] == "study" and r["params_active"] == r["params_total"] > 0
    items = probe_items(2)
    assert [a["id"] for a in r["answers"]] == [i.id for i in items]
    for item_set in ("knowledge", "reasoning"):
        cell = r["scores"][item_set]
        n = sum(i.set == item_set for i in items)
        assert cell["n"] == n and 0 <= cell["ci_low"] <= cell["accuracy"] <= cell["ci_high"] <= 1
        assert cell["correct"] == sum(a["correct"] for a, i in zip(r["answers"], items, strict=True)
                                      if i.set == item_set)
        assert sum(c["n"] for c in cell["levels"].values()) == n
    assert list(r["scores"]["reasoning"]["levels"]) == ["1", "2", "3", "4", "5"]
    assert all(a["correct"] == (a["generated"] == a["answer"]) for a in r["answers"])
    # at a 12 kB cap only some probed people's biographies are in the corpus: the note says how many
    assert len(r["notes"]) == 1 and "biographies of" in r["notes"][0]


def test_probe_table_and_default_corpus_note(study_run, tmp_path, capsys):
    other = tmp_path / "default-run"
    shutil.copytree(study_run, other)
    meta_path = other / "final" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["config"].pop("corpus")  # a run from before named corpora: the default corpus
    meta_path.write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["probe", str(study_run), str(other), "--per-level", "1"]) == 0
    text = capsys.readouterr().out
    assert "Probe accuracy" in text and "knowledge" in text and "reasoning" in text
    assert "no facts domain" in text and "levels 1 and 2" in text


def test_probe_says_when_a_run_read_another_study_corpus(study_run, tmp_path, monkeypatch, capsys):
    other = tmp_path / "stale-run"
    shutil.copytree(study_run, other)
    tok = json.loads((other / "final" / "tokenizer.json").read_text())
    tok["model"]["vocab"]["Zzz"] = len(tok["model"]["vocab"])  # another corpus would train another tokenizer
    (other / "final" / "tokenizer.json").write_text(json.dumps(tok))
    monkeypatch.setenv("MOELAB_CACHE", str(study_run.parent / "cache"))  # today's study tokenizer is cached there
    capsys.readouterr()
    assert main(["probe", str(study_run), str(other), "--per-level", "1", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert "another version of the study corpus" not in " ".join(runs[0]["notes"])
    assert "another version of the study corpus" in " ".join(runs[1]["notes"])


@pytest.mark.parametrize("args", [["/nonexistent/run"], ["{tmp}"], ["{run}", "--per-level", "0"],
                                  ["{run}", "/nonexistent/run"], []])
def test_bad_input_exit_2(args, study_run, tmp_path, capsys):
    args = [a.format(tmp=tmp_path, run=study_run) for a in args]
    capsys.readouterr()
    assert main(["probe", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()
