"""decide's serving keys: `concurrency`, `ttft_ms`, `tpot_ms` in workload files. Validated in one line; checked
against cost.serving on each candidate's best fitting plan; a TPOT limit one model cannot meet flips the
recommendation, the case built from the models' own modelled figures (never a pinned number); numbers and kinds,
not sentences."""

import json
import math

import pytest
import yaml

from moelab.cli import main
from moelab.cost.frontier import serving_points
from moelab.decide import default_workload, recommend
from moelab.decide.workload import DEFAULT, workload_from_dict
from moelab.errors import MoelabError
from moelab.spec import load_hardware, load_model

SERVING_VIOLATIONS = {"concurrency", "ttft", "tpot"}


def _wl(**keys):
    return workload_from_dict({**DEFAULT, **keys}, "test")


def _min_tpot(model: str, concurrency: int, wl) -> float | None:
    """The lowest modelled mean TPOT any plan that fits reaches at `concurrency` (cost.serving directly)."""
    pts = [sp for sp in serving_points(load_model(model), load_hardware(wl.hardware), wl.gpus, wl.prompt, wl.gen,
                                       wl.dtype, concurrencies=[concurrency]) if sp.fits]
    return min((sp.tpot_ms for sp in pts), default=None)


@pytest.mark.parametrize("key, value", [("concurrency", 0), ("concurrency", -3), ("concurrency", 1.5),
                                        ("concurrency", True), ("ttft_ms", 0), ("tpot_ms", -1.0),
                                        ("tpot_ms", "fast"), ("ttft_ms", math.inf)])
def test_bad_values_are_one_line_naming_the_field(key, value):
    with pytest.raises(MoelabError) as err:
        _wl(**{key: value})
    assert key in str(err.value) and "\n" not in str(err.value)


def test_bad_value_through_the_cli_exits_2(tmp_path, capsys):
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump({**DEFAULT, "concurrency": 0}))
    assert main(["decide", "--workload", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moelab: error:") and "concurrency" in err and "\n" not in err


def test_the_keys_are_read_and_concurrency_defaults_to_batch():
    wl = _wl(concurrency=64, ttft_ms=500, tpot_ms=40)
    assert (wl.concurrency, wl.ttft_ms, wl.tpot_ms, wl.serving_concurrency) == (64, 500.0, 40.0, 64)
    assert _wl(tpot_ms=40).serving_concurrency == DEFAULT["batch"]
    assert default_workload().serving_concurrency is None


def test_without_the_keys_decide_is_as_before_and_loose_limits_change_nothing():
    cands = ["mixtral-8x7b", "llama-3-70b"]
    plain = recommend(_wl(candidates=cands))
    assert all(c["serving"] is None and not set(c["violations"]) & SERVING_VIOLATIONS for c in plain["candidates"])
    assert not any(f["input"] in ("ttft_ms", "tpot_ms") for f in plain["flip_details"])
    loose = recommend(_wl(candidates=cands, concurrency=16, ttft_ms=1e6, tpot_ms=1e6))
    assert loose["recommendation"]["choice"] == plain["recommendation"]["choice"]
    assert loose["recommendation"]["model"] == plain["recommendation"]["model"]
    assert [f["favours"] for f in loose["factors"]] == [f["favours"] for f in plain["factors"]]
    for c in loose["candidates"]:
        s = c["serving"]
        assert s["meets_ttft"] and s["meets_tpot"] and s["concurrency"] == 16 and s["gpus"] == 8
        # the figure cited is the serving model's own at that plan and concurrency
        wl = loose["workload"]
        sp = next(p for p in serving_points(load_model(c["name"]), load_hardware("H100-SXM"), 8, wl["prompt"],
                                            wl["gen"], "bf16", concurrencies=[16]) if p.plan == s["plan"])
        assert (s["ttft_ms"], s["tpot_ms"]) == (sp.ttft_ms, sp.tpot_ms)
    assert loose["recommendation"]["rule"] == plain["recommendation"]["rule"]


def test_a_tpot_limit_the_recommended_model_cannot_meet_flips_it():
    # find, from the models' own figures, a concurrency where the recommendation uses the candidate whose best
    # TPOT is the slower one (alone or in a hybrid): a limit between the two must hand the decision to the other
    case = None
    for gpus, cands in ((16, ["llama-3-70b", "mixtral-8x22b"]), (8, ["llama-3-70b", "qwen3-235b-a22b"]),
                        (8, ["llama-3-70b", "mixtral-8x7b"]), (8, ["llama-3-8b", "qwen3-30b-a3b"]),
                        (8, ["llama-3-70b", "mixtral-8x22b"]), (8, ["mistral-7b", "mixtral-8x7b"])):
        for c in (1, 16, 64):
            base_wl = _wl(candidates=cands, concurrency=c, throughput_tokens_per_s=None, gpus=gpus)
            tpot = {m: _min_tpot(m, c, base_wl) for m in cands}
            if None in tpot.values() or len(set(tpot.values())) < 2:
                continue
            pick, other = sorted(cands, key=tpot.get, reverse=True)  # the slower first
            base = recommend(base_wl)
            feasible = next(x for x in base["candidates"] if x["name"] == other)["feasible"]
            if pick in base["recommendation"]["model"].split() and feasible:
                case = (gpus, cands, c, pick, other, math.sqrt(tpot[pick] * tpot[other]), tpot[pick])
                break
        if case:
            break
    assert case, "no pair and concurrency where the recommendation uses the slower model per token"
    gpus, cands, c, pick, other, limit, tpot_pick = case
    r = recommend(_wl(candidates=cands, concurrency=c, throughput_tokens_per_s=None, tpot_ms=limit, gpus=gpus))
    assert r["recommendation"]["model"] == other and r["recommendation"]["feasible"]
    by = {x["name"]: x for x in r["candidates"]}
    assert "tpot" in by[pick]["violations"] and by[pick]["serving"]["tpot_ms"] > limit
    assert not by[other]["violations"] and by[other]["serving"]["tpot_ms"] <= limit
    assert r["recommendation"]["rule"] == "only_feasible" and by[pick]["serving"]["meets_tpot"] is False
    # the flips name the TPOT limit at which the decision goes back: one of the slower model's own figures
    back = next(f for f in r["flip_details"] if f["input"] == "tpot_ms" and f["direction"] == "above")
    assert pick in back["to"] and limit < back["threshold"] and back["threshold"] == pytest.approx(tpot_pick)


def test_a_concurrency_no_plan_holds_is_a_violation_and_says_so(tmp_path, capsys):
    wl = _wl(candidates=["mixtral-8x7b", "llama-3-70b"], concurrency=500_000)
    r = recommend(wl)
    assert all("concurrency" in c["violations"] for c in r["candidates"])
    assert not r["recommendation"]["feasible"] and r["recommendation"]["rule"] == "closest"
    for c in r["candidates"]:
        s = c["serving"]
        assert (s["plan"], s["meets_concurrency"], s["gpus"]) == (None, False, 8) and s["max_concurrency"] < 500_000
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump({**DEFAULT, "candidates": ["mixtral-8x7b"], "concurrency": 8, "ttft_ms": 1e-3}))
    assert main(["decide", "--workload", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["candidates"][0]["violations"] == ["ttft"]
    assert out["recommendation"]["rule"] == "closest" and out["workload"]["ttft_ms"] == 1e-3
