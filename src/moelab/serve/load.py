"""Load generation against an OpenAI-compatible completions endpoint, and the latency statistics of a level.

A level is closed-loop: every prompt is sent once, with at most `concurrency` requests in flight. Each request
streams `POST {base}/v1/completions` and is timed on the client the way vLLM's benchmark times it
(vllm-project/vllm, vllm/benchmarks/lib/endpoint_request_func.py, async_request_openai_completions): TTFT is
the time from sending to the first streamed chunk that carries `choices`; the inter-token latencies (ITL) are
the gaps between consecutive such chunks; the end-to-end latency runs to the last such chunk; the output token
count comes from the final `usage` chunk (asked for with `stream_options.include_usage`), or, when the server
sends none, is the number of chunks that carried choices. `summarize` then mirrors vLLM's calculate_metrics
(vllm/benchmarks/serve.py): TPOT = (e2e - TTFT) / (output_tokens - 1) for requests with more than one output
token, numpy's linear percentiles over requests (ITL: over all gaps pooled), throughput and goodput per second
of the level's wall time. A failed request (HTTP error, timeout, broken stream, bad chunk) is one failed
RequestResult with a one-line error; it never stops the level. Torch-free: aiohttp and numpy only.

The client is aiohttp, as in vLLM's benchmark: on this 2-core machine the client shares a core with vLLM's API
server, and httpx's async stack was too slow to read 32 streams as they came (same server, concurrency 32:
ITL p50 0.02 ms and 371 output tokens/s measured through httpx, 1691 through vLLM's own aiohttp client).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from moelab.errors import MoelabError

PERCENTILES = (50, 95, 99)
_ERROR_CHARS = 300  # a per-request error line is cut to this many characters


class EndpointError(MoelabError):
    """The endpoint cannot be used at all (does not answer, refuses, answers garbage): one line naming it."""


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible server. base_url may end in /v1 or a slash; it is stored without either."""

    name: str
    base_url: str
    model_id: str
    api_key: str | None = None

    def __post_init__(self):
        url = self.base_url.strip().rstrip("/")
        if url.endswith("/v1"):
            url = url[: -len("/v1")].rstrip("/")
        if not url.startswith(("http://", "https://")) or url in ("http:", "https:"):
            raise EndpointError(f"endpoint '{self.name}': base URL {self.base_url!r} is not an http(s) URL")
        if not self.model_id:
            raise EndpointError(f"endpoint '{self.name}': no model id")
        object.__setattr__(self, "base_url", url)

    def url(self, path: str) -> str:
        """The URL of an OpenAI API path, e.g. url("completions") -> {base}/v1/completions."""
        return f"{self.base_url}/v1/{path.lstrip('/')}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass(frozen=True)
class RequestResult:
    """One request. For a failed one (ok False) the timings are what was measured before it failed."""

    ok: bool
    ttft_s: float | None
    itl_s: tuple[float, ...]
    e2e_s: float | None
    prompt_tokens: int | None  # from usage when the server reports it
    output_tokens: int
    error: str | None  # one line when not ok


@dataclass(frozen=True)
class LevelResult:
    concurrency: int
    results: tuple[RequestResult, ...]
    duration_s: float  # wall time from the first send to the last completion


def completion_request(model_id: str, prompt: str | list[int], max_tokens: int, stream: bool = True,
                       temperature: float | None = 0) -> dict:
    """The JSON body of one completion: greedy, exactly max_tokens (ignore_eos, a vLLM/SGLang extension).

    stream_options is sent only with stream=True: vLLM rejects it on a non-streaming request. temperature None
    leaves the field out (TGI has refused temperature 0: huggingface/text-generation-inference issue #1236).
    """
    body: dict = {"model": model_id, "prompt": prompt, "max_tokens": max_tokens, "stream": stream,
                  "ignore_eos": True}
    if temperature is not None:
        body["temperature"] = temperature
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


# ---------------------------------------------------------------------------------------------------- prompts

def prompts_of_tokens(count: int, input_tokens: int, vocab_size: int, seed: int = 0,
                      avoid: set[int] | frozenset[int] = frozenset(), first_id: int = 0) -> list[list[int]]:
    """`count` prompts of exactly `input_tokens` random token ids drawn uniformly from [first_id, vocab_size)
    less `avoid` (the tokenizer's special ids), with numpy's Generator(PCG64(seed)): the same arguments give the
    same prompts. Token-id prompts reach the model unchanged (no re-tokenisation), so their length is exact."""
    for label, value, low in (("count", count, 1), ("input_tokens", input_tokens, 1), ("vocab_size", vocab_size, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise MoelabError(f"prompts: {label} must be an integer >= {low}, got {value!r}")
    if not 0 <= first_id < vocab_size:
        raise MoelabError(f"prompts: first_id {first_id} is outside the vocabulary [0, {vocab_size})")
    allowed = np.setdiff1d(np.arange(first_id, vocab_size, dtype=np.int64), np.fromiter(avoid, np.int64))
    if allowed.size == 0:
        raise MoelabError(f"prompts: no token id is left in [{first_id}, {vocab_size}) after the special ids")
    rng = np.random.default_rng(seed)
    ids = allowed[rng.integers(0, allowed.size, size=(count, input_tokens))]
    return ids.tolist()


# Common English words, each one token (with its leading space) in the GPT-2, Llama and Qwen BPE vocabularies.
_WORDS = tuple("""
the of and to in is that for it as was with be by on not he this are or his from at which but have an had they
you were their one all we can her has there been if more when will would who so no time people year way day man
thing woman life child world school state family student group country problem hand part place case week company
system program question work government number night point home water room mother area money story fact month lot
right study book eye job word business issue side kind head house service friend father power hour game line end
member law car city name team minute idea body back parent face level office door health person art war history
party result change morning reason research girl moment air teacher force education food music road river tree
light sound color table paper window market price voice field land story heart mind north south east west summer
winter spring garden letter street village island
""".split())


def text_prompts(count: int, input_tokens: int, seed: int = 0) -> list[str]:
    """`count` prompts of `input_tokens` random common English words (numpy Generator(seed)), for an endpoint
    whose tokenizer is unknown here: each word is about one token, and the true count is read back from usage."""
    for label, value in (("count", count), ("input_tokens", input_tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise MoelabError(f"prompts: {label} must be an integer >= 1, got {value!r}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(_WORDS), size=(count, input_tokens))
    return [" ".join(_WORDS[i] for i in row) for row in picks]


# ---------------------------------------------------------------------------------------------------- requests

def _one_line(text: str, limit: int = _ERROR_CHARS) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _first_line(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", errors="replace")
    for line in text.splitlines():
        if line.strip():
            return _one_line(line, limit)
    return ""


def _exc_line(exc: BaseException) -> str:
    text = _one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Failed(Exception):
    """A request failed for a reason already phrased as one line."""


@dataclass
class _Trace:
    """What one request measured so far (kept when a timeout cancels the stream half-way)."""

    start: float = 0.0
    last: float = 0.0
    ttft: float | None = None
    itl: list[float] = field(default_factory=list)
    chunks: int = 0  # chunks that carried choices
    usage_output: int | None = None
    usage_prompt: int | None = None

    def result(self, error: str | None = None) -> RequestResult:
        ok = error is None
        output = self.usage_output if self.usage_output is not None else self.chunks
        return RequestResult(ok=ok, ttft_s=self.ttft, itl_s=tuple(self.itl),
                             e2e_s=(self.last - self.start) if self.ttft is not None else None,
                             prompt_tokens=self.usage_prompt, output_tokens=output, error=error)


def _int_or_none(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


async def _stream(client: aiohttp.ClientSession, endpoint: Endpoint, body: dict, timeout_s: float,
                  trace: _Trace) -> None:
    """Send one streaming completion and record its chunk times in trace; raise _Failed on a bad answer."""
    trace.start = trace.last = time.perf_counter()
    async with client.post(endpoint.url("completions"), json=body, headers=endpoint.headers(),
                           timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout_s,
                                                         sock_read=timeout_s)) as resp:
        if resp.status != 200:
            raise _Failed(f"HTTP {resp.status} {_first_line(await resp.read())}".rstrip())
        done = False
        async for raw in resp.content:  # one line at a time, as it arrives
            now = time.perf_counter()
            line = raw.decode("utf-8", errors="replace").strip()
            if not line or line.startswith(":") or done:  # event separator, SSE comment (a ping), after [DONE]
                continue
            name, _, value = line.partition(":")
            if name in ("event", "id", "retry"):
                continue
            if name != "data":
                raise _Failed(f"not an event stream: {_one_line(line, 80)}")
            payload = value.strip()
            if payload == "[DONE]":
                done = True
                continue
            try:
                data = json.loads(payload)
            except ValueError:
                raise _Failed(f"non-JSON chunk: {_one_line(payload, 80)}") from None
            if not isinstance(data, dict):
                raise _Failed(f"non-JSON-object chunk: {_one_line(payload, 80)}")
            choices = data.get("choices")
            if not choices and data.get("error") is not None:  # vLLM reports a mid-stream failure this way
                err = data["error"]
                message = err.get("message", err) if isinstance(err, dict) else err
                raise _Failed(f"server error in stream: {_one_line(str(message))}")
            if choices:  # the text may be empty (a special token): the chunk still counts, as in vLLM
                if trace.ttft is None:
                    trace.ttft = now - trace.start
                else:
                    trace.itl.append(now - trace.last)
                trace.last = now
                trace.chunks += 1
            usage = data.get("usage")
            if isinstance(usage, dict):  # the last usage seen wins (continuous usage stats send it on each)
                if (out := _int_or_none(usage.get("completion_tokens"))) is not None:
                    trace.usage_output = out
                if (pt := _int_or_none(usage.get("prompt_tokens"))) is not None:
                    trace.usage_prompt = pt
    if trace.ttft is None:
        raise _Failed("the stream ended without a chunk carrying choices (no token)")


async def _one_request(client: aiohttp.ClientSession, endpoint: Endpoint, prompt, output_tokens: int,
                       timeout_s: float) -> RequestResult:
    trace = _Trace()
    body = completion_request(endpoint.model_id, prompt, output_tokens)
    try:
        # the socket timeout bounds each read; wait_for bounds the whole request
        await asyncio.wait_for(_stream(client, endpoint, body, timeout_s, trace), timeout_s)
    except _Failed as exc:
        return trace.result(str(exc))
    except asyncio.TimeoutError:  # aiohttp's ServerTimeoutError is one too
        return trace.result(f"timed out after {timeout_s:g} s")
    except aiohttp.ClientConnectorError as exc:
        return trace.result(f"cannot connect to {endpoint.base_url}: {_exc_line(exc)}")
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        return trace.result(f"stream broken: {_exc_line(exc)}")
    except Exception as exc:  # noqa: BLE001 - whatever goes wrong is this request's failure, not the level's
        return trace.result(_exc_line(exc))
    return trace.result()


def _check_level_args(prompts: list, output_tokens: int, concurrency: int, request_timeout_s: float) -> None:
    if not prompts:
        raise MoelabError("serve-bench: no prompts to send")
    if not isinstance(output_tokens, int) or isinstance(output_tokens, bool) or output_tokens < 1:
        raise MoelabError(f"serve-bench: output tokens must be an integer >= 1, got {output_tokens!r}")
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise MoelabError(f"serve-bench: concurrency must be an integer >= 1, got {concurrency!r}")
    if not (isinstance(request_timeout_s, (int, float)) and math.isfinite(request_timeout_s)
            and request_timeout_s > 0):
        raise MoelabError(f"serve-bench: request timeout must be > 0 seconds, got {request_timeout_s!r}")


def _client(connections: int, timeout_s: float) -> aiohttp.ClientSession:
    # trust_env=False (aiohttp's default): an http_proxy in the environment must not sit between the benchmark
    # and a local server; one connection per request in flight, kept alive between requests
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections), trust_env=False,
                                 timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout_s,
                                                               sock_read=timeout_s))


async def run_level(endpoint: Endpoint, prompts: list, output_tokens: int, concurrency: int,
                    request_timeout_s: float, on_request_done: Callable[[RequestResult], None] | None = None,
                    client: aiohttp.ClientSession | None = None) -> LevelResult:
    """Send every prompt once, at most `concurrency` in flight (vLLM's --max-concurrency: a semaphore), and time
    each request. Results keep the order of `prompts`; on_request_done sees each as it finishes. A given client
    is used as is (its connection limit may queue requests, which then counts in their TTFT) and not closed."""
    _check_level_args(prompts, output_tokens, concurrency, request_timeout_s)
    gate = asyncio.Semaphore(concurrency)

    async def limited(http: aiohttp.ClientSession, prompt) -> RequestResult:
        async with gate:
            result = await _one_request(http, endpoint, prompt, output_tokens, request_timeout_s)
        if on_request_done is not None:
            on_request_done(result)
        return result

    async def level(http: aiohttp.ClientSession) -> LevelResult:
        start = time.perf_counter()
        results = await asyncio.gather(*(limited(http, p) for p in prompts))
        return LevelResult(concurrency=concurrency, results=tuple(results), duration_s=time.perf_counter() - start)

    if client is not None:
        return await level(client)
    async with _client(concurrency, request_timeout_s) as http:
        return await level(http)


def run_level_sync(endpoint: Endpoint, prompts: list, output_tokens: int, concurrency: int,
                   request_timeout_s: float, on_request_done: Callable[[RequestResult], None] | None = None,
                   client: aiohttp.ClientSession | None = None) -> LevelResult:
    """run_level in a fresh event loop (asyncio.run)."""
    return asyncio.run(run_level(endpoint, prompts, output_tokens, concurrency, request_timeout_s,
                                 on_request_done=on_request_done, client=client))


async def probe(endpoint: Endpoint, timeout_s: float) -> dict:
    """One tiny non-streaming completion (max_tokens 1) to check that the endpoint is usable before a level;
    raise EndpointError in one line naming the endpoint when it does not answer, refuses (HTTP status >= 300:
    a wrong model id is vLLM's 404), answers non-JSON, or answers JSON without choices."""
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise MoelabError(f"serve-bench: probe timeout must be > 0 seconds, got {timeout_s!r}")
    body = completion_request(endpoint.model_id, "Hello", 1, stream=False)
    data, content = await _answer(endpoint, body, timeout_s)
    if not isinstance(data, dict) or not data.get("choices"):
        text = content.decode("utf-8", errors="replace")
        raise EndpointError(f"{_where(endpoint)} returned JSON without choices: {_one_line(text, 80)}")
    return data


def _where(endpoint: Endpoint) -> str:
    return f"endpoint '{endpoint.name}' at {endpoint.base_url}"


async def _answer(endpoint: Endpoint, body: dict, timeout_s: float) -> tuple[object, bytes]:
    """(decoded JSON, raw body) of one non-streaming POST to the completions path; EndpointError in one line
    when there is no answer within timeout_s, a status other than 200, or a body that is not JSON."""
    where = _where(endpoint)

    async def fetch() -> tuple[int, bytes]:
        async with _client(1, timeout_s) as http, http.post(
                endpoint.url("completions"), json=body, headers=endpoint.headers(),
                timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            return resp.status, await resp.read()

    try:  # the client's own timeout bounds the request; wait_for bounds the rest (a starved event loop)
        status, content = await asyncio.wait_for(fetch(), timeout_s + 1)
    except asyncio.TimeoutError:
        raise EndpointError(f"{where} does not answer: no answer within {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise EndpointError(f"{where} does not answer: {_exc_line(exc)}") from None
    if status != 200:
        raise EndpointError(f"{where} refused the request: HTTP {status} {_first_line(content)}".rstrip())
    try:
        return json.loads(content), content
    except ValueError:
        text = content.decode("utf-8", errors="replace")
        raise EndpointError(f"{where} returned non-JSON: {_one_line(text, 80)}") from None


def post_sync(endpoint: Endpoint, body: dict, timeout_s: float) -> object:
    """One non-streaming completion's decoded JSON (status and JSON checked as in probe), in a fresh event loop."""
    return asyncio.run(_answer(endpoint, body, timeout_s))[0]


def probe_sync(endpoint: Endpoint, timeout_s: float) -> None:
    """probe in a fresh event loop (asyncio.run)."""
    asyncio.run(probe(endpoint, timeout_s))


# ---------------------------------------------------------------------------------------------------- statistics

def tpot_s(result: RequestResult) -> float | None:
    """vLLM's time per output token after the first: (e2e - TTFT) / (output_tokens - 1); None for one token."""
    if not result.ok or result.ttft_s is None or result.e2e_s is None or result.output_tokens <= 1:
        return None
    return (result.e2e_s - result.ttft_s) / (result.output_tokens - 1)


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _ms_percentiles(prefix: str, seconds: list[float]) -> dict[str, float | None]:
    # numpy's default method is "linear", the one vLLM's calculate_metrics uses (in seconds, then * 1000)
    return {f"{prefix}_p{p}": (float(np.percentile(seconds, p)) * 1000 if seconds else None) for p in PERCENTILES}


def _mean(values: list[float], scale: float = 1.0) -> float | None:
    return float(np.mean(values)) * scale if values else None


def _check_slo(label: str, value: float | None) -> None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise MoelabError(f"serve-bench: {label} SLO must be a positive number of milliseconds, got {value!r}")


def summarize(level: LevelResult, slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None) -> dict:
    """The level's statistics over its completed requests, as vLLM's calculate_metrics defines them.

    Latencies in ms; a statistic with no data is None, never 0 or NaN. Goodput is the completed requests per
    second that meet every SLO given (ttft <= slo_ttft_ms, tpot <= slo_tpot_ms; a one-token request has no
    TPOT and, as in vLLM, passes the TPOT SLO); None when neither SLO is given.
    """
    _check_slo("TTFT", slo_ttft_ms)
    _check_slo("TPOT", slo_tpot_ms)
    done = [r for r in level.results if r.ok]
    failed = [r for r in level.results if not r.ok]
    ttfts = _finite(r.ttft_s for r in done)
    e2es = _finite(r.e2e_s for r in done)
    tpots = _finite(tpot_s(r) for r in done)
    itls = _finite(gap for r in done for gap in r.itl_s)
    prompts = [r.prompt_tokens for r in done if r.prompt_tokens is not None]
    total_output = sum(r.output_tokens for r in done)
    duration = level.duration_s if math.isfinite(level.duration_s) and level.duration_s > 0 else None

    goodput = None
    if duration is not None and (slo_ttft_ms is not None or slo_tpot_ms is not None):
        good = 0
        for r in done:  # vLLM compares in seconds: slo_ms / 1000 >= metric
            tpot = tpot_s(r)
            if slo_ttft_ms is not None and not (r.ttft_s is not None and r.ttft_s <= slo_ttft_ms / 1000):
                continue
            if slo_tpot_ms is not None and tpot is not None and not tpot <= slo_tpot_ms / 1000:
                continue
            good += 1
        goodput = good / duration

    out: dict = {"concurrency": level.concurrency, "requests": len(level.results), "completed": len(done),
                 "failed": len(failed)}
    out.update(_ms_percentiles("ttft_ms", ttfts))
    out.update(_ms_percentiles("tpot_ms", tpots))
    out.update(_ms_percentiles("itl_ms", itls))
    out.update(_ms_percentiles("e2e_ms", e2es))
    out.update({
        "ttft_ms_mean": _mean(ttfts, 1000),
        "tpot_ms_mean": _mean(tpots, 1000),
        "requests_per_second": len(done) / duration if duration is not None else None,
        "output_tokens_per_second": total_output / duration if duration is not None else None,
        "goodput_requests_per_second": goodput,
        "input_tokens_mean": _mean(prompts),
        "output_tokens_mean": _mean([r.output_tokens for r in done]),
        "duration_s": duration,
        "first_error": _one_line(failed[0].error or "failed (no message)") if failed else None,
    })
    return out
