"""`moelab serve-bench`: requests at each concurrency against a serving engine, beside the engine's prediction.

Three kinds of target, one report:
- a model (a moelab run, a Hugging Face folder, or an exported one): exported if needed (serve.export), served by
  vLLM started here on 127.0.0.1 (serve.server, serve.environment), then driven and stopped;
- an endpoint: an OpenAI-compatible server already running anywhere (vLLM, SGLang, TGI), driven the same way;
- a result file of `vllm bench serve --save-result`, read through moelab.bench.results.

Each level is closed-loop, after one unmeasured round of `concurrency` requests (as `vllm bench serve
--num-warmups`: first requests at a new batch size meet cold caches and lazily built kernels): `requests`
prompts of `input` random token ids (text of about `input` words for an endpoint, whose tokenizer is unknown
here; the true count comes back in usage), at most `concurrency` in flight, `output` tokens each (ignore_eos),
timed per request as vLLM's benchmark does (serve.load).
Each row carries the engine's modelled means (cost.serving.serve: TTFT, TPOT, requests/s, output tokens/s) and the error
predicted/measured - 1 against the measured means. A level's measured figures are also saved in the JSON layout
`vllm bench serve --save-result` writes, so `--from-results` and `moelab fit` read them back.

A target that fails (an endpoint that does not answer, a model vLLM cannot load) is one line in `failures`;
the others go on. Torch is imported only to export a model.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from moelab.errors import MoelabError
from moelab.serve import load
from moelab.serve.server import ServerExited, ServerProcess, check_port_free, free_port, log_tail, reason

if TYPE_CHECKING:
    from moelab.cost.plan import Plan
    from moelab.spec.hardware import HardwareSpec

ROW_METRICS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")
MEASURED_FOR = {"ttft_ms": "ttft_ms_mean", "tpot_ms": "tpot_ms_mean", "requests_per_second": "requests_per_second",
             "output_tokens_per_second": "output_tokens_per_second"}  # predicted key -> the measured figure
REL_ERROR_DEFINITION = ("predicted / measured - 1; the prediction is the engine's modelled mean, compared with "
                        "the measured mean (ttft_ms_mean, tpot_ms_mean) or rate")
VLLM_CPU_NOTE = ("vLLM's CPU execution (its own kernels, compiled graphs, one engine thread) is not what "
                 "moelab's eager calibration describes: the errors on this machine are reported without a target")
MAX_CONCURRENCY = 4096
MAX_REQUESTS = 100_000
WARMUP_REQUESTS = 2


@dataclass(frozen=True)
class LoadSettings:
    concurrency: tuple[int, ...]
    input: int
    output: int
    requests: int  # per level
    request_timeout_s: float = 300.0
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    seed: int = 0
    warmup: bool = True  # one unmeasured round of `concurrency` requests before each level

    def __post_init__(self) -> None:
        if not self.concurrency:
            raise MoelabError("--concurrency needs at least one level")
        for c in self.concurrency:
            if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_CONCURRENCY:
                raise MoelabError(f"--concurrency levels must be integers in 1..{MAX_CONCURRENCY}, got {c!r}")
        for name, value, top in (("--input", self.input, 1 << 20), ("--output", self.output, 1 << 20),
                                 ("--requests", self.requests, MAX_REQUESTS)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise MoelabError(f"{name} must be an integer in 1..{top}, got {value!r}")
        if not (math.isfinite(self.request_timeout_s) and self.request_timeout_s > 0):
            raise MoelabError(f"--request-timeout must be a positive number of seconds, got {self.request_timeout_s}")
        if self.requests < max(self.concurrency):
            raise MoelabError(f"--requests {self.requests} is below --concurrency {max(self.concurrency)}: that "
                              "level would never have that many requests in flight")
        for name, slo in (("--slo-ttft-ms", self.slo_ttft_ms), ("--slo-tpot-ms", self.slo_tpot_ms)):
            if slo is not None and not (math.isfinite(slo) and slo > 0):
                raise MoelabError(f"{name} must be a positive number of milliseconds, got {slo}")


@dataclass(frozen=True)
class Prediction:
    """What the engine is asked for: the model's spec on a hardware file, plan and dtype."""

    hardware: str | None  # a preset name or file; None: this machine's calibration
    gpus: int | None = None
    plan: str | None = None
    dtype: str = "bf16"


@dataclass
class Report:
    rows: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    servers: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def unique_name(self, name: str) -> str:
        """`name`, or name-2, name-3... when an earlier served model took it."""
        taken = {s["model"] for s in self.servers} | {r["model"] for r in self.rows}
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}-{n}"
        return candidate

    def to_dict(self) -> dict:
        return {"rows": self.rows, "failures": self.failures, "servers": self.servers, "notes": self.notes,
                "warnings": self.warnings, "rel_error_definition": REL_ERROR_DEFINITION}


# --------------------------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Predictor:
    """A Prediction resolved: its hardware loaded (or this machine calibrated) and its plan parsed, before any
    server starts, so that a typo in --hardware or --plan costs nothing measured."""

    hw: HardwareSpec
    where: str  # what the hardware is: the preset or file given, or this machine's calibration
    plan: Plan
    dtype: str

    @classmethod
    def of(cls, prediction: Prediction) -> Predictor:
        from moelab.cost.dtypes import check_dtype
        from moelab.cost.plan import Plan
        from moelab.spec.hardware import load_hardware

        check_dtype(prediction.dtype)
        gpus = prediction.gpus or 1
        plan = Plan.parse(prediction.plan, gpus) if prediction.plan else Plan(tp=gpus)
        if prediction.hardware is not None:
            return cls(load_hardware(prediction.hardware), prediction.hardware, plan, prediction.dtype)
        from moelab.bench.calibrate import calibrated_hardware

        path = calibrated_hardware("cpu", quick=True, progress="lines")
        return cls(load_hardware(str(path)), f"this machine's calibration ({path.name})", plan, prediction.dtype)


def predict_rows(rows: list[dict], spec, predictor: Predictor, report: Report,
                 chunk_tokens: int | None = None) -> None:
    """Add predicted_* and rel_error_* to each row (in place); a model the engine cannot price keeps its
    measured rows, with the predictions None and a warning."""
    from moelab.cost.serving import serve

    hw, plan = predictor.hw, predictor.plan
    extra = {"chunk_tokens": chunk_tokens} if chunk_tokens else {}
    try:
        points = [serve(spec, hw, plan, row["concurrency"], row["input_tokens"], row["output_tokens"],
                        dtype=predictor.dtype, num_prompts=row["requests"], **extra) for row in rows]
    except MoelabError as e:
        _no_prediction(rows)
        report.warnings.append(f"{rows[0]['model'] if rows else '?'}: no prediction: {e}")
        return
    for row, point in zip(rows, points, strict=True):
        predicted = {"ttft_ms": point.ttft_ms, "tpot_ms": point.tpot_ms,
                     "requests_per_second": point.requests_per_second,
                     "output_tokens_per_second": point.output_tokens_per_second}
        for key, value in predicted.items():
            measured = row.get(MEASURED_FOR[key])
            row[f"predicted_{key}"] = value
            row[f"rel_error_{key}"] = value / measured - 1 if measured else None
        row["prediction"] = {"hardware": hw.name, "from": predictor.where, "plan": plan.name,
                             "dtype": predictor.dtype, "fits": point.fits}


def _no_prediction(rows: list[dict]) -> None:
    for row in rows:
        for key in MEASURED_FOR:
            row[f"predicted_{key}"] = None
            row[f"rel_error_{key}"] = None


def _spec_for(ref: str | None):
    """The ModelSpec a model id or reference names, or None when moelab cannot resolve it."""
    if not ref:
        return None
    from moelab.spec.presets import load_model

    try:
        return load_model(ref)
    except MoelabError:
        return None


# --------------------------------------------------------------------------------------------- measuring


def measure_levels(endpoint: load.Endpoint, settings: LoadSettings, prompts_for: Callable[[int, int], list],
                   say: Callable[[str], None]) -> list[dict]:
    """Every level against `endpoint`: a summary row per concurrency (serve.load.summarize), in order."""
    rows = []
    for level_index, c in enumerate(settings.concurrency):
        if settings.warmup:  # the level's batch sizes seen once before they are timed
            say(f"concurrency {c}: warming up with {c} requests")
            load.run_level_sync(endpoint, prompts_for(c, settings.seed + 1000 + level_index), settings.output, c,
                                settings.request_timeout_s)
        prompts = prompts_for(settings.requests, settings.seed + level_index)
        done = [0]

        def tick(_result, c=c, done=done) -> None:
            done[0] += 1
            if done[0] == settings.requests or done[0] % max(1, settings.requests // 4) == 0:
                say(f"concurrency {c}: {done[0]}/{settings.requests} requests")

        level = load.run_level_sync(endpoint, prompts, settings.output, c, settings.request_timeout_s,
                                    on_request_done=tick)
        row = load.summarize(level, settings.slo_ttft_ms, settings.slo_tpot_ms)
        if not row["completed"]:
            raise load.EndpointError(f"endpoint '{endpoint.name}': no request completed at concurrency {c} "
                                     f"({row.get('first_error') or 'no error given'})")
        row["input_tokens"] = round(row["input_tokens_mean"]) if row.get("input_tokens_mean") else settings.input
        row["output_tokens"] = round(row["output_tokens_mean"]) if row.get("output_tokens_mean") else settings.output
        row["warmup_requests"] = c if settings.warmup else 0
        if row["output_tokens"] < settings.output:
            say(f"warning: concurrency {c}: {row['output_tokens_mean']:.1f} output tokens per request came back, "
                f"not {settings.output} (the server ignores ignore_eos?); predicted with what came back")
        row["_level"] = level
        rows.append(row)
    return rows


def _row(model: str, engine: str, source: str, summary: dict) -> dict:
    keys = ["concurrency", "requests", "completed", "failed", "input_tokens", "output_tokens"]
    keys += [f"{m}_p{p}" for m in ROW_METRICS for p in load.PERCENTILES]
    keys += ["ttft_ms_mean", "tpot_ms_mean", "requests_per_second", "output_tokens_per_second",
             "goodput_requests_per_second", "duration_s", "warmup_requests", "first_error"]
    return {"model": model, "engine": engine, "source": source, **{k: summary.get(k) for k in keys}}


def vllm_result(row: dict, level: load.LevelResult, model_id: str, backend: str) -> dict:
    """The level in the JSON layout `vllm bench serve --save-result` writes (bench.results reads it back)."""
    import numpy as np

    done = [r for r in level.results if r.ok]
    series = {"ttft": [r.ttft_s for r in done if r.ttft_s is not None],
              "tpot": [t for t in (load.tpot_s(r) for r in done) if t is not None],
              "itl": [g for r in done for g in r.itl_s], "e2el": [r.e2e_s for r in done if r.e2e_s is not None]}
    out = {"date": dt.datetime.now().strftime("%Y%m%d-%H%M%S"), "backend": backend, "endpoint_type": "openai",
           "label": "moelab serve-bench", "model_id": model_id, "tokenizer_id": model_id,
           "num_prompts": row["requests"], "request_rate": "inf", "burstiness": 1.0,
           "max_concurrency": row["concurrency"], "duration": level.duration_s, "completed": row["completed"],
           "failed": row["failed"],
           "total_input_tokens": sum(r.prompt_tokens or row["input_tokens"] for r in done),
           "total_output_tokens": sum(r.output_tokens for r in done),
           "request_throughput": row["requests_per_second"], "output_throughput": row["output_tokens_per_second"],
           "request_goodput": row["goodput_requests_per_second"]}
    out["total_token_throughput"] = (out["total_input_tokens"] + out["total_output_tokens"]) / level.duration_s
    for name, values in series.items():
        ms = np.asarray(values, dtype=float) * 1000
        if ms.size:
            out.update({f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": float(np.median(ms)),
                        f"std_{name}_ms": float(ms.std())})
            out.update({f"p{p}_{name}_ms": float(np.percentile(ms, p)) for p in load.PERCENTILES})
    return out


def _save_level(out: Path, name: str, row: dict, level: load.LevelResult, model_id: str, backend: str) -> str:
    from moelab.data.cache import atomic_write_text

    path = out / _safe(name) / f"c{row['concurrency']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(vllm_result(row, level, model_id, backend), indent=1) + "\n")
    return str(path)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


# --------------------------------------------------------------------------------------------- targets


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM and SIGHUP become KeyboardInterrupt while a server runs, so that it is stopped on the way out."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


_VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class ServeOptions:
    out: Path
    port: int | None = None
    dtype: str | None = None  # what vLLM serves the model in; None: fp32 on a CPU build, bf16 on CUDA
    start_timeout_s: float = 600.0
    check_greedy: int = 0  # prompts whose greedy ids are compared with moelab's own (serve.greedy)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_timeout_s) and self.start_timeout_s > 0):
            raise MoelabError(f"--start-timeout must be a positive number of seconds, got {self.start_timeout_s}")
        if self.dtype is not None and self.dtype not in _VLLM_DTYPES:
            raise MoelabError(f"--dtype for vLLM must be one of {', '.join(_VLLM_DTYPES)}, got {self.dtype!r}")


CHUNK_TOKENS = 8192  # --max-num-batched-tokens given to vLLM, and the chunk the prediction assumes


def _servable(ref: str, out: Path, say: Callable[[str], None], taken: set[str] = frozenset()):
    """(folder vLLM loads, ModelSpec, name, vocabulary size): the folder itself if servable, else an export."""
    from moelab.serve.export import export, is_servable_folder
    from moelab.spec.hf import spec_from_file

    path = Path(ref)
    if path.is_dir() and is_servable_folder(path) and not (path / "final").is_dir():
        spec = spec_from_file(str(path / "config.json"))
        return path, spec, spec.name if spec.name and spec.name != "config" else path.name
    say(f"exporting {ref} for vLLM")
    stem = _safe(path.resolve().name if path.resolve().name != "final" else path.resolve().parent.name)
    target, n = out / "exported" / stem, 1
    while str(target) in taken:  # another model of this command was exported there
        n += 1
        target = out / "exported" / f"{stem}-{n}"
    done = export(path, target)
    return done.folder, spec_from_file(str(done.folder / "config.json")), done.name


def vllm_command(python: Path, folder: Path, name: str, dtype: str, max_seqs: int, max_len: int) -> list[str]:
    """vLLM's OpenAI server for one model; `--generation-config vllm` so that a folder's generation_config.json
    (a repetition penalty, top-k) does not change the benchmark's greedy requests, as vLLM's own benchmark
    guards against too."""
    from moelab.serve.environment import SERVER_MODULE

    return [str(python), "-m", SERVER_MODULE, "--model", str(folder), "--served-model-name", name,
            "--host", "127.0.0.1", "--port", "{port}", "--dtype", _VLLM_DTYPES[dtype],
            "--max-model-len", str(max_len), "--max-num-seqs", str(max_seqs),
            "--max-num-batched-tokens", str(max(CHUNK_TOKENS, max_len)), "--seed", "0",
            "--generation-config", "vllm", "--disable-log-stats"]


def serve_model(ref: str, settings: LoadSettings, options: ServeOptions, prediction: Prediction,
                report: Report, say: Callable[[str], None]) -> None:
    """Export (if needed), start vLLM, run every level, stop it; rows into `report`."""
    from moelab.data.cache import home_dir
    from moelab.serve.environment import find_serving_environment, server_env

    if not Path(ref).is_dir():
        raise MoelabError(f"{ref}: not a folder; serve-bench serves a moelab run folder, a Hugging Face folder or "
                          "an exported one (a preset has no weights: train it first)")
    env_info = find_serving_environment()
    dtype = options.dtype or ("bf16" if env_info.device == "cuda" else "fp32")
    if env_info.device == "cuda" and prediction.hardware is None:
        raise MoelabError("vLLM runs on a GPU here: give the GPU for the prediction with --hardware (a preset or "
                          "`moelab calibrate --device cuda --out gpu.yaml`); this machine's CPU calibration does "
                          "not describe it")
    folder, spec, name = _servable(ref, options.out, say, {s["folder"] for s in report.servers})
    predictor = Predictor.of(Prediction(prediction.hardware, 1, None, dtype))  # calibrates before vLLM starts
    name = report.unique_name(name)  # two runs of one preset get their own result files and logs
    vocab = _token_ids(folder, spec.vocab_size)
    max_len = settings.input + settings.output
    if spec.max_position and max_len > spec.max_position:
        raise MoelabError(f"{ref}: --input + --output = {max_len} exceeds the model's {spec.max_position} "
                          "positions")
    command = vllm_command(env_info.python, folder, name, dtype, max(settings.concurrency), max_len)
    home = home_dir()
    log_path = options.out / _safe(name) / "server.log"
    speed_before = machine_speed() if env_info.device == "cpu" else None  # while nothing else runs
    for attempt in (1, 2):
        port = options.port if options.port is not None else free_port()
        if options.port is not None:
            check_port_free(port)
        say(f"starting vLLM {env_info.vllm_version} ({env_info.device}) for {name} on 127.0.0.1:{port}")
        waited = [0.0]

        def on_wait(seconds: float, waited=waited) -> None:
            if seconds - waited[0] >= 15:
                waited[0] = seconds
                say(f"waiting for vLLM ({seconds:.0f} s)")

        server = ServerProcess(command, port, log_path, env=server_env(home), name=f"vLLM serving {name}",
                               start_timeout_s=options.start_timeout_s, on_wait=on_wait)
        try:
            with _sigterm_stops(), server:
                say(f"vLLM ready after {server.ready_after_s:.0f} s")
                endpoint = load.Endpoint(name=name, base_url=server.base_url, model_id=name)
                load.probe_sync(endpoint, settings.request_timeout_s)
                warm = load.prompts_of_tokens(WARMUP_REQUESTS, settings.input, vocab, seed=10_000,
                                              avoid={0})
                load.run_level_sync(endpoint, warm, settings.output, WARMUP_REQUESTS, settings.request_timeout_s)
                try:
                    summaries = measure_levels(endpoint, settings, lambda n, seed: load.prompts_of_tokens(
                        n, settings.input, vocab, seed=seed, avoid={0}), say)
                    greedy = _check_greedy(folder, endpoint, vocab, settings, options, say)
                except MoelabError:
                    if not server.alive():  # the engine died under load: its log says why, not the client
                        raise MoelabError(f"{ref}: vLLM exited during the benchmark: "
                                          f"{reason(log_tail(log_path))} (log: {log_path})") from None
                    raise
        except ServerExited as e:
            if e.port_in_use and options.port is None and attempt == 1:
                say(f"port {port} was taken before vLLM bound it; trying another")
                continue
            raise MoelabError(f"{ref}: {e}") from None
        break
    speed = None
    if speed_before is not None:
        speed = {"before": speed_before, "after": machine_speed()}
        _speed_warnings(name, speed, report)
    rows = []
    for s in summaries:
        row = _row(name, "vllm", f"vLLM {env_info.vllm_version} ({env_info.device}) on 127.0.0.1", s)
        row["result_file"] = _save_level(options.out, name, row, s["_level"], name, "vllm")
        rows.append(row)
    report.servers.append({"model": name, "folder": str(folder), "ready_after_s": server.ready_after_s,
                           "log": str(log_path), **env_info.to_dict(), "dtype": dtype,
                           "greedy": greedy,
                           "machine_speed": speed})
    predict_rows(rows, spec, predictor, report, chunk_tokens=max(CHUNK_TOKENS, max_len))
    if env_info.device == "cpu" and VLLM_CPU_NOTE not in report.notes:  # whatever the hardware file, a CPU one
        report.notes.append(VLLM_CPU_NOTE)
    say(f"{name}: predictions on {predictor.where}")
    report.rows.extend(rows)


def machine_speed() -> dict[str, float]:
    """This machine's reference probes now (bench.drift: a matmul and a tiny decode step, medians in seconds),
    timed before a server starts and after it stops: a shared VM's speed moves by minutes, and a comparison of
    two models served one after the other carries any move between them."""
    from moelab.bench.drift import probes, reference

    return reference(probes(), rounds=3)


def _speed_warnings(name: str, speed: dict, report: Report) -> None:
    """Warn when the probes moved by more than DRIFT_WARNING while `name` was served, or since the first model."""
    from moelab.bench.drift import DRIFT_WARNING

    def moved(a: dict, b: dict) -> float:  # the largest ratio b/a - 1 of the two probes, signed
        return max((b[k] / a[k] - 1 for k in ("compute_s", "overhead_s")), key=abs)

    during = moved(speed["before"], speed["after"])
    if abs(during) > DRIFT_WARNING:
        report.warnings.append(f"{name}: this machine's reference probes ran {_slower(during)} after serving it "
                               "than before: a busy or drifting machine, and its figures carry that")
    first = next((s for s in report.servers if s.get("machine_speed")), None)
    if first is not None:
        since = moved(first["machine_speed"]["before"], speed["before"])
        if abs(since) > DRIFT_WARNING:
            report.warnings.append(f"{name} was served on a machine {_slower(since)} than {first['model']} (by "
                                   "its reference probes): a comparison of the two carries that")


def _slower(change: float) -> str:
    return f"{change:.0%} slower" if change > 0 else f"{-change:.0%} faster"


def _token_ids(folder: Path, model_vocab: int) -> int:
    """How many token ids prompts may use: the model's vocabulary, or the tokenizer's if smaller (vLLM refuses
    an id its tokenizer does not have)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception:  # noqa: BLE001 - vLLM's own loading will say what is wrong with it
        return model_vocab
    return max(2, min(model_vocab, tokenizer.get_vocab_size(with_added_tokens=True)))


def _check_greedy(folder: Path, endpoint: load.Endpoint, vocab: int, settings: LoadSettings,
                  options: ServeOptions, say: Callable[[str], None]):
    """serve.greedy.check on `options.check_greedy` prompts, moelab's model loaded from the served folder, as a
    dict (None: not asked); a check that cannot run is {"error": why}, never the loss of the measured rows."""
    if not options.check_greedy:
        return None
    import torch

    from moelab.bench.models import build, resolve
    from moelab.serve import greedy

    try:
        model = build(resolve(str(folder.resolve())), "cpu", torch.float32).model  # resolved: never a preset
        prompts = load.prompts_of_tokens(options.check_greedy, settings.input, vocab, seed=20_000, avoid={0})
        found = greedy.check(model, endpoint, prompts, settings.output)
    except MoelabError as e:
        say(f"greedy check not done: {e}")
        return {"error": " ".join(str(e).split()), "ok": False}
    say(f"greedy ids: {found.matched}/{found.prompts} equal to moelab's, {found.near_ties} parted at a near-tie "
        f"(top-2 margin < {found.threshold}), {len(found.mismatches)} mismatched")
    return found.to_dict()


def parse_endpoint(text: str, index: int) -> tuple[str, str]:
    """`URL` or `NAME=URL` as (name, url)."""
    name, sep, url = text.partition("=")
    if sep and not name.startswith(("http://", "https://")):
        name, url = name.strip(), url.strip()
    else:
        name, url = f"endpoint{index + 1}", text.strip()
    if not name:
        raise MoelabError(f"--endpoint {text!r}: the name before = is empty")
    return name, url


def bench_endpoint(endpoint: load.Endpoint, settings: LoadSettings, prediction: Prediction, spec_ref: str | None,
                   out: Path, report: Report, say: Callable[[str], None]) -> None:
    predictor = _given_predictor(prediction)  # a typo in --hardware or --plan is refused before the load runs
    say(f"probing {endpoint.name} at {endpoint.base_url}")
    load.probe_sync(endpoint, min(settings.request_timeout_s, 60.0))
    summaries = measure_levels(endpoint, settings, lambda n, seed: load.text_prompts(n, settings.input, seed=seed),
                               say)
    rows = []
    for s in summaries:
        row = _row(endpoint.model_id, "openai-compatible", endpoint.base_url, s)
        row["endpoint"] = endpoint.name
        row["result_file"] = _save_level(out, f"endpoint-{endpoint.name}", row, s["_level"], endpoint.model_id,
                                         "openai")
        rows.append(row)
    _predict_or_say(rows, spec_ref or endpoint.model_id, predictor, report)
    report.rows.extend(rows)


def _given_predictor(prediction: Prediction) -> Predictor | None:
    """For a server measured elsewhere: the prediction on --hardware, or None (this machine's calibration does
    not describe another machine)."""
    return Predictor.of(prediction) if prediction.hardware is not None else None


def _predict_or_say(rows: list[dict], spec_ref: str, predictor: Predictor | None, report: Report) -> None:
    spec = _spec_for(spec_ref)
    if spec is None or predictor is None:
        _no_prediction(rows)
        why = (f"moelab does not know the model {spec_ref!r} (give --spec)" if spec is None
               else "no --hardware given")
        report.warnings.append(f"{spec_ref}: no prediction: {why}")
        return
    predict_rows(rows, spec, predictor, report)


def from_results(path: str, prediction: Prediction, spec_ref: str | None, report: Report) -> None:
    from moelab.bench.results import read_vllm_serve_runs

    runs = read_vllm_serve_runs(path)
    rows = []
    for run in runs:
        completed = run["completed"]
        summary = {"concurrency": run.get("max_concurrency"), "requests": run.get("num_prompts") or completed,
                   "completed": completed, "failed": run.get("failed") or 0,
                   "input_tokens": round(run["total_input_tokens"] / completed) if run.get("total_input_tokens")
                   else None,
                   "output_tokens": round(run["total_output_tokens"] / completed) if run.get("total_output_tokens")
                   else None,
                   "requests_per_second": run["request_throughput"],
                   "output_tokens_per_second": run["output_throughput"],
                   "goodput_requests_per_second": run.get("request_goodput"), "duration_s": run.get("duration")}
        for metric, base in (("ttft_ms", "ttft"), ("tpot_ms", "tpot"), ("itl_ms", "itl"), ("e2e_ms", "e2el")):
            summary[f"{metric}_p50"] = run.get(f"median_{base}_ms", run.get(f"p50_{base}_ms"))
            for p in (95, 99):
                summary[f"{metric}_p{p}"] = run.get(f"p{p}_{base}_ms")
        summary["ttft_ms_mean"], summary["tpot_ms_mean"] = run.get("mean_ttft_ms"), run.get("mean_tpot_ms")
        if summary["concurrency"] is None:
            raise MoelabError(f"{path}: the run has no max_concurrency; serve-bench reports closed-loop levels")
        rows.append(_row(run.get("model_id") or Path(path).stem, run.get("backend") or "vllm", str(path), summary))
    predictable = [r for r in rows if r["input_tokens"] and r["output_tokens"]]
    if predictable:
        _predict_or_say(predictable, spec_ref or rows[0]["model"], _given_predictor(prediction), report)
    for r in rows:
        if r not in predictable:
            _no_prediction([r])
    report.rows.extend(rows)


def run(models: list[str], endpoints: list[load.Endpoint], result_files: list[str], settings: LoadSettings | None,
        prediction: Prediction, options: ServeOptions, spec_ref: str | None = None,
        say: Callable[[str], None] = print) -> Report:
    """Every target in turn; a failing one becomes a line in report.failures and the others go on."""
    if result_files and (models or endpoints):
        raise MoelabError("--from-results reads existing results; give it without MODEL or --endpoint")
    if not (models or endpoints or result_files):
        raise MoelabError("give at least one MODEL, --endpoint or --from-results")
    if (models or endpoints) and settings is None:
        raise MoelabError("internal: load settings missing")
    if options.port is not None and models:
        check_port_free(options.port)
    report = Report()
    for ref in models:
        try:
            serve_model(ref, settings, options, prediction, report, say)
        except MoelabError as e:
            report.failures.append(" ".join(str(e).split()))
    for endpoint in endpoints:
        try:
            bench_endpoint(endpoint, settings, prediction, spec_ref, options.out, report, say)
        except MoelabError as e:
            report.failures.append(" ".join(str(e).split()))
    for path in result_files:
        try:
            from_results(path, prediction, spec_ref, report)
        except MoelabError as e:
            report.failures.append(" ".join(str(e).split()))
    for row in report.rows:
        row.pop("_level", None)
    if models or endpoints:
        from moelab.data.cache import atomic_write_text

        atomic_write_text(options.out / "report.json", json.dumps(report.to_dict(), indent=1, default=str) + "\n")
    return report
