"""bench and calibrate under faults: a corrupt calibration cache heals, the memory guard uses this machine's
memory, work is refused before it starts, progress goes to stderr (never the profiler's noise), user names are
never rich markup, and the study checks its modelled inputs before training and relays its subprocess."""

import json
import os
import subprocess
import sys

import pytest
from bench_hardware import FIXED_HW

from moelab.cli import main
from moelab.errors import MoelabError


def one_error_line(err: str) -> bool:
    return (err.startswith("moelab: error: ") and err.count("\n") == 1 and "Traceback" not in err
            and len(err.strip()) > len("moelab: error:"))


# --- the calibration cache ------------------------------------------------------------------------------

@pytest.mark.parametrize("garbage", [b"", b'{"name": "calibrated-x", "peak_tfl', b"\x00\xff garbage", b"[1, 2]",
                                     json.dumps({**FIXED_HW, "memory_bandwidth_gbps": -1}).encode()])
def test_a_corrupt_calibration_cache_is_measured_again_and_overwritten(monkeypatch, tmp_path, capsys, garbage):
    from moelab.bench import calibrate as cal
    from moelab.spec.hardware import load_hardware

    monkeypatch.setenv("MOELAB_HOME", str(tmp_path))
    measured = []
    monkeypatch.setattr(cal, "calibrate", lambda device, quick=False, progress=False: measured.append(1) or FIXED_HW)
    path = cal.cache_path("cpu")
    path.parent.mkdir(parents=True)
    path.write_bytes(garbage)
    assert cal.calibrated_hardware("cpu") == path
    assert measured == [1]
    assert load_hardware(str(path)).name == FIXED_HW["name"]  # healed: a valid file in its place
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("moelab: warning:") and "corrupt calibration cache" in err
    assert cal.calibrated_hardware("cpu") == path and measured == [1]  # and now it is used, silently
    assert capsys.readouterr().err == ""
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_a_corrupt_full_cache_does_not_warn_forever_in_quick_mode(monkeypatch, tmp_path, capsys):
    from moelab.bench import calibrate as cal

    monkeypatch.setenv("MOELAB_HOME", str(tmp_path))
    monkeypatch.setattr(cal, "calibrate", lambda device, quick=False, progress=False: FIXED_HW)
    full = cal.cache_path("cpu")
    full.parent.mkdir(parents=True)
    full.write_text("{")
    assert cal.calibrated_hardware("cpu", quick=True) == cal.cache_path("cpu", quick=True)
    assert capsys.readouterr().err.count("warning") == 1
    cal.calibrated_hardware("cpu", quick=True)
    assert capsys.readouterr().err == ""


def test_an_unwritable_calibration_cache_is_refused_before_measuring(monkeypatch, tmp_path, capsys):
    from moelab.bench import calibrate as cal

    home = tmp_path / "home"
    home.write_text("a file where the cache folder should be")
    monkeypatch.setenv("MOELAB_HOME", str(home))

    def no_work(*args, **kwargs):
        raise AssertionError("measured before the cache folder was checked")

    monkeypatch.setattr(cal, "calibrate", no_work)
    assert main(["bench", "tiny-dense", "--batches", "1"]) == 2
    assert one_error_line(capsys.readouterr().err)


# --- refused before any work ----------------------------------------------------------------------------

def _no_calibration(monkeypatch):
    from moelab.bench import calibrate as cal

    def no_work(*args, **kwargs):
        raise AssertionError("calibrated before the input was checked")

    monkeypatch.setattr(cal, "calibrate", no_work)


def test_memory_guard_uses_this_machines_memory_not_the_presets(monkeypatch, capsys, tmp_path):
    """A batch x prompt that this machine cannot hold is refused even with a preset whose GPU could (the
    guard used to compare with --hardware's memory), and before any calibration or model build."""
    from moelab.bench import run as bench_run

    monkeypatch.setenv("MOELAB_HOME", str(tmp_path))
    _no_calibration(monkeypatch)
    monkeypatch.setattr(bench_run, "available_memory_bytes", lambda device: (2e9, "RAM"))
    assert main(["bench", "tiny-dense", "--batches", "1,4096", "--prompt", "512", "--gen", "8"]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "2.0 GB of RAM" in err
    # the same sweep, judged against a 141 GB H200 preset: still this machine's 2 GB
    assert main(["bench", "tiny-dense", "--batches", "1,4096", "--prompt", "512", "--gen", "8", "-H", "H200"]) == 2
    assert one_error_line(capsys.readouterr().err)


def test_weights_guard_uses_this_machines_memory(monkeypatch, capsys, tmp_path):
    from moelab.bench import run as bench_run

    monkeypatch.setenv("MOELAB_HOME", str(tmp_path))
    _no_calibration(monkeypatch)
    monkeypatch.setattr(bench_run, "available_memory_bytes", lambda device: (1e6, "RAM"))
    assert main(["bench", "tiny-dense", "-H", "H200"]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and "--shrink-to" in err


def test_a_sweep_that_fits_is_accepted_by_the_guard():
    from moelab.bench.models import check_fits, resolve

    check_fits([resolve("tiny-dense")], "fp32", [1, 64], 128, 32, 4e9, "RAM")
    with pytest.raises(MoelabError, match="smaller --batches"):
        check_fits([resolve("tiny-dense")], "fp32", [1, 64], 128, 32, 2e7, "RAM")


# --- progress on stderr, results on stdout, no profiler noise, no markup --------------------------------

def test_bench_progress_on_stderr_json_on_stdout_and_no_profiler_noise(tmp_path, hw_file):
    """A real process (kineto reads its log level once per process): the torch profiler used to print
    `USDT: ... profiler_start/stop` lines on stderr for every routing-share session."""
    env = {**os.environ, "MOELAB_HOME": str(tmp_path)}
    env.pop("KINETO_LOG_LEVEL", None)
    proc = subprocess.run([sys.executable, "-m", "moelab.cli", "bench", "tiny-moe", "--batches", "1,2", "--prompt",
                           "8", "--gen", "2", "--repeats", "2", "--hardware", hw_file, "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rows"] and all(r["routing_share"] is not None for r in result["rows"])
    assert "USDT" not in proc.stderr and "STAGE" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "bench: warm-up", "bench: round 1/2", "bench: round 2/2", "bench: memory and routing",
        lines[-1].split(" (")[0]]
    assert lines[-1].startswith("bench: done in")


def test_markup_in_names_is_printed_not_parsed(tmp_path, capsys):
    """Names that look like rich markup ([/red]) crashed the tables with MarkupError."""
    hw = {**FIXED_HW, "name": "evil[/red][bold]"}
    path = tmp_path / "hw.json"
    path.write_text(json.dumps(hw))
    assert main(["bench", "tiny-dense", "--batches", "1", "--prompt", "4", "--gen", "2", "--repeats", "1",
                 "-H", str(path)]) == 0
    assert "evil[/red][bold]" in capsys.readouterr().out


def test_progress_lines_once_per_stage(capsys):
    from moelab.progress import Progress

    with Progress("work", 4, "lines") as bar:
        for i in range(4):
            bar.step(f"item {i}", stage="first half" if i < 2 else "second half")
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == ["work: first half (1/4)", "work: second half (3/4)"]
    assert lines[2].startswith("work: done in") and len(lines) == 3
    with Progress("quiet", 2, "off") as bar:
        bar.step("x")
    assert capsys.readouterr().err == ""


# --- the study ------------------------------------------------------------------------------------------

def test_study_checks_its_modelled_stages_before_training(monkeypatch, tmp_path):
    """A workload the engine cannot model used to fail only in the last stages, after minutes of training."""
    from moelab.study import run as study_run

    calls = []

    def bad_frontier(wl):
        calls.append("frontier")
        raise MoelabError("hw.yaml: intra_node_gbps must be greater than 0")

    monkeypatch.setattr(study_run, "frontier_stage", bad_frontier)
    monkeypatch.setattr(study_run, "train_stage", lambda *a, **k: calls.append("train"))
    with pytest.raises(MoelabError, match="intra_node_gbps"):
        study_run.run_study(tmp_path / "study", quick=True, log=lambda msg: None)
    assert calls == ["frontier"]


def test_study_with_a_zero_bandwidth_hardware_file_exits_2_before_training(monkeypatch, capsys, tmp_path):
    from moelab.spec.hardware import hardware_presets
    from moelab.study import run as study_run

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(study_run, "train_stage", no_training)
    hw = {**hardware_presets()["H100-SXM"].to_dict(), "name": "zero-link", "intra_node_gbps": 0}
    (tmp_path / "hw0.json").write_text(json.dumps(hw))
    (tmp_path / "wl.yaml").write_text(
        "hardware: hw0.json\ngpus: 8\nlatency_p99_ms: 50\nbatch: 32\nprompt: 1024\ngen: 256\n"
        "task_mix: {reasoning: 0.5, code: 0.5}\ntraining: fine-tune\ncandidates: [mixtral-8x7b, mistral-7b]\n")
    assert main(["study", "--quick", "--workload", str(tmp_path / "wl.yaml"), "--out", str(tmp_path / "s")]) == 2
    assert one_error_line(capsys.readouterr().err)


def test_study_relays_its_subprocess_stages_and_its_error_line():
    from moelab.study.run import run_relayed

    seen = []
    child = ("import sys\n"
             "print('calibrate: matmul fp32 (1/7)', file=sys.stderr, flush=True)\n"
             "print('result', flush=True)\n"
             "print('moelab: error: out of disk', file=sys.stderr)\n"
             "sys.exit(2)\n")
    with pytest.raises(MoelabError, match="measurement stage failed: out of disk"):
        run_relayed([sys.executable, "-c", child], seen.append)
    assert seen == ["study: calibrate: matmul fp32 (1/7)", "study: moelab: error: out of disk"]
    run_relayed([sys.executable, "-c", "import sys; print('bench: round 1/2 (3/8)', file=sys.stderr)"], seen.append)
    assert seen[-1] == "study: bench: round 1/2 (3/8)"


def test_an_interrupted_study_kills_its_measurement_subprocess():
    """Ctrl-C while the study relays its child: the KeyboardInterrupt propagates (the CLI exits 130) and the
    child is killed and reaped, not left measuring."""
    from moelab.study.run import run_relayed

    pids = []

    def log(line):
        pids.append(int(line.split()[-1]))
        raise KeyboardInterrupt

    child = "import os, sys, time\nprint('pid', os.getpid(), file=sys.stderr, flush=True)\ntime.sleep(120)\n"
    with pytest.raises(KeyboardInterrupt):
        run_relayed([sys.executable, "-c", child], log)
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)


def test_ctrl_c_in_a_real_bench_exits_130(tmp_path, hw_file):
    import signal
    import threading
    import time

    env = {**os.environ, "MOELAB_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "moelab.cli", "bench", "tiny-dense", "--batches", "1",
                             "--prompt", "8", "--gen", "2", "--repeats", "10000", "--hardware", hw_file],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen, started = [], threading.Event()

    def read():
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("bench: round"):
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(180), f"no bench round began: {seen}"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, seen
    assert seen[-1] == "moelab: interrupted\n" and not any("Traceback" in line for line in seen)
    assert proc.stdout.read() == ""
