"""vLLM as the hybrid's engine (slow: two vLLM servers start, minutes on a CPU): every query's answer, generated
token count and confidence agree with moelab's own generation of the same runs (greedy, float32 both)."""

import pytest

from moelab.hybrid.run import run_hybrid
from moelab.serve.environment import serving_available

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(serving_available() is not None, reason="the serving environment (vLLM) is absent")]


def test_vllm_answers_agree_with_moelab(dense_run, moe_run, tmp_path):
    served = run_hybrid(dense_run, moe_run, tmp_path / "vllm", thresholds="0.5", engine="vllm", per_level=1)
    ours = run_hybrid(dense_run, moe_run, tmp_path / "moelab", thresholds="0.5", engine="moelab", per_level=1)
    assert served["engine"] == "vllm" and set(served["servers"]) == {"dense", "moe"}
    assert (tmp_path / "vllm" / "logs" / "dense-server.log").is_file()
    agree = 0
    for a, b in zip(served["queries"], ours["queries"], strict=True):
        for kind in ("dense", "moe"):
            x, y = a[kind], b[kind]
            assert x["seconds"] > 0 and x["prompt_tokens"] == y["prompt_tokens"]
            if x["text"] == y["text"] and x["generated_tokens"] == y["generated_tokens"]:
                agree += 1
                assert x["confidence"] == pytest.approx(y["confidence"], abs=1e-3)
    assert agree >= 2 * len(ours["queries"]) - 2  # at most a near-tie or two part the float32 kernels
