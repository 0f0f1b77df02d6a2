"""train --init-from (the run's weights at step 0, a fresh optimizer and schedule, lineage, refusals, resume bit for
bit) and the upcycling comparison (three arms on one budget after the dense pretraining)."""

import json
import shutil
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from moelab.cli import main
from moelab.data import prepare, train_batch
from moelab.errors import MoelabError
from moelab.mitigate.runs import read_run
from moelab.mitigate.upcycle import upcycle
from moelab.mitigate.upcycling import ARMS, upcycle_compare
from moelab.train.checkpoint import read_state
from moelab.train.loop import lr_at, train
from moelab.train.presets import load_train_spec


def _quiet(_):
    pass


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_init_from_starts_from_the_runs_weights_with_a_fresh_schedule(dense_run, make_config, tmp_path):
    cfg = make_config(steps=2, data_offset=12)
    out = tmp_path / "continued"
    summary = train(load_train_spec("tiny-dense"), cfg, out, progress=False, log=_quiet, init_from=dense_run)
    # the first step's loss is the run's own model on that step's batch (computed here independently)
    corpus, _ = prepare(cfg.data, cfg.vocab_size, max_bytes_per_domain=cfg.max_bytes_per_domain)
    inputs, targets = train_batch(corpus, 12, cfg.batch_size, cfg.seq_len, cfg.seed)
    model = read_run(dense_run).load_model().train()
    with torch.no_grad():
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten()).item()
    first = _rows(out)[0]
    assert first["loss"] == pytest.approx(loss, abs=2e-6)
    assert first["lr"] == lr_at(0, cfg)  # the schedule starts again (warmup from step 0)
    ckpt = next(out.glob("ckpt-*"))
    moments = load_file(str(ckpt / "optimizer.safetensors"))
    steps = {float(v) for k, v in moments.items() if k.endswith(".step")}
    assert steps == {2.0}, steps  # a fresh AdamW: two steps of its own, nothing from the run
    for where in (summary, json.loads((out / "summary.json").read_text()),
                  json.loads((out / "final" / "meta.json").read_text())):
        assert where["init_from"] == str(dense_run.resolve())
        assert [e["transform"] for e in where["lineage"]] == ["train"]
        assert where["lineage"][0]["steps"] == 2 and where["lineage"][0]["data_offset"] == 12


def test_init_from_an_upcycled_run_extends_its_lineage_and_resumes_bit_for_bit(dense_run, make_config, tmp_path):
    up = tmp_path / "up"
    upcycle(dense_run, 4, 2, up, mode="split", eval_tokens=64)
    spec = read_run(up).spec
    cfg = replace(make_config(steps=4), ckpt_every=2, eval_every=2)
    whole = tmp_path / "whole"
    train(spec, cfg, whole, progress=False, log=_quiet, init_from=up)
    meta = json.loads((whole / "final" / "meta.json").read_text())
    assert [e["transform"] for e in meta["lineage"]] == ["upcycle", "train"]
    # the same run stopped after its step-2 checkpoint, then resumed: the init applies at step 0 only
    cut = tmp_path / "cut"
    train(spec, cfg, cut, progress=False, log=_quiet, init_from=up)
    saved = read_state(cut / "ckpt-2")["lineage"]
    shutil.rmtree(cut / "ckpt-4")
    shutil.rmtree(cut / "final")
    train(spec, cfg, cut, resume=True, progress=False, log=_quiet)  # --init-from taken from the checkpoint
    a, b = load_file(str(whole / "final" / "model.safetensors")), load_file(str(cut / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((cut / "final" / "meta.json").read_text())["lineage"] == saved  # the first launch's entry
    assert [{k: v for k, v in e.items() if k != "created"} for e in saved] == [
        {k: v for k, v in e.items() if k != "created"} for e in meta["lineage"]]
    other = tmp_path / "up-copy"  # the same model in another run folder: not the run it started from
    shutil.copytree(up, other)
    with pytest.raises(MoelabError, match="resume it with the same --init-from"):
        train(spec, cfg, cut, resume=True, progress=False, log=_quiet, init_from=other)


@pytest.mark.parametrize(("case", "message"), [
    ("quantized", "is quantized"),
    ("spec", "another model than --model tiny-moe"),
    ("missing", "no such run folder"),
])
def test_init_from_refusals_are_one_line_exit_2(case, message, dense_run, marked_quantized, corpus_dir, tmp_path,
                                                capsys):
    out = tmp_path / "out"
    source, model = str(dense_run), "tiny-dense"
    if case == "quantized":
        source = str(marked_quantized(dense_run))
    elif case == "spec":
        model = "tiny-moe"
    elif case == "missing":
        source = str(tmp_path / "nowhere")
    rc = main(["train", "--model", model, "--out", str(out), "--init-from", source, "--steps", "1",
               "--data", str(corpus_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # refused before the folder is touched


def test_init_from_another_vocabulary_is_refused_before_training(dense_run, make_config, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(MoelabError, match="512-token vocabulary, this run builds 384"):
        train(load_train_spec("tiny-dense"), replace(make_config(steps=1), vocab_size=384), out, progress=False,
              log=_quiet, init_from=dense_run)
    assert not (out / "metrics.jsonl").exists() and not list(out.glob("ckpt-*")) and not (out / "final").exists()


def test_train_without_model_takes_the_runs_own(dense_run, corpus_dir, tmp_path, capsys):
    up = tmp_path / "up"
    upcycle(dense_run, 2, 1, up, eval_tokens=64)
    rc = main(["train", "--out", str(tmp_path / "t"), "--init-from", str(up), "--steps", "1", "--batch-size", "2",
               "--seq-len", "16", "--data", str(corpus_dir), "--max-bytes-per-domain", "200000",
               "--eval-tokens", "64", "--no-progress", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "tiny-dense-up2x1-copy" and summary["lineage"][-1]["transform"] == "train"
    assert main(["train", "--out", str(tmp_path / "u"), "--steps", "1"]) == 2
    assert "needs --model" in capsys.readouterr().err


def test_the_comparison_runs_three_arms_on_one_budget(dense_run, tmp_path, capsys):
    out = tmp_path / "cmp"
    result = upcycle_compare(dense_run, 4, 2, 2, out, mode="split", target_margin=0.0, eval_every=1, log=_quiet)
    pre = read_run(dense_run).meta["summary"]
    assert set(result["arms"]) == set(ARMS) and (out / "result.json").is_file()
    assert result["target_loss"] == pre["val"]["mean"] and "fixed before" in result["target_rule"]
    assert result["budget"]["total_steps"] == 14
    cont, up, scratch = (result["arms"][a] for a in ARMS)
    assert cont["steps"] == up["steps"] == 2 and scratch["steps"] == 14
    assert cont["tokens_total"] == up["tokens_total"] == scratch["tokens"] == scratch["tokens_total"]
    assert up["flops_total"] == pytest.approx(pre["flops"] + up["flops"])
    assert up["model"] == scratch["model"] == "tiny-dense-up4x2-split" and cont["model"] == "tiny-dense"
    assert set(up["final_val"]) == {"code", "numbers", "prose", "mean"}
    assert up["start_val"] is not None and cont["start_val"]["mean"] == pytest.approx(pre["val"]["mean"], abs=1e-4)
    assert result["config"]["continued"]["data_offset"] == 12 and result["config"]["scratch"]["data_offset"] == 0
    # the continued arms start from their runs; the scratch arm does not
    assert json.loads((out / "upcycled-trained" / "summary.json").read_text())["init_from"] == str(
        (out / "upcycled").resolve())
    assert "init_from" not in json.loads((out / "moe-scratch" / "summary.json").read_text())
    # the dense arm's first loss continues where the pretraining ended (the run's weights), not from a fresh init
    assert _rows(out / "dense-continued")[0]["loss"] < _rows(out / "moe-scratch")[0]["loss"]
    # a rerun resumes every arm and reuses the upcycle; the command prints the same JSON shape
    assert main(["upcycle-compare", str(dense_run), "--experts", "4", "--top-k", "2", "--mode", "split",
                 "--steps", "2", "--target-margin", "0", "--eval-every", "1", "--out", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["upcycle"]["summary"]["reused"] is True
    assert all(again["arms"][a]["final_val"] == result["arms"][a]["final_val"] for a in ARMS)
    assert main(["upcycle-compare", str(dense_run), "--experts", "4", "--top-k", "5", "--steps", "2",
                 "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_the_study_stage_says_when_it_has_no_dense_run(tmp_path):
    from moelab.study.plan import StudyPlan
    from moelab.study.upcycling import upcycling_stage

    result = upcycling_stage(tmp_path, StudyPlan.quick_plan(), _quiet)
    assert "no dense run" in result["skipped"] and result["scope"] == "quick" and result["shrunk"]
    assert result["steps"] == 6 and result["expected_seconds"] > 0 and not (tmp_path / "upcycling").exists()
