"""What a transform (or train --init-from) may read and write: never into the run it reads, never over a finished
run, never from a malformed quantization layout or training config, and measured on the run's own corpus and
validation budget. Every refusal is one line before anything is written."""

import json
import os
import shutil

import pytest

from moelab.cli import main
from moelab.errors import MoelabError
from moelab.mitigate import quality
from moelab.mitigate.runs import check_out, read_run
from moelab.mitigate.upcycling import upcycle_compare
from moelab.train.loop import train
from moelab.train.presets import load_train_spec


def _quiet(_):
    pass


def _bare_copy(run, dest):
    """The run's final/ alone under dest/final: a run without checkpoints, as every transform writes one."""
    shutil.copytree(run / "final", dest / "final")
    return dest


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _edit_meta(run, **changes):
    path = run / "final" / "meta.json"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


def _train_args(corpus_dir):
    return ["--steps", "1", "--batch-size", "2", "--seq-len", "16", "--eval-tokens", "64", "--data", str(corpus_dir),
            "--max-bytes-per-domain", "200000", "--no-progress"]


# --- 1. train --init-from never writes into (or over) the run it reads ---------------------------------------


@pytest.mark.parametrize("where", ["run", "final", "inside", "holder"])
def test_train_init_from_out_in_or_around_the_run_is_refused(where, dense_run, corpus_dir, tmp_path, capsys):
    holder = tmp_path / "holder"
    src = _bare_copy(dense_run, holder / "src")
    out = {"run": src, "final": src / "final", "inside": src / "continued", "holder": holder}[where]
    before = _snapshot(holder)
    rc = main(["train", "--init-from", str(src), "--out", str(out), *_train_args(corpus_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "the --init-from run" in err and len(err.strip().splitlines()) == 1, err
    assert _snapshot(holder) == before  # nothing written, the source's final/ untouched


def test_train_over_a_finished_run_without_checkpoints_is_refused(dense_run, make_config, tmp_path):
    done = _bare_copy(dense_run, tmp_path / "done")
    before = _snapshot(done / "final")
    with pytest.raises(MoelabError, match=r"already holds a finished run \(final/\)"):
        train(load_train_spec("tiny-dense"), make_config(steps=1), done, progress=False, log=_quiet)
    assert _snapshot(done / "final") == before and not (done / "metrics.jsonl").exists()


# --- 2. a transform's --out: not inside the source run, not holding it, writable --------------------------


def test_check_out_refuses_a_folder_inside_the_source_run(moe_run, tmp_path):
    source = read_run(moe_run)
    for out in (moe_run / "pruned", moe_run / "final" / "x", moe_run / "a" / "b"):
        with pytest.raises(MoelabError, match="is the source run .* or inside it"):
            check_out(out, source.folder)
        assert not out.exists()
    with pytest.raises(MoelabError, match="not empty"):  # a folder holding the run
        check_out(moe_run.parent, source.folder)
    assert check_out(tmp_path / "elsewhere", source.folder) == tmp_path / "elsewhere"


def test_transforms_refuse_an_out_inside_the_run_in_one_line(moe_run, tmp_path, capsys):
    src = _bare_copy(moe_run, tmp_path / "src")
    before = _snapshot(src)
    for args in (["prune", str(src), "--keep", "4"], ["quantize", str(src), "--experts", "int8"]):
        assert main([*args, "--out", str(src / "new")]) == 2
        err = capsys.readouterr().err
        assert "or inside it" in err and len(err.strip().splitlines()) == 1, err
    assert _snapshot(src) == before and not (src / "new").exists()


def test_check_out_needs_a_writable_folder_above_it(moe_run, tmp_path, monkeypatch):
    source = read_run(moe_run)
    (tmp_path / "file").write_text("x")
    with pytest.raises(MoelabError, match="is not a folder"):
        check_out(tmp_path / "file" / "sub", source.folder)
    asked = []

    def no_write(path, mode):  # (tests may run as root, for whom every folder is writable)
        asked.append((os.fspath(path), mode))
        return False

    monkeypatch.setattr("moelab.mitigate.runs.os.access", no_write)
    with pytest.raises(MoelabError, match="not writable"):
        check_out(tmp_path / "a" / "b", source.folder)
    assert asked == [(str(tmp_path.resolve()), os.W_OK | os.X_OK)]  # the nearest folder that exists
    assert not (tmp_path / "a").exists()


def test_upcycle_compare_refuses_an_out_inside_the_dense_run(dense_run, tmp_path):
    src = _bare_copy(dense_run, tmp_path / "src")
    shutil.copy(dense_run / "summary.json", src / "summary.json")
    before = _snapshot(src)
    for out in (src, src / "compare"):
        with pytest.raises(MoelabError, match="the dense run"):
            upcycle_compare(src, 2, 1, 1, out, log=_quiet)
    assert _snapshot(src) == before


# --- 3. the quantization layout is checked where a run is read ----------------------------------------------


GOOD = {"components": {"routed_experts": "int8"}, "group_size": 128, "scheme": "symmetric"}


@pytest.mark.parametrize("layout", [
    "int8", [1], {"group_size": 128}, {"components": "routed_experts", "group_size": 128},
    {"components": {}, "group_size": 128}, {"components": {"experts": "int8"}, "group_size": 128},
    {"components": {"routed_experts": "int3"}, "group_size": 128}, {"components": {"routed_experts": "int8"}},
    {**GOOD, "group_size": 0}, {**GOOD, "group_size": True}, {**GOOD, "group_size": "128"},
    {**GOOD, "group_size": 2.0}, {**GOOD, "scheme": 5},
])
def test_a_malformed_quantization_layout_is_not_a_run(layout, moe_run, tmp_path, capsys):
    from moelab.bench.models import run_quantization

    src = _bare_copy(moe_run, tmp_path / "src")
    _edit_meta(src, quantization=layout)
    with pytest.raises(MoelabError, match=r"not a moelab run \(quantization: "):
        read_run(src)
    with pytest.raises(MoelabError, match=r"not a moelab run \(quantization: "):
        run_quantization(src / "final")
    for args in (["prune", str(src), "--keep", "4"], ["quantize", str(src), "--experts", "int8"],
                 ["upcycle", str(src), "--experts", "2", "--top-k", "1"]):
        assert main([*args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "quantization: " in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "out").exists()


def test_a_valid_layout_reads_and_names_its_components(moe_run, tmp_path, capsys):
    src = _bare_copy(moe_run, tmp_path / "src")
    _edit_meta(src, quantization={**GOOD, "components": {"routed_experts": "int4", "attention": "int8"}})
    assert read_run(src).quantization["group_size"] == 128
    assert main(["prune", str(src), "--keep", "4", "--out", str(tmp_path / "out")]) == 2
    assert "is quantized (attention=int8, routed_experts=int4)" in capsys.readouterr().err


# --- 4. the corpus a transform measures on is the run's, read through its validated config ------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"vocab_size": "big"}, "--vocab-size must be an integer"),
    ({"max_bytes_per_domain": -1}, "--max-bytes-per-domain must be between"),
    ({"data": 5}, "--data must be a path"),
    ({"seq_len": 0}, "--seq-len must be between"),
])
def test_a_bad_training_config_is_one_line(change, message, moe_run, tmp_path, capsys):
    src = _bare_copy(moe_run, tmp_path / "src")
    config = json.loads((src / "final" / "meta.json").read_text())["config"]
    _edit_meta(src, config={**config, **change})
    with pytest.raises(MoelabError, match="its training config cannot be read") as e:
        quality.run_corpus(read_run(src))
    assert message in str(e.value)
    assert main(["prune", str(src), "--keep", "4", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists(), err


def test_a_relative_corpus_path_that_is_not_here_says_so(moe_run, tmp_path, monkeypatch):
    src = _bare_copy(moe_run, tmp_path / "src")
    config = json.loads((src / "final" / "meta.json").read_text())["config"]
    _edit_meta(src, config={**config, "data": "corpus-folder"})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MoelabError, match="cannot be rebuilt here: its corpus corpus-folder is missing .*relative "
                                          "to the folder moelab train ran in"):
        quality.run_corpus(read_run(src))
    shutil.copytree(config["data"], tmp_path / "corpus-folder")  # run from where it is: the same corpus
    assert quality.run_corpus(read_run(src)).domains == quality.run_corpus(read_run(moe_run)).domains


def test_a_run_whose_tokenizer_is_not_its_corpus_is_refused(moe_run, dense_run, make_config, tmp_path, capsys):
    src = _bare_copy(moe_run, tmp_path / "src")
    tok = json.loads((src / "final" / "tokenizer.json").read_text())
    tok["model"]["vocab"] = {k: (v + 1) % len(tok["model"]["vocab"]) for k, v in tok["model"]["vocab"].items()}
    (src / "final" / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(MoelabError, match="the corpus this run trained on cannot be rebuilt here: the run's "
                                          "tokenizer.json differs"):
        quality.run_corpus(read_run(src))
    assert main(["prune", str(src), "--keep", "4", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot be rebuilt here" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    # train --init-from makes the same check (runs.check_tokenizer)
    dense = _bare_copy(dense_run, tmp_path / "dense")
    shutil.copy(src / "final" / "tokenizer.json", dense / "final" / "tokenizer.json")
    with pytest.raises(MoelabError, match="its tokenizer differs .*tokenizer.json differs"):
        train(load_train_spec("tiny-dense"), make_config(steps=1), tmp_path / "t", progress=False, log=_quiet,
              init_from=dense)
    assert not (tmp_path / "t" / "final").exists()


# --- 5. train --init-from continues the data order by default ---------------------------------------------------


def test_init_from_defaults_the_data_offset_to_the_batches_after_the_runs(dense_run, corpus_dir, tmp_path):
    pre = json.loads((dense_run / "final" / "meta.json").read_text())["config"]
    for given, expected in ((None, pre["steps"] + pre["data_offset"]), ("0", 0), ("3", 3)):
        out = tmp_path / f"t{given}"
        extra = [] if given is None else ["--data-offset", given]
        assert main(["train", "--init-from", str(dense_run), "--out", str(out), *_train_args(corpus_dir), *extra,
                     "--json"]) == 0
        meta = json.loads((out / "final" / "meta.json").read_text())
        assert meta["config"]["data_offset"] == expected and meta["lineage"][-1]["data_offset"] == expected
    assert pre["steps"] + pre["data_offset"] not in (0, 3)  # (the default is none of the explicit cases)


# --- 6. "loss before" of a run is one number in every transform ----------------------------------------------


def test_prune_and_quantize_measure_on_the_runs_own_eval_tokens(moe_run, tmp_path):
    from moelab.mitigate.prune import prune
    from moelab.mitigate.quantize import quantize

    own = json.loads((moe_run / "final" / "meta.json").read_text())["config"]["eval_tokens"]
    assert own != quality.EVAL_TOKENS
    p = prune(moe_run, tmp_path / "p", keep=4, calibration_tokens=256)
    q = quantize(moe_run, tmp_path / "q", experts="int8")
    assert p["eval_tokens"] == q["eval_tokens"] == own
    assert p["loss"]["before"] == q["loss"]["before"]
    assert quality.eval_tokens(read_run(moe_run), 100) == 100
