"""moelab claims: the --json list, the table, --evidence from a study folder or its study.json, and one line with
exit 2 for a missing or hostile study."""

import json

import pytest
from claims_study import make_study

from moelab.claims.registry import REGISTRY
from moelab.cli import main

CONTRACT = {"id", "seed", "quote", "setting", "moelab_value", "verdict", "why"}


def run(capsys, *args):
    code = main(["claims", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_is_the_list_of_rows(capsys):
    code, out, _ = run(capsys, "--json")
    rows = json.loads(out)
    assert code == 0 and isinstance(rows, list) and len(rows) == len(REGISTRY) >= 25
    assert all(CONTRACT <= set(r) for r in rows)
    assert sum(r["moelab_value"] is not None for r in rows) >= 15
    big = next(r for r in rows if r["id"] == "deepseek-v3-expert-combinations")
    assert big["moelab_value"] == 409_663_695_276_000


def test_table(capsys):
    code, out, _ = run(capsys)
    assert code == 0
    assert "deepseek-v3-expert-combinations" in out and "409,663,695,276,000" in out
    assert "contradicted" in out and "rule 1:" in out and "need --evidence" in out


@pytest.fixture
def study_dir(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps(make_study()))
    return folder


@pytest.mark.parametrize("as_file", [False, True])
def test_evidence(capsys, study_dir, as_file):
    where = study_dir / "study.json" if as_file else study_dir
    code, out, _ = run(capsys, "--evidence", str(where), "--json")
    rows = {r["id"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["knowledge-moe-at-equal-cost"]["verdict"] == "confirmed"
    assert rows["upcycling-beats-continued-dense"]["verdict"] == "contradicted"


@pytest.mark.parametrize("content, what", [
    (None, "no study.json"),  # a folder without study.json
    ("{not json", "JSON"),
    ("[1, 2, 3]", "not a moelab study"),
    ('{"version": 1}', "not a moelab study"),
    ('{"task_type": {"models": [1]}}', "task_type"),  # decide's typed reader refuses it, in one line
    ('{"training": NaN}', "NaN"),
    ('{"a": 1, "a": 2}', "duplicate"),
    ("", "JSON"),
    ("\udcff", "UTF-8"),
])
def test_hostile_evidence_is_one_line_exit_2(capsys, tmp_path, content, what):
    folder = tmp_path / "bad"
    folder.mkdir()
    if content is not None:
        data = content.encode("utf-8", "surrogateescape")
        (folder / "study.json").write_bytes(data)
    code, out, err = run(capsys, "--evidence", str(folder))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("moelab: error:") and "Traceback" not in err
    assert what.lower() in err.lower()


@pytest.mark.parametrize("where", ["/nonexistent/study", "README.md", "/dev/null", "bad\x00name"])
def test_bad_evidence_paths(capsys, where):
    code, out, err = run(capsys, "--evidence", where)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


def test_study_json_as_directory(capsys, tmp_path):
    (tmp_path / "study.json").mkdir()
    code, _, err = run(capsys, "--evidence", str(tmp_path))
    assert code == 2 and "directory" in err
