"""The CLI's exits and flags under hostile input: Ctrl-C exits 130, strict JSON, bounded finite numbers, rich
markup never parsed from user text, --version, unwritable --out refused before any work, and where caches live."""

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from moelab import limits
from moelab.cli import main


def one_error_line(err: str) -> bool:
    return (err.startswith("moelab: error: ") and err.count("\n") == 1 and "Traceback" not in err
            and len(err.strip()) > len("moelab: error:"))


def strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"non-JSON constant {name} in --json output")

    return json.loads(text, parse_constant=refuse)


# --- Ctrl-C ---------------------------------------------------------------------------------------------

def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("target, argv", [
    ("moelab.cost.estimate.estimate", ["estimate", "mistral-7b"]),
    ("moelab.bench.calibrate.calibrated_hardware", ["calibrate"]),
    ("moelab.bench.run.bench", ["bench", "tiny-dense"]),
    ("moelab.train.loop.train", ["train", "--model", "tiny-dense", "--out", "{tmp}/run"]),
    ("moelab.train.compare.train_compare", ["train-compare", "tiny-dense", "tiny-moe", "--target-loss", "5",
                                            "--out", "{tmp}/cmp"]),
    ("moelab.study.run_study", ["study", "--quick", "--out", "{tmp}/study"]),
    ("moelab.decide.recommend", ["decide"]),
])
def test_ctrl_c_exits_130_in_process(monkeypatch, capsys, tmp_path, target, argv):
    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(f"{module}.{name}", _interrupt)
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path / "home"))
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 130
    captured = capsys.readouterr()
    assert captured.err == "moelab: interrupted\n" and captured.out == ""


def _read_lines_until(stream, predicate, deadline_s: float) -> list[str]:
    """Lines of `stream` up to the first matching one; fails (never hangs) if none comes within deadline_s."""
    seen: list[str] = []
    found = threading.Event()

    def reader():
        for line in stream:
            seen.append(line)
            if predicate(line):
                found.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    assert found.wait(deadline_s), f"no progress line within {deadline_s} s; stderr so far: {seen}"
    return seen


def _sigint_after_progress(argv: list[str], env: dict, marker: str, deadline_s: float = 180.0):
    proc = subprocess.Popen([sys.executable, "-m", "moelab.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        before = _read_lines_until(proc.stderr, lambda line: line.startswith(marker), deadline_s)
        time.sleep(0.5)  # inside the work, past the line
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, "".join(before) + rest


def test_ctrl_c_in_a_real_calibration_exits_130(tmp_path):
    """A real process: calibrate reports its probes on stderr (one line each, not a terminal), and SIGINT in
    the middle of them exits 130 with one line, no traceback (typer's Exit(130) used to come back as 0)."""
    env = {**os.environ, "MOELAB_HOME": str(tmp_path)}
    rc, out, err = _sigint_after_progress(["calibrate", "--refresh", "--quick"], env, "calibrate: ")
    assert rc == 130, err
    assert err.splitlines()[-1] == "moelab: interrupted" and "Traceback" not in err
    assert out == ""
    assert not list((tmp_path / "hardware").glob("*.json"))  # nothing half-written was kept


# --- JSON -----------------------------------------------------------------------------------------------

def test_json_never_prints_nan_or_infinity(monkeypatch, capsys):
    """Non-finite floats in a result are written as null (moelab.jsonout's rule), never as NaN/Infinity."""
    class FakeEstimate:
        def to_dict(self):
            return {"a": float("nan"), "b": [1.5, float("inf"), {"c": -float("inf")}], "d": (2.0, float("nan"))}

    def fake_estimate(*args, **kwargs):
        return FakeEstimate()

    monkeypatch.setattr("moelab.cost.estimate.estimate", fake_estimate)
    assert main(["estimate", "mistral-7b", "--json"]) == 0
    assert strict_json(capsys.readouterr().out) == {"a": None, "b": [1.5, None, {"c": None}], "d": [2.0, None]}


def test_emit_json_refuses_what_the_rule_does_not_cover():
    from moelab.jsonout import dumps

    assert dumps({"x": float("nan")}, indent=None) == '{"x": null}'
    with pytest.raises(TypeError):
        dumps({"x": object()})


# --- flags: finite and bounded --------------------------------------------------------------------------

HUGE = str(2**70)


@pytest.mark.parametrize("argv", [
    ["estimate", "mistral-7b", "--skew", "inf"],
    ["estimate", "mistral-7b", "--skew", "nan"],
    ["estimate", "mistral-7b", "--skew", "1e308"],
    ["estimate", "mixtral-8x7b", "--skew", "400"],  # overflowed in the routing sum
    ["estimate", "mistral-7b", "--train-tokens", "nan"],
    ["estimate", "mistral-7b", "--train-tokens", "inf"],
    ["estimate", "mistral-7b", "--train-tokens", "1e30"],
    ["estimate", "mistral-7b", "--mfu", "nan"],
    ["estimate", "mistral-7b", "--gpus", "1000000000000000000"],
    ["estimate", "mistral-7b", "--gpus", str(limits.MAX_GPUS + 1)],
    ["estimate", "mistral-7b", "--batch", HUGE],
    ["estimate", "mistral-7b", "--batch", "9" * 5000],
    ["estimate", "mistral-7b", "--prompt", HUGE],
    ["estimate", "mistral-7b", "--gen", str(limits.MAX_TOKENS + 1)],
    ["estimate", "llama-3-8b", "--as-moe", f"{HUGE}x2"],
    ["estimate", "mixtral-8x7b", "--fine-grained", HUGE],
    ["compare", "mistral-7b", "mixtral-8x7b", "--skew", "inf"],
    ["compare", "mistral-7b", "mixtral-8x7b", "--gpus", HUGE],
    ["bench", "tiny-dense", "--prompt", HUGE],
    ["bench", "tiny-dense", "--gen", "nan"],
    ["bench", "tiny-dense", "--repeats", HUGE],
    ["bench", "tiny-dense", "--batches", f"1,{HUGE}"],
    ["bench", "tiny-dense", "--prompt", "100000"],  # tiny-dense has 1024 positions
    ["bench", "tiny-dense", "--prompt", "1000", "--gen", "100"],
])
def test_unbounded_or_non_finite_flags_exit_2_with_one_line(capsys, tmp_path, monkeypatch, argv):
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path))  # bench must refuse before calibrating into it
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert one_error_line(captured.err), captured.err
    assert captured.out == ""
    assert not (tmp_path / "hardware").exists()


def test_bounds_sit_above_real_use(capsys):
    """The largest real settings stay accepted: bounds refuse nonsense, not big deployments."""
    assert main(["estimate", "deepseek-v3", "--gpus", "65536", "--batch", "4096", "--prompt", "131072",
                 "--skew", str(limits.MAX_SKEW), "--train-tokens", "3e13", "--json"]) == 0
    assert strict_json(capsys.readouterr().out)["parallel"]["gpus"] == 65536


# --- rich markup in user text ---------------------------------------------------------------------------

@pytest.fixture()
def markup_hw(tmp_path):
    from moelab.spec.hardware import hardware_presets

    hw = hardware_presets()["H100-SXM"].to_dict()
    hw["name"] = "evil[/red][bold]"
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(hw))
    return str(path)


def test_markup_in_a_hardware_name_is_printed_not_parsed(capsys, markup_hw):
    assert main(["estimate", "mistral-7b", "--hardware", markup_hw]) == 0
    assert "evil[/red][bold]" in capsys.readouterr().out


# --- --version, no command ------------------------------------------------------------------------------

def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"moelab {importlib.metadata.version('moelab')}\n"


def test_no_command_is_one_line_and_exit_2(capsys):
    assert main([]) == 2
    assert one_error_line(capsys.readouterr().err)


# --- --out refused before any work ----------------------------------------------------------------------

def _no_work(*args, **kwargs):
    raise AssertionError("work started before --out was checked")


@pytest.mark.parametrize("argv, make", [
    (["study", "--quick", "--out", "{out}"], "file"),
    (["study", "--quick", "--out", "{out}/sub"], "file"),  # a folder under a file
    (["study", "--quick", "--out", "/proc/moelab-cannot-write-here"], None),
    (["calibrate", "--out", "{out}"], "dir"),
    (["calibrate", "--out", "{out}/hw.json"], "file"),
    (["calibrate", "--out", "/proc/moelab-cannot-write-here/hw.json"], None),
])
def test_unwritable_out_exits_2_before_any_work(monkeypatch, capsys, tmp_path, argv, make):
    monkeypatch.setattr("moelab.study.run.train_stage", _no_work)
    monkeypatch.setattr("moelab.study.run.frontier_stage", _no_work)
    monkeypatch.setattr("moelab.bench.calibrate.calibrate", _no_work)
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    if make == "file":
        out.write_text("precious")
    elif make == "dir":
        out.mkdir()
    assert main([a.replace("{out}", str(out)) for a in argv]) == 2
    assert one_error_line(capsys.readouterr().err)
    if make == "file":
        assert out.read_text() == "precious"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_folder_exits_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("moelab.study.run.train_stage", _no_work)
    monkeypatch.setattr("moelab.study.run.frontier_stage", _no_work)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["study", "--quick", "--out", str(locked)]) == 2
    finally:
        locked.chmod(0o755)
    assert one_error_line(capsys.readouterr().err)


# --- where caches live ----------------------------------------------------------------------------------

def test_moelab_home_moves_every_cache_and_moelab_cache_wins_for_tokens(monkeypatch, tmp_path):
    from moelab.bench.calibrate import cache_path
    from moelab.data.cache import default_cache_dir, home_dir

    monkeypatch.delenv("MOELAB_CACHE", raising=False)
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path / "home"))
    assert home_dir() == tmp_path / "home"
    assert default_cache_dir() == tmp_path / "home"  # tokenizers and token tensors move with it
    assert cache_path("cpu").parent == tmp_path / "home" / "hardware"
    monkeypatch.setenv("MOELAB_CACHE", str(tmp_path / "tokens"))
    assert default_cache_dir() == tmp_path / "tokens"
    assert home_dir() == tmp_path / "home" and cache_path("cpu").parent == tmp_path / "home" / "hardware"


def test_tokenizer_cache_lands_under_moelab_home(monkeypatch, tmp_path):
    from moelab.data.document import Document
    from moelab.data.tokenizer import train_tokenizer

    monkeypatch.delenv("MOELAB_CACHE", raising=False)
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path))
    docs = [Document("code", f"f{i}.py", f"def f{i}(x):\n    return x + {i}\n" * 20) for i in range(20)]
    train_tokenizer(docs, vocab_size=300)
    assert list(tmp_path.glob("tokenizer-*.json"))
