"""Property-based fuzzing of every command through `moelab.cli.main(argv)`, in-process (issue 10, item 3).

Derandomized Hypothesis (fixed seed, no example database: every run draws the same cases). Each case ends
with exit 0 and strict JSON when --json was given, or exit 2 and exactly one stderr line; never a traceback,
NaN/Infinity in JSON, more than 5 s, or a file outside its output; a known-invalid case exits 2, and long
commands never get past validation (see fuzz_harness). A command's violations are collected over all its
cases and reported together, one reproducer per distinct cause.
"""

import importlib
import os

import pytest
import typer
from fuzz_cases import REGISTRY, Case
from fuzz_harness import record, run_case, sentinel_targets
from fuzz_seeds import seeds
from hypothesis import HealthCheck, Phase, example, given, settings

FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=list(HealthCheck), phases=(Phase.explicit, Phase.generate))

# Generated cases per command per run (the seeds' explicit cases come on top): about 300 in all. The default run
# keeps them few enough for its 15-minute budget (the decide, estimate and train cases took 35-48 s each at the
# earlier budgets on a busy machine); `MOELAB_FUZZ_SCALE=4` multiplies them for a deeper search.
_SCALE = max(1, int(os.environ["MOELAB_FUZZ_SCALE"])) if os.environ.get("MOELAB_FUZZ_SCALE", "").isdigit() else 1
BUDGET = {name: n * _SCALE for name, n in {
    "estimate": 25, "compare": 20, "models": 10, "hardware": 10, "decide": 15, "calibrate": 12, "bench": 20,
    "train": 20, "train-compare": 15, "runs": 15, "study": 15, "schema": 10, "fit": 12, "frontier": 15,
    "export": 12, "serve-bench": 12, "prune": 10, "quantize": 10, "upcycle": 10, "upcycle-compare": 10,
    "probe": 10, "hybrid": 10, "sweep": 10, "fit-laws": 12, "claims": 12}.items()}


def app_commands() -> dict:
    from moelab.cli import app

    return typer.main.get_command(app).commands


def test_every_command_has_a_strategy():
    missing = sorted(set(app_commands()) - set(REGISTRY))
    assert not missing, f"commands without a fuzz strategy in tests/fuzz/fuzz_cases.py REGISTRY: {missing}"
    assert set(REGISTRY) <= set(BUDGET) and set(seeds()) <= set(REGISTRY)


def test_the_sentinels_guard_real_work(fuzz_root):
    """Every sentinel's target exists (a rename in the source must not silently let a case start work), a case
    that reaches work is stopped there, and the real functions are back after the case (later tests share the
    process)."""
    targets = sentinel_targets()
    for module, attr, _ in targets:
        assert hasattr(importlib.import_module(module), attr), f"{module}.{attr} is gone: update fuzz_harness"
    before = {(m, a): getattr(importlib.import_module(m), a) for m, a, _ in targets}
    case = Case("train", ["train", "--model", "tiny-dense", "--out", "o", "--steps", "2"], writes=["o"],
                may_reach_work=True)
    outcome = run_case(case, fuzz_root / "sentinel-check")
    assert outcome.reached == "train: building the default corpus", (outcome.rc, outcome.stderr, outcome.error)
    assert {(m, a): getattr(importlib.import_module(m), a) for m, a, _ in targets} == before


ROOT_ARGVS = [[], ["--version"], ["--help"], ["no-such-command"], ["--json"], ["--[/red]"], ["estimate", "--help"],
              ["--version", "estimate"], ["[/red]"]]


@pytest.mark.parametrize("argv", ROOT_ARGVS, ids=repr)
def test_root_invocations(argv, fuzz_root):
    """`moelab` with no command, --version, --help or an unknown command: the same contract."""
    case = Case("(root)", list(argv), explicit=True)
    outcome = run_case(case, fuzz_root / f"root-{ROOT_ARGVS.index(argv)}")
    record(case, outcome)
    assert not outcome.violations, [v.message for v in outcome.violations]
    if argv[:1] == ["--version"]:
        assert outcome.rc == 0 and outcome.stdout.startswith("moelab "), (outcome.rc, outcome.stdout)


@pytest.mark.parametrize("command", sorted(REGISTRY))
def test_fuzz_command(command, fuzz_root):
    if command not in app_commands():
        pytest.skip(f"`moelab {command}` is not in this CLI yet")
    found: dict[tuple[str, str], str] = {}
    count = [0]

    def body(case):
        count[0] += 1
        outcome = run_case(case, fuzz_root / f"{command}-{count[0]:04d}")
        record(case, outcome)
        for v in outcome.violations:
            found.setdefault((v.kind, v.key), f"{v.message}\n      argv: {case.argv!r}"[:1500])

    for seed in seeds().get(command, []):  # the reproducers first, as explicit examples
        body = example(case=seed)(body)
    fuzz = settings(FUZZ, max_examples=BUDGET[command])(given(case=REGISTRY[command]())(body))
    fuzz()
    assert count[0] >= min(BUDGET[command], 8), f"only {count[0]} cases for {command}"
    assert not found, f"{len(found)} distinct violations in `moelab {command}`:\n" + "\n".join(
        f"  [{kind}] {key}\n      {msg}" for (kind, key), msg in sorted(found.items()))
