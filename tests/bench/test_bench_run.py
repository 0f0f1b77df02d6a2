"""Bench rows are complete and consistent, the summary comes from the rows, and two models give a flip."""

import json
import statistics

import pytest
import torch

from moelab.bench.run import bench, flip

ROW_KEYS = ("model", "phase", "batch", "prompt", "context", "measured_s", "predicted_s", "rel_error", "p50_s",
            "p95_s", "p99_s", "tokens_per_second", "predicted_tokens_per_second", "memory", "routing_share")
SMALL = dict(batches=(1, 2, 4), prompt=16, gen=4, repeats=2, threads=1)  # one thread: robust on a busy machine


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    path = tmp_path_factory.mktemp("hw") / "hw.json"
    from bench_hardware import FIXED_HW

    path.write_text(json.dumps(FIXED_HW))
    return bench(["tiny-dense", "tiny-moe"], hardware=str(path), **SMALL)


def test_rows_complete_and_consistent(two):
    rows = two["rows"]
    assert len(rows) == 2 * 3 * 2
    for r in rows:
        for key in ROW_KEYS:
            assert key in r, key
        assert r["phase"] in ("prefill", "decode")
        assert 0 < r["p50_s"] <= r["p95_s"] <= r["p99_s"]
        assert r["measured_s"] == pytest.approx(r["p50_s"])
        tokens = r["batch"] * (r["prompt"] if r["phase"] == "prefill" else 1)
        assert r["tokens_per_second"] == pytest.approx(tokens / r["measured_s"])
        assert r["predicted_tokens_per_second"] == pytest.approx(tokens / r["predicted_s"])
        assert r["rel_error"] == pytest.approx((r["predicted_s"] - r["measured_s"]) / r["measured_s"])
        mem = r["memory"]
        assert mem["weights_bytes"] > 0 and mem["kv_cache_bytes"] > 0
        assert mem["predicted_weights_bytes"] > 0 and mem["predicted_kv_cache_bytes"] > 0
        if r["model"] == "tiny-dense":
            assert r["routing_share"] is None
        else:
            assert 0 < r["routing_share"] < 1
    # decode samples: every step of every round; KV cache = 2 * layers * d * 4 bytes * batch * (prompt + gen)
    dense = next(r for r in rows if r["model"] == "tiny-dense" and r["phase"] == "decode" and r["batch"] == 2)
    assert dense["samples"] == 2 * 4
    assert dense["memory"]["kv_cache_bytes"] == 2 * 4 * 128 * 4 * 2 * (16 + 4)
    assert dense["memory"]["kv_cache_bytes"] == dense["memory"]["predicted_kv_cache_bytes"]
    params = next(m for m in two["models"] if m["name"] == "tiny-dense")["params_total"]
    assert dense["memory"]["weights_bytes"] == 4 * params == dense["memory"]["predicted_weights_bytes"]


def test_summary_is_computed_from_rows(two):
    for phase in ("prefill", "decode"):
        errors = [abs(r["rel_error"]) for r in two["rows"] if r["phase"] == phase]
        assert two["summary"][phase]["median_abs_rel_error"] == pytest.approx(statistics.median(errors))
        assert two["summary"][phase]["n"] == len(errors)
        for model in ("tiny-dense", "tiny-moe"):
            errs = [abs(r["rel_error"]) for r in two["rows"] if r["phase"] == phase and r["model"] == model]
            assert two["summary"]["by_model"][model][phase]["median_abs_rel_error"] == pytest.approx(
                statistics.median(errs))


def test_flip_object(two):
    f = two["flip"]
    assert set(f) == {"measured_batch", "predicted_batch", "measured_winner_by_batch", "predicted_winner_by_batch"}
    assert set(f["measured_winner_by_batch"]) == {"1", "2", "4"}
    assert set(f["measured_winner_by_batch"].values()) <= {"tiny-dense", "tiny-moe"}
    assert {m["name"] for m in two["models"]} == {"tiny-dense", "tiny-moe"}
    assert two["models"][1]["experts"] == 8 and two["models"][1]["top_k"] == 2


def test_flip_logic():
    def row(model, batch, tps, pred):
        return {"model": model, "phase": "decode", "batch": batch, "tokens_per_second": tps,
                "predicted_tokens_per_second": pred}
    rows = [row("a", 1, 10, 10), row("b", 1, 5, 5), row("a", 8, 20, 30), row("b", 8, 40, 20),
            row("a", 64, 30, 30), row("b", 64, 90, 90)]
    f = flip(rows, ["a", "b"])
    assert f["measured_batch"] == 8 and f["predicted_batch"] == 64
    assert f["measured_winner_by_batch"] == {"1": "a", "8": "b", "64": "b"}
    assert flip(rows, ["a"]) is None


def test_run_dir_hf_folder_config_and_shrink(tmp_path, hw_file):
    from safetensors.torch import save_model

    from moelab.bench.models import load
    from moelab.nn.hf import save_pretrained
    from moelab.nn.model import build_model
    from moelab.spec.model import spec_to_dict
    from moelab.train.presets import tiny_moe

    spec = tiny_moe()
    torch.manual_seed(1234)  # not the seed bench builds random weights with: a load that was skipped shows
    model = build_model(spec)
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    save_model(model, str(final / "model.safetensors"))
    (final / "meta.json").write_text(json.dumps({"spec": spec_to_dict(spec)}))
    hf = tmp_path / "hf"
    save_pretrained(model, hf)
    one = dict(batches=(2,), prompt=8, gen=2, repeats=1, hardware=hw_file, threads=1)
    r = bench([str(tmp_path / "run"), str(hf)], **one)
    assert [m["source"] for m in r["models"]] == ["run", "hf"]
    assert [m["weights"] for m in r["models"]] == [str(final / "model.safetensors"), str(hf)]
    assert r["threads"] == 1
    numel = sum(p.numel() for p in model.parameters())
    for m in r["models"]:  # the analytic count beside the built model's, and the structure it was given
        assert m["params_total"] == numel
        assert (m["n_layers"], m["d_model"], m["experts"], m["top_k"]) == (
            spec.n_layers, spec.d_model, spec.moe.n_experts, spec.moe.top_k)
    names = [m["name"] for m in r["models"]]
    assert names == [spec.name, "hf"]  # a run keeps its spec's name; an HF folder is named after the folder
    assert sorted((row["model"], row["phase"]) for row in r["rows"]) == [
        (name, phase) for name in sorted(names) for phase in ("decode", "prefill")]
    assert set(r["flip"]["measured_winner_by_batch"]) == {"2"}
    # both folders load the saved weights, not random ones
    saved = model.state_dict()
    for ref in (tmp_path / "run", hf):
        loaded = load(str(ref), "cpu", torch.float32, "fp32", 1e12).model.state_dict()
        assert set(loaded) == set(saved) and all(torch.equal(loaded[k], saved[k]) for k in saved), ref
    small = bench(["mixtral-8x7b"], shrink_to="3M", **one)
    m = small["models"][0]
    assert m["source"] == "config" and m["weights"] == "random"
    assert m["shrunk_from"] == "mixtral-8x7b" and m["experts"] == 8 and m["top_k"] == 2
    assert m["shared_experts"] == 0 and m["moe_layers"] == list(range(m["n_layers"]))  # Mixtral: every layer MoE
    assert m["params_total"] == pytest.approx(3e6, rel=0.3) and small["flip"] is None
    shrunk = load("mixtral-8x7b", "cpu", torch.float32, "fp32", 1e12, shrink_to="3M").model
    assert m["params_total"] == sum(p.numel() for p in shrunk.parameters())
