"""`moelab estimate` / `compare` with plans: --plan, --gpus against it, --concurrency, --breakdown, the
--input/--output aliases, one-line refusals (exit 2), and the JSON contract other tools read."""

import json

import pytest

from moelab.cli import main
from moelab.cost.plan import Plan


def run(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(list(args)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def run_json(capsys, *args: str) -> dict:
    return json.loads(run(capsys, *args, "--json"))


def refused(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(list(args)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.mark.parametrize("args,says", [
    (["estimate", "mixtral-8x7b", "--plan", "tp2q"], "does not read as"),
    (["estimate", "mixtral-8x7b", "--plan", "ep2tp4"], "does not read as"),
    (["estimate", "mixtral-8x7b", "--plan", "tp0"], "at least 1"),
    (["estimate", "mixtral-8x7b", "--plan", "tp2x4", "--gpus", "4"], "contradicts --plan tp2x4"),
    (["estimate", "mixtral-8x7b", "--plan", "ep3"], "does not divide the 8 routed experts"),
    (["estimate", "mistral-7b", "--plan", "ep2"], "dense model"),
    (["estimate", "mistral-7b", "--plan", "tp3"], "does not divide the 32 heads"),
    (["estimate", "mistral-7b", "--plan", "pp5tp2"], "does not divide the 32 layers"),
    (["estimate", "mistral-7b", "--plan", "tp1024x2048"], "more than moelab models"),
    (["estimate", "mistral-7b", "--concurrency", "0"], "--concurrency"),
    (["estimate", "mistral-7b", "--concurrency", "1,0,8"], "--concurrency"),
    (["estimate", "mistral-7b", "--concurrency", "1,x"], "--concurrency"),
    (["estimate", "mistral-7b", "--concurrency", ""], "--concurrency"),
    (["estimate", "mistral-7b", "--concurrency", "1,8", "--batch", "4"], "--batch"),
    (["compare", "mistral-7b", "mixtral-8x7b", "--plan", "ep2"], "dense model"),
    (["compare", "mistral-7b", "mixtral-8x7b", "--plan", "tp4", "--gpus", "8"], "contradicts"),
])
def test_bad_plans_and_concurrencies_get_one_line(capsys, args, says):
    assert says in refused(capsys, *args)


def test_json_contract(capsys):
    r = run_json(capsys, "estimate", "mixtral-8x7b", "--gpus", "8", "--batch", "16", "--prompt", "1000")
    assert {k: r["workload"][k] for k in ("batch", "prompt", "gen", "gpus")} == {
        "batch": 16, "prompt": 1000, "gen": 256, "gpus": 8}
    rows = r["parallel"]["plans"]
    assert len(rows) > 5  # every plan in JSON, the table shows the best few
    for row in rows:
        assert {"plan", "prefill_seconds", "decode_step_seconds", "tokens_per_second", "fits",
                "max_concurrency", "replicas"} <= set(row)
        assert Plan.parse(row["plan"]).gpus == 8
    best = rows[0]
    assert r["parallel"]["plan"] == best["plan"] and best["fits"]
    assert best["tokens_per_second"] == max(row["tokens_per_second"] for row in rows if row["fits"])
    assert r["prefill"]["seconds"] == best["prefill_seconds"]
    assert r["decode"]["step_seconds"] == best["decode_step_seconds"]
    assert r["decode"]["tokens_per_second"] == best["tokens_per_second"]
    assert {op["name"] for op in r["decode"]["operators"]} >= {"qkv_proj", "experts", "router"}
    assert r["decode"]["step_seconds"] == pytest.approx(sum(op["seconds"] for op in r["decode"]["operators"]))
    # the keys the older readers use are still there
    for section, keys in {"memory": ("fits", "memory_per_gpu_bytes", "capacity_per_gpu_bytes", "total_bytes"),
                          "decode": ("crossover_batch", "tokens_per_second_per_gpu", "context"),
                          "prefill": ("time_to_first_token_seconds", "tokens_per_second"),
                          "cost": ("usd_per_million_tokens",), "energy": ("kwh_per_million_tokens",),
                          "parallel": ("gpus", "scaling_efficiency", "notes")}.items():
        assert set(keys) <= set(r[section]), section


def test_a_fixed_plan_is_the_top_level_answer(capsys):
    r = run_json(capsys, "estimate", "mixtral-8x7b", "--plan", "tp2x4", "--batch", "16")
    assert r["workload"]["gpus"] == 8 and r["parallel"]["plan"] == "tp2x4" and r["parallel"]["fixed"]
    row = next(p for p in r["parallel"]["plans"] if p["plan"] == "tp2x4")
    assert r["decode"]["step_seconds"] == row["decode_step_seconds"]
    assert r["prefill"]["seconds"] == row["prefill_seconds"]
    same = run_json(capsys, "estimate", "mixtral-8x7b", "--plan", "tp2x4", "--gpus", "8", "--batch", "16")
    assert same["decode"]["step_seconds"] == r["decode"]["step_seconds"]
    # a plan the search does not offer (pp inside a node) is still priced when asked for
    pp = run_json(capsys, "estimate", "llama-3-8b", "--plan", "pp2tp2")
    assert pp["parallel"]["plan"] == "pp2tp2" and pp["workload"]["gpus"] == 4


def test_input_and_output_are_prompt_and_gen(capsys):
    a = run_json(capsys, "estimate", "mistral-7b", "--input", "300", "--output", "40")
    b = run_json(capsys, "estimate", "mistral-7b", "--prompt", "300", "--gen", "40")
    assert a == b and a["workload"]["prompt"] == 300 and a["workload"]["gen"] == 40
    c = run_json(capsys, "compare", "mistral-7b", "mixtral-8x7b", "--input", "300", "--output", "40",
                 "--batches", "1,8")
    d = run_json(capsys, "compare", "mistral-7b", "mixtral-8x7b", "--prompt", "300", "--gen", "40",
                 "--batches", "1,8")
    assert c == d


def test_concurrency_rows(capsys):
    r = run_json(capsys, "estimate", "mixtral-8x7b", "--plan", "tp2", "--concurrency", "64,1,100000",
                 "--input", "1024", "--output", "128")
    rows = r["serving"]
    assert [row["concurrency"] for row in rows] == [1, 64, 100000]
    for row in rows:
        assert {"concurrency", "ttft_ms", "tpot_ms", "requests_per_second", "output_tokens_per_second_per_gpu",
                "output_tokens_per_second_per_user", "plan", "fits", "max_concurrency"} <= set(row)
        assert row["plan"] == "tp2"
        assert row["output_tokens_per_second_per_user"] == pytest.approx(1000 / row["tpot_ms"])
    top = rows[-1]
    assert top["concurrency"] > top["max_concurrency"] and not top["fits"] and "max_concurrency" in top["note"]
    assert rows[0]["fits"]
    table = run(capsys, "estimate", "mixtral-8x7b", "--plan", "tp2", "--concurrency", "1,100000")
    assert "mean TTFT" in table and "mean TPOT" in table and "not p50/p99" in table and "DOES NOT FIT" in table
    assert "p99" not in table.replace("not p50/p99", "")


def test_concurrency_without_a_plan_uses_the_best_for_the_largest(capsys):
    r = run_json(capsys, "estimate", "llama-3-8b", "--gpus", "8", "--concurrency", "1,256")
    plan = r["serving"][0]["plan"]
    assert {row["plan"] for row in r["serving"]} == {plan} and Plan.parse(plan).gpus == 8
    at_top = run_json(capsys, "estimate", "llama-3-8b", "--gpus", "8", "--batch", "256")
    assert plan == at_top["parallel"]["plan"]


def test_breakdown_table(capsys):
    plain = run(capsys, "estimate", "mixtral-8x7b", "--batch", "8")
    text = run(capsys, "estimate", "mixtral-8x7b", "--batch", "8", "--breakdown")
    assert "by operator" not in plain and "by operator" in text
    r = run_json(capsys, "estimate", "mixtral-8x7b", "--batch", "8")
    for phase in ("prefill", "decode"):
        for op in r[phase]["operators"]:
            assert op["name"] in text
    lines = [line for line in text.splitlines() if line.startswith("│ experts ") and "per touched expert" in line]
    assert len(lines) == 2  # one in each phase
    for line, phase in zip(lines, ("prefill", "decode"), strict=True):
        op = next(o for o in r[phase]["operators"] if o["name"] == "experts")
        cells = [c.strip() for c in line.split("│")[1:-1]]
        assert cells[2] == f"{op['seconds'] / r[phase]['seconds']:.1%}" and cells[3] == op["bound"]
    assert "Plans on 2 GPUs" in plain and "(chosen)" in plain


def test_compare_names_each_sides_plan(capsys):
    r = run_json(capsys, "compare", "mistral-7b", "mixtral-8x7b", "--plan", "tp4", "--batches", "1,64")
    assert r["plan"] == "tp4" and r["gpus"] == 4
    assert all(row[s]["plan"] == "tp4" and row[s]["gpus"] == 4 for row in r["rows"] for s in "ab")
    free = run_json(capsys, "compare", "mistral-7b", "mixtral-8x7b", "--batches", "1,64")
    for row in free["rows"]:
        for s in "ab":
            assert Plan.parse(row[s]["plan"]).gpus == row[s]["gpus"] and "max_concurrency" in row[s]
