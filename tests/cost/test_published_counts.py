"""Preset parameter counts against the counts their publishers state (model cards)."""

import pytest

from moelab.cost.params import count_params
from moelab.spec import load_model
from moelab.spec.presets import model_presets, published_counts


def billions(text: str) -> float:
    return float(text.split("B")[0]) * 1e9


@pytest.mark.parametrize("name", sorted(published_counts()))
def test_total_and_active_within_2_percent_of_published(name):
    row = published_counts()[name]
    p = count_params(load_model(name))
    # published totals are rounded ("8B", "70B"): compare to the precision they were stated with
    digits = row["published_total"].split("B")[0]
    rounding = 0.5 * 10 ** -len(digits.split(".")[1]) * 1e9 if "." in digits else 0.5e9
    assert abs(p.total - billions(row["published_total"])) <= max(0.02 * p.total, rounding)
    assert p.active == pytest.approx(billions(row["published_active"]), rel=0.02)
    if "dense" in row["published_active"]:
        assert p.active == p.total


def test_every_preset_has_a_published_row():
    assert set(model_presets()) == set(published_counts())


def test_deepseek_v3_breakdown():
    """DeepSeek-V3: 58 MoE layers of 256 routed experts (3*7168*2048 each) plus one shared; 3 dense layers."""
    p = count_params(load_model("deepseek-v3"))
    assert p.routed_experts == 58 * 256 * 3 * 7168 * 2048
    assert p.shared_experts == 58 * 3 * 7168 * 2048
    assert p.dense_ffn == 3 * 3 * 7168 * 18432
    assert p.routers == 58 * 256 * 7168
    assert p.routed_active == 58 * 8 * 3 * 7168 * 2048
