"""`torchrun --nproc-per-node 2 -m moelab bench tiny-moe --ep 2`: rows, the engine's ep2 prediction beside them,
the all-to-all seconds, the sharded model's logits against one process, and the layout's one-line refusals.

One torchrun launch (tests/bench/ep_bench_worker.py) runs the logits case and then the bench; the one-process
references are computed here from the same builder and seeds. Tolerances: float64 1e-10, float32 1e-5, relative
to max(1, |reference|).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bench_hardware import FIXED_HW
from safetensors.torch import load_file

from moelab.bench.measure import Runner, prefill_last
from moelab.bench.models import build, resolve
from moelab.cli import main
from moelab.cost.memory import model_weight_bytes
from moelab.cost.roofline import Workload, decode_step, prefill
from moelab.parallel.launch import torchrun
from moelab.spec.hardware import load_hardware

WORKER = Path(__file__).with_name("ep_bench_worker.py")
TOL = {"float64": 1e-10, "float32": 1e-5}
# FIXED_HW with a CPU-like link (gloo on one machine: about 1 GB/s after 150 us), so all-to-all prices > 0
EP_HW = {**FIXED_HW, "gpus_per_node": 2, "intra_node_gbps": 1.0, "intra_node_latency_us": 150.0}
BATCHES = (2, 4)


@pytest.fixture(scope="module")
def ep_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-ep")
    hw = out / "hw.json"
    hw.write_text(json.dumps(EP_HW))
    args = ["bench", "tiny-moe", "--ep", "2", "--quick", "--json", "--batches", ",".join(map(str, BATCHES)),
            "--hardware", str(hw)]
    return out, hw, torchrun(2, [str(WORKER), str(out), *args], timeout=150)


def _result(ep_run) -> dict:
    _, _, finished = ep_run
    assert finished.returncode == 0, (f"torchrun returned {finished.returncode} (timed out: {finished.timed_out})"
                                      f"\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout)  # one document: rank 1 printed nothing


def test_rows_carry_plan_predictions_and_alltoall(ep_run):
    result = _result(ep_run)
    _, hw_path, _ = ep_run
    hw, spec = load_hardware(str(hw_path)), resolve("tiny-moe").spec
    assert result["parallel"] == {**result["parallel"], "world": 2, "ep": 2, "dp": 1, "plan": "ep2",
                                  "sequences_per_rank": [1, 2]}
    rows = result["rows"]
    assert sorted((r["phase"], r["batch"]) for r in rows) == sorted(
        (phase, b) for phase in ("prefill", "decode") for b in BATCHES)
    gen, repeats = result["workload"]["gen"], result["workload"]["repeats"]
    routed = model_weight_bytes(spec, "fp32").routed_experts
    for r in rows:
        assert r["plan"] == "ep2"
        assert r["samples"] == repeats * (1 if r["phase"] == "prefill" else gen)
        assert r["measured_s"] > 0 and r["predicted_s"] > 0 and r["predicted_tokens_per_second"] > 0
        assert 0 < r["alltoall_seconds"] < r["measured_s"] and 0 < r["alltoall_share"] < 1
        assert 0 < r["predicted_alltoall_seconds"] < r["predicted_s"]
        # the prediction is the engine's for plan ep2 on 2 GPUs, not the one-process one
        wl = Workload(batch=r["batch"], prompt=r["prompt"], gen=gen, dtype="fp32", kv_dtype="fp32", gpus=2,
                      plan="ep2")
        single = Workload(batch=r["batch"], prompt=r["prompt"], gen=gen, dtype="fp32", kv_dtype="fp32")
        if r["phase"] == "prefill":
            engine, one = prefill(spec, hw, wl).seconds, prefill(spec, hw, single).seconds
        else:
            engine, one = decode_step(spec, hw, wl, r["context"]).seconds, decode_step(spec, hw, single,
                                                                                         r["context"]).seconds
        assert r["predicted_s"] == pytest.approx(engine, rel=1e-12) and engine != pytest.approx(one, rel=1e-3)
        # rank 0 holds the replicated weights and half of the routed experts
        mem = r["memory"]
        assert mem["weights_bytes"] == pytest.approx(model_weight_bytes(spec, "fp32").total - routed / 2, rel=1e-3)
        assert mem["predicted_weights_bytes"] == pytest.approx(mem["weights_bytes"], rel=1e-3)
    assert result["summary"]["prefill"]["n"] == len(BATCHES)
    assert any("share this machine's" in w for w in result["warnings"])


def test_sharded_logits_equal_one_process(ep_run):
    out, _, finished = ep_run
    path = out / "logits.safetensors"
    assert path.is_file(), finished.stderr[-3000:]
    got = load_file(str(path))
    r = resolve("tiny-moe")
    for name, dtype in {"float64": torch.float64, "float32": torch.float32}.items():
        m = build(r, "cpu", dtype)
        runner = Runner(m.model, r.spec.vocab_size, 4, 16, 1, "cpu", seed=4)
        ids, token = runner._ids(16), runner._ids(1)
        assert torch.equal(got[f"{name}.ids"], ids) and torch.equal(got[f"{name}.token"], token)
        with torch.inference_mode():
            cache = m.model.new_cache(17)
            ref = {"prefill": prefill_last(m.model, ids, cache), "decode": m.model(token, cache)}
        for key, want in ref.items():
            have = got[f"{name}.{key}"]
            assert have.shape == want.shape and have.dtype == want.dtype
            err = ((have - want).abs() / want.abs().clamp_min(1)).max().item()
            assert err <= TOL[name], f"{name} {key}: max relative difference {err:.2e}"


@pytest.fixture()
def torchrun_env(monkeypatch, tmp_path):
    """This process as rank 0 of a 2-process torchrun job (the checks refuse before any group starts), with an
    empty $MOELAB_HOME: no calibration cached."""
    monkeypatch.setenv("MOELAB_HOME", str(tmp_path))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)

    def launched(world: int = 2) -> None:
        monkeypatch.setenv("WORLD_SIZE", str(world))
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("LOCAL_RANK", "0")

    return launched


@pytest.mark.parametrize("args, world, message", [
    (["tiny-moe", "--ep", "2"], None, "needs 2 processes: start it with `torchrun --nproc-per-node 2"),
    (["tiny-moe", "--ep", "0"], None, "--ep must be at least 1"),
    (["tiny-dense", "--ep", "2"], 2, "dense"),
    (["tiny-moe", "--ep", "3"], 3, "does not divide the model's 8 routed experts"),
    (["tiny-moe", "--ep", "2", "--batches", "2,3"], 2, "batch 3 does not divide"),
    (["tiny-moe", "tiny-moe", "--ep", "2"], 2, "benchmarks one model"),
    (["tiny-moe"], 2, "give --ep 2"),
    (["tiny-moe", "--ep", "2"], 2, "no cpu calibration"),
    (["tiny-moe", "--ep", "2", "--hardware", "HW"], 4, "give --ep 4 (got --ep 2)"),
])
def test_layout_refused_in_one_line(capsys, torchrun_env, tmp_path, args, world, message):
    if world is not None:
        torchrun_env(world)
    hw = tmp_path / "hw.json"
    hw.write_text(json.dumps(EP_HW))
    assert main(["bench", *[str(hw) if a == "HW" else a for a in args], "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("moelab: error:") and message in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_refused(capsys, torchrun_env):
    torchrun_env(2)
    assert main(["bench", "tiny-moe", "--ep", "2", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cuda" in err.lower()
