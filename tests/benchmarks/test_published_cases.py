"""benchmarks/published/cases.json is a well-formed suite of measured cases, split fit/holdout by source.

Checks every case's keys, enums, plan grammar, mode fields, phase (from the metric) and kind (from the model's own
config: MoE or dense), that every model loads offline, and that the fit/holdout split is the one the fixed rule in
benchmarks/published/SOURCES.md gives (recomputed here from that file's order table). Each checker is also shown to
catch a broken case, so none of these tests passes on any input.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from functools import cache
from pathlib import Path

import pytest

from moelab.spec.hardware import hardware_presets
from moelab.spec.presets import load_model

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "published"
KEYS = {"id", "source_id", "source", "url", "engine", "model", "hardware", "plan", "dtype", "kv_dtype", "input",
        "output", "mode", "concurrency", "batch", "num_prompts", "metric", "statistic", "value", "phase", "kind",
        "split", "notes"}
METRIC_PHASE = {"ttft_ms": "prefill", "tpot_ms": "decode", "itl_ms": "decode",
                "output_tokens_per_second": "throughput", "total_tokens_per_second": "throughput",
                "requests_per_second": "throughput", "output_tokens_per_second_per_gpu": "throughput"}
METRICS = set(METRIC_PHASE) | {"e2e_ms"}
DTYPES = {"bf16", "fp16", "fp8"}
MODES = {"serving", "static", "offline"}
STATISTICS = {"mean", "median", "p99", "max"}
PLAN = re.compile(r"^(pp\d+)?(tp\d+)?(ep\d+)?(x\d+)?$")
GROUPS = [(p, k) for p in ("prefill", "decode", "throughput") for k in ("dense", "moe")]
SALT = "moelab-published-split-v1"  # SOURCES.md, "The split"
MIN_CASES, MIN_HOLDOUT, MIN_PER_GROUP = 30, 14, 2


def load_cases() -> list[dict]:
    return json.loads((SUITE / "cases.json").read_text())


@cache
def is_moe(model: str) -> bool:
    """From the model's config (a preset name or a repository-relative config path), not from the case."""
    return load_model(str(ROOT / model) if model.endswith(".json") else model).is_moe


def expected_phase(case: dict) -> str:
    """TTFT -> prefill, TPOT/ITL -> decode, rates -> throughput; an e2e latency of a static batch generating at
    least 128 tokens is decode (SOURCES.md), any other e2e latency throughput."""
    if case["metric"] == "e2e_ms":
        return "decode" if case["mode"] == "static" and case["output"] >= 128 else "throughput"
    return METRIC_PHASE[case["metric"]]


def problems(case: dict) -> list[str]:
    """What is wrong with one case (empty when nothing is)."""
    out = []
    if set(case) != KEYS:
        return [f"keys: missing {sorted(KEYS - set(case))}, extra {sorted(set(case) - KEYS)}"]
    for key in ("id", "source_id", "source", "engine", "model", "notes"):
        if not (isinstance(case[key], str) and case[key].strip()):
            out.append(f"{key} is empty")
    if not str(case["url"]).startswith("https://"):
        out.append("url is not https")
    if case["hardware"] not in hardware_presets():
        out.append(f"hardware {case['hardware']!r} is no preset")
    if not (PLAN.match(case["plan"]) and case["plan"]):
        out.append(f"plan {case['plan']!r} breaks the grammar")
    for key in ("dtype", "kv_dtype"):
        if case[key] not in DTYPES:
            out.append(f"{key} {case[key]!r}")
    for key in ("input", "output"):
        if not (isinstance(case[key], int) and case[key] >= 1):
            out.append(f"{key} is not a positive integer")
    if case["mode"] not in MODES:
        out.append(f"mode {case['mode']!r}")
    else:
        wants = {"serving": ("concurrency", "batch"), "static": ("batch", "concurrency"),
                 "offline": (None, "batch")}[case["mode"]]
        need, forbid = wants
        if need and not (isinstance(case[need], int) and case[need] >= 1):
            out.append(f"{case['mode']} case needs a positive integer {need}")
        if case[forbid] is not None:
            out.append(f"{case['mode']} case has {forbid}")
        if case["mode"] == "offline" and not (isinstance(case["num_prompts"], int) and case["num_prompts"] >= 1):
            out.append("offline case needs its request count")
    if case["num_prompts"] is not None and not (isinstance(case["num_prompts"], int) and case["num_prompts"] >= 1):
        out.append("num_prompts is not a positive integer")
    if case["metric"] not in METRICS:
        out.append(f"metric {case['metric']!r}")
    elif case.get("mode") in MODES and case["phase"] != expected_phase(case):
        out.append(f"phase {case['phase']!r} for {case['metric']} (expected {expected_phase(case)!r})")
    if case["statistic"] not in STATISTICS:
        out.append(f"statistic {case['statistic']!r}")
    if not (isinstance(case["value"], (int, float)) and math.isfinite(case["value"]) and case["value"] > 0):
        out.append("value is not a positive number")
    if case["split"] not in ("fit", "holdout"):
        out.append(f"split {case['split']!r}")
    if case["kind"] not in ("dense", "moe"):
        out.append(f"kind {case['kind']!r}")
    elif not out and case["kind"] != ("moe" if is_moe(case["model"]) else "dense"):
        out.append(f"kind {case['kind']!r} but the model's config says otherwise")
    return out


def source_order() -> list[tuple[int, int, str, str]]:
    """SOURCES.md's order table: (order, batch, source_id, split)."""
    text = (SUITE / "SOURCES.md").read_text()
    rows = re.findall(r"^\| (\d+) \| (\d+) \| ([a-z0-9.-]+) \| (fit|holdout) \| \d+ \|$", text, re.M)
    return [(int(o), int(b), s, sp) for o, b, s, sp in rows]


def split_by_rule(cases: list[dict], batch: dict[str, int]) -> dict[str, str]:
    """SOURCES.md's rule: walk sources by (batch, sha256(salt + id)); a source goes to the holdout when it helps a
    group the holdout has under 2 of while the fit set has more of it, or the holdout is under 14 cases, or under
    30% of the cases so far, while the fit set has more cases; otherwise to fit."""
    count = {s: dict.fromkeys(GROUPS, 0) for s in ("fit", "holdout")}
    total = {"fit": 0, "holdout": 0}
    assign = {}
    for sid in sorted(batch, key=lambda s: (batch[s], hashlib.sha256((SALT + s).encode()).hexdigest())):
        rows = [c for c in cases if c["source_id"] == sid]
        fit, hold = count["fit"], count["holdout"]
        to_hold = (any(hold[g] < 2 and fit[g] > hold[g] for g in {(c["phase"], c["kind"]) for c in rows})
                   or (total["holdout"] < 14 and total["fit"] > total["holdout"])
                   or (total["holdout"] < 0.3 * (total["fit"] + total["holdout"]) and total["fit"] > total["holdout"]))
        split = "holdout" if to_hold else "fit"
        assign[sid] = split
        for c in rows:
            count[split][(c["phase"], c["kind"])] += 1
        total[split] += len(rows)
    return assign


def test_every_case_is_well_formed():
    bad = {c.get("id", "?"): p for c in load_cases() if (p := problems(c))}
    assert not bad, bad


def test_ids_unique_and_enough_cases():
    ids = [c["id"] for c in load_cases()]
    assert len(ids) == len(set(ids))
    assert len(ids) >= MIN_CASES


def test_every_model_loads_offline():
    for model in {c["model"] for c in load_cases()}:
        is_moe(model)  # raises MoelabError when the config is missing or malformed
    for path in (SUITE / "configs").glob("*.json"):
        assert load_model(str(path)).n_layers > 0


def test_each_source_is_wholly_in_one_split():
    splits = {}
    for c in load_cases():
        splits.setdefault(c["source_id"], set()).add(c["split"])
    assert all(len(s) == 1 for s in splits.values()), {k: v for k, v in splits.items() if len(v) > 1}


def test_holdout_and_fit_cover_every_group():
    cases = load_cases()
    holdout = [c for c in cases if c["split"] == "holdout"]
    assert len(holdout) >= MIN_HOLDOUT
    for split, need in (("holdout", MIN_PER_GROUP), ("fit", 1)):
        for phase, kind in GROUPS:
            n = sum(c["split"] == split and c["phase"] == phase and c["kind"] == kind for c in cases)
            assert n >= need, (split, phase, kind, n)


def test_split_is_the_rule_in_sources_md():
    cases = load_cases()
    order = source_order()
    assert {s for _, _, s, _ in order} == {c["source_id"] for c in cases}, "SOURCES.md order table is stale"
    batch = {s: b for _, b, s, _ in order}
    rule = split_by_rule(cases, batch)
    assert rule == {c["source_id"]: c["split"] for c in cases}
    assert rule == {s: sp for _, _, s, sp in order}
    # the table lists sources in the rule's order
    assert [s for _, _, s, _ in sorted(order)] == sorted(
        batch, key=lambda s: (batch[s], hashlib.sha256((SALT + s).encode()).hexdigest()))


def _first(pred):
    return copy.deepcopy(next(c for c in load_cases() if pred(c)))


@pytest.mark.parametrize("field,value,needle", [
    ("plan", "tp8ep", "grammar"), ("plan", "ep8tp2", "grammar"), ("plan", "", "grammar"),
    ("dtype", "int4", "dtype"), ("hardware", "TPUv5", "preset"), ("metric", "ttft_s", "metric"),
    ("phase", "decode", "phase"), ("split", "train", "split"), ("value", -1.0, "value"),
    ("value", float("nan"), "value"),
    ("input", 0, "input"), ("statistic", "p50", "statistic"), ("url", "http://x", "url"),
])
def test_checker_catches_a_broken_field(field, value, needle):
    case = _first(lambda c: c["metric"] == "ttft_ms")
    assert not problems(case)
    case[field] = value
    assert any(needle in p for p in problems(case)), problems(case)


def test_checker_catches_wrong_kind_and_mode_fields():
    moe = _first(lambda c: c["kind"] == "moe")
    moe["kind"] = "dense"
    assert any("config says otherwise" in p for p in problems(moe))
    serving = _first(lambda c: c["mode"] == "serving")
    serving["concurrency"] = None
    assert any("concurrency" in p for p in problems(serving))
    static = _first(lambda c: c["mode"] == "static")
    static["concurrency"] = 8
    assert any("has concurrency" in p for p in problems(static))
    extra = _first(lambda c: True)
    extra["gpu"] = "H100"
    assert any("extra" in p for p in problems(extra))


def test_split_check_catches_a_moved_source():
    cases = load_cases()
    batch = {s: b for _, b, s, _ in source_order()}
    moved = cases[0]["source_id"]
    for c in cases:
        if c["source_id"] == moved:
            c["split"] = "fit" if c["split"] == "holdout" else "holdout"
    assert split_by_rule(cases, batch)[moved] != next(c["split"] for c in cases if c["source_id"] == moved)
