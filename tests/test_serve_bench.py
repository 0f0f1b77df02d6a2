"""`moelab serve-bench` end to end without vLLM: the stand-in server (moelab.serve.standin) poses as vLLM.

A fake serving-environment Python (a shell script set as $MOELAB_VLLM_PYTHON) answers environment.py's probe
and, for `-m vllm.entrypoints.openai.api_server ARGS`, writes its pid to a file and execs the stand-in with the
same arguments (exec keeps the pid: it is the group leader serve-bench started). Each test checks that the
group is gone afterwards (os.killpg(pid, 0) -> ProcessLookupError; a zombie would still count, so this also
checks that the child was reaped). The measured figures are checked against the stand-in's known delays, the
result files against moelab.bench.results' reader, and every refusal is one `moelab: error:` line and exit 2.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from moelab.bench.results import read_vllm_serve
from moelab.cli import main
from moelab.serve import environment
from moelab.serve.server import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
MOELAB = Path(sys.executable).with_name("moelab")  # the console script of the venv running the tests
HW = "H100-SXM"
PCTS = (50, 95, 99)
CONTRACT = ["model", "engine", "concurrency", "requests", "requests_per_second", "output_tokens_per_second",
            "goodput_requests_per_second"] + [f"{m}_p{p}" for m in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")
                                              for p in PCTS]
PREDICTED = ("ttft_ms", "tpot_ms", "requests_per_second", "output_tokens_per_second")
MEASURED_MEAN = {"ttft_ms": "ttft_ms_mean", "tpot_ms": "tpot_ms_mean", "requests_per_second": "requests_per_second",
                 "output_tokens_per_second": "output_tokens_per_second"}

FAKE_VLLM = """#!/bin/bash
# a serving environment's Python for tests: answers environment.py's probe; runs the stand-in as vLLM's server
if [ "$1" = "-c" ]; then
  if [ -n "$FAKE_VLLM_PROBE_FAIL" ]; then echo "ModuleNotFoundError: No module named 'vllm'" >&2; exit 1; fi
  echo "0.0-standin 2.13.0+cpu cpu"; exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "vllm.entrypoints.openai.api_server" ]; then
  shift 2
  echo $$ >> "$FAKE_VLLM_PIDFILE"
  if [ -n "$FAKE_VLLM_STUBBORN_WORKER" ]; then  # an engine worker in the group that ignores SIGTERM and SIGINT
    ( trap '' TERM INT; exec sleep 120 ) &
    echo $! >> "$FAKE_VLLM_STUBBORN_WORKER"
  fi
  printf '%s\\n' "$*" >> "$FAKE_VLLM_ARGSFILE"
  if [ -n "$FAKE_VLLM_IN_USE_ONCE" ] && [ -e "$FAKE_VLLM_IN_USE_ONCE" ]; then
    rm -f "$FAKE_VLLM_IN_USE_ONCE"
    echo "OSError: [Errno 98] error while attempting to bind on address: address already in use" >&2; exit 1
  fi
  exec {python} -m moelab.serve.standin "$@" --mode "${{FAKE_VLLM_MODE:-ok}}" $FAKE_VLLM_STANDIN_ARGS
fi
echo "fake vllm python: unexpected arguments: $*" >&2; exit 3
"""


# ---------------------------------------------------------------------------------------------------- helpers

def _live(pgid: int) -> list[int]:
    """The processes of group `pgid` that still run (a zombie has ended; init reaps an orphan one lazily)."""
    live = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, ...
                live.append(int(entry.name))
    return live


def _gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return not _live(pgid)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _errors(err: str) -> list[str]:
    """stderr less serve-bench's progress lines; fails on a traceback."""
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.strip() and not line.startswith("serve-bench: ")]


def _one_error(err: str, *fragments: str) -> str:
    lines = _errors(err)
    assert len(lines) == 1 and lines[0].startswith("moelab: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"non-JSON constant {name} in --json output")

    return json.loads(text, parse_constant=refuse)


class FakeVllm:
    """The fake serving Python and what it recorded: pids of the servers started, their argument lines."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.python = folder / "python"
        self.pidfile, self.argsfile = folder / "pids", folder / "args"
        self.python.write_text(FAKE_VLLM.format(python=sys.executable))
        self.python.chmod(self.python.stat().st_mode | stat.S_IXUSR)
        self.env = {"MOELAB_VLLM_PYTHON": str(self.python), "FAKE_VLLM_PIDFILE": str(self.pidfile),
                    "FAKE_VLLM_ARGSFILE": str(self.argsfile), "MOELAB_HOME": str(folder / "home")}
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        self.monkeypatch = monkeypatch
        self.mode("ok", "--delay-ms 20 --token-ms 5")

    def mode(self, mode: str, args: str = "") -> None:
        self.monkeypatch.setenv("FAKE_VLLM_MODE", mode)
        self.monkeypatch.setenv("FAKE_VLLM_STANDIN_ARGS", args)
        self.env.update(FAKE_VLLM_MODE=mode, FAKE_VLLM_STANDIN_ARGS=args)

    def pids(self) -> list[int]:
        return [int(x) for x in self.pidfile.read_text().split()] if self.pidfile.exists() else []

    def args(self) -> list[list[str]]:
        return [line.split() for line in self.argsfile.read_text().splitlines()] if self.argsfile.exists() else []


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    environment._probe.cache_clear()
    folder = tmp_path / "fake-vllm-env"
    folder.mkdir()
    fake = FakeVllm(folder, monkeypatch)
    yield fake
    for pid in fake.pids():
        _kill_group(pid)
    environment._probe.cache_clear()


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A tiny Mixtral Hugging Face folder a serving engine would load: config.json, model.safetensors (random
    weights), and a byte-level BPE tokenizer.json with its HF files (as serve.export writes them)."""
    from moelab.data.document import Document
    from moelab.data.tokenizer import train_tokenizer
    from moelab.nn import build_model, save_pretrained
    from moelab.serve.export import hf_tokenizer_files, is_servable_folder
    from moelab.spec.hf import spec_from_config

    base = tmp_path_factory.mktemp("serve-bench-model")
    folder = base / "tiny-mixtral"
    spec = spec_from_config(dict(model_type="mixtral", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                                 max_position_embeddings=128, rms_norm_eps=1e-5, num_local_experts=4,
                                 num_experts_per_tok=2))
    save_pretrained(build_model(spec), folder)
    docs = [Document("t", f"d{i}", "the quick brown fox jumps over the lazy dog " * 20) for i in range(4)]
    tok = train_tokenizer(docs, 300, cache_dir=base / "cache").to_str()
    (folder / "tokenizer.json").write_text(tok)
    for name, obj in hf_tokenizer_files(tok, 128).items():
        (folder / name).write_text(json.dumps(obj))
    assert is_servable_folder(folder)
    return folder


@pytest.fixture
def standin():
    """Start a stand-in server of our own on 127.0.0.1: standin(*args) -> base URL; every group killed after."""
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> str:
        port = _free_port()
        env = dict(os.environ, PYTHONPATH=SRC)
        proc = subprocess.Popen([sys.executable, "-m", "moelab.serve.standin", "--host", "127.0.0.1", "--port",
                                 str(port), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        procs.append(proc)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert proc.poll() is None, "stand-in exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.05)
        raise AssertionError("stand-in did not listen")

    yield start
    for proc in procs:
        _kill_group(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _bench(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["serve-bench", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


LOAD = ("--requests", "8", "--input", "16", "--output", "8")


# ---------------------------------------------------------------------------------------------------- happy path

def test_model_served_measured_predicted_saved_and_stopped(fake_vllm, hf_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _bench(capsys, str(hf_folder), "--concurrency", "1,4", *LOAD, "--out", str(out),
                               "--hardware", HW, "--json")
    assert code == 0, err
    assert _errors(err) == []
    rows = _strict_json(stdout)
    assert [r["concurrency"] for r in rows] == [1, 4]

    # the server: one start, on 127.0.0.1, with vLLM's flags for the model; gone (and reaped) afterwards
    (pid,) = fake_vllm.pids()
    assert _gone(pid)
    (args,) = fake_vllm.args()
    flag = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
    assert flag["--host"] == "127.0.0.1" and flag["--model"] == str(hf_folder)
    assert flag["--max-num-seqs"] == "4" and int(flag["--max-model-len"]) >= 16 + 8
    served = flag["--served-model-name"]

    for r in rows:
        for key in CONTRACT:
            assert key in r, key
        assert r["model"] == served and r["engine"] == "vllm"
        assert r["requests"] == 8 and r["completed"] == 8 and r["failed"] == 0
        assert r["input_tokens"] == 16 and r["output_tokens"] == 8
        for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            p50, p95, p99 = (r[f"{metric}_p{p}"] for p in PCTS)
            assert 0 < p50 <= p95 <= p99, (metric, p50, p95, p99)
        # the stand-in's timings (--delay-ms 20 --token-ms 5): TTFT >= 20 ms, TPOT and ITL about 5 ms
        assert 19 <= r["ttft_ms_p50"] < 20 + 300
        assert 4.9 <= r["tpot_ms_p50"] < 5 + 15 and 4.9 <= r["itl_ms_p50"] < 5 + 15
        assert r["e2e_ms_p50"] >= 20 + 7 * 5 - 2
        assert r["requests_per_second"] > 0
        assert r["output_tokens_per_second"] == pytest.approx(8 * r["requests_per_second"], rel=1e-9)
        assert r["goodput_requests_per_second"] is None  # no SLO given
        for key in PREDICTED:
            predicted, error = r[f"predicted_{key}"], r[f"rel_error_{key}"]
            assert isinstance(predicted, float) and math.isfinite(predicted) and predicted > 0, key
            assert error == pytest.approx(predicted / r[MEASURED_MEAN[key]] - 1, rel=1e-9), key
        assert r["prediction"]["hardware"] == HW
    # four in flight: higher throughput than one at a time
    assert rows[1]["requests_per_second"] > 1.5 * rows[0]["requests_per_second"]

    # result files in `vllm bench serve --save-result`'s layout, read by moelab's reader
    for r in rows:
        path = Path(r["result_file"])
        assert path.is_file() and out in path.parents
        run = read_vllm_serve(path)
        assert run["max_concurrency"] == r["concurrency"] and run["num_prompts"] == 8 and run["completed"] == 8
        assert run["model_id"] == served and run["total_output_tokens"] == 64 and run["total_input_tokens"] == 128
        assert run["request_throughput"] == pytest.approx(r["requests_per_second"])
        assert run["median_ttft_ms"] == pytest.approx(r["ttft_ms_p50"])
        assert run["mean_tpot_ms"] == pytest.approx(r["tpot_ms_mean"])

    # --from-results reads them back to the same measured figures
    code, stdout, err = _bench(capsys, "--from-results", rows[0]["result_file"], "--from-results",
                               rows[1]["result_file"], "--hardware", HW, "--spec", "mixtral-8x7b", "--json")
    assert code == 0, err
    back = _strict_json(stdout)
    assert len(back) == 2
    for a, b in zip(rows, back, strict=True):
        assert b["concurrency"] == a["concurrency"] and b["model"] == served
        for key in CONTRACT[3:]:
            if a[key] is None:
                assert b[key] is None, key
            else:
                assert b[key] == pytest.approx(a[key], rel=1e-9), key
        for key in PREDICTED:  # predicted for the spec named, against the figures read back
            assert b[f"predicted_{key}"] > 0
            assert b[f"rel_error_{key}"] == pytest.approx(b[f"predicted_{key}"] / b[MEASURED_MEAN[key]] - 1)


def test_port_taken_before_the_server_binds_is_retried_on_another(fake_vllm, hf_folder, tmp_path, capsys):
    """The first server start fails with vLLM's 'address already in use' (a race on the free port): a second
    start on another port serves; both groups are gone afterwards."""
    flag = tmp_path / "in-use-once"
    flag.touch()
    os.environ["FAKE_VLLM_IN_USE_ONCE"] = str(flag)
    try:
        code, stdout, err = _bench(capsys, str(hf_folder), "--concurrency", "2", "--requests", "4", "--input", "8",
                                   "--output", "4", "--out", str(tmp_path / "out"), "--hardware", HW, "--json")
    finally:
        del os.environ["FAKE_VLLM_IN_USE_ONCE"]
    assert code == 0, err
    assert "trying another" in err
    rows = _strict_json(stdout)
    assert [r["completed"] for r in rows] == [4]
    pids = fake_vllm.pids()
    assert len(pids) == 2 and all(_gone(p) for p in pids)
    ports = [a[a.index("--port") + 1] for a in fake_vllm.args()]
    assert ports[0] != ports[1]


# ---------------------------------------------------------------------------------------------------- interrupted

class _Lines:
    """A child's stderr read on a thread, so that waiting for a line never hangs the test."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in iter(stream.readline, ""):
            self.lines.append(line)

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} on stderr within {timeout_s} s: {''.join(self.lines)}")

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "".join(self.lines)


def _interrupt(fake_vllm, hf_folder, out: Path, signals: list[signal.Signals], wait_for: str | None,
               timeout_s: float = 15) -> tuple[int, str, str, int, float]:
    """Run `moelab serve-bench MODEL` as a child, wait until its server is started (and `wait_for` is on its
    stderr), send `signals` one second apart; (exit code, stdout, stderr, server pid, seconds to exit)."""
    env = dict(os.environ, **fake_vllm.env)
    cmd = [str(MOELAB), "serve-bench", str(hf_folder), "--concurrency", "1", "--requests", "20", "--input", "8",
           "--output", "20", "--out", str(out), "--hardware", HW, "--json"]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        err = _Lines(proc.stderr)
        deadline = time.monotonic() + 30
        while not fake_vllm.pids() and time.monotonic() < deadline:
            assert proc.poll() is None, err.text()
            time.sleep(0.05)
        (pid,) = fake_vllm.pids()
        if wait_for:
            err.wait_for(wait_for, 20)
            time.sleep(2)  # past the probe and the warm-up requests: inside the measured level
        else:
            time.sleep(1)
        assert proc.poll() is None, err.text()
        assert os.getpgid(pid) == pid != os.getpgid(proc.pid)  # the server leads its own group
        started = time.monotonic()
        for i, sig in enumerate(signals):
            if i:
                time.sleep(1)
            proc.send_signal(sig)
        code = proc.wait(timeout=timeout_s)
        took = time.monotonic() - started
        stdout = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, stdout, err.text(), pid, took


@pytest.mark.parametrize("sig, mode, wait_for", [
    (signal.SIGINT, "ok", "vLLM ready"),  # during the measured level
    (signal.SIGTERM, "ok", "vLLM ready"),
    (signal.SIGTERM, "hang", None),  # while waiting for /health of a server that never answers
], ids=["sigint-level", "sigterm-level", "sigterm-start"])
def test_interrupted_exits_130_and_stops_the_server(fake_vllm, hf_folder, tmp_path, sig, mode, wait_for):
    fake_vllm.mode(mode, "--delay-ms 10 --token-ms 50")  # 20 tokens: one request lasts about a second
    code, stdout, stderr, pid, took = _interrupt(fake_vllm, hf_folder, tmp_path / "out", [sig], wait_for)
    assert code == 130, stderr
    assert _errors(stderr) == ["moelab: interrupted"], stderr
    assert stdout == ""
    assert took < 15
    assert _gone(pid)


def test_worker_that_ignores_sigterm_is_killed_after_the_grace(fake_vllm, hf_folder, tmp_path, capsys,
                                                                monkeypatch):
    """An engine worker that outlives SIGTERM (vLLM's engine core may) is SIGKILLed after the grace period."""
    workers = tmp_path / "workers"
    monkeypatch.setenv("FAKE_VLLM_STUBBORN_WORKER", str(workers))
    grace_s, stops = 1.0, []  # a grace of 1 s instead of STOP_GRACE_S (10 s), to keep the test short
    original = ServerProcess.stop

    def timed_stop(self, grace_s=grace_s):
        started = time.monotonic()
        original(self, grace_s)
        stops.append(time.monotonic() - started)

    monkeypatch.setattr(ServerProcess, "stop", timed_stop)
    code, stdout, err = _bench(capsys, str(hf_folder), "--concurrency", "1", "--requests", "2", "--input", "8",
                               "--output", "4", "--out", str(tmp_path / "out"), "--hardware", HW, "--json")
    assert code == 0, err
    assert [r["completed"] for r in _strict_json(stdout)] == [2]
    (pid,) = fake_vllm.pids()
    assert len(workers.read_text().split()) == 1
    (took,) = stops
    assert grace_s <= took < grace_s + 6  # the worker outlived SIGTERM: only the SIGKILL after the grace ended it
    assert _gone(pid), _live(pid)


def test_second_ctrl_c_during_stop_still_kills_the_group(fake_vllm, hf_folder, tmp_path, monkeypatch):
    workers = tmp_path / "workers"
    monkeypatch.setenv("FAKE_VLLM_STUBBORN_WORKER", str(workers))
    fake_vllm.env["FAKE_VLLM_STUBBORN_WORKER"] = str(workers)
    fake_vllm.mode("ok", "--delay-ms 10 --token-ms 50")
    code, _, stderr, pid, _ = _interrupt(fake_vllm, hf_folder, tmp_path / "out", [signal.SIGINT, signal.SIGINT],
                                         "vLLM ready", timeout_s=25)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    time.sleep(0.5)
    assert _gone(pid), _live(pid)


# ---------------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("argv, fragments", [
    (["--concurrency", "0"], ["--concurrency"]),
    (["--concurrency", "abc"], ["--concurrency", "abc"]),
    (["--concurrency", "1,-4"], ["--concurrency"]),
    (["--concurrency", "5000"], ["--concurrency"]),
    (["--concurrency", "64"], ["--requests 8", "64"]),  # a level that could never have 64 requests in flight
    (["--engine", "sglang"], ["--engine", "sglang"]),
    (["--dtype", "int3"], ["--dtype"]),
    (["--port", "70000"], ["--port"]),
    (["--from-results", "{tmp}/r.json"], ["--from-results"]),
], ids=["c0", "c-abc", "c-negative", "c-huge", "c-above-requests", "sglang", "dtype", "port-range",
        "results-and-model"])
def test_bad_arguments_refused_before_any_server(fake_vllm, hf_folder, tmp_path, capsys, argv, fragments):
    (tmp_path / "r.json").write_text("{}")
    code, stdout, err = _bench(capsys, str(hf_folder), "--concurrency", "1", *LOAD, "--out", str(tmp_path / "out"),
                               "--hardware", HW, "--json", *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2
    _one_error(err, *fragments)
    assert fake_vllm.pids() == []


def test_port_in_use_refused(fake_vllm, hf_folder, tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = _bench(capsys, str(hf_folder), "--concurrency", "1", *LOAD, "--port", str(port),
                              "--out", str(tmp_path / "out"), "--hardware", HW, "--json")
    assert code == 2
    _one_error(err, "in use", str(port))
    assert fake_vllm.pids() == []


def test_model_vllm_cannot_load(fake_vllm, hf_folder, tmp_path, capsys):
    fake_vllm.mode("die-at-start")
    code, stdout, err = _bench(capsys, str(hf_folder), "--concurrency", "1", *LOAD, "--out", str(tmp_path / "out"),
                               "--hardware", HW, "--json")
    assert code == 2
    _one_error(err, str(hf_folder), "before it was ready", "simulated start-up failure")
    assert _strict_json(stdout) == []
    (pid,) = fake_vllm.pids()
    assert _gone(pid)


def test_server_that_never_gets_ready_times_out(fake_vllm, hf_folder, tmp_path, capsys):
    fake_vllm.mode("hang")
    started = time.monotonic()
    code, _, err = _bench(capsys, str(hf_folder), "--concurrency", "1", *LOAD, "--start-timeout", "2",
                          "--out", str(tmp_path / "out"), "--hardware", HW, "--json")
    assert code == 2
    _one_error(err, "did not answer", "/health")
    assert time.monotonic() - started < 15
    (pid,) = fake_vllm.pids()
    assert _gone(pid)


@pytest.mark.parametrize("how", ["missing", "no-vllm"])
def test_serving_environment_missing(fake_vllm, hf_folder, tmp_path, capsys, monkeypatch, how):
    if how == "missing":
        monkeypatch.setenv("MOELAB_VLLM_PYTHON", str(tmp_path / "no" / "python"))
    else:
        monkeypatch.setenv("FAKE_VLLM_PROBE_FAIL", "1")
    code, _, err = _bench(capsys, str(hf_folder), "--concurrency", "1", *LOAD, "--out", str(tmp_path / "out"),
                          "--hardware", HW, "--json")
    assert code == 2
    line = _one_error(err, "serving environment", "setup-serve.sh")
    assert (str(tmp_path / "no" / "python") if how == "missing" else "No module named 'vllm'") in line
    assert fake_vllm.pids() == []


def test_from_results_of_a_non_json_file(tmp_path, capsys):
    bad = tmp_path / "bench.json"
    bad.write_text("<html>not a result</html>\n")
    code, stdout, err = _bench(capsys, "--from-results", str(bad), "--hardware", HW, "--json")
    assert code == 2
    _one_error(err, str(bad))
    assert _strict_json(stdout) == []


def test_nothing_to_do(capsys):
    code, _, err = _bench(capsys, "--json")
    assert code == 2
    _one_error(err)


# ---------------------------------------------------------------------------------------------------- endpoints

@pytest.mark.parametrize("mode, extra, fragments", [
    ("refuse", [], ["refused", "HTTP 401"]),
    ("nonjson", [], ["non-JSON"]),
    ("hang", ["--request-timeout", "1"], ["does not answer"]),
], ids=["refuse", "nonjson", "hang"])
def test_endpoint_that_fails(standin, tmp_path, capsys, mode, extra, fragments):
    url = standin("--mode", mode)
    code, stdout, err = _bench(capsys, "--endpoint", f"bad={url}", "--model-id", "m", "--concurrency", "1", *LOAD,
                               "--out", str(tmp_path / "out"), "--json", *extra)
    assert code == 2
    _one_error(err, "'bad'", url, *fragments)
    assert _strict_json(stdout) == []


def test_endpoint_on_a_closed_port(tmp_path, capsys):
    url = f"http://127.0.0.1:{_free_port()}"
    code, stdout, err = _bench(capsys, "--endpoint", url, "--model-id", "m", "--concurrency", "1", *LOAD,
                               "--out", str(tmp_path / "out"), "--json")
    assert code == 2
    _one_error(err, "does not answer", url)
    assert _strict_json(stdout) == []


def test_one_endpoint_fails_the_other_is_reported(standin, tmp_path, capsys):
    good = standin("--delay-ms", "5", "--token-ms", "2")
    dead = f"http://127.0.0.1:{_free_port()}"
    code, stdout, err = _bench(capsys, "--endpoint", f"dead={dead}", "--endpoint", f"good={good}", "--model-id", "m",
                               "--concurrency", "1,2", *LOAD, "--out", str(tmp_path / "out"), "--json")
    assert code == 2
    _one_error(err, "'dead'", "does not answer")
    rows = _strict_json(stdout)
    assert [(r["endpoint"], r["concurrency"], r["completed"]) for r in rows] == [("good", 1, 8), ("good", 2, 8)]
    for r in rows:
        assert r["model"] == "m" and r["engine"] == "openai-compatible" and r["source"] == good
        assert 0 < r["ttft_ms_p50"] <= r["ttft_ms_p95"] <= r["ttft_ms_p99"]
        assert r["input_tokens"] == 16  # words of the text prompt, counted back by the stand-in's usage
        assert Path(r["result_file"]).is_file()
        # no --hardware: no prediction, said so, and null rather than a made-up figure
        assert all(r[f"predicted_{k}"] is None and r[f"rel_error_{k}"] is None for k in PREDICTED)


def test_endpoint_api_key_and_model_id(standin, tmp_path, capsys, monkeypatch):
    url = standin("--api-key", "secret", "--served-model-name", "served-x", "--delay-ms", "5", "--token-ms", "2")
    common = ["--endpoint", f"mine={url}/v1", "--api-key-env", "MY_KEY", "--concurrency", "2", *LOAD,
              "--out", str(tmp_path / "out"), "--json"]
    monkeypatch.delenv("MY_KEY", raising=False)
    code, _, err = _bench(capsys, "--model-id", "served-x", *common)
    assert code == 2
    _one_error(err, "'mine'", "HTTP 401")
    monkeypatch.setenv("MY_KEY", "wrong")
    code, _, err = _bench(capsys, "--model-id", "served-x", *common)
    assert code == 2
    _one_error(err, "'mine'", "HTTP 401")
    monkeypatch.setenv("MY_KEY", "secret")
    code, _, err = _bench(capsys, "--model-id", "another", *common)  # vLLM answers an unknown model with 404
    assert code == 2
    _one_error(err, "'mine'", "HTTP 404")
    code, stdout, err = _bench(capsys, "--model-id", "served-x", *common, "--hardware", HW, "--spec", "mixtral-8x7b")
    assert code == 0, err
    (row,) = _strict_json(stdout)
    assert row["endpoint"] == "mine" and row["model"] == "served-x" and row["completed"] == 8
    assert row["source"] == url  # /v1 stripped
    assert row["predicted_ttft_ms"] > 0
    assert read_vllm_serve(row["result_file"])["model_id"] == "served-x"
    # the key is nowhere in what was written
    assert "secret" not in stdout and "secret" not in err
    assert all("secret" not in p.read_text() for p in (tmp_path / "out").rglob("*.json"))


def test_endpoint_needs_a_model_id(tmp_path, capsys):
    code, _, err = _bench(capsys, "--endpoint", "http://127.0.0.1:1", "--concurrency", "1", "--out",
                          str(tmp_path / "out"), "--json")
    assert code == 2
    _one_error(err, "--model-id")


@pytest.mark.parametrize("argv, fragments", [
    (["--endpoint", "=http://127.0.0.1:1", "--model-id", "m"], ["--endpoint", "name"]),
    (["--endpoint", "ftp://127.0.0.1:1", "--model-id", "m"], ["not an http(s) URL"]),
    (["--endpoint", "http://127.0.0.1:1", "--endpoint", "http://127.0.0.1:2", "--model-id", "a", "--model-id", "b",
      "--model-id", "c"], ["--model-id"]),
    (["--model-id", "m"], ["--endpoint"]),
], ids=["empty-name", "ftp", "model-id-count", "model-id-alone"])
def test_endpoint_arguments_refused(tmp_path, capsys, argv, fragments):
    code, _, err = _bench(capsys, *argv, "--concurrency", "1", "--out", str(tmp_path / "out"), "--json")
    assert code == 2
    _one_error(err, *fragments)


def test_endpoint_partial_and_total_failures(standin, tmp_path, capsys):
    """Half the requests answered 500 (flaky): the level is reported with its failures, exit 0. Every stream
    broken mid-way: no request completed, one line and exit 2."""
    flaky = standin("--mode", "flaky", "--delay-ms", "5", "--token-ms", "2")
    code, stdout, err = _bench(capsys, "--endpoint", f"flaky={flaky}", "--model-id", "m", "--concurrency", "2",
                               *LOAD, "--out", str(tmp_path / "out"), "--json")
    assert code == 0, err
    (row,) = _strict_json(stdout)
    assert row["requests"] == 8 and row["completed"] + row["failed"] == 8 and row["failed"] >= 3
    assert "HTTP 500" in row["first_error"]
    assert read_vllm_serve(row["result_file"])["failed"] == row["failed"]
    broken = standin("--mode", "break-stream", "--delay-ms", "5", "--token-ms", "2")
    code, stdout, err = _bench(capsys, "--endpoint", f"broken={broken}", "--model-id", "m", "--concurrency", "2",
                               *LOAD, "--out", str(tmp_path / "out"), "--json")
    assert code == 2
    _one_error(err, "'broken'", "no request completed", "stream broken")
    assert _strict_json(stdout) == []


def test_endpoint_goodput_against_slos(standin, tmp_path, capsys):
    url = standin("--delay-ms", "5", "--token-ms", "3")
    common = ["--endpoint", url, "--model-id", "m", "--concurrency", "2", *LOAD, "--out", str(tmp_path / "out"),
              "--json"]
    code, stdout, err = _bench(capsys, *common, "--slo-ttft-ms", "10000", "--slo-tpot-ms", "10000")
    assert code == 0, err
    (row,) = _strict_json(stdout)
    assert row["goodput_requests_per_second"] == pytest.approx(row["requests_per_second"])
    code, stdout, err = _bench(capsys, *common, "--slo-tpot-ms", "1")  # every TPOT is about 3 ms
    assert code == 0, err
    (row,) = _strict_json(stdout)
    assert row["goodput_requests_per_second"] == 0


def test_table_output(standin, tmp_path, capsys):
    url = standin("--delay-ms", "5", "--token-ms", "2")
    code, stdout, err = _bench(capsys, "--endpoint", f"tbl={url}", "--model-id", "not-a-known-model",
                               "--concurrency", "1,2", *LOAD, "--out", str(tmp_path / "out"), "--hardware", HW)
    assert code == 0, err
    assert _errors(err) == []
    assert "not-a-known-model" in stdout and "8/8" in stdout
    assert "no prediction" in stdout and "--spec" in stdout  # the model is unknown to moelab: said, not guessed


def _result_file(tmp_path: Path, **extra) -> Path:
    """A `vllm bench serve --save-result` file as vLLM writes it (vllm/benchmarks/serve.py), figures made up."""
    run = {"date": "20261202-120000", "backend": "vllm", "endpoint_type": "openai", "label": None,
           "model_id": "mistralai/Mixtral-8x7B-v0.1", "tokenizer_id": "mistralai/Mixtral-8x7B-v0.1",
           "num_prompts": 64, "request_rate": "inf", "burstiness": 1.0, "max_concurrency": 16, "duration": 10.0,
           "completed": 64, "failed": 0, "total_input_tokens": 64 * 128, "total_output_tokens": 64 * 64,
           "request_throughput": 6.4, "output_throughput": 409.6, "total_token_throughput": 1228.8,
           "mean_ttft_ms": 40.0, "median_ttft_ms": 38.0, "std_ttft_ms": 5.0, "p95_ttft_ms": 50.0, "p99_ttft_ms": 55.0,
           "mean_tpot_ms": 12.0, "median_tpot_ms": 11.5, "std_tpot_ms": 1.0, "p95_tpot_ms": 14.0, "p99_tpot_ms": 15.0,
           "mean_itl_ms": 12.0, "median_itl_ms": 11.0, "std_itl_ms": 2.0, "p95_itl_ms": 16.0, "p99_itl_ms": 20.0,
           "mean_e2el_ms": 800.0, "median_e2el_ms": 790.0, "std_e2el_ms": 20.0, "p95_e2el_ms": 830.0,
           "p99_e2el_ms": 850.0, **extra}
    path = tmp_path / "vllm-result.json"
    path.write_text(json.dumps(run))
    return path


def test_from_results_of_a_vllm_file(tmp_path, capsys):
    path = _result_file(tmp_path)
    code, stdout, err = _bench(capsys, "--from-results", str(path), "--hardware", HW, "--gpus", "2", "--dtype",
                               "bf16", "--spec", "mixtral-8x7b", "--json")
    assert code == 0, err
    (row,) = _strict_json(stdout)
    assert row["model"] == "mistralai/Mixtral-8x7B-v0.1" and row["concurrency"] == 16 and row["requests"] == 64
    assert (row["input_tokens"], row["output_tokens"]) == (128, 64)
    expect = {"ttft_ms_p50": 38.0, "ttft_ms_p95": 50.0, "ttft_ms_p99": 55.0, "tpot_ms_p50": 11.5, "itl_ms_p99": 20.0,
              "e2e_ms_p50": 790.0, "requests_per_second": 6.4, "output_tokens_per_second": 409.6}
    assert {k: row[k] for k in expect} == expect
    assert row["prediction"]["plan"] == "tp2" and row["prediction"]["fits"] is True  # 46.7B bf16 = 93 GB on 2x80
    assert row["rel_error_ttft_ms"] == pytest.approx(row["predicted_ttft_ms"] / 40.0 - 1)
    assert row["rel_error_tpot_ms"] == pytest.approx(row["predicted_tpot_ms"] / 12.0 - 1)


def test_prediction_that_does_not_fit_is_marked(tmp_path, capsys):
    path = _result_file(tmp_path)
    # Mixtral-8x7B's 46.7B parameters in bf16 are 93 GB: not on one 80 GB H100
    code, stdout, err = _bench(capsys, "--from-results", str(path), "--hardware", HW, "--dtype", "bf16",
                               "--spec", "mixtral-8x7b", "--json")
    assert code == 0 and _strict_json(stdout)[0]["prediction"]["fits"] is False
    code, stdout, err = _bench(capsys, "--from-results", str(path), "--hardware", HW, "--dtype", "bf16",
                               "--spec", "mixtral-8x7b")
    assert code == 0
    assert "fit" in (stdout + err).lower()


def test_two_endpoints_of_one_name_keep_their_own_results(standin, tmp_path, capsys):
    fast, slow = standin("--delay-ms", "5", "--token-ms", "2"), standin("--delay-ms", "80", "--token-ms", "2")
    code, stdout, err = _bench(capsys, "--endpoint", f"a={fast}", "--endpoint", f"a={slow}", "--model-id", "m",
                               "--concurrency", "1", *LOAD, "--out", str(tmp_path / "out"), "--json")
    if code == 2:  # refusing the repeated name is fine too
        _one_error(err, "a")
        return
    assert code == 0, err
    for row in _strict_json(stdout):
        assert read_vllm_serve(row["result_file"])["median_ttft_ms"] == pytest.approx(row["ttft_ms_p50"])


def test_table_shows_names_and_figures_whole(tmp_path, capsys):
    path = _result_file(tmp_path, total_input_tokens=64 * 4096)  # a long prompt: a TTFT of four digits
    code, stdout, err = _bench(capsys, "--from-results", str(path), "--hardware", HW, "--gpus", "2", "--dtype",
                               "bf16", "--spec", "mixtral-8x7b")
    assert code == 0, err
    assert "mistralai/Mixtral-8x7B-v0.1" in stdout
    assert "…" not in stdout
