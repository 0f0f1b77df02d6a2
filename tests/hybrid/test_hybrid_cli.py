"""`moelab hybrid` on two tiny trained runs with moelab's engine: hybrid.json is the printed result, every point is
composed from the per-query measurements it stores (recomposed here by hand), the extremes are each model, and
bad input is one line, exit 2, nothing written."""

import io
import json
import shutil
import sys

import pytest
import torch

import moelab.eval.generate
from moelab.cli import main
from moelab.eval.probes import probe_items
from moelab.eval.score import wilson
from moelab.hybrid.cost import answer_flops
from moelab.mitigate.runs import read_run

FAST = ["--engine", "moelab", "--per-level", "1", "--thresholds", "0,0.5,1"]


@pytest.fixture(scope="module")
def result(dense_run, moe_run, hybrid_home, tmp_path_factory):
    """One run of the command for the module's tests (the function-scoped home and thread fixtures are not
    active for a module fixture: set here)."""
    out = tmp_path_factory.mktemp("hybrid-out")
    buf, threads = io.StringIO(), torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOELAB_HOME", str(hybrid_home / "home"))
        mp.setenv("MOELAB_CACHE", str(hybrid_home / "cache"))
        mp.setattr(sys, "stdout", buf)
        mp.setattr(moelab.eval.generate, "MAX_NEW_TOKENS", 4)  # as conftest.short_answers
        torch.set_num_threads(1)
        try:
            code = main(["hybrid", str(dense_run), str(moe_run), "--out", str(out), *FAST, "--json"])
        finally:
            torch.set_num_threads(threads)
    assert code == 0
    return json.loads(buf.getvalue()), out


def _mean(values):
    return sum(values) / len(values)


def test_file_and_contract_keys(result):
    printed, out = result
    stored = json.loads((out / "hybrid.json").read_text())
    assert stored == {k: v for k, v in printed.items() if k != "path"}
    assert printed["engine"] == "moelab" and printed["basis"] == "measured at tiny scale"
    assert printed["thresholds"] == [0.0, 0.5, 1.0]
    assert "composed from per-query measurements" in printed["composition"]
    for key in ("name", "run", "params_active", "accuracy", "ci_low", "ci_high", "latency_s_mean", "flops_per_query"):
        assert key in printed["models"]["dense"] and key in printed["models"]["moe"]
    assert printed["models"]["dense"]["params_active"] < printed["models"]["moe"]["params_total"]
    assert len(printed["points"]) == 2 + 2 * 3 + 1
    for p in printed["points"]:
        assert {"policy", "threshold", "accuracy", "ci_low", "ci_high", "n", "latency_s_mean", "flops_per_query",
                "escalation_rate", "pareto"} <= set(p)
        assert p["n"] == printed["items"]
        assert 0 <= p["ci_low"] <= p["accuracy"] + 1e-12 and p["accuracy"] <= p["ci_high"] <= 1
    assert set(printed["best"]) >= {"cascade", "route"}
    assert printed["router"]["n"] > 0 and printed["router"]["cross_fitted"] and printed["seconds"] > 0


def test_points_recomposed_from_the_queries(result):
    printed, _ = result
    queries = printed["queries"]
    assert len(queries) == printed["items"] == len(probe_items(1))  # one item per attribute and math level
    dense, moe = read_run(printed["models"]["dense"]["run"]), read_run(printed["models"]["moe"]["run"])
    for q in queries:
        for kind, src in (("dense", dense), ("moe", moe)):
            a = q[kind]
            assert a["seconds"] > 0 and 0 <= a["confidence"] <= 1
            assert a["flops"] == pytest.approx(answer_flops(src.spec, a["prompt_tokens"], a["generated_tokens"]))
    points = {(p["policy"], p["threshold"], p["router"]): p for p in printed["points"]}

    def check(point, use_moe, both, router_s):
        chosen = [q["moe"] if m else q["dense"] for q, m in zip(queries, use_moe, strict=True)]
        k = sum(a["correct"] for a in chosen)
        seconds = [a["seconds"] + (q["dense"]["seconds"] if b else 0) + (q["router_seconds"] if router_s else 0)
                   for q, a, b in zip(queries, chosen, both, strict=True)]
        flops = [a["flops"] + (q["dense"]["flops"] if b else 0) for q, a, b in zip(queries, chosen, both, strict=True)]
        assert point["correct"] == k and point["accuracy"] == pytest.approx(k / len(queries))
        assert (point["ci_low"], point["ci_high"]) == pytest.approx(wilson(k, len(queries)))
        assert point["latency_s_mean"] == pytest.approx(_mean(seconds))
        assert point["flops_per_query"] == pytest.approx(_mean(flops))
        assert point["escalation_rate"] == pytest.approx(_mean(use_moe))

    n = len(queries)
    check(points[("dense", None, None)], [False] * n, [False] * n, False)
    check(points[("moe", None, None)], [True] * n, [False] * n, False)
    check(points[("cascade", 0.0, None)], [False] * n, [False] * n, False)  # = dense alone
    escalate = [q["dense"]["confidence"] < 1.0 for q in queries]
    check(points[("cascade", 1.0, None)], escalate, escalate, False)
    half = [q["dense"]["confidence"] < 0.5 for q in queries]
    check(points[("cascade", 0.5, None)], half, half, False)
    check(points[("route", 0.0, "classifier")], [True] * n, [False] * n, True)  # = the MoE, plus the router
    check(points[("route", 1.0, "classifier")], [False] * n, [False] * n, True)  # = dense, plus the router
    check(points[("route", None, "domain")], [q["domain"] == "facts" for q in queries], [False] * n, False)
    d, m = printed["models"]["dense"], printed["models"]["moe"]
    assert d["accuracy"] == points[("dense", None, None)]["accuracy"]
    assert m["flops_per_query"] == points[("moe", None, None)]["flops_per_query"]


def test_text_output(dense_run, moe_run, tmp_path, capsys):
    out = tmp_path / "text"
    assert main(["hybrid", str(dense_run), str(moe_run), "--out", str(out), "--engine", "moelab", "--per-level",
                 "1", "--thresholds", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "cascade" in text and "route (domain)" in text and "composed from per-query measurements" in text
    assert (out / "hybrid.json").is_file()


def _mismatched_tokenizer(moe_run, tmp_path):
    fake = tmp_path / "other-tokenizer"
    shutil.copytree(moe_run / "final", fake / "final")
    path = fake / "final" / "tokenizer.json"
    tok = json.loads(path.read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # two token ids swapped: another tokenizer
    path.write_text(json.dumps(tok))
    return fake


@pytest.mark.parametrize("case", ["moe_as_dense", "dense_as_moe", "above_one", "below_zero", "not_a_number", "nan",
                                  "empty", "tokenizers", "out_in_run", "out_is_run", "engine", "per_level",
                                  "vllm_missing"])
def test_bad_input_one_line_exit_2(case, dense_run, moe_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "never"
    dense, moe, extra = str(dense_run), str(moe_run), []
    if case == "moe_as_dense":
        dense = str(moe_run)
    elif case == "dense_as_moe":
        moe = str(dense_run)
    elif case in ("above_one", "below_zero", "not_a_number", "nan", "empty"):
        extra = ["--thresholds", {"above_one": "0.5,1.5", "below_zero": "-0.1", "not_a_number": "0.2,x",
                                  "nan": "nan", "empty": ""}[case]]
    elif case == "tokenizers":
        moe = str(_mismatched_tokenizer(moe_run, tmp_path))
    elif case == "out_in_run":
        out = dense_run / "final" / "hybrid"
    elif case == "out_is_run":
        out = moe_run
    elif case == "engine":
        extra = ["--engine", "tgi"]
    elif case == "per_level":
        extra = ["--per-level", "0"]
    elif case == "vllm_missing":
        monkeypatch.setenv("MOELAB_VLLM_PYTHON", str(tmp_path / "no-python"))
        extra = ["--engine", "vllm"]
    args = ["hybrid", dense, moe, "--out", str(out), "--per-level", "1", *extra]
    if "--engine" not in extra:
        args += ["--engine", "moelab"]
    before = sorted(p.name for p in moe_run.rglob("*")), sorted(p.name for p in dense_run.rglob("*"))
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("moelab: error: ")
    assert not out.exists() or case == "out_is_run"
    assert (sorted(p.name for p in moe_run.rglob("*")), sorted(p.name for p in dense_run.rglob("*"))) == before
    assert not (moe_run / "hybrid.json").exists()
