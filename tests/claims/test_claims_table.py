"""The claims table: its size and shape, exact combinatorics, engine figures against independent references, and
every measured claim's verdict on hand-made studies (both directions, the noise band, missing and garbled stages)."""

import copy
import json
import math

import pytest
from claims_study import make_study

from moelab import jsonout
from moelab.claims import ROW_KEYS, VERDICTS, claims_table, verdict_counts
from moelab.claims.registry import BASIS_TINY, REGISTRY

CONTRACT = ("id", "seed", "quote", "setting", "moelab_value", "verdict", "why")


@pytest.fixture(scope="module")
def engine_rows():
    return {r["id"]: r for r in claims_table(None)}


@pytest.fixture(scope="module")
def study_rows():
    return {r["id"]: r for r in claims_table(make_study())}


def test_size_and_shape(engine_rows):
    rows = list(engine_rows.values())
    assert len(rows) >= 25 and len(rows) == len(REGISTRY)
    assert sum(r["moelab_value"] is not None for r in rows) >= 15
    assert {r["seed"] for r in rows} == {"000", "001"}
    for r in rows:
        assert set(CONTRACT) <= set(r) and list(r) == list(ROW_KEYS)
        assert r["verdict"] in VERDICTS and r["setting"] and r["why"] and r["rule"]
        assert r["moelab_value"] is None or isinstance(r["moelab_value"], (int, float))
    counts = verdict_counts(rows)
    assert sum(counts.values()) == len(rows) and all(counts[v] > 0 for v in VERDICTS)
    assert json.loads(jsonout.dumps(rows)) == json.loads(json.dumps(rows))  # strict JSON, nothing lost


def test_without_a_study_measured_claims_are_not_reproducible(engine_rows):
    measured = [r for r in engine_rows.values() if r["basis"] == BASIS_TINY]
    assert len(measured) >= 10
    for r in measured:
        assert r["verdict"] == "not_reproducible" and r["moelab_value"] is None, r["id"]
        assert "moelab study" in r["why"]


def test_combinations_exact(engine_rows):
    big, small = engine_rows["deepseek-v3-expert-combinations"], engine_rows["mixtral-expert-combinations"]
    assert big["moelab_value"] == math.prod(range(249, 257)) // math.factorial(8) == 409_663_695_276_000
    assert isinstance(big["moelab_value"], int)
    assert big["verdict"] == "contradicted" and big["seed_value"] == 4.3e9
    assert small["moelab_value"] == 28 and small["verdict"] == "confirmed"
    # group-limited routing: 8 groups of 32, top-4 groups -> subsets within at most 4 groups, counted apart
    by_groups = sum(math.comb(8, j) * sum((-1) ** i * math.comb(j, i) * math.comb(32 * (j - i), 8)
                                          for i in range(j + 1)) for j in range(1, 5))
    assert f"{by_groups:,}" in big["why"] and by_groups < big["moelab_value"]


def test_engine_figures_against_independent_references(engine_rows):
    assert engine_rows["mixtral-8x7b-total"]["moelab_value"] * 1e9 == pytest.approx(46_702_792_704)  # model card
    heuristic = engine_rows["dense-equivalent-mixtral-8x22b"]["moelab_value"]
    total = engine_rows["mixtral-8x22b-total"]["moelab_value"]
    assert heuristic == pytest.approx(total * 2 ** 0.63 / 8 ** 0.44)  # the seeds' formula in float64
    assert engine_rows["dense-equivalent-gpt-4"]["moelab_value"] == pytest.approx(1760 * 2 ** 0.63 / 8 ** 0.44)
    assert engine_rows["dense-equivalent-gpt-4"]["verdict"] == "contradicted"  # 1091B against ~950B
    # fp16 weights: 2 bytes per parameter (the 7B's embeddings included)
    assert engine_rows["inference-weights-dense"]["moelab_value"] == pytest.approx(2 * 7_241_732_096 / 1e9)
    # Adam in mixed precision: 12 bytes of optimizer state per parameter
    assert engine_rows["training-optimizer-dense"]["moelab_value"] == pytest.approx(12 * 7_241_732_096 / 1e9)
    assert engine_rows["moe-56b-total"]["moelab_value"] == engine_rows["mixtral-8x7b-total"]["moelab_value"]
    assert engine_rows["qwen3-235b-shared-expert"]["moelab_value"] == 0  # Qwen3-MoE has none
    assert engine_rows["moe-56b-single-a100"]["moelab_value"] == 2  # 93 GB of fp16 weights > one 80 GB GPU
    # arithmetic rows read the seed's own figures: 14 + 1 + 2 + 1 GB, 3.15 kWh x $0.10
    assert engine_rows["inference-total-dense"]["moelab_value"] == pytest.approx(18.0)
    assert engine_rows["energy-cost"]["moelab_value"] == pytest.approx(0.315)
    assert engine_rows["benchmark-gains-5-15"]["moelab_values"] == pytest.approx([5.5, 4.3, 13.7, 6.9, 4.7])


def test_measured_claims_from_a_study(study_rows, engine_rows):
    expect = {
        "knowledge-moe-at-equal-cost": ("confirmed", 30.0),  # MoE 70% vs dense 40%
        "reasoning-dense-at-equal-total": ("confirmed", 30.0),  # wide dense 60% vs MoE 30%
        "reasoning-gains-larger": ("contradicted", -50.0),  # MoE gains -20 on reasoning, +30 on knowledge
        "upcycling-beats-continued-dense": ("contradicted", 3.22 - 3.275),
        "cascade-most-on-dense": ("confirmed", 70.0),
        "cascade-quality-kept": ("confirmed", 2.0),
        "scaling-law-alpha": ("confirmed", 0.08),
        "scaling-law-beta": ("contradicted", 0.2),
        "tokens-seen-measured": ("confirmed", 100 * (512000 / 614400 - 1)),
        "training-time-measured": ("confirmed", 25.0),
        "latency-p99-delta": ("confirmed", 100 * (6.6 * 2.0 / (6.0 * 1.3) - 1)),
        "throughput-delta-measured": ("contradicted", -20.0),
        "scaling-dense-better-measured": ("confirmed", 28.0),
        "alltoall-share-measured": ("not_reproducible", 33.0),
    }
    for cid, (verdict, value) in expect.items():
        r = study_rows[cid]
        assert r["verdict"] == verdict, (cid, r["why"])
        assert r["moelab_value"] == pytest.approx(value), cid
    for cid, r in engine_rows.items():  # a study moves no engine figure
        if r["basis"] != BASIS_TINY:
            assert study_rows[cid]["moelab_value"] == r["moelab_value"], cid


def test_noise_band_and_reversal():
    near = {r["id"]: r for r in claims_table(make_study(knowledge=(0.50, 0.53)))}
    assert near["knowledge-moe-at-equal-cost"]["verdict"] == "not_reproducible"  # 3 points, noise ±7.1
    reversed_ = {r["id"]: r for r in claims_table(make_study(knowledge=(0.70, 0.40)))}
    assert reversed_["knowledge-moe-at-equal-cost"]["verdict"] == "contradicted"


def test_open_interval_gives_no_verdict():
    study = make_study()
    study["laws"]["fits"]["moe_experts"].update(beta_ci=[0.15, 0.25], ci_open=["low"])
    rows = {r["id"]: r for r in claims_table(study)}
    assert rows["scaling-law-beta"]["verdict"] == "not_reproducible" and "open" in rows["scaling-law-beta"]["why"]


@pytest.mark.parametrize("garble", [
    lambda s: s.update(training=[], serving="x", scaling={"alltoall_share": "33%"}),
    lambda s: s["task_type"].update(pairs={"iso_active": "tiny-dense"}, models=[1, 2]),
    lambda s: s["task_type"]["models"]["tiny-moe"]["scores"]["knowledge"].update(accuracy="high"),
    lambda s: s["laws"]["fits"]["dense"].update(alpha=float("nan"), alpha_ci=[None, 1]),
    lambda s: s["hybrid"].update(best={"cascade": {"escalation_rate": True}}),
    lambda s: s["mitigations"].update(upcycling={"arms": {"upcycled": {"final_val": []}}}, variants={}),
    lambda s: s["training"]["rows"][1].update(to_target=None),
    lambda s: s["serving"]["rows"].clear(),
    lambda s: s.update({k: {"skipped": "not on this machine"} for k in ("laws", "hybrid", "task_type")}),
])
def test_garbled_or_missing_stages_are_not_reproducible(garble, engine_rows):
    study = copy.deepcopy(make_study())
    garble(study)
    rows = claims_table(study)
    assert len(rows) == len(engine_rows)
    for r in rows:
        if r["basis"] == BASIS_TINY and r["moelab_value"] is None:
            assert r["verdict"] in ("not_reproducible",) and r["why"]
        if r["basis"] != BASIS_TINY:
            assert r["moelab_value"] == engine_rows[r["id"]]["moelab_value"]
    assert any(r["basis"] == BASIS_TINY and r["moelab_value"] is None for r in rows)


def test_report_section_and_figures():
    from moelab.report import claims_section
    from moelab.report import html as h

    study = make_study()
    figures = claims_section.figures(study)
    assert figures["claims"] == len(REGISTRY) and sum(figures["claims_verdicts"].values()) == len(REGISTRY)
    assert "deepseek-v3-expert-combinations" in figures["claims_contradicted"]
    page = h._Page()
    out = claims_section.section(study, page)
    assert "409,663,695,276,000" in out and set(page.csvs) == {"claims_verdicts", "claims"}
    headers, rows = page.csvs["claims"]
    assert len(rows) == len(REGISTRY)
    cell = rows[[r[0] for r in rows].index("deepseek-v3-expert-combinations")][headers.index("moelab")]
    assert str(cell) == "409663695276000"  # the CSV keeps the exact integer
    stored = {**study, "claims": claims_table(None)}  # the study's own rows win over recomputing
    assert claims_section.figures(stored)["claims_with_moelab_value"] == sum(
        r["moelab_value"] is not None for r in stored["claims"])
