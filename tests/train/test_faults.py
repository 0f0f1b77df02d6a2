"""Fault injection (issue 10, part 4): `moelab train` killed with SIGKILL at named points -- inside checkpoint
writes, the resume rewrite of metrics.jsonl, metrics appends and runs-store writes (the test-only hook
MOELAB_FAULT, see moelab.train.faults) -- interrupted with Ctrl-C, and failing on a full disk. Each time the
user's next step (`--resume`, or a plain rerun if no checkpoint was written yet) must end bit-identical to an
uninterrupted run: the same final parameters (safetensors) and the same logged losses, for aux and aux-free
balancing. The default suite kills each mode 4 times at fixed points chosen to cover every kind of write;
the slow test (-m slow) stops each mode 25 times at passages drawn by a seeded generator, one in five with a
Ctrl-C instead of SIGKILL.
"""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from moelab.cli import main
from moelab.data import prepare
from moelab.spec.hf import spec_from_config
from moelab.spec.model import spec_to_dict
from moelab.spec.transform import as_moe
from moelab.train import checkpoint, loop
from moelab.train.config import TrainConfig
from moelab.train.store import list_runs

STEPS, CKPT_EVERY, EVAL_EVERY, KEEP_LAST = 8, 2, 4, 2
MODES = ("aux", "aux-free")
# Each launch of a chain dies at one of these (point:N = the N-th passage in that launch), chosen so that
# every kind of write is hit: a checkpoint before and after its rename, its pruning, an evaluation, the
# metrics append and rewrite, the runs store before each commit.
DEFAULT_FAULTS = {
    "aux": ["ckpt-rename:2", "metrics-rewrite:1", "store-start:1", "store-finish:1"],
    "aux-free": ["metrics-append:3", "evaluate:1", "ckpt-renamed:1", "ckpt-prune:1"],
}


def _micro_moe(path):
    """A 0.5M-parameter MoE (2 layers, d=64, 4 experts top-2) as a moelab spec JSON: checkpoints of a few MB."""
    spec = spec_from_config({"model_type": "llama", "vocab_size": 2048, "hidden_size": 64, "num_hidden_layers": 2,
                             "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 128,
                             "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                             "tie_word_embeddings": False}, "micro")
    path.write_text(json.dumps(spec_to_dict(replace(as_moe(spec, 4, 2), name="micro-moe"))))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory, corpus_dir):
    """A corpus, a model, a home (runs store) and a cache shared by every process of this module."""
    root = tmp_path_factory.mktemp("faults")
    lab = {"root": root, "corpus": corpus_dir, "model": _micro_moe(root / "micro-moe.json"),
           "home": root / "home", "cache": root / "cache"}
    with pytest.MonkeyPatch.context() as patch:  # train the tokenizer once, before processes run side by side
        patch.setenv("MOELAB_CACHE", str(lab["cache"]))
        prepare(str(lab["corpus"]), TrainConfig().vocab_size, max_bytes_per_domain=TrainConfig().max_bytes_per_domain)
    return lab


def _args(lab, out, balancing, resume):
    return ["train", "--model", str(lab["model"]), "--out", str(out), "--steps", str(STEPS), "--batch-size", "4",
            "--seq-len", "32", "--ckpt-every", str(CKPT_EVERY), "--eval-every", str(EVAL_EVERY), "--keep-last",
            str(KEEP_LAST), "--data", str(lab["corpus"]), "--no-progress", "--balancing", balancing,
            *(["--resume"] if resume else [])]


def _env(lab, fault=None):
    # one torch thread per process: the two modes' chains run side by side on two cores
    env = {**os.environ, "MOELAB_HOME": str(lab["home"]), "MOELAB_CACHE": str(lab["cache"]), "PYTHONHASHSEED": "0",
           "OMP_NUM_THREADS": "1"}
    env.pop("MOELAB_FAULT", None)
    if fault:
        env["MOELAB_FAULT"] = fault
    return env


def _checkpoint_steps(out) -> list[int]:
    return sorted(int(p.name[5:]) for p in out.glob("ckpt-*") if p.name[5:].isdigit())


def _launch(lab, out, balancing, fault=None):
    """One `moelab train` process, resuming (as a user would) when the folder holds a checkpoint."""
    resume = bool(_checkpoint_steps(out)) if out.exists() else False
    cmd = [sys.executable, "-m", "moelab.cli", *_args(lab, out, balancing, resume)]
    return subprocess.run(cmd, env=_env(lab, fault), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def references(lab):
    """Uninterrupted runs, one per balancing mode (side by side)."""
    refs = {mode: lab["root"] / f"reference-{mode}" for mode in MODES}
    with ThreadPoolExecutor(len(MODES)) as pool:
        for done in pool.map(lambda mode: _launch(lab, refs[mode], mode), MODES):
            assert done.returncode == 0, done.stderr
    return refs


def _assert_identical(reference, out):
    ref, got = (load_file(str(p / "final" / "model.safetensors")) for p in (reference, out))
    assert ref.keys() == got.keys()
    differ = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not differ, f"{len(differ)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"
    rows = [[json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines()] for p in (reference, out)]
    assert [r["step"] for r in rows[1]] == list(range(1, STEPS + 1)), "history lost or duplicated"
    assert [r["loss"] for r in rows[0]] == [r["loss"] for r in rows[1]], "the resumed run logged other losses"
    assert [r.get("val") for r in rows[0]] == [r.get("val") for r in rows[1]]


def _passages(out, resume: bool) -> dict[str, int]:
    """How often a launch on `out` (as it is now) passes each fault point: the kills that surely land."""
    done = _checkpoint_steps(out)[-1] if resume else 0
    todo = range(done + 1, STEPS + 1)
    saves = [s for s in todo if s % CKPT_EVERY == 0 or s == STEPS]
    kept, prunes = len(_checkpoint_steps(out)) if resume else 0, 0
    for _ in saves:
        kept += 1
        prunes += max(kept - KEEP_LAST, 0)
        kept = min(kept, KEEP_LAST)
    counts = {"metrics-append": len(todo), "ckpt-tensors": len(saves), "ckpt-rename": len(saves),
              "ckpt-renamed": len(saves), "ckpt-prune": prunes,
              "evaluate": sum(1 for s in todo if s % EVAL_EVERY == 0 or s == STEPS),
              "metrics-rewrite": int(resume and (out / "metrics.jsonl").exists()),
              "store-start": 1, "final-rename": 1, "store-finish": 1}
    return {point: n for point, n in counts.items() if n}


def _seeded_fault(rng: random.Random, out) -> str:
    """One passage drawn uniformly among all those the next launch on `out` will make; one in five a Ctrl-C."""
    resume = out.exists() and bool(_checkpoint_steps(out))
    passages = [f"{point}:{n}" for point, count in sorted(_passages(out, resume).items()) for n in range(1, count + 1)]
    return rng.choice(passages) + (":INT" if rng.random() < 0.2 else "")


def _kill_chain(lab, out, mode, faults) -> dict:
    """Launch, die at each fault in turn, then run to the end; the counts of what happened."""
    tally = {"kills": 0, "ctrl-c": 0, "resumes": 0}
    for fault in faults:
        fault = fault(out) if callable(fault) else fault
        tally["resumes"] += bool(out.exists() and _checkpoint_steps(out))
        died = _launch(lab, out, mode, fault)
        ctrl_c = fault.endswith(":INT")
        assert died.returncode == (130 if ctrl_c else -signal.SIGKILL), \
            f"{fault}: the kill did not land (rc {died.returncode}) {died.stderr[-2000:]}"
        assert "Traceback" not in died.stderr and (not ctrl_c or "interrupted" in died.stderr)
        tally["kills"] += 1
        tally["ctrl-c"] += ctrl_c
    tally["resumes"] += bool(_checkpoint_steps(out))
    done = _launch(lab, out, mode)
    assert done.returncode == 0, done.stderr
    return tally


def _statuses(lab, monkeypatch, out) -> list[str]:
    """The runs store's statuses of the runs in `out`, oldest first; none may be left "running"."""
    monkeypatch.setenv("MOELAB_HOME", str(lab["home"]))
    statuses = [r["status"] for r in list_runs() if r["out_dir"] == str(out.resolve())]
    assert "running" not in statuses, statuses
    return statuses


def test_kills_at_fixed_points_resume_bit_identical(lab, references, monkeypatch):
    outs = {mode: lab["root"] / f"killed-{mode}" for mode in MODES}
    with ThreadPoolExecutor(len(MODES)) as pool:  # the two modes side by side
        tallies = dict(zip(MODES, pool.map(lambda m: _kill_chain(lab, outs[m], m, DEFAULT_FAULTS[m]), MODES),
                           strict=True))
    for mode, out in outs.items():
        _assert_identical(references[mode], out)
        assert tallies[mode]["kills"] == 4 and tallies[mode]["resumes"] >= 3
        assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".lock"], "leftovers"
        assert _statuses(lab, monkeypatch, out)[-1] == "finished"
        print(f"\n{mode}: {tallies[mode]['kills']} kills, {tallies[mode]['resumes']} resumes, bit-identical")


def test_ctrl_c_exits_130_and_the_run_resumes_bit_identical(lab, references, monkeypatch):
    out = lab["root"] / "ctrl-c"
    cmd = [sys.executable, "-m", "moelab.cli", *_args(lab, out, "aux", resume=False)]
    proc = subprocess.Popen(cmd, env=_env(lab), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    while proc.poll() is None and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "interrupted" in err and "Traceback" not in err
    assert _statuses(lab, monkeypatch, out) == ["interrupted"]
    resumed = _launch(lab, out, "aux")
    assert resumed.returncode == 0, resumed.stderr
    _assert_identical(references["aux"], out)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def threads_of_a_fresh_process(lab, references, monkeypatch):
    """This process computes with the thread count the reference processes had (the runs store records it;
    other tests of the session may have changed it), so that in-process and subprocess runs agree bit for bit."""
    monkeypatch.setenv("MOELAB_HOME", str(lab["home"]))
    fresh = list_runs()[0]["machine"]["threads"]
    before = torch.get_num_threads()
    torch.set_num_threads(fresh)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("writer", ["checkpoint tensors", "safetensors error", "metrics line"])
def test_a_full_disk_is_one_line_and_resume_is_bit_identical(lab, references, threads_of_a_fresh_process, writer,
                                                             monkeypatch, capsys):
    monkeypatch.setenv("MOELAB_HOME", str(lab["home"]))
    monkeypatch.setenv("MOELAB_CACHE", str(lab["cache"]))
    capsys.readouterr()
    out = lab["root"] / f"full-disk-{writer.replace(' ', '-')}"
    calls = {"n": 0}
    real = checkpoint.save_file

    def save_file(*args, **kwargs):  # the disk fills up while ckpt-4 is written
        calls["n"] += 1
        if calls["n"] == 2 and writer == "safetensors error":  # what safetensors raises on a full tmpfs
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return _enospc() if calls["n"] == 2 else real(*args, **kwargs)

    def fault_point(name):  # ... or while the 5th metrics line is written
        calls["n"] += name == "metrics-append"
        if name == "metrics-append" and calls["n"] == 5:
            _enospc()

    with monkeypatch.context() as patch:
        if writer == "metrics line":
            patch.setattr(loop, "fault_point", fault_point)
        else:
            patch.setattr(checkpoint, "save_file", save_file)
        assert main(_args(lab, out, "aux", resume=False)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("moelab: error:") and "No space left on device" in err, err
    assert not [p for p in out.iterdir() if p.name.startswith(".ckpt-")], "a half-written checkpoint was left"
    assert _checkpoint_steps(out) == ([2, 4] if writer == "metrics line" else [2])
    assert main(_args(lab, out, "aux", resume=True)) == 0
    _assert_identical(references["aux"], out)
    assert _statuses(lab, monkeypatch, out) == ["failed", "finished"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_25_seeded_kills_per_mode_resume_bit_identical(lab, references, mode, monkeypatch):
    """Five chains of five launches, each launch stopped at a passage drawn by a seeded generator among those it
    will surely make (SIGKILL, or one in five a Ctrl-C), then run to the end and compared."""
    rng = random.Random(f"faults-{mode}")
    total = {"kills": 0, "ctrl-c": 0, "resumes": 0}
    drawn = []
    for chain in range(5):
        out = lab["root"] / f"seeded-{mode}-{chain}"

        def draw(folder):
            drawn.append(_seeded_fault(rng, folder))
            return drawn[-1]

        tally = _kill_chain(lab, out, mode, [draw] * 5)
        _assert_identical(references[mode], out)
        assert _statuses(lab, monkeypatch, out)[-1] == "finished"
        for key in total:
            total[key] += tally[key]
    assert total["kills"] == 25
    print(f"\n{mode}: {total['kills']} kills ({total['ctrl-c']} of them Ctrl-C), {total['resumes']} resumes, "
          f"bit-identical; points {drawn}")
