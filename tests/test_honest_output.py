"""Output that tells the truth about itself (issue 10, "honest output"): compare rows carry their GPU count and
fit, flips say when a GPU count steps under them, memory figures carry a does-not-fit mark, EP is refused on more
GPUs than experts, latency is named a modelled mean against a p99 target, and an infeasible decision's reason is
a whole sentence whatever targets the workload sets."""

import json
from dataclasses import replace

import pytest

from moelab.cli import main
from moelab.cost.compare import compare
from moelab.cost.parallel import evaluate_plan, plans
from moelab.cost.plan import Plan
from moelab.cost.roofline import Workload
from moelab.decide import default_workload, recommend
from moelab.decide.recommend import BASES, LATENCY_MEAN, constraint_clauses
from moelab.errors import MoelabError
from moelab.spec import load_hardware, load_model


def run(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


def run_json(capsys, *args: str) -> dict:
    return json.loads(run(capsys, *args, "--json"))


# --- compare ---------------------------------------------------------------------------------------------

def test_every_compare_row_carries_gpus_fit_and_memory(capsys):
    r = run_json(capsys, "compare", "mistral-7b", "mixtral-8x7b", "--batches", "1,8,4096")
    for row in r["rows"]:
        for side in ("a", "b"):
            s = row[side]
            assert isinstance(s["gpus"], int) and s["gpus"] >= 1
            assert s["fits"] == (s["memory_per_gpu_bytes"] <= s["capacity_per_gpu_bytes"])
    # the case: Mistral-7B is spread over 16 GPUs at batch 4096, and the row says so
    assert r["rows"][-1]["a"]["gpus"] == 16 and r["rows"][0]["a"]["gpus"] == 1
    table = run(capsys, "compare", "mistral-7b", "mixtral-8x7b", "--batches", "1,8,4096")
    assert "A GPUs" in table and "B GPUs" in table and "mem/GPU" in table


def test_a_flip_at_a_gpu_step_says_so(capsys):
    batches = [1, 8, 32, 128, 512, 1024, 2048, 4096]
    stepped = []
    for hw_name in ("H100-SXM", "H200", "A100-80GB", "A100-40GB"):
        hw, wl = load_hardware(hw_name), Workload()
        for names in (("mistral-7b", "mixtral-8x7b"), ("llama-3-8b", "qwen3-30b-a3b"),
                      ("llama-3-70b", "mixtral-8x22b")):
            a, b = (load_model(n) for n in names)
            for flip in compare(a, b, hw, wl, batches)["flips"]:
                around = compare(a, b, hw, wl, [flip["batch"] - 1, flip["batch"]])["rows"]
                changed = any(around[0][s]["gpus"] != around[1][s]["gpus"] for s in ("a", "b"))
                assert flip["gpus_changed"] is changed
                assert ("moves from" in flip["note"]) is changed
                if changed:
                    stepped.append((hw_name, names, flip["note"]))
    assert stepped, "some pair flips where a side steps to more GPUs (else the test checks nothing)"
    hw_name, names, note = stepped[0]
    assert note.startswith("(") and "GPUs here)" in note
    text = run(capsys, "compare", *names, "--hardware", hw_name, "--batches", ",".join(map(str, batches)))
    assert note in text


def test_fixed_gpus_mark_rows_that_do_not_fit(capsys):
    r = run_json(capsys, "compare", "mistral-7b", "mixtral-8x7b", "--gpus", "2", "--batches", "1,4096")
    assert all(row[s]["gpus"] == 2 for row in r["rows"] for s in ("a", "b"))
    small, big = r["rows"]
    assert small["a"]["fits"] and small["b"]["fits"]
    assert not big["a"]["fits"] and not big["b"]["fits"]
    assert r["gpus_basis"] == "fixed by --gpus"
    table = run(capsys, "compare", "mistral-7b", "mixtral-8x7b", "--gpus", "2", "--batches", "1,4096")
    assert "DOES NOT FIT" in table and "neither fits" in table


def test_a_model_that_does_not_fit_never_wins(capsys):
    # Qwen3-235B-A22B reads fewer bytes per token than Llama-3-70B at batch 1, but its 470 GB of weights do not
    # fit 4 x 80 GB: before, it "won" batch 1 and a flip at batch 5 was reported
    r = run_json(capsys, "compare", "llama-3-70b", "qwen3-235b-a22b", "--gpus", "4", "--batches", "1,8")
    first = r["rows"][0]
    assert first["a"]["fits"] and not first["b"]["fits"]
    assert [row["winner"] for row in r["rows"]] == ["a", "a"] and r["flips"] == []


# --- memory figures ---------------------------------------------------------------------------------------

def test_estimate_training_memory_says_it_does_not_fit(capsys):
    r = run_json(capsys, "estimate", "deepseek-v3", "--hardware", "H200")
    assert r["training"]["memory"]["total_bytes"] > r["training"]["memory"]["capacity_per_gpu_bytes"]
    assert r["training"]["memory"]["fits"] is False
    text = run(capsys, "estimate", "deepseek-v3", "--hardware", "H200")
    line = next(t for t in text.splitlines() if "ZeRO-1" in t)
    assert "TB/GPU" in line and "DOES NOT FIT in 141.00 GB" in line
    small = run(capsys, "estimate", "llama-3-8b", "--gpus", "8")
    assert "(fits in 80.00 GB)" in next(t for t in small.splitlines() if "ZeRO-1" in t)


def test_estimate_serving_memory_names_the_capacity(capsys):
    text = run(capsys, "estimate", "mixtral-8x7b", "--gpus", "1", "--batch", "64")
    assert "DOES NOT FIT in 72.00 GB usable" in next(t for t in text.splitlines() if "/GPU on 1" in t)


def test_decide_table_marks_candidates_that_do_not_fit(capsys, tmp_path):
    path = tmp_path / "wl.yaml"
    path.write_text("hardware: H100-SXM\ngpus: 8\nmemory_budget_gb: 60\nlatency_p99_ms: 50\nbatch: 32\nprompt: 1024\n"
                    "gen: 256\ntask_mix: {reasoning: 0.3, knowledge: 0.3, multilingual: 0.2, code: 0.2}\n"
                    "training: fine-tune\ncandidates: [mixtral-8x7b, mistral-7b]\n")
    text = run(capsys, "decide", "--workload", str(path))
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│ m")}
    assert "DOES NOT FIT" in rows["mixtral-8x7b"] and "DOES NOT FIT" not in rows["mistral-7b"]
    assert "p99/token" not in text and "mean/token" in text and "p99 target of 50 ms" in text


# --- expert parallelism -----------------------------------------------------------------------------------

def test_ep_on_more_gpus_than_experts_is_refused():
    spec, hw = load_model("mixtral-8x7b"), load_hardware("H100-SXM")
    with pytest.raises(MoelabError, match=r"mixtral-8x7b has 8 experts, 16 GPUs requested"):
        evaluate_plan(spec, hw, Workload(gpus=16, plan="ep"))
    assert all(Plan.parse(p.plan).ep in (1, 2, 4, 8) for p in plans(spec, hw, Workload(gpus=16)))
    assert "ep16" not in [p.plan for p in plans(spec, hw, Workload(gpus=16))]
    assert "ep8" in [p.plan for p in plans(spec, hw, Workload(gpus=8))]
    evaluate_plan(spec, hw, Workload(gpus=8, plan="ep"))  # one expert per GPU is fine


def test_estimate_says_why_ep_is_not_offered(capsys):
    r = run_json(capsys, "estimate", "mixtral-8x7b", "--gpus", "16")
    assert "ep16" not in [p["plan"] for p in r["parallel"]["plans"]]
    assert r["parallel"]["notes"] and "8 experts" in r["parallel"]["notes"][0]
    assert "expert parallelism not offered" in run(capsys, "estimate", "mixtral-8x7b", "--gpus", "16")
    assert run_json(capsys, "estimate", "mixtral-8x7b", "--gpus", "8")["parallel"]["notes"] == []


# --- latency naming and the decision's sentences ------------------------------------------------------------

def test_decision_names_the_modelled_mean():
    r = recommend(default_workload())
    assert r["latency_label"] == LATENCY_MEAN
    reason = r["recommendation"]["reason"]
    assert "modelled mean" in reason and "vs p99 target 50 ms" in reason
    assert " p99 1" not in reason  # the old "p99 18.3 ms/token" called a modelled mean a p99
    assert {f["basis"] for f in r["factors"]} <= set(BASES)


INFEASIBLE = [  # (changes to the default workload, what the reason must say about throughput)
    ({"memory_budget_gb": 1.0}, "vs target 3000"),
    ({"memory_budget_gb": 1.0, "throughput_tokens_per_s": None}, "no throughput target"),
    ({"latency_p99_ms": 0.5, "throughput_tokens_per_s": None, "quality_floor_b": 0.0}, "no throughput target"),
    ({"latency_p99_ms": 0.5, "throughput_tokens_per_s": 1e9}, "vs target 1e+09"),
    ({"quality_floor_b": 5000.0, "throughput_tokens_per_s": None}, "no throughput target"),
]


@pytest.mark.parametrize(("changes", "throughput"), INFEASIBLE)
def test_infeasible_reason_is_a_whole_sentence(changes, throughput):
    wl = replace(default_workload(), **changes)
    rec = recommend(wl)["recommendation"]
    reason = rec["reason"]
    assert not rec["feasible"]
    assert reason.startswith(f"no candidate meets every constraint; {rec['model']} comes closest, failing on ")
    assert reason.endswith(").") and " no target)" not in reason
    assert throughput in reason
    assert f"vs p99 target {wl.latency_p99_ms:g} ms" in reason and f"budget {wl.memory_budget_gb:.0f} GB" in reason
    assert ("vs floor" in reason) == (wl.quality_floor_b > 0)


def test_constraint_clauses_for_every_target_combination():
    wl = default_workload()
    c = {"latency_ms": 12.3, "memory_gb": 90.0, "gpus_per_replica": 2, "fits": False, "tokens_per_second": 4000.0,
         "dense_equivalent_b": 29.0}
    for tput in (None, 3000.0):
        for floor in (0.0, 25.0):
            clauses = constraint_clauses(c, replace(wl, throughput_tokens_per_s=tput, quality_floor_b=floor))
            text = "; ".join(clauses)
            assert clauses[0] == "modelled mean 12.3 ms/token vs p99 target 50 ms"
            assert "90 GB per replica of 2 GPU(s), DOES NOT FIT (budget 640 GB)" in text
            assert ("no throughput target" in text) == (tput is None)
            assert ("vs target 3000" in text) == (tput is not None)
            assert ("dense-equivalent 29B vs floor 25B" in text) == (floor > 0)
