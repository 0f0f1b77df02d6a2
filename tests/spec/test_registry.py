"""The families registry, tested as a whole: every family has a real public config whose exact count equals
transformers' meta-device sum(numel); every family is torch-free; the registry's tables are well formed.

The configs and their sources are in tests/spec/configs (SOURCES.json); expected_counts.json is written by
tests/spec/configs/make_expected.py with transformers (run by hand, its versions recorded in the file).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moelab.cost.params import count_params
from moelab.spec.families import REGISTRY, families
from moelab.spec.families.base import DEFAULT_WEIGHTS
from moelab.spec.hf import spec_from_config

CONFIGS = Path(__file__).parent / "configs"
SOURCES = json.loads((CONFIGS / "SOURCES.json").read_text())
EXPECTED = json.loads((CONFIGS / "expected_counts.json").read_text())
# Families whose whole real config.json no search found (what was found instead, and where, is recorded):
# their counts are tested against transformers' own config defaults in their test_config_*.py.
NOT_FOUND = {row["family"]: row["status"] for row in json.loads((CONFIGS / "NOT_FOUND.json").read_text())}


def real_config(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


@pytest.mark.parametrize("family", families(), ids=lambda f: f.name)
def test_every_family_has_a_real_config_with_its_source(family):
    mine = [row for row in SOURCES if REGISTRY.get(row["model_type"]) is family]
    if not mine and family.name in NOT_FOUND:
        pytest.skip(f"no real public config found for {family.name}: {NOT_FOUND[family.name][:200]}")
    assert mine, f"no real config for {family.name} in tests/spec/configs (nor a NOT_FOUND.json entry)"
    for row in mine:
        assert row["source"] and (CONFIGS / f"{row['name']}.json").is_file()
        assert row["name"] in EXPECTED, f"{row['name']}: no transformers count (run make_expected.py)"


@pytest.mark.parametrize("row", SOURCES, ids=lambda r: r["name"])
def test_real_config_total_equals_transformers(row):
    spec = spec_from_config(real_config(row["name"]), row["name"])
    assert count_params(spec).total == EXPECTED[row["name"]]["total"]


@pytest.mark.parametrize("row", SOURCES, ids=lambda r: r["name"])
def test_real_config_active_is_total_minus_unselected_experts(row):
    """The documented rule (DESIGN.md): active = everything but the routed experts a token does not use."""
    spec = spec_from_config(real_config(row["name"]), row["name"])
    p = count_params(spec)
    unselected = sum((layer.moe.n_experts - layer.moe.top_k) * p.expert_size for layer in spec.layers
                     if layer.moe is not None)
    if len({layer.moe for layer in spec.layers if layer.moe}) <= 1:  # one expert shape: expert_size is it
        assert p.active == p.total - unselected
    assert (p.active < p.total) == spec.is_moe


def test_the_registry_is_consistent():
    for model_type, family in REGISTRY.items():
        assert model_type in family.model_types
        if family.builds:
            assert family.architecture, f"{model_type}: a family moelab.nn builds names its architecture"
        for rule in family.weight_table():
            assert rule[0] and (rule[1] is None or rule[1].startswith(("model.", "lm_head")))
    assert DEFAULT_WEIGHTS[-1][0] == "layers.{layer}.{rest}"  # the catch-all comes last


def test_families_are_torch_free():
    code = ("import sys, moelab.spec.families, moelab.spec.hf, moelab.cost.estimate; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
