"""Kill a training run with SIGKILL at arbitrary moments, resume it, and get the uninterrupted parameters."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

STEPS = 12


def _cmd(out, corpus_dir):
    return [sys.executable, "-m", "moelab.cli", "train", "--model", "tiny-moe", "--out", str(out), "--steps",
            str(STEPS), "--batch-size", "4", "--seq-len", "32", "--ckpt-every", "2", "--eval-every", "4", "--data",
            str(corpus_dir), "--no-progress", "--balancing", "aux"]


def _steps_logged(out) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _run(args, env, out=None, kill_at_step=None, delay=0.0):
    """Run to completion, or SIGKILL the process `delay` seconds after metrics.jsonl reaches `kill_at_step`
    lines (mid-step, mid-checkpoint or mid-evaluation, depending on the delay). True if it finished."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if kill_at_step is None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        return True
    deadline = time.monotonic() + 300
    while proc.poll() is None and _steps_logged(out) < kill_at_step and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return False
    assert proc.returncode == 0, proc.stderr.read().decode()
    return True


@pytest.mark.slow  # test_faults.py kills at every write point in the default suite; this adds timing-based kills
def test_sigkill_and_resume_is_bit_exact(tmp_path, corpus_dir):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    reference = tmp_path / "reference"
    _run(_cmd(reference, corpus_dir), env)  # also warms the tokenizer and corpus caches
    killed = tmp_path / "killed"
    resumed_from = []
    # first launch, then resumes: each killed at a later step, at a different moment within it
    finished = False
    for kill_at_step, delay in ((3, 0.0), (6, 0.02), (10, 0.005)):
        args = _cmd(killed, corpus_dir) + (["--resume"] if resumed_from else [])
        finished = _run(args, env, killed, kill_at_step, delay)
        if finished:
            break
        steps = [int(p.name.split("-")[1]) for p in killed.glob("ckpt-*") if p.name.split("-")[1].isdigit()]
        resumed_from.append(max(steps, default=0))
    if not finished:
        _run(_cmd(killed, corpus_dir) + ["--resume"], env)
    assert len(resumed_from) >= 2, f"fewer than two kills landed: {resumed_from}"
    assert any(0 < step < STEPS for step in resumed_from), f"no kill landed mid-run: {resumed_from}"
    ref = load_file(str(reference / "final" / "model.safetensors"))
    got = load_file(str(killed / "final" / "model.safetensors"))
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "resumed parameters differ from the uninterrupted run"
    ref_lines = (reference / "metrics.jsonl").read_text().splitlines()
    got_lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert len(got_lines) == len(ref_lines) == STEPS
    losses = [[json.loads(line)["loss"] for line in lines] for lines in (ref_lines, got_lines)]
    assert losses[0] == losses[1], "the resumed run logged other losses"
