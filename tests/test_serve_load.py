"""moelab.serve.load against the stand-in server (moelab.serve.standin): timings, statistics, error paths.

The statistics are checked against numpy's linear percentiles and vLLM's TPOT definition computed here
independently (vllm/benchmarks/serve.py, calculate_metrics); the timings against the stand-in's known delays.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from moelab.errors import MoelabError
from moelab.serve.load import (
    Endpoint,
    EndpointError,
    LevelResult,
    RequestResult,
    completion_request,
    probe_sync,
    prompts_of_tokens,
    run_level_sync,
    summarize,
    text_prompts,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "moelab.serve.standin", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    if proc.stderr:
        proc.stderr.close()


def _wait_listening(port: int, proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stand-in exited: {proc.stderr.read().decode()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("stand-in did not start listening")


@pytest.fixture
def standin():
    """A factory: standin(mode=..., delay_ms=..., token_ms=..., *extra) -> Endpoint; every process is killed."""
    procs: list[subprocess.Popen] = []

    def start(mode: str = "ok", delay_ms: float = 20, token_ms: float = 5, *extra: str,
              model: str = "m") -> Endpoint:
        port = _free_port()
        proc = _spawn("--port", str(port), "--mode", mode, "--delay-ms", str(delay_ms), "--token-ms", str(token_ms),
                      *extra)
        procs.append(proc)
        _wait_listening(port, proc)
        return Endpoint(name=f"standin-{mode}", base_url=f"http://127.0.0.1:{port}", model_id=model)

    yield start
    for proc in procs:
        _stop(proc)


def _ordered_positive(s: dict, prefix: str) -> None:
    p50, p95, p99 = (s[f"{prefix}_p{p}"] for p in (50, 95, 99))
    assert 0 < p50 <= p95 <= p99, (prefix, p50, p95, p99)


# ---------------------------------------------------------------------------------------------------- prompts

def test_prompts_of_tokens_lengths_ranges_determinism():
    avoid = {5, 6, 7, 99}
    ps = prompts_of_tokens(20, 33, vocab_size=100, seed=3, avoid=avoid, first_id=2)
    assert len(ps) == 20 and all(len(p) == 33 for p in ps)
    flat = [t for p in ps for t in p]
    assert all(type(t) is int for t in flat)  # JSON-serialisable Python ints, not numpy scalars
    assert min(flat) >= 2 and max(flat) < 100 and not avoid & set(flat)
    assert len(set(flat)) > 50  # draws across the range, not one id
    assert ps == prompts_of_tokens(20, 33, vocab_size=100, seed=3, avoid=avoid, first_id=2)
    assert ps != prompts_of_tokens(20, 33, vocab_size=100, seed=4, avoid=avoid, first_id=2)
    assert prompts_of_tokens(2, 4, vocab_size=3, avoid={0, 1}) == [[2] * 4] * 2
    for bad in (dict(count=0), dict(input_tokens=0), dict(vocab_size=0), dict(first_id=10), dict(avoid=set(range(10)))):
        kwargs = dict(count=1, input_tokens=1, vocab_size=10) | bad
        with pytest.raises(MoelabError):
            prompts_of_tokens(**kwargs)


def test_text_prompts():
    ps = text_prompts(5, 40, seed=1)
    assert len(ps) == 5 and all(len(p.split()) == 40 for p in ps)
    assert ps == text_prompts(5, 40, seed=1) and ps != text_prompts(5, 40, seed=2)
    assert all(w.isalpha() and w.islower() for p in ps for w in p.split())


def test_endpoint_normalises_base_url_and_body():
    for url in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/", " http://h:1/v1 "):
        assert Endpoint("e", url, "m").base_url == "http://h:1"
        assert Endpoint("e", url, "m").url("completions") == "http://h:1/v1/completions"
    assert Endpoint("e", "https://x.org/api/v1", "m").base_url == "https://x.org/api"
    assert Endpoint("e", "http://h", "m", api_key="k").headers() == {"Authorization": "Bearer k"}
    for bad in ("h:1", "ftp://h", "http://", ""):
        with pytest.raises(EndpointError, match="not an http"):
            Endpoint("e", bad, "m")
    body = completion_request("m", [1, 2], 7)
    assert body == {"model": "m", "prompt": [1, 2], "max_tokens": 7, "temperature": 0, "stream": True,
                    "ignore_eos": True, "stream_options": {"include_usage": True}}
    assert "stream_options" not in completion_request("m", "x", 1, stream=False)
    assert "temperature" not in completion_request("m", "x", 1, temperature=None)


# ---------------------------------------------------------------------------------------------------- statistics

def _ok(ttft, itl, out, prompt=10):
    e2e = ttft + sum(itl)
    return RequestResult(ok=True, ttft_s=ttft, itl_s=tuple(itl), e2e_s=e2e, prompt_tokens=prompt,
                         output_tokens=out, error=None)


def _fail(msg):
    return RequestResult(ok=False, ttft_s=None, itl_s=(), e2e_s=None, prompt_tokens=None, output_tokens=0,
                         error=msg)


def test_summarize_equals_numpy_and_vllm_tpot():
    rng = np.random.default_rng(0)
    results = []
    for _ in range(17):
        n = int(rng.integers(2, 30))
        results.append(_ok(float(rng.uniform(0.05, 0.4)), list(rng.uniform(0.005, 0.05, n - 1)), n,
                           prompt=int(rng.integers(5, 50))))
    results.append(_ok(0.2, [], 1, prompt=7))  # one output token: no TPOT, still a TTFT and an e2e
    results.insert(3, _fail("HTTP 500 boom\nsecond line"))
    results.append(_fail("timed out after 1 s"))
    level = LevelResult(concurrency=4, results=tuple(results), duration_s=2.5)
    s = summarize(level)

    ok = [r for r in results if r.ok]
    ttft = np.array([r.ttft_s for r in ok])
    e2e = np.array([r.ttft_s + sum(r.itl_s) for r in ok])
    tpot = np.array([(r.e2e_s - r.ttft_s) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1])
    itl = np.concatenate([np.array(r.itl_s) for r in ok])
    assert len(tpot) == 17 and len(itl) == sum(r.output_tokens - 1 for r in ok)

    def lin(a, p):  # linear interpolation between closest ranks, written out (numpy's default method)
        a = np.sort(a)
        h = (len(a) - 1) * p / 100
        lo = math.floor(h)
        return a[lo] + (h - lo) * (a[min(lo + 1, len(a) - 1)] - a[lo])

    for name, arr in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2e", e2e)):
        for p in (50, 95, 99):
            assert s[f"{name}_ms_p{p}"] == pytest.approx(lin(arr, p) * 1000, rel=1e-12), (name, p)
            assert s[f"{name}_ms_p{p}"] == pytest.approx(np.percentile(arr * 1000, p, method="linear"), rel=1e-12)
    assert s["ttft_ms_mean"] == pytest.approx(ttft.mean() * 1000)
    assert s["tpot_ms_mean"] == pytest.approx(tpot.mean() * 1000)
    assert (s["requests"], s["completed"], s["failed"], s["concurrency"]) == (20, 18, 2, 4)
    assert s["requests_per_second"] == pytest.approx(18 / 2.5)
    assert s["output_tokens_per_second"] == pytest.approx(sum(r.output_tokens for r in ok) / 2.5)
    assert s["input_tokens_mean"] == pytest.approx(np.mean([r.prompt_tokens for r in ok]))
    assert s["output_tokens_mean"] == pytest.approx(np.mean([r.output_tokens for r in ok]))
    assert s["first_error"] == "HTTP 500 boom second line"
    assert s["goodput_requests_per_second"] is None  # no SLO given
    assert s["duration_s"] == 2.5


def test_goodput_counts_requests_meeting_both_slos():
    # times are binary fractions, so "exactly on the SLO" is exact in floating point
    rs = (
        _ok(0.125, [0.015625] * 4, 5),  # ttft 125 ms, tpot 15.6 ms: good
        _ok(0.125, [0.0625] * 4, 5),  # tpot 62.5 ms: fails the TPOT SLO
        _ok(0.5, [0.015625] * 4, 5),  # ttft 500 ms: fails the TTFT SLO
        _ok(0.125, [], 1),  # one token: no TPOT (vLLM counts it as 0), ttft passes: good
        _ok(0.25, [0.03125] * 2, 3),  # exactly on both SLOs: good (<=, as vLLM's slo >= metric)
        _fail("HTTP 500"),  # a failed request is never good
    )
    level = LevelResult(concurrency=2, results=rs, duration_s=2.0)
    good = summarize(level, slo_ttft_ms=250, slo_tpot_ms=31.25)["goodput_requests_per_second"]
    assert good == pytest.approx(3 / 2)
    assert summarize(level, slo_ttft_ms=250)["goodput_requests_per_second"] == pytest.approx(4 / 2)
    assert summarize(level, slo_tpot_ms=31.25)["goodput_requests_per_second"] == pytest.approx(4 / 2)
    assert summarize(level, slo_ttft_ms=250, slo_tpot_ms=31.2)["goodput_requests_per_second"] == pytest.approx(1)
    assert summarize(level, slo_ttft_ms=50)["goodput_requests_per_second"] == 0.0
    for bad in (0, -1, float("nan")):
        with pytest.raises(MoelabError, match="SLO"):
            summarize(level, slo_ttft_ms=bad)


def test_summarize_without_data_is_none_never_nan():
    level = LevelResult(concurrency=1, results=(_fail("cannot connect\n x"), _fail("y")), duration_s=0.5)
    s = summarize(level, slo_ttft_ms=100)
    for key, value in s.items():
        assert not (isinstance(value, float) and math.isnan(value)), key
    for key in ("ttft_ms_p50", "tpot_ms_p99", "itl_ms_p95", "e2e_ms_p50", "ttft_ms_mean", "tpot_ms_mean",
                "input_tokens_mean", "output_tokens_mean"):
        assert s[key] is None, key
    assert (s["completed"], s["failed"], s["requests_per_second"], s["goodput_requests_per_second"]) == (0, 2, 0, 0)
    assert s["first_error"] == "cannot connect x"
    # one request of one token: TTFT and e2e known, no TPOT and no ITL
    s = summarize(LevelResult(1, (_ok(0.1, [], 1),), 0.1))
    assert s["ttft_ms_p99"] == pytest.approx(100) and s["tpot_ms_p50"] is None and s["itl_ms_p50"] is None
    assert summarize(LevelResult(1, (_ok(0.1, [], 1),), 0.0))["requests_per_second"] is None


# ---------------------------------------------------------------------------------------------------- a live stand-in

def test_level_timings_match_the_standin(standin):
    ep = standin("ok", 150, 25)
    probe_sync(ep, 5)
    seen = []
    prompts = prompts_of_tokens(6, 24, 1000, seed=0)
    level = run_level_sync(ep, prompts, 6, 3, 10, on_request_done=seen.append)
    assert len(seen) == 6 and all(r.ok for r in level.results), [r.error for r in level.results]
    s = summarize(level)
    for prefix in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        _ordered_positive(s, prefix)
    assert 145 <= s["ttft_ms_p50"] <= 260, s["ttft_ms_p50"]
    assert 22 <= s["itl_ms_p50"] <= 60, s["itl_ms_p50"]
    assert 22 <= s["tpot_ms_p50"] <= 60, s["tpot_ms_p50"]
    assert 145 + 5 * 22 <= s["e2e_ms_p50"] <= 260 + 5 * 60
    assert (s["input_tokens_mean"], s["output_tokens_mean"], s["completed"]) == (24, 6, 6)
    assert all(len(r.itl_s) == 5 and r.prompt_tokens == 24 for r in level.results)
    # two rounds of three: the level lasts about two requests' e2e
    assert 2 * (150 + 5 * 25) / 1000 <= s["duration_s"] <= 2.5


def test_concurrency_multiplies_throughput(standin):
    ep = standin("ok", 100, 20)
    prompts = text_prompts(8, 10)
    s1 = summarize(run_level_sync(ep, prompts, 5, 1, 10))
    s4 = summarize(run_level_sync(ep, prompts, 5, 4, 10))
    assert s1["completed"] == s4["completed"] == 8
    ratio = s4["requests_per_second"] / s1["requests_per_second"]
    assert 2.8 <= ratio <= 4.5, ratio
    assert s4["output_tokens_per_second"] / s1["output_tokens_per_second"] == pytest.approx(ratio)
    assert s1["input_tokens_mean"] == 10  # the stand-in counts whitespace words


def test_no_usage_falls_back_to_chunk_count(standin):
    ep = standin("no-usage", 5, 1)
    level = run_level_sync(ep, [[1, 2, 3]] * 2, 4, 2, 5)
    assert all(r.ok and r.output_tokens == 4 and r.prompt_tokens is None for r in level.results)
    assert summarize(level)["input_tokens_mean"] is None


def test_usage_counts_tokens_when_chunks_bundle_several(standin):
    ep = standin("ok", 5, 10, "--tokens-per-chunk", "2")
    level = run_level_sync(ep, [[1, 2, 3]] * 2, 6, 2, 5)
    for r in level.results:
        assert r.ok and r.output_tokens == 6 and len(r.itl_s) == 2  # 3 chunks carried 6 tokens
    tpot = summarize(level)["tpot_ms_p50"]
    assert 2 * 10 / 5 <= tpot <= 2 * 40 / 5  # (e2e - ttft) / (6 - 1): two 10 ms gaps spread over 5 tokens


def test_api_key_and_model_id(standin):
    ep = standin("ok", 5, 1, "--api-key", "sekret", "--model", "m", "--tensor-parallel-size", "2", "--enforce-eager")
    with pytest.raises(EndpointError, match="HTTP 401"):
        probe_sync(ep, 5)
    keyed = Endpoint(ep.name, ep.base_url + "/v1", "m", api_key="sekret")
    probe_sync(keyed, 5)
    assert all(r.ok for r in run_level_sync(keyed, ["a b c"], 2, 1, 5).results)
    wrong_model = Endpoint(ep.name, ep.base_url, "other", api_key="sekret")
    with pytest.raises(EndpointError, match="refused the request: HTTP 404 .*does not exist"):
        probe_sync(wrong_model, 5)
    request = urllib.request.Request(ep.base_url + "/v1/models", headers=keyed.headers())
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as resp:
        models = json.loads(resp.read())
    assert models["data"][0]["id"] == "m"


# ---------------------------------------------------------------------------------------------------- errors

def test_probe_errors_are_one_line(standin):
    dead = Endpoint("dead", f"http://127.0.0.1:{_free_port()}", "m")
    with pytest.raises(EndpointError, match=r"endpoint 'dead' at http://127\.0\.0\.1:\d+ does not answer"):
        probe_sync(dead, 2)
    with pytest.raises(EndpointError, match="endpoint 'standin-refuse' .*refused the request: HTTP 401"):
        probe_sync(standin("refuse"), 5)
    with pytest.raises(EndpointError, match="returned non-JSON: <html>"):
        probe_sync(standin("nonjson"), 5)
    hang = standin("hang")
    t0 = time.perf_counter()
    with pytest.raises(EndpointError, match="does not answer: no answer within 0.5 s") as info:
        probe_sync(hang, 0.5)
    assert time.perf_counter() - t0 < 3
    assert "\n" not in str(info.value)


def test_failed_requests_do_not_stop_a_level(standin):
    dead = Endpoint("dead", f"http://127.0.0.1:{_free_port()}", "m")
    level = run_level_sync(dead, [[1]] * 3, 2, 2, 2)
    assert not any(r.ok for r in level.results)
    assert summarize(level)["first_error"].startswith("cannot connect to http://127.0.0.1")

    t0 = time.perf_counter()
    level = run_level_sync(standin("hang"), [[1]] * 4, 2, 4, 0.5)
    assert time.perf_counter() - t0 < 3
    assert [r.error for r in level.results] == ["timed out after 0.5 s"] * 4

    flaky = run_level_sync(standin("flaky", 5, 1), [[1, 2]] * 6, 3, 1, 5)
    assert [r.ok for r in flaky.results] == [True, False] * 3
    assert flaky.results[1].error.startswith("HTTP 500 ") and "simulated server error" in flaky.results[1].error
    s = summarize(flaky)
    assert (s["completed"], s["failed"]) == (3, 3) and s["first_error"].startswith("HTTP 500")

    broken = run_level_sync(standin("break-stream", 5, 1), [[1]] * 2, 5, 2, 5)
    assert all(not r.ok and r.error.startswith("stream broken:") for r in broken.results), broken.results
    assert all(r.ttft_s is not None and len(r.itl_s) == 1 for r in broken.results)  # measured before the break

    bad = run_level_sync(standin("bad-chunk", 5, 1), [[1]] * 2, 3, 2, 5)
    assert [r.error for r in bad.results] == ["non-JSON chunk: <not json>"] * 2

    html = run_level_sync(standin("nonjson"), [[1]], 3, 1, 5)
    assert html.results[0].error.startswith("not an event stream: <html>")

    refused = run_level_sync(standin("refuse"), [[1]], 3, 1, 5)
    assert refused.results[0].error.startswith("HTTP 401")
    for r in (*level.results, *flaky.results, *broken.results, *bad.results, *html.results, *refused.results):
        assert r.ok or "\n" not in r.error


def test_bad_level_arguments():
    ep = Endpoint("e", "http://127.0.0.1:9", "m")
    for args in (([], 1, 1, 1), ([[1]], 0, 1, 1), ([[1]], 1, 0, 1), ([[1]], 1, 1, 0), ([[1]], 1, 1, float("inf"))):
        with pytest.raises(MoelabError):
            run_level_sync(ep, *args)


# ---------------------------------------------------------------------------------------------------- the stand-in

def test_standin_dies_at_start_and_stops_on_sigterm(standin):
    proc = _spawn("--port", str(_free_port()), "--mode", "die-at-start", "--model", "x", "--unknown-flag", "3")
    try:
        assert proc.wait(timeout=10) == 1
        err = proc.stderr.read().decode().strip()
        assert len(err.splitlines()) == 1 and "error" in err
    finally:
        _stop(proc)

    port = _free_port()
    proc = _spawn("--port", str(port), "--mode", "hang")
    try:
        _wait_listening(port, proc)
        held = socket.create_connection(("127.0.0.1", port))  # a request in flight that will never be answered
        held.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        t0 = time.perf_counter()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
        assert time.perf_counter() - t0 < 2
        held.close()
    finally:
        _stop(proc)
