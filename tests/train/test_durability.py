"""Nothing lost, nothing crashes, nothing overclaims: run folders, the lock, resume fallbacks, the runs store,
flag validation, empty validation splits and the clocks (issue 10). The kill tests are in test_faults.py."""

import contextlib
import errno
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from moelab.cli import main
from moelab.cost.params import count_params
from moelab.data import cache
from moelab.errors import MoelabError
from moelab.nn import MoEOptions
from moelab.nn.moe import MoELayer
from moelab.spec.hf import spec_from_config
from moelab.spec.model import MoESpec, spec_to_dict
from moelab.spec.transform import as_moe
from moelab.train import checkpoint, compare, faults, fits, loop, store
from moelab.train.config import TrainConfig
from moelab.train.evaluate import domain_losses
from moelab.train.lock import is_locked, run_lock
from moelab.train.presets import TRAIN_PRESETS
from moelab.train.store import list_runs


def micro(moe: bool = False):
    """A model of 0.3-0.5M parameters (checkpoints of a few MB): what these tests need, quickly."""
    spec = spec_from_config({"model_type": "llama", "vocab_size": 2048, "hidden_size": 64, "num_hidden_layers": 2,
                             "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 128,
                             "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                             "tie_word_embeddings": False}, "micro-dense")
    return replace(as_moe(spec, 4, 2), name="micro-moe") if moe else spec


MICRO_JSON = {}


@pytest.fixture(scope="module", autouse=True)
def micro_json(tmp_path_factory):
    """micro() as a moelab spec JSON, for the command line."""
    path = tmp_path_factory.mktemp("spec") / "micro-dense.json"
    path.write_text(json.dumps(spec_to_dict(micro())))
    MICRO_JSON["path"] = path
    return path


def small(corpus_dir, **changes):
    base = dict(steps=6, batch_size=4, seq_len=32, eval_every=3, ckpt_every=2, keep_last=5, eval_tokens=512,
                data=str(corpus_dir), vocab_size=300, warmup=2)
    return TrainConfig(**{**base, **changes})


def _cli_train(out, corpus_dir, *extra):
    return ["train", "--model", str(MICRO_JSON["path"]), "--out", str(out), "--steps", "2", "--batch-size", "2",
            "--seq-len", "16", "--eval-every", "2", "--ckpt-every", "2", "--data", str(corpus_dir), "--no-progress",
            *extra]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("moelab: error:") and err.count("\n") == 1, err
    return err


def _weights(out):
    return load_file(str(out / "final" / "model.safetensors"))


def _same_weights(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


# --- 1. run folders stay under --out ---


@pytest.mark.parametrize("name, folder", [("/some/dir", "some_dir"), ("../../x", "x"), ("..", "model"),
                                          ("a/../../b", "a_b"), (".hidden", "hidden"), ("c:\\win\\x", "c_win_x"),
                                          ("tiny-moe", "tiny-moe"), ("[/red] ok", "red_ok")])
def test_model_names_become_safe_folder_names(name, folder):
    assert compare.folder_name(name) == folder


def test_train_compare_writes_nothing_outside_out(tmp_path, corpus_dir):
    out = tmp_path / "nest" / "cmp"
    specs = [replace(micro(), name=str(tmp_path / "victim")),
             replace(micro(), name="../../escaped")]
    cfg = small(corpus_dir, steps=1, eval_every=1, ckpt_every=1, batch_size=2, seq_len=16)
    result = compare.train_compare(specs, cfg, out, target_loss=50.0, progress=False, log=lambda m: None)
    assert not (tmp_path / "victim").exists() and not (tmp_path / "escaped").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted([compare.folder_name(str(tmp_path / "victim")), "escaped"])
    assert [r["model"] for r in result["rows"]] == [s.name for s in specs]


def test_train_compare_refuses_two_models_in_one_folder(tmp_path):
    specs = [replace(micro(), name="a/b"), replace(micro(), name="a_b")]
    with pytest.raises(MoelabError, match="distinct name"):
        compare.run_folders(specs, tmp_path)


# --- 2. one writer per run folder ---


def test_a_second_writer_gets_the_holders_pid(tmp_path, corpus_dir, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(out / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f'{os.getpid()}\\n'.encode())\n"
        "print('held', flush=True); time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(_cli_train(out, corpus_dir)) == 2
        err = _one_error_line(capsys)
        assert f"pid {holder.pid}" in err and "in use" in err
        assert not (out / "metrics.jsonl").exists() and not list(out.glob("ckpt-*"))
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock went with it, and the PID left in the file blocks nothing
    assert (out / ".lock").read_text().strip() == str(holder.pid)
    assert main(_cli_train(out, corpus_dir)) == 0
    assert [r["status"] for r in list_runs()] == ["finished"]


def test_the_lock_is_held_for_the_whole_run(tmp_path, corpus_dir, monkeypatch):
    out = tmp_path / "run"
    seen = []

    def second_writer(*args, **kwargs):
        with pytest.raises(MoelabError, match=f"pid {os.getpid()}"), run_lock(out):
            pass
        seen.append(True)
        return real(*args, **kwargs)

    real = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", second_writer)
    loop.train(micro(), small(corpus_dir, steps=2), out, progress=False)
    assert seen
    with run_lock(out):  # released at the end
        pass


# --- 3.-5. resume: atomic metrics rewrite, fallback to an intact checkpoint, nothing to resume ---


class _Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing after the fault point runs."""


def test_the_resume_rewrite_of_metrics_never_loses_history(tmp_path, corpus_dir, monkeypatch):
    out, spec, cfg = tmp_path / "run", micro(), small(corpus_dir)
    loop.train(spec, cfg, out, progress=False)
    shutil.rmtree(out / "ckpt-6")
    shutil.rmtree(out / "ckpt-4")
    before = (out / "metrics.jsonl").read_text()

    def die(name):
        if name == "metrics-rewrite":
            raise _Killed

    with monkeypatch.context() as patch, pytest.raises(_Killed):
        patch.setattr(loop, "fault_point", die)
        loop.train(spec, cfg, out, resume=True, progress=False, log=lambda m: None)
    assert (out / "metrics.jsonl").read_text() == before  # whole, not emptied
    loop.train(spec, cfg, out, resume=True, progress=False, log=lambda m: None)
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_during_the_resume_rewrite_is_one_line(tmp_path, corpus_dir, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(_cli_train(out, corpus_dir, "--steps", "4", "--keep-last", "3")) == 0
    shutil.rmtree(out / "ckpt-4")
    before = (out / "metrics.jsonl").read_text()

    def full(name):
        if name == "metrics-rewrite":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(loop, "fault_point", full)
        assert main(_cli_train(out, corpus_dir, "--steps", "4", "--keep-last", "3", "--resume")) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("moelab: error:") and "No space left" in err and "Traceback" not in err
    assert (out / "metrics.jsonl").read_text() == before
    assert main(_cli_train(out, corpus_dir, "--steps", "4", "--keep-last", "3", "--resume")) == 0


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _drop_optimizer(path):
    state = json.loads(path.read_text())
    del state["optimizer"]
    path.write_text(json.dumps(state))


DAMAGE = {
    "truncated model": ("model.safetensors", _truncate),
    "truncated optimizer": ("optimizer.safetensors", _truncate),
    "state without optimizer": ("state.json", _drop_optimizer),
    "corrupt state": ("state.json", lambda p: p.write_bytes(b"\x00{not json")),
    "empty model": ("model.safetensors", lambda p: p.write_bytes(b"")),
}


def test_a_damaged_newest_checkpoint_falls_back_to_an_intact_one(tmp_path, corpus_dir):
    spec, cfg = micro(), small(corpus_dir)
    reference = tmp_path / "reference"
    loop.train(spec, cfg, reference, progress=False)
    for kind, (file, damage) in DAMAGE.items():
        out = tmp_path / kind.replace(" ", "-")
        shutil.copytree(reference, out)
        shutil.rmtree(out / "final")
        shutil.rmtree(out / "ckpt-6")
        damage(out / "ckpt-4" / file)
        said = []
        loop.train(spec, cfg, out, resume=True, progress=False, log=said.append)
        assert any("ckpt-4" in line and "not intact" in line for line in said), (kind, said)
        assert "resuming" in said[-1] and said[-1].endswith("at step 2"), (kind, said)
        assert _same_weights(reference, out), kind
        assert _losses(out) == _losses(reference), kind


def test_no_intact_checkpoint_is_one_line(tmp_path, corpus_dir, capsys):
    out = tmp_path / "run"
    assert main(_cli_train(out, corpus_dir, "--steps", "4", "--keep-last", "3")) == 0
    for ckpt in out.glob("ckpt-*"):
        _truncate(ckpt / "model.safetensors")
    capsys.readouterr()
    assert main(_cli_train(out, corpus_dir, "--steps", "4", "--keep-last", "3", "--resume")) == 2
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert last.startswith("moelab: error: no intact checkpoint in") and "ckpt-2" in last and "ckpt-4" in last
    assert "Traceback" not in err


def test_resume_without_a_checkpoint_exits_2(tmp_path, corpus_dir, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(_cli_train(out, corpus_dir, "--resume")) == 2
    assert "no checkpoint in" in _one_error_line(capsys)
    assert not (out / "metrics.jsonl").exists()


# --- 6. evaluation never touches balancing state ---


def test_evaluation_forwards_leave_the_balancing_load_alone():
    layer = MoELayer(16, MoESpec(n_experts=4, top_k=2, expert_ffn=8), MoEOptions(bias_update_rate=0.01))
    x = torch.randn(1, 32, 16)
    layer.eval()
    layer(x)
    layer.train()
    with torch.no_grad():
        layer(x)
    assert layer.load.sum() == 0
    layer(x)  # a training forward counts
    assert layer.load.sum() == 32 * 2


def test_aux_free_resume_after_an_evaluation_is_bit_identical(tmp_path, corpus_dir):
    spec = micro(moe=True)
    cfg = small(corpus_dir, balancing="aux-free", bias_rate=0.01, eval_every=2, steps=4)
    reference = tmp_path / "reference"
    loop.train(spec, cfg, reference, progress=False)
    out = tmp_path / "resumed"
    shutil.copytree(reference, out)
    for gone in ("final", "ckpt-4"):  # as if killed after the evaluation and checkpoint of step 2
        shutil.rmtree(out / gone)
    loop.train(spec, cfg, out, resume=True, progress=False, log=lambda m: None)
    assert _same_weights(reference, out)
    assert _losses(out) == _losses(reference)


# --- 7. Ctrl-C (in-process; the real signal is in test_faults.py) ---


def test_ctrl_c_records_interrupted_and_leaves_a_resumable_run(tmp_path, corpus_dir, monkeypatch):
    spec, cfg = micro(), small(corpus_dir)
    reference = tmp_path / "reference"
    loop.train(spec, cfg, reference, progress=False)
    passed = {"n": 0}

    def ctrl_c(name):
        if name == "metrics-append":
            passed["n"] += 1
            if passed["n"] == 3:
                raise KeyboardInterrupt

    out, said = tmp_path / "run", []
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(loop, "fault_point", ctrl_c)
        loop.train(spec, cfg, out, progress=False, log=said.append)
    assert list_runs()[-1]["status"] == "interrupted" and any("interrupted" in line for line in said)
    loop.train(spec, cfg, out, resume=True, progress=False, log=lambda m: None)
    assert _same_weights(reference, out) and _losses(out) == _losses(reference)


# --- 8. the runs store ---


def test_a_corrupt_store_warns_and_training_goes_on(tmp_path, corpus_dir, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / "runs.sqlite").write_bytes(b"this is not a database" * 100)
    assert main(_cli_train(tmp_path / "run", corpus_dir)) == 0
    err = capsys.readouterr().err
    assert "warning: runs store" in err and "Traceback" not in err
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert (home / "runs.sqlite").read_bytes() == b"this is not a database" * 100  # left as it was
    assert main(["runs"]) == 2
    assert "move it aside" in _one_error_line(capsys)


def test_a_locked_store_waits_a_bounded_time_then_warns(tmp_path, corpus_dir, monkeypatch):
    monkeypatch.setattr(store, "TIMEOUT_S", 0.05)
    store.list_runs()
    blocker = sqlite3.connect(store.store_path())
    blocker.execute(store.SCHEMA)
    blocker.execute("BEGIN EXCLUSIVE")
    said = []
    try:
        summary = loop.train(micro(), small(corpus_dir, steps=2), tmp_path / "run",
                             progress=False, log=said.append)
    finally:
        blocker.rollback()
        blocker.close()
    assert summary["tokens"] == 2 * 4 * 32
    assert any("runs store" in line and "locked" in line for line in said)
    assert list_runs() == []  # not recorded, and nothing left "running"


def test_a_run_that_could_not_record_its_end_is_not_running_forever(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    run_id = store.start_run(folder, "m", {}, {}, warn=print)
    with run_lock(folder):
        assert [r["status"] for r in list_runs()] == ["running"]
    assert [r["status"] for r in list_runs()] == [store.UNRECORDED]
    store.finish_run(run_id, "finished", {})
    assert [r["status"] for r in list_runs()] == ["finished"]


def test_runs_lists_rows_whatever_their_writer_put_there(capsys):
    with contextlib.closing(sqlite3.connect(store.store_path())) as con:
        con.execute(store.SCHEMA)
        con.execute("INSERT INTO runs (started, updated, status, out_dir, model, spec, config, machine, summary) "
                    "VALUES (1, 1, 'running', '/nonexistent/y', '[/red]', '{', 'NaN', '[]', "
                    "'{\"tokens\": \"many\", \"val\": [1], \"tokens_per_second\": NaN}')")
        con.commit()
    assert main(["runs"]) == 0
    assert "[/red]" in capsys.readouterr().out
    assert main(["runs", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == store.UNRECORDED and row["config"] == {} and row["machine"] == {}


def test_runs_on_a_locked_store_is_one_line(capsys):
    store.list_runs()
    with contextlib.closing(sqlite3.connect(store.store_path())) as blocker:
        blocker.execute(store.SCHEMA)
        blocker.execute("BEGIN EXCLUSIVE")
        assert main(["runs"]) == 2
        blocker.rollback()
    assert "locked" in _one_error_line(capsys)


# --- 9. --out that cannot be a run folder ---


def test_out_that_is_a_file_is_refused_before_training(tmp_path, corpus_dir, capsys):
    target = tmp_path / "file"
    target.write_text("keep me")
    assert main(_cli_train(target, corpus_dir)) == 2
    assert "not a folder" in _one_error_line(capsys)
    assert main(_cli_train(target / "sub", corpus_dir)) == 2
    _one_error_line(capsys)
    assert target.read_text() == "keep me" and list_runs() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; see the patched test below")
def test_a_read_only_out_is_refused_before_training(tmp_path, corpus_dir, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert main(_cli_train(folder, corpus_dir)) == 2
        assert "cannot write" in _one_error_line(capsys)
    finally:
        folder.chmod(0o755)


def test_an_unwritable_out_is_refused_before_training(tmp_path, corpus_dir, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache.tempfile, "mkstemp", refuse)  # what a read-only folder does to a non-root
    assert main(_cli_train(tmp_path / "ro", corpus_dir)) == 2
    assert "cannot write there" in _one_error_line(capsys) and list_runs() == []


# --- 10. an empty validation split scores nothing ---


def test_an_empty_validation_split_is_refused(tmp_path, corpus_dir, capsys):
    tiny = tmp_path / "one-doc-per-domain"
    for domain in ("prose", "numbers"):
        (tiny / domain).mkdir(parents=True)
        shutil.copy(corpus_dir / domain / "doc0.txt", tiny / domain / "doc0.txt")
    assert main(_cli_train(tmp_path / "run", tiny)) == 2
    assert "validation split is empty" in _one_error_line(capsys)


def test_an_evaluation_that_scored_nothing_reaches_no_target():
    model = loop.build(micro(), TrainConfig(steps=1, warmup=0))[0]
    losses, _ = domain_losses(model, {"prose": torch.zeros(1, dtype=torch.int32)}, 16, 64)
    assert losses == {}  # not {"mean": 0.0}
    nan = float("nan")
    vals = [{"mean": 0.0}, {}, {"prose": nan, "mean": nan}, {"prose": 2.5, "mean": 2.5}]
    rows = [{"step": i, "tokens": i, "flops": float(i), "wall_seconds": float(i), "val": val}
            for i, val in enumerate(vals, start=1)]
    assert compare.reached(rows, 3.0)["step"] == 4
    assert compare.reached(rows[:3], 1e9) is None


# --- 11. flags that cannot configure a run ---


@pytest.mark.parametrize("flag, value", [("--capacity-factor", "nan"), ("--capacity-factor", "inf"),
                                         ("--capacity-factor", "0"), ("--capacity-factor", "-1"),
                                         ("--seed", str(2**70)), ("--seed", "-1"), ("--lr", "nan"), ("--lr", "inf")])
def test_bad_training_flags_are_one_line(tmp_path, corpus_dir, capsys, flag, value):
    assert main(_cli_train(tmp_path / "run", corpus_dir, flag, value)) == 2
    _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("changes", [dict(jitter=float("nan")), dict(weight_decay=float("inf")),
                                     dict(min_lr_ratio=2.0), dict(bias_rate=-1.0), dict(steps=True),
                                     dict(steps=2.5), dict(eval_tokens=0), dict(aux_coef=float("nan"))])
def test_train_config_refuses_nonsense(changes):
    with pytest.raises(MoelabError):
        TrainConfig(**changes)


def test_train_compare_refuses_a_target_that_is_not_a_number(tmp_path, capsys):
    for target in ("nan", "inf"):
        assert main(["train-compare", "tiny-dense", "tiny-moe", "--target-loss", target, "--out",
                     str(tmp_path / "cmp")]) == 2
        _one_error_line(capsys)
    assert not (tmp_path / "cmp").exists()


# --- 12. the clocks and progress during evaluation ---


def test_wall_seconds_include_evaluation_and_the_bar_says_evaluating(tmp_path, corpus_dir, capsys):
    out = tmp_path / "run"
    summary = loop.train(micro(), small(corpus_dir), out, progress=True, log=lambda m: None)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in rows if "val" in r]
    assert [r["step"] for r in evaluated] == [3, 6] and all(r["eval_seconds"] > 0 for r in evaluated)
    for row in rows:  # the real clock holds every training step and every evaluation so far
        assert row["wall_seconds"] >= row["train_seconds"] + sum(r["eval_seconds"] for r in evaluated
                                                                 if r["step"] <= row["step"]) - 1e-3
    assert summary["wall_seconds"] >= rows[-1]["wall_seconds"] >= summary["train_seconds"]
    assert summary["tokens_per_second"] == pytest.approx(summary["tokens"] / summary["train_seconds"])
    err = capsys.readouterr().err  # not a terminal: one line as each evaluation starts and ends
    assert err.count("evaluating") == 2 and "step 3/6" in err and "validation loss" in err


# --- review fixes: memory and positions guard, empty --out, one folder check, MOELAB_FAULT, the lock's truth,
# --- file modes, one removal path, unknown run ids


def test_a_run_too_large_for_this_machine_is_one_line_before_any_work(tmp_path, corpus_dir, capsys):
    out = tmp_path / "huge"
    assert main(["train", "--model", "tiny-dense", "--data", str(corpus_dir), "--steps", "1", "--batch-size",
                 "1048576", "--seq-len", "16", "--out", str(out), "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "GB" in line and "available" in line and "--batch-size" in line
    assert not out.exists() and list_runs() == []


def test_the_memory_guard_compares_the_estimate_with_the_available_memory():
    spec, cfg = micro(), TrainConfig(batch_size=64, seq_len=256)
    need = fits.training_bytes(spec, cfg)
    assert need > fits.STATE_BYTES_PER_PARAM * count_params(spec).total  # activations counted
    with pytest.raises(MoelabError, match=r"GB of RAM available"):
        fits.check_trainable(spec, cfg, available=(need, "RAM"))  # over bench's share of it
    fits.check_trainable(spec, cfg, available=(2 * need, "RAM"))


@pytest.mark.parametrize("preset", sorted(TRAIN_PRESETS))
def test_the_presets_fit_at_their_default_and_study_sizes(preset):
    for cfg in (TrainConfig(), TrainConfig(batch_size=8, seq_len=64), TrainConfig(ds_moe=True)):
        fits.check_trainable(TRAIN_PRESETS[preset](), cfg)  # this machine
        fits.check_trainable(TRAIN_PRESETS[preset](), cfg, available=(2e9, "RAM"))  # a small one


def test_a_seq_len_beyond_the_models_positions_is_one_line(tmp_path, corpus_dir, capsys):
    assert main(["train", "--model", "tiny-dense", "--data", str(corpus_dir), "--steps", "1", "--seq-len", "1025",
                 "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    assert "1024 positions" in _one_error_line(capsys)
    assert main(["train-compare", "tiny-dense", "tiny-moe", "--target-loss", "3", "--data", str(corpus_dir),
                 "--steps", "1", "--seq-len", "1025", "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    assert "1024 positions" in _one_error_line(capsys)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("out", ["", "   "])
def test_an_empty_out_is_refused_everywhere(tmp_path, corpus_dir, capsys, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    assert main(_cli_train(out, corpus_dir)) == 2
    assert "--out must name a folder" in _one_error_line(capsys)
    assert main(["train-compare", str(MICRO_JSON["path"]), "tiny-moe", "--target-loss", "3", "--out", out,
                 "--data", str(corpus_dir), "--steps", "1", "--no-progress"]) == 2
    assert "--out must name a folder" in _one_error_line(capsys)
    assert main(["study", "--quick", "--out", out, "--no-progress"]) == 2
    assert "--out must name a folder" in _one_error_line(capsys)
    with pytest.raises(MoelabError, match="--out must name a folder"):
        cache.check_writable_dir(out, "--out")
    assert list(tmp_path.iterdir()) == [] and list_runs() == []


def test_train_refuses_a_bad_out_with_the_shared_message(tmp_path, corpus_dir, capsys):
    target = tmp_path / "file"
    target.write_text("keep me")
    with pytest.raises(MoelabError) as shared:
        cache.check_writable_dir(target, "--out")
    assert main(_cli_train(target, corpus_dir)) == 2
    assert _one_error_line(capsys) == f"moelab: error: {shared.value}\n"
    assert not hasattr(loop, "_prepare_folder")


@pytest.mark.parametrize("value, says", [("evaluate:x", "positive integer"), ("evaluat", "unknown point 'evaluat'"),
                                         ("evaluate:1:TERM", "INT or KILL"), ("nowhere:1", "points: ckpt-tensors")])
def test_a_malformed_fault_is_one_line_before_any_work(tmp_path, corpus_dir, capsys, monkeypatch, value, says):
    monkeypatch.setenv("MOELAB_FAULT", value)
    assert main(_cli_train(tmp_path / "run", corpus_dir)) == 2
    line = _one_error_line(capsys)
    assert f"MOELAB_FAULT={value}" in line and says in line
    assert not (tmp_path / "run").exists() and list_runs() == []


def test_a_well_formed_fault_parses():
    assert faults.parse("evaluate") == ("evaluate", 1, signal.SIGKILL)
    assert faults.parse("ckpt-prune:3:INT") == ("ckpt-prune", 3, signal.SIGINT)


def test_is_locked_asks_the_flock_not_the_pid(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    assert not is_locked(folder) and not (folder / ".lock").exists()  # never creates the file
    (folder / ".lock").write_text("1\n")  # a killed run's file, its PID now someone else's (PID 1 is alive)
    store.start_run(folder, "m", {}, {}, warn=print)
    assert not is_locked(folder)
    assert [r["status"] for r in list_runs()] == [store.UNRECORDED]
    with run_lock(folder):
        (folder / ".lock").write_text("")  # no PID to read: the flock still tells
        assert is_locked(folder)
        assert [r["status"] for r in list_runs()] == ["running"]


def _plain_mode(folder) -> int:
    probe = folder / "plain"
    probe.write_text("x")
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    return mode


def test_atomic_writes_get_the_permissions_of_a_plain_open_and_fsync_the_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(cache.os, "fsync", fsync)
    cache.atomic_write_text(tmp_path / "a.json", "{}")
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == _plain_mode(tmp_path)
    assert synced == [False, True]  # the file, then the folder holding the rename


def test_a_runs_files_have_the_permissions_of_a_plain_open(tmp_path, corpus_dir):
    out = tmp_path / "run"
    cfg = small(corpus_dir, steps=4)
    loop.train(micro(), cfg, out, progress=False)
    shutil.rmtree(out / "ckpt-4")  # resume from ckpt-2: metrics.jsonl rewritten, final/ replaced
    loop.train(micro(), cfg, out, resume=True, progress=False, log=lambda m: None)
    plain = _plain_mode(tmp_path)
    for path in (out / "summary.json", out / "metrics.jsonl", out / "ckpt-4" / "state.json",
                 out / "final" / "meta.json"):
        assert stat.S_IMODE(path.stat().st_mode) == plain, path
    folder_mode = 0o777 & ~(0o666 & ~plain)
    for folder in (out / "ckpt-4", out / "final"):
        assert stat.S_IMODE(folder.stat().st_mode) == folder_mode, folder


def test_save_final_replaces_final_through_the_one_removal_path(tmp_path, monkeypatch):
    removed = []
    real = checkpoint._remove
    monkeypatch.setattr(checkpoint, "_remove", lambda folder: (removed.append(folder.name), real(folder)))
    model = torch.nn.Linear(2, 2)
    checkpoint.save_final(tmp_path, model, {})
    checkpoint.save_final(tmp_path, model, {"again": True})
    assert removed == ["final"] and json.loads((tmp_path / "final" / "meta.json").read_text()) == {"again": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_runs_of_an_unknown_id_is_one_line(tmp_path, capsys):
    assert main(["runs", "999"]) == 2
    assert "no run 999 (no run recorded yet)" in _one_error_line(capsys)
    for _ in range(3):
        store.start_run(tmp_path, "m", {}, {}, warn=print)
    assert main(["runs", "2", "999", "7"]) == 2
    assert "no run 7, 999 (ids: 1-3)" in _one_error_line(capsys)
    assert main(["runs", "2", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [2]
    assert store.id_ranges([5, 1, 2, 3, 7, 8]) == "1-3, 5, 7-8"
