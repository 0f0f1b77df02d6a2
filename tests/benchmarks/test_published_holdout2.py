"""benchmarks/published/holdout2.json is a well-formed second blind holdout, disjoint by source from cases.json.

Reuses the case checker of test_published_cases.py (keys, enums, plan grammar, mode fields, phase from the metric,
kind from the model's own config) and adds what a second holdout needs: every case is "holdout2", no source_id (or
id) is shared with cases.json, every phase x kind group has at least 2 cases, every source is listed in the
"Holdout 2" section of SOURCES.md with the case count the file has. Each check is shown to catch a broken file.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter

import pytest
from tests.benchmarks.test_published_cases import GROUPS, SUITE, is_moe, load_cases, problems

MIN_CASES, MIN_PER_GROUP = 16, 2


def load_holdout2() -> list[dict]:
    return json.loads((SUITE / "holdout2.json").read_text())


def holdout2_problems(case: dict) -> list[str]:
    """The shared checker's problems (with the split judged here, not there) plus a wrong split."""
    out = problems({**case, "split": "holdout"}) if isinstance(case, dict) and "split" in case else problems(case)
    if case.get("split") != "holdout2":
        out.append(f"split {case.get('split')!r} is not 'holdout2'")
    return out


def overlap(cases: list[dict], main: list[dict]) -> set[str]:
    """source_ids and ids that holdout 2 shares with cases.json (a shared source would unblind it)."""
    return ({c["source_id"] for c in cases} & {c["source_id"] for c in main}) | (
        {c["id"] for c in cases} & {c["id"] for c in main})


def group_counts(cases: list[dict]) -> Counter:
    return Counter((c["phase"], c["kind"]) for c in cases)


def sources_md_counts() -> dict[str, int]:
    """The 'Holdout 2' section's source table: source_id -> the number of cases its row says it has."""
    text = (SUITE / "SOURCES.md").read_text()
    section = text.split("\n## Holdout 2\n", 1)[1]
    table = section.split("### Sources (holdout 2)", 1)[1].split("\n### ", 1)[0]
    counts = {}
    for sid, cells in re.findall(r"^\| ([a-z0-9.-]+) \|[^|]*\|[^|]*\|([^|]*)\|", table, re.M):
        counts[sid] = sum(int(n) for n in re.findall(r"(\d+) (?:throughput|TTFT|TPOT|output tok/s|end-to-end"
                                                       r"|median inter-token|batch-1 TTFT)", cells))
    return counts


def test_every_case_is_well_formed():
    bad = {c.get("id", "?"): p for c in load_holdout2() if (p := holdout2_problems(c))}
    assert not bad, bad


def test_ids_unique_and_enough_cases():
    ids = [c["id"] for c in load_holdout2()]
    assert len(ids) == len(set(ids))
    assert len(ids) >= MIN_CASES


def test_no_source_or_id_shared_with_cases_json():
    assert not overlap(load_holdout2(), load_cases())


def test_every_group_has_two_cases():
    counts = group_counts(load_holdout2())
    assert all(counts[g] >= MIN_PER_GROUP for g in GROUPS), counts


def test_every_model_loads_offline():
    for model in {c["model"] for c in load_holdout2()}:
        is_moe(model)  # raises MoelabError when the config is missing or malformed


def test_sources_md_lists_every_source_with_its_case_count():
    cases = load_holdout2()
    assert sources_md_counts() == Counter(c["source_id"] for c in cases)


def test_checker_catches_a_foreign_split_and_a_broken_field():
    case = copy.deepcopy(load_holdout2()[0])
    assert not holdout2_problems(case)
    assert any("holdout2" in p for p in holdout2_problems({**case, "split": "holdout"}))
    assert any("grammar" in p for p in holdout2_problems({**case, "plan": "ep8tp2"}))
    assert any("metric" in p for p in holdout2_problems({**case, "metric": "ttft_s"}))


def test_overlap_check_catches_a_reused_source():
    cases = copy.deepcopy(load_holdout2())
    main = load_cases()
    cases[0]["source_id"] = main[0]["source_id"]
    assert main[0]["source_id"] in overlap(cases, main)


@pytest.mark.parametrize("group", GROUPS)
def test_group_check_catches_a_missing_group(group):
    cases = [c for c in load_holdout2() if (c["phase"], c["kind"]) != group]
    assert group_counts(cases)[group] < MIN_PER_GROUP
