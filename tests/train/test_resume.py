"""Kill a training run with SIGKILL at arbitrary moments, resume it, and get the uninterrupted parameters."""

import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file


def _cmd(out, corpus_dir):
    return [sys.executable, "-m", "moelab.cli", "train", "--model", "tiny-moe", "--out", str(out), "--steps", "12",
            "--batch-size", "4", "--seq-len", "32", "--ckpt-every", "2", "--eval-every", "4", "--data",
            str(corpus_dir), "--no-progress", "--balancing", "aux"]


def _run(args, env, kill_after=None):
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if kill_after is None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        return True
    time.sleep(kill_after)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return False
    assert proc.returncode == 0, proc.stderr.read().decode()
    return True


def test_sigkill_and_resume_is_bit_exact(tmp_path, corpus_dir):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    reference = tmp_path / "reference"
    _run(_cmd(reference, corpus_dir), env)  # also warms the tokenizer and corpus caches
    killed = tmp_path / "killed"
    start = time.perf_counter()
    _run(_cmd(reference.parent / "timing", corpus_dir), env)
    duration = time.perf_counter() - start
    finished, kills = False, 0
    # first launch, then resumes; each killed at a different fraction of a full run
    for fraction in (0.55, 0.35, 0.6, 0.45, 0.7):
        args = _cmd(killed, corpus_dir) + (["--resume"] if kills or finished else [])
        finished = _run(args, env, kill_after=fraction * duration)
        if finished:
            break
        kills += 1
    if not finished:
        _run(_cmd(killed, corpus_dir) + ["--resume"], env)
    assert kills >= 1, "the run was never killed: nothing was tested"
    ref = load_file(str(reference / "final" / "model.safetensors"))
    got = load_file(str(killed / "final" / "model.safetensors"))
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "resumed parameters differ from the uninterrupted run"
    ref_lines = (reference / "metrics.jsonl").read_text().splitlines()
    got_lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert len(got_lines) == len(ref_lines) == 12
