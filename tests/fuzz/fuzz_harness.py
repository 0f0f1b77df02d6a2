"""Run a fuzz case in-process through `moelab.cli.main(argv)` and check the CLI's contract on it.

The contract, for every case: `main` returns an int and raises nothing; exit 0 with stdout one strict JSON
document (no NaN/Infinity) when JSON was asked for, or exit 2 with exactly one line `moelab: ...` on stderr;
at most CASE_SECONDS of wall time; nothing written outside the folder the case names (its --out), MOELAB_HOME
and MOELAB_CACHE. A case with a known-invalid ingredient must exit 2, and one for a long command must be
refused before any work: sentinels replace the first step of real work (building the default corpus, a model,
a calibration, a study stage) and raise ReachedWork.

Each case runs in its own folder (the current directory while it runs) with its own MOELAB_HOME, MOELAB_CACHE
and HOME, under an alarm of CASE_SECONDS and an address-space limit a few GiB above the process's size (so
that reading /dev/zero ends in MemoryError instead of exhausting the machine).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shlex
import signal
import sqlite3
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from fuzz_cases import Case

CASE_SECONDS = 5.0
MEMORY_HEADROOM = 4 * 2**30
SMALL_MODEL_PARAMS = 20e6  # a model this small is built for real (the sentinel stops before timing it)
MAX_ERROR_CHARS = 4096  # "on one line, capped in length": a longer line is a violation


class ReachedWork(BaseException):
    """A case got past validation to real work (raised by a sentinel; BaseException so nothing swallows it)."""


class CaseTimeout(BaseException):
    """The per-case alarm fired."""


@dataclass
class Violation:
    kind: str  # traceback, validation-late, accepted-invalid, exit-code, stderr, json, slow, write-outside
    key: str  # what makes two violations the same cause
    message: str


@dataclass
class Outcome:
    rc: object = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    error: str | None = None
    error_key: str | None = None
    reached: str | None = None
    violations: list[Violation] = field(default_factory=list)


# --- sentinels ---------------------------------------------------------------------------------------------

def _stop(label: str):
    def sentinel(*args, **kwargs):
        raise ReachedWork(label)

    return sentinel


def sentinel_targets() -> list[tuple[str, str, object]]:
    """(module, attribute, replacement): the first step of real work in each long command."""
    import importlib

    loop = importlib.import_module("moelab.train.loop")
    real_prepare = loop.prepare

    def prepare(data, *args, **kwargs):
        if data is None:
            raise ReachedWork("train: building the default corpus")
        return real_prepare(data, *args, **kwargs)

    model = importlib.import_module("moelab.nn.model")
    real_build = model.build_model

    def build_model(spec, *args, **kwargs):
        from moelab.cost.params import count_params

        if count_params(spec).total > SMALL_MODEL_PARAMS:
            raise ReachedWork("building a large torch model")
        return real_build(spec, *args, **kwargs)  # a small one builds in milliseconds (and validates its rope)

    return [
        ("moelab.train.loop", "prepare", prepare),
        ("moelab.train.loop", "build", _stop("train: building the model")),
        ("moelab.train.loop", "_train_step", _stop("train: a training step")),
        ("moelab.nn.model", "build_model", build_model),
        ("moelab.bench.calibrate", "calibrate", _stop("calibrate: measuring this machine")),
        ("moelab.bench.run", "Runner", _stop("bench: timing a model")),
        ("moelab.study.run", "train_stage", _stop("study: training")),
        ("moelab.study.run", "measure_stage", _stop("study: calibrating and benchmarking")),
        ("moelab.serve.bench", "ServerProcess", _stop("serve-bench: starting vLLM")),
        ("moelab.serve.load", "probe_sync", _stop("serve-bench: reaching an endpoint")),
        ("moelab.serve.load", "run_level_sync", _stop("serve-bench: sending requests")),
    ]


@contextlib.contextmanager
def sentinels():
    """The sentinels in place for one case, and the real functions back afterwards (other tests share the
    process)."""
    import importlib

    saved = []
    try:
        for module, attr, replacement in sentinel_targets():
            mod = importlib.import_module(module)
            saved.append((mod, attr, getattr(mod, attr)))
            setattr(mod, attr, replacement)
        yield
    finally:
        for mod, attr, real in reversed(saved):
            setattr(mod, attr, real)


# --- the world a case runs in ------------------------------------------------------------------------------

def fake_calibration() -> dict:
    """A cached calibration as `moelab calibrate` writes one (without measuring anything)."""
    from moelab.bench.calibrate import machine

    return {
        "name": "cpu-fuzz", "peak_tflops": {"fp32": 0.05, "bf16": 0.1}, "memory_gb": 16,
        "memory_bandwidth_gbps": 10, "gemv_bandwidth_gbps": 30, "compute_efficiency": 1.0,
        "bandwidth_efficiency": 1.0, "link_efficiency": 1.0, "memory_utilization": 0.9, "runtime_overhead_gb": 0.5,
        "tdp_watts": 16, "usd_per_hour": 0.04, "step_overhead_us": 50, "layer_overhead_us": 100,
        "moe_layer_overhead_us": 150, "expert_overhead_us": 20, "cache_gb": 0.032, "cache_bandwidth_gbps": 40,
        "elementwise_bandwidth_gbps": 15, "attention_tflops": 0.04, "attention_bandwidth_gbps": 20,
        "attention_head_overhead_us": 0.3, "intra_node_gbps": 5.0, "intra_node_latency_us": 30,
        "inter_node_gbps": 5.0, "inter_node_latency_us": 30,
        "sources": {"peak_tflops": "fuzz: a fixed fake calibration"},
        "measurements": {"machine": machine("cpu"), "threads": 2, "seconds": 1.0, "quick": True},
    }


def _write_store(state: str, home: Path) -> None:
    path = home / "runs.sqlite"
    if state == "absent":
        return
    if state == "directory":
        path.mkdir()
    elif state == "empty":
        path.write_bytes(b"")
    elif state == "garbage":
        path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    else:  # rows, corrupt-row, locked (rows, with another connection holding an exclusive lock during the case)
        from moelab.train.store import SCHEMA

        with contextlib.closing(sqlite3.connect(path)) as con:
            con.execute(SCHEMA)
            good = (time.time(), time.time(), "finished", "/tmp/x", "tiny-dense", "{}", '{"steps": 3}', "{}",
                    '{"tokens": 10, "val": {"mean": 1.5}}')
            bad = (time.time(), time.time(), "running", "/tmp/y", "[/red]", "{", "NaN", "[]", "not json")
            con.executemany("INSERT INTO runs (started, updated, status, out_dir, model, spec, config, machine, "
                            "summary) VALUES (?,?,?,?,?,?,?,?,?)", [good] + ([bad] if state == "corrupt-row" else []))
            con.commit()


def _write_calibration(state: str, home: Path) -> None:
    if state == "absent":
        return
    from moelab.bench.calibrate import cache_path

    old = os.environ.get("MOELAB_HOME")
    os.environ["MOELAB_HOME"] = str(home)
    try:
        path = cache_path("cpu")
    finally:
        os.environ.pop("MOELAB_HOME") if old is None else os.environ.__setitem__("MOELAB_HOME", old)
    path.parent.mkdir(parents=True, exist_ok=True)
    if state == "valid":
        path.write_text(json.dumps(fake_calibration()))
    elif state == "corrupt":
        path.write_bytes(b'{"name": "cpu", "peak_tflops": ')
    elif state == "directory":
        path.mkdir()


def materialise(case: Case, root: Path) -> Path:
    work = root / "work"
    for sub in ("work", "home", "cache", "user-home"):
        (root / sub).mkdir(parents=True)
    for rel, doc in case.files.items():
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if doc.kind == "dir":
            path.mkdir(exist_ok=True)
        elif doc.kind == "fifo":
            os.mkfifo(path)
        else:
            path.write_bytes(doc.data.replace(b"{CASE}", str(root).encode()))
    _write_store(case.store, root / "home")
    _write_calibration(case.calibration, root / "home")
    return work


def _listing(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def _allowed(rel: str, writes: list[str]) -> bool:
    """May the case create `rel` (relative to its folder)? Under MOELAB_HOME/MOELAB_CACHE, or under (or a
    parent folder of) a path it names as its output."""
    parts = Path(rel).parts
    if parts[0] in ("home", "cache"):
        return True
    if parts[0] != "work":
        return False
    inside = Path(os.path.normpath(os.path.join(*parts[1:]))) if len(parts) > 1 else Path(".")
    for w in writes:
        target = Path(os.path.normpath(w))
        if inside == target or target in inside.parents or inside in target.parents:
            return True
    return False


# --- one case ----------------------------------------------------------------------------------------------

def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _innermost(exc: BaseException) -> str:
    """file:line of the innermost frame in moelab (else the innermost frame) of an exception."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/moelab/" in f.filename and "/tests/" not in f.filename]
    f = (ours or frames or [None])[-1]
    if f is None:
        return "?"
    return f"{f.filename.split('/src/')[-1]}:{f.lineno} in {f.name}"


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def run_case(case: Case, root: Path) -> Outcome:
    """Run `case` in folder `root` (created) and return its outcome with the contract's violations."""
    from moelab.cli import main

    work = materialise(case, root)
    locker = None
    if case.store == "locked":
        locker = sqlite3.connect(root / "home" / "runs.sqlite", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
    argv = [a.replace("{CASE}", str(root)) for a in case.argv]
    before = _listing(root)
    env_keys = ("MOELAB_HOME", "MOELAB_CACHE", "HOME")
    saved_env = {k: os.environ.get(k) for k in env_keys}
    saved_cwd = os.getcwd()
    saved_stdin = sys.stdin
    out, err = io.StringIO(), io.StringIO()
    o = Outcome()
    armed = [True]

    def alarm(signum, frame):
        if armed[0]:
            raise CaseTimeout()

    old_handler = signal.signal(signal.SIGALRM, alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    os.environ.update(MOELAB_HOME=str(root / "home"), MOELAB_CACHE=str(root / "cache"), HOME=str(root / "user-home"))
    os.chdir(work)
    sys.stdin = io.StringIO("")
    limit = _vm_size() + MEMORY_HEADROOM
    started = time.perf_counter()
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
        signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
        with sentinels(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            o.rc = main(list(argv))
    except ReachedWork as e:
        o.reached = str(e)
    except CaseTimeout:
        o.error = "timeout"
    except BaseException as e:  # noqa: BLE001 - any exception out of main is what the fuzz test looks for
        first = (str(e).splitlines() or [""])[0][:160]
        o.error = f"{type(e).__name__}: {first} [{_innermost(e)}]"
        o.error_key = f"{type(e).__name__} at {_innermost(e)}"
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        o.seconds = time.perf_counter() - started
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, old_handler)
        sys.stdin = saved_stdin
        os.chdir(saved_cwd)
        if locker is not None:
            locker.close()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    o.stdout, o.stderr = out.getvalue(), err.getvalue()
    o.violations = check(case, o, sorted(_listing(root) - before))
    return o


def check(case: Case, o: Outcome, created: list[str]) -> list[Violation]:
    v: list[Violation] = []
    why = case.invalid[0] if case.invalid else ""
    if o.error == "timeout":
        v.append(Violation("slow", f"{case.command}: alarm after {CASE_SECONDS:g} s",
                           f"still running after {CASE_SECONDS:g} s (stderr so far: {o.stderr[-200:]!r})"))
    elif o.error:
        v.append(Violation("traceback", o.error_key or o.error, o.error))
    elif o.reached:
        if case.invalid and not case.may_reach_work:
            v.append(Violation("validation-late", f"{o.reached} despite: {_category(why)}",
                               f"reached '{o.reached}' although the case is invalid: {'; '.join(case.invalid)}"))
    elif not isinstance(o.rc, int) or isinstance(o.rc, bool):
        v.append(Violation("exit-code", f"main returned {type(o.rc).__name__}", f"main returned {o.rc!r}"))
    elif o.rc == 0:
        if case.json_out:
            try:
                _strict_json(o.stdout)
            except ValueError as e:
                v.append(Violation("json", f"{case.command}: {str(e).split(':')[0]}",
                                   f"stdout is not strict JSON ({e}); starts {o.stdout[:120]!r}"))
        if case.invalid:
            v.append(Violation("accepted-invalid", _category(why), f"exit 0 although: {'; '.join(case.invalid)}"))
    elif o.rc == 2:
        lines = o.stderr.split("\n")
        if not (len(lines) == 2 and lines[1] == "" and lines[0].startswith("moelab: ")):
            v.append(Violation("stderr", f"{case.command}: exit 2 with {len(lines) - 1} stderr lines",
                               f"stderr is not one 'moelab: ...' line: {o.stderr[:300]!r}"))
        elif len(lines[0]) > MAX_ERROR_CHARS:
            v.append(Violation("stderr", f"{case.command}: error line of {len(lines[0])} chars",
                               f"the error line is {len(lines[0])} characters: {lines[0][:200]!r}..."))
    else:
        v.append(Violation("exit-code", f"{case.command}: exit {o.rc}", f"exit {o.rc}; stderr {o.stderr[:200]!r}"))
    if case.must_succeed and o.rc != 0 and not o.error:
        v.append(Violation("rejected-valid", f"{case.command}: {' '.join(case.argv[1:3])[:60]}",
                           f"a known-valid case got exit {o.rc}: {o.stderr[:300]!r}"))
    if o.seconds > CASE_SECONDS and o.error != "timeout":
        v.append(Violation("slow", f"{case.command}: over {CASE_SECONDS:g} s", f"took {o.seconds:.1f} s"))
    outside = [c for c in created if not _allowed(c, case.writes)]
    if outside:
        v.append(Violation("write-outside", f"{case.command}: wrote {_category(outside[0])}",
                           f"created {outside[:4]} outside its output {case.writes or '(none)'}"))
    return v


def _category(text: str) -> str:
    """A reason without its particulars, so that causes group."""
    return text.split(":")[0][:80] if ":" in text else text[:80]


# --- reporting ---------------------------------------------------------------------------------------------

@dataclass
class Tally:
    cases: int = 0
    explicit: int = 0  # of them, the reproducers and the root invocations
    exit0: int = 0
    exit2: int = 0
    stopped: int = 0  # valid long cases stopped where work begins
    tracebacks: int = 0
    slow: int = 0
    violations: int = 0
    max_seconds: float = 0.0
    total_seconds: float = 0.0


TALLIES: dict[str, Tally] = {}
FINDINGS: dict[tuple[str, str, str], dict] = {}


def reproducer(case: Case) -> dict:
    def show(doc) -> str:
        if doc.kind != "file":
            return f"<{doc.kind}>"
        text = doc.data[:400]
        return repr(text) + (f" ... ({len(doc.data)} bytes)" if len(doc.data) > 400 else "")

    return {"argv": "moelab " + " ".join(shlex.quote(a[:300]) for a in case.argv[0:]),
            "files": {k: show(d) for k, d in case.files.items()}, "store": case.store,
            "calibration": case.calibration}


def record(case: Case, o: Outcome) -> None:
    t = TALLIES.setdefault(case.command, Tally())
    t.cases += 1
    t.explicit += case.explicit
    t.exit0 += o.rc == 0 and not o.error and not o.reached
    t.exit2 += o.rc == 2 and not o.error and not o.reached
    t.stopped += bool(o.reached)
    t.tracebacks += any(x.kind == "traceback" for x in o.violations)
    t.slow += any(x.kind == "slow" for x in o.violations)
    t.violations += bool(o.violations)
    t.max_seconds = max(t.max_seconds, o.seconds)
    t.total_seconds += o.seconds
    for x in o.violations:
        key = (x.kind, case.command, x.key)
        size = case.size()
        if key not in FINDINGS or size < FINDINGS[key]["size"]:
            FINDINGS[key] = {"kind": x.kind, "command": case.command, "cause": x.key, "message": x.message,
                             "size": size, "seconds": round(o.seconds, 2), "reproducer": reproducer(case),
                             "count": FINDINGS.get(key, {}).get("count", 0)}
        FINDINGS[key]["count"] += 1


def report() -> dict:
    total = Tally()
    for t in TALLIES.values():
        for f in ("cases", "explicit", "exit0", "exit2", "stopped", "tracebacks", "slow", "violations"):
            setattr(total, f, getattr(total, f) + getattr(t, f))
        total.total_seconds += t.total_seconds
        total.max_seconds = max(total.max_seconds, t.max_seconds)
    return {"total": vars(total) | {"exit2_share": round(total.exit2 / total.cases, 3) if total.cases else None},
            "commands": {k: vars(t) for k, t in sorted(TALLIES.items())},
            "findings": sorted(FINDINGS.values(), key=lambda f: (f["kind"], f["command"], f["cause"]))}


def summary_lines() -> list[str]:
    r = report()
    cols = ("cases", "explicit", "exit0", "exit2", "stopped", "tracebacks", "slow", "violations")
    heads = ("cases", "seeds", "exit-0", "exit-2", "stopped", "tracebk", ">5s", "bad")

    def row(name: str, t: dict) -> str:
        cells = " ".join(f"{t[c]:>{len(h)}d}" for c, h in zip(cols, heads, strict=True))
        return f"{name:14} {cells} {t['max_seconds']:6.2f}"

    lines = [f"{'command':14} " + " ".join(heads) + "  max s"]
    lines += [row(name, t) for name, t in r["commands"].items()]
    t = r["total"]
    if t["cases"]:
        lines.append(row("total", t) + f"   {t['cases'] - t['explicit']} generated; exit-2 share "
                     f"{t['exit2_share']:.0%}, {t['total_seconds']:.0f} s in cases, "
                     f"{len(r['findings'])} distinct findings")
    return lines
