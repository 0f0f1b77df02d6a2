"""The real serving engine: a tiny trained MoE run exported, served by vLLM on 127.0.0.1, driven at two
concurrency levels, its greedy token ids checked against moelab's, and no server process left afterwards.

Needs the serving environment (.venv-serve, made by scripts/setup-serve.sh, which `make test` runs). Missing, the
test is skipped with the reason, except under CI=true, where it fails: a green CI must not hide a missing
install step. About 2 minutes, most of it vLLM compiling the model at start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moelab.serve.environment import serving_available

MOELAB = [sys.executable, "-m", "moelab.cli"]


@pytest.fixture(scope="module")
def serving():
    reason = serving_available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and str(os.getpid()) != entry.name:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def test_vllm_serves_a_trained_moe_run_like_moelab(serving, tmp_path):
    run = tmp_path / "run"
    train = subprocess.run(MOELAB + ["train", "--model", "tiny-moe", "--steps", "100", "--batch-size", "4",
                                     "--seq-len", "32", "--eval-every", "100", "--out", str(run), "--no-progress"],
                           capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    assert (run / "final" / "tokenizer.json").is_file()  # a run keeps the tokenizer it trained with

    out = tmp_path / "bench"
    done = subprocess.run(MOELAB + ["serve-bench", str(run), "--concurrency", "1,4", "--requests", "6",
                                    "--input", "32", "--output", "16", "--check-greedy", "6", "--out", str(out),
                                    "--start-timeout", "240", "--json"],
                          capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    rows = json.loads(done.stdout)
    assert [r["concurrency"] for r in rows] == [1, 4]
    for r in rows:
        assert r["model"] == "tiny-moe" and r["engine"] == "vllm"
        assert r["completed"] == r["requests"] == 6 and r["failed"] == 0
        for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            p50, p95, p99 = (r[f"{metric}_p{p}"] for p in (50, 95, 99))
            assert 0 < p50 <= p95 <= p99, (metric, p50, p95, p99)
        assert r["e2e_ms_p50"] > r["ttft_ms_p50"]
        assert r["requests_per_second"] > 0 and r["output_tokens_per_second"] > 0
        for key in ("ttft_ms", "tpot_ms", "output_tokens_per_second"):
            assert r[f"predicted_{key}"] > 0
            assert r[f"rel_error_{key}"] == pytest.approx(r[f"predicted_{key}"] / r[PREDICTED_OF[key]] - 1)
    # four requests in flight serve more tokens per second than one
    assert rows[1]["output_tokens_per_second"] > rows[0]["output_tokens_per_second"]

    report = json.loads((out / "report.json").read_text())
    (server,) = report["servers"]
    assert json.loads((Path(server["folder"]) / "config.json").read_text())["model_type"] == "mixtral"
    greedy = server["greedy"]
    assert greedy["prompts"] == 6 and greedy["tokens_compared"] >= 16
    assert greedy["mismatches"] == [], greedy  # equal ids, or a parting only right after a near-tie
    assert greedy["matched"] + greedy["near_ties"] == 6 and greedy["matched"] >= 3

    # each level was saved in vllm bench serve's layout and reads back through moelab's reader
    from moelab.bench.results import read_vllm_serve

    saved = read_vllm_serve(rows[1]["result_file"])
    assert saved["max_concurrency"] == 4 and saved["completed"] == 6
    assert saved["p99_ttft_ms"] == pytest.approx(rows[1]["ttft_ms_p99"])

    assert _processes_mentioning(str(out)) == []  # vLLM's API server, engine core and workers are gone


PREDICTED_OF = {"ttft_ms": "ttft_ms_mean", "tpot_ms": "tpot_ms_mean",
                "output_tokens_per_second": "output_tokens_per_second"}
