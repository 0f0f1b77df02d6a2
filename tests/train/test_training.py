"""The training loop: metrics, evaluation, DS-MoE, balancing, divergence, the runs store, train-compare."""

import json

import pytest
import torch

from moelab.cli import main
from moelab.errors import MoelabError
from moelab.train import loop
from moelab.train.config import TrainConfig
from moelab.train.metrics import CollapseDetector
from moelab.train.presets import TRAIN_PRESETS, load_train_spec
from moelab.train.store import list_runs


def small(corpus_dir, **changes):
    base = dict(steps=6, batch_size=4, seq_len=32, eval_every=3, ckpt_every=3, eval_tokens=512,
                data=str(corpus_dir), vocab_size=300, warmup=2)
    return TrainConfig(**{**base, **changes})


def test_presets_are_matched():
    from moelab.cost.params import count_params

    p = {name: count_params(build()) for name, build in TRAIN_PRESETS.items()}
    assert p["tiny-moe"].active == pytest.approx(p["tiny-dense"].active, rel=0.01)  # iso-active
    assert p["tiny-moe-fine"].active == pytest.approx(p["tiny-moe"].active, rel=0.01)
    assert p["tiny-dense-wide"].total == pytest.approx(p["tiny-moe"].total, rel=0.01)  # iso-total
    fine = load_train_spec("tiny-moe-fine").moe
    assert (fine.n_experts, fine.top_k, fine.n_shared, fine.router) == (30, 6, 2, "sigmoid")


def test_metrics_and_summary(tmp_path, corpus_dir):
    out = tmp_path / "run"
    summary = loop.train(load_train_spec("tiny-moe"), small(corpus_dir), out, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    for key in ("loss", "lr", "tokens", "flops", "wall_seconds", "tokens_per_second", "aux_loss", "z_loss",
                "expert_load", "imbalance", "dropped_tokens", "router_entropy", "balancing_bias"):
        assert key in rows[-1], key
    assert len(rows[-1]["expert_load"]) == 4 and sum(rows[-1]["expert_load"][0]) == pytest.approx(1, abs=1e-3)
    assert rows[1]["tokens"] == 2 * 4 * 32
    assert rows[0]["flops"] == pytest.approx(loop.step_flops(load_train_spec("tiny-moe"), small(corpus_dir)))
    assert set(rows[2]["val"]) == {"numbers", "prose", "mean"} and "val" not in rows[0]
    by_domain = rows[2]["val_expert_load"]  # domain -> layer -> share of token-slots per expert
    assert set(by_domain) == {"numbers", "prose"} and len(by_domain["prose"]) == 4
    assert all(sum(layer) == pytest.approx(1, abs=1e-3) and len(layer) == 8 for layer in by_domain["prose"])
    assert summary["tokens"] == 6 * 4 * 32 and summary["val"] == rows[-1]["val"]
    assert (out / "final" / "model.safetensors").is_file()
    assert sorted(p.name for p in out.glob("ckpt-*")) == ["ckpt-3", "ckpt-6"]
    runs = list_runs()
    assert runs[-1]["status"] == "finished" and runs[-1]["model"] == "tiny-moe"


def test_ds_moe_reports_dense_and_sparse(tmp_path, corpus_dir):
    summary = loop.train(load_train_spec("tiny-moe"), small(corpus_dir, ds_moe=True, steps=3), tmp_path / "ds",
                         progress=False)
    assert "dense" in summary["val"] and summary["val"]["dense"]["mean"] != summary["val"]["mean"]
    # dense training counts every expert's FLOPs
    assert loop.step_flops(load_train_spec("tiny-moe"), small(corpus_dir, ds_moe=True)) > \
        2 * loop.step_flops(load_train_spec("tiny-moe"), small(corpus_dir))


def test_aux_free_balancing_moves_biases(tmp_path, corpus_dir):
    out = tmp_path / "free"
    loop.train(load_train_spec("tiny-moe-fine"), small(corpus_dir, balancing="aux-free", bias_rate=0.01, steps=3), out,
               progress=False)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert any(abs(b) > 0 for layer in last["balancing_bias"] for b in layer)


def test_nan_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, corpus_dir, monkeypatch):
    real = loop._loss
    calls = {"n": 0}

    def poisoned(model, inputs, targets, cfg):
        calls["n"] += 1
        total, parts = real(model, inputs, targets, cfg)
        return (total * float("nan") if calls["n"] == 5 else total), parts

    monkeypatch.setattr(loop, "_loss", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(loop.TrainingDiverged, match="step 5"):
        loop.train(load_train_spec("tiny-dense"), small(corpus_dir), out, progress=False)
    assert [p.name for p in out.glob("ckpt-*")] == ["ckpt-3"]
    assert list_runs()[-1]["status"] == "diverged"


def test_refuses_to_overwrite_and_bad_flags(tmp_path, corpus_dir, capsys):
    out = tmp_path / "r"
    loop.train(load_train_spec("tiny-dense"), small(corpus_dir, steps=3), out, progress=False)
    with pytest.raises(MoelabError, match="--resume"):
        loop.train(load_train_spec("tiny-dense"), small(corpus_dir, steps=3), out, progress=False)
    for args in (["train", "--model", "tiny-dense", "--out", str(out)],
                 ["train", "--model", "tiny-dense", "--out", str(tmp_path / "x"), "--balancing", "magic"],
                 ["train", "--model", "no-such-model", "--out", str(tmp_path / "y")],
                 ["train", "--model", "tiny-dense", "--out", str(tmp_path / "z"), "--steps", "0"],
                 ["train-compare", "tiny-dense", "--target-loss", "3"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("moelab: error:") and err.count("\n") == 1


def test_lr_schedule():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    assert loop.lr_at(0, cfg) == pytest.approx(0.1) and loop.lr_at(9, cfg) == pytest.approx(1.0)
    assert loop.lr_at(55, cfg) == pytest.approx(0.55)
    assert loop.lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)


def test_collapse_detector():
    detector = CollapseDetector(threshold=0.1, patience=3)
    balanced, starved = [[0.25, 0.25, 0.25, 0.25]], [[0.49, 0.49, 0.01, 0.01]]
    assert detector.update(balanced) == []
    assert detector.update(starved) == [] and detector.update(starved) == []
    warnings = detector.update(starved)
    assert len(warnings) == 2 and "expert 2 of MoE layer 0" in warnings[0]
    assert detector.update(starved) == []  # reported once


def test_train_compare_and_runs_cli(tmp_path, corpus_dir, capsys):
    # 7.5 splits the two: validation loss here is about 7.39 then 7.06 for tiny-dense (steps 2, 4) and 7.64 then
    # 7.59 for tiny-moe, so dense reaches it at its first evaluation and the MoE never does in 4 steps
    target = 7.5
    args = ["train-compare", "tiny-dense", "tiny-moe", "--target-loss", str(target), "--out", str(tmp_path / "cmp"),
            "--steps", "4", "--batch-size", "4", "--seq-len", "32", "--eval-every", "2", "--data", str(corpus_dir),
            "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["target_loss"] == target
    assert [r["model"] for r in result["rows"]] == ["tiny-dense", "tiny-moe"]
    dense, moe = result["rows"]
    vals = {m: [(p["step"], p["val_mean"]) for p in c if "val_mean" in p] for m, c in result["curves"].items()}
    assert [s for s, _ in vals["tiny-dense"]] == [s for s, _ in vals["tiny-moe"]] == [2, 4]
    assert vals["tiny-dense"][0][1] <= target < min(v for _, v in vals["tiny-moe"])  # the target splits them
    assert dense["to_target"]["step"] == 2 and dense["to_target"]["tokens"] == 2 * 4 * 32
    assert dense["to_target"]["flops"] == result["curves"]["tiny-dense"][1]["flops"]
    assert moe["to_target"] is None
    assert moe["params_total"] > 2 * dense["params_total"]
    assert main(["runs", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in runs][-2:] == ["tiny-dense", "tiny-moe"]
    assert main(["runs"]) == 0 and "tiny-moe" in capsys.readouterr().out


def test_same_seed_same_data_order(tmp_path, corpus_dir):
    """Two runs of one config give identical parameters (the premise of matched comparisons and resume)."""
    a = loop.train(load_train_spec("tiny-moe"), small(corpus_dir, steps=3), tmp_path / "a", progress=False)
    b = loop.train(load_train_spec("tiny-moe"), small(corpus_dir, steps=3), tmp_path / "b", progress=False)
    from safetensors.torch import load_file

    wa, wb = (load_file(str(tmp_path / n / "final" / "model.safetensors")) for n in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa) and a["val"] == b["val"]


def _final_weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "final" / "model.safetensors"))


def test_gradient_accumulation_matches_one_big_batch(tmp_path, corpus_dir):
    big = small(corpus_dir, steps=2, batch_size=4, grad_accum=1, eval_every=100, ckpt_every=100)
    accumulated = small(corpus_dir, steps=2, batch_size=2, grad_accum=2, eval_every=100, ckpt_every=100)
    loop.train(load_train_spec("tiny-dense"), big, tmp_path / "big", progress=False)
    loop.train(load_train_spec("tiny-dense"), accumulated, tmp_path / "acc", progress=False)
    a, b = _final_weights(tmp_path / "big"), _final_weights(tmp_path / "acc")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)  # equal up to float summation order


def test_bf16_autocast_trains(tmp_path, corpus_dir):
    """bf16 autocast learns (validation loss falls from its first evaluation) and tracks the fp32 run trained
    the same way, without being it (autocast really ran)."""
    curves = {}
    for name, bf16 in (("bf16", True), ("fp32", False)):
        summary = loop.train(load_train_spec("tiny-moe"), small(corpus_dir, steps=3, eval_every=1, bf16=bf16),
                             tmp_path / name, progress=False)
        assert summary["tokens"] == 3 * 4 * 32
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        curves[name] = [r["val"]["mean"] for r in rows]
        assert curves[name][-1] == summary["val"]["mean"]
    bf16, fp32 = curves["bf16"], curves["fp32"]
    assert bf16[0] - bf16[-1] > 0.3  # about 0.6 in three steps here; a run that does not learn stays put
    assert all(abs(b - f) < 0.1 for b, f in zip(bf16, fp32, strict=True))  # bf16 rounding: about 0.02 here
    assert bf16 != fp32


def test_capacity_factor_drops_tokens(tmp_path, corpus_dir):
    out = tmp_path / "cap"
    loop.train(load_train_spec("tiny-moe"), small(corpus_dir, steps=2, capacity_factor=0.5), out, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # capacity 0.5 x fair share: at least half of the 4 layers x 128 tokens x 2 slots are dropped
    assert all(r["dropped_tokens"] >= 0.5 * 4 * 128 * 2 for r in rows)
