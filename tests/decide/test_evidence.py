"""Reading a study's evidence: a malformed part is one line naming its key, a skipped or empty part is not
measured; `moelab decide --evidence STUDY_DIR` reads STUDY_DIR/study.json through moelab.userfile and refuses a
missing, foreign or hostile one in one line (exit 2) before any modelling."""

import copy
import json

import pytest
from evidence_parts import CLEAR, hybrid, task_type, training_and_bench

from moelab.cli import main
from moelab.decide.evidence import Evidence, load_study
from moelab.errors import MoelabError


def _study() -> dict:
    return {"version": 1, **training_and_bench(), "task_type": task_type(CLEAR), "hybrid": hybrid()}


def _set(d: dict, path: str, value) -> dict:
    d = copy.deepcopy(d)
    *head, last = path.split(".")
    node = d
    for key in head:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return d


BAD = [  # (path in the study, value, what the one line must name)
    ("training", [1, 2], "training: expected an object"),
    ("training.rows", "rows", "training.rows: expected a list"),
    ("training.rows.1.to_target.flops", "many", "training.rows[1].to_target.flops: expected a number"),
    ("training.rows.1.to_target.flops", 0, "training.rows[1].to_target"),
    ("training.rows.0.final_val.math", "low", "training.rows[0].final_val.math"),
    ("training.pairs.dense", 7, "training.pairs.dense: expected a string"),
    ("training.target_loss", None, "training.target_loss: missing"),
    ("bench.rows.0.p99_s", "slow", "bench.rows[0].p99_s"),
    ("bench.rows.0.p99_s", -1.0, "bench.rows[0].p99_s: -1 is outside"),
    ("bench.summary.decode.median_abs_rel_error", [0.1], "bench.summary.decode.median_abs_rel_error"),
    ("bench.flip.measured_batch", "16", "bench.flip.measured_batch"),
    ("task_type.models.tiny-moe.scores.knowledge.accuracy", 1.5, "task_type.models.tiny-moe.scores.knowledge"
                                                                 ".accuracy: 1.5 is outside [0, 1]"),
    ("task_type.models.tiny-moe.scores.knowledge.ci_low", 0.99, "accuracy 0.6 is outside its interval"),
    ("task_type.models.tiny-moe.scores.knowledge.n", 2.5, "task_type.models.tiny-moe.scores.knowledge"),
    ("task_type.models.tiny-dense.kind", "moe", "task_type.models.tiny-dense.kind"),
    ("task_type.pairs.iso_total", ["tiny-moe"], "task_type.pairs.iso_total: expected [dense, moe]"),
    ("task_type.floor_warnings", "all at the floor", "task_type.floor_warnings: expected a list"),
    ("hybrid.models.dense.accuracy", None, "hybrid.models.dense: needs accuracy"),
    ("hybrid.best.cascade.escalation_rate", 2, "hybrid.best.cascade.escalation_rate: 2 is outside [0, 1]"),
    ("hybrid.best.cascade.escalation_rate", -0.1, "hybrid.best.cascade.escalation_rate: -0.1 is outside"),
    ("hybrid.models.moe.accuracy", 2, "hybrid.models.moe.accuracy: 2 is outside [0, 1]"),
    ("hybrid.models.moe.ci_low", -1, "hybrid.models.moe.ci_low: -1 is outside [0, 1]"),
    ("hybrid.models.dense.ci_high", 1.5, "hybrid.models.dense.ci_high: 1.5 is outside [0, 1]"),
    ("hybrid.best.route.ci_low", 0.99, "hybrid.best.route: accuracy"),
    ("hybrid.best.cascade.ci_high", 0.0, "hybrid.best.cascade: accuracy"),
    ("hybrid.best.cascade.threshold", 1.5, "hybrid.best.cascade.threshold: 1.5 is outside [0, 1]"),
    ("task_type.models.tiny-dense.scores.reasoning.ci_high", 1e200, "reasoning.ci_high: 1e+200 is outside"),
    ("task_type.models.tiny-dense.scores.reasoning.chance", -0.1, "reasoning.chance: -0.1 is outside"),
    ("hybrid.best.route.pareto", "yes", "hybrid.best.route.pareto: expected a boolean"),
    ("hybrid.models", [], "hybrid.models: expected an object"),
]


@pytest.mark.parametrize("path, value, named", BAD)
def test_a_malformed_part_is_one_line_naming_the_key(path, value, named):
    with pytest.raises(MoelabError) as err:
        Evidence.read(_set(_study(), path, value))
    msg = str(err.value)
    assert named in msg and msg.startswith("evidence ") and "\n" not in msg


def test_every_part_is_read_and_skipped_or_empty_parts_are_not_measured():
    ev = Evidence.read(_study())
    assert ev.found() == {"training": True, "bench": True, "task_type": True, "hybrid": True}
    assert ev.training.dense.to_target["flops"] == 3.0e10 and ev.bench.tails == (1.2,) * 4
    assert len(ev.task_type.comparisons) == 4 and set(ev.hybrid.best) == {"cascade", "route"}
    empty = {"training": {}, "bench": {"rows": []}, "task_type": {"skipped": "no runs"}, "hybrid": None}
    assert Evidence.read(empty).found() == dict.fromkeys(("training", "bench", "task_type", "hybrid"), False)
    # the hybrid stage writes "skipped": None (and its failures) when it ran
    ran = {"hybrid": {"scope": "study", "failures": ["vLLM: not installed"], "skipped": None, **hybrid()}}
    assert Evidence.read(ran).found()["hybrid"]
    assert not Evidence.read({"hybrid": {**ran["hybrid"], "skipped": "no trained run"}}).found()["hybrid"]
    # a pair naming a model that was not scored is not measured (not an error)
    part = task_type({"tiny-dense": CLEAR["tiny-dense"], "tiny-moe": CLEAR["tiny-moe"]})
    assert {c.pair for c in Evidence.read({"task_type": part}).task_type.comparisons} == {"iso_active"}


def _write(folder, text: str):
    folder.mkdir(exist_ok=True)
    (folder / "study.json").write_text(text)
    return folder


def _refused(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and err.startswith("moelab: error:") and "\n" not in err
    return err


def test_cli_refuses_a_missing_foreign_or_hostile_study(tmp_path, capsys):
    assert "not a folder or a .json file" in _refused(capsys, ["decide", "--evidence", str(tmp_path / "nowhere")])
    (tmp_path / "study.txt").write_text(json.dumps(_study()))
    assert "not a folder or a .json file" in _refused(capsys, ["decide", "--evidence", str(tmp_path / "study.txt")])
    assert "no study.json" in _refused(capsys, ["decide", "--evidence", str(tmp_path)])
    (tmp_path / "dir" / "study.json").mkdir(parents=True)
    assert "is a directory" in _refused(capsys, ["decide", "--evidence", str(tmp_path / "dir")])
    cases = {"list": "[1, 2]", "foreign": json.dumps({"name": "not a study"}), "nan": '{"training": NaN}',
             "dup": '{"bench": {}, "bench": {}}', "text": "study: yes", "binary": "\udcff",
             "bad": json.dumps(_set(_study(), "hybrid.best.cascade.escalation_rate", -0.5))}
    said = {}
    for name, text in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "study.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        said[name] = _refused(capsys, ["decide", "--evidence", str(folder), "--json"])
    assert "not a moelab study" in said["list"] and "not a moelab study" in said["foreign"]
    assert "NaN" in said["nan"] and "duplicate key 'bench'" in said["dup"] and "not UTF-8" in said["binary"]
    assert "study.json: evidence hybrid.best.cascade.escalation_rate: -0.5 is outside [0, 1]" in said["bad"]


def test_load_study_takes_a_folder_or_its_study_json_and_returns_the_whole_study(tmp_path, capsys):
    study = {**_study(), "laws": {"seeds": {"alpha": 0.076}}}
    folder = _write(tmp_path / "s", json.dumps(study))
    assert load_study(folder) == load_study(folder / "study.json") == study
    # a study without decide's parts is a study for a reader that names its own parts (moelab claims)
    only_laws = _write(tmp_path / "laws", json.dumps({"laws": {"seeds": {"alpha": 0.076}}}))
    assert load_study(only_laws / "study.json", ("laws",))["laws"]["seeds"]["alpha"] == 0.076
    with pytest.raises(MoelabError, match="not a moelab study"):
        load_study(only_laws)
    # decide's parts are checked whichever reader asks
    bad = _write(tmp_path / "bad", json.dumps(_set(study, "hybrid.models.moe.ci_high", 0.1)))
    with pytest.raises(MoelabError, match=r"study\.json: evidence hybrid\.models\.moe"):
        load_study(bad / "study.json", ("laws",))
    for hostile in ("a\0b", "a\0b.json", str(tmp_path / "missing.json")):
        with pytest.raises(MoelabError) as err:
            load_study(hostile)
        assert "\n" not in str(err.value)
    assert main(["decide", "--evidence", str(folder / "study.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["evidence"]["hybrid"] is True


def test_cli_decides_with_a_study(tmp_path, capsys):
    folder = _write(tmp_path / "s", json.dumps(_study()))
    assert load_study(folder)["hybrid"]["items"] == 40
    assert main(["decide", "--evidence", str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["evidence"] == {"training": True, "bench": True, "task_type": True, "hybrid": True}
    task = {f["factor"]: f for f in out["factors"]}["task_type"]
    assert task["numbers"]["measured"] == "exact-match accuracy" and task["basis"] == "measured at tiny scale"
