"""Read benchmark result files into Measurements: `vllm bench serve` JSON, `moelab bench --json`, a fit manifest.

- `read_vllm_serve(path)`: the figures of one `vllm bench serve --save-result` run (`read_vllm_serve_runs` for a
  file written with --append-result: one JSON object per line). The keys are those vllm/benchmarks/serve.py
  writes (vllm-project/vllm, `main`: `result_json` in `main_async` merged with the `result` dict of
  `benchmark()`; the older benchmarks/benchmark_serving.py writes the same keys): setup (date, backend, label,
  model_id, tokenizer_id, num_prompts), traffic (request_rate, "inf" for none; burstiness; max_concurrency, null
  for none) and results (duration, completed, failed, total_input_tokens, total_output_tokens,
  request_throughput, output_throughput, total_token_throughput, and mean_/median_/std_/pNN_ of ttft, tpot, itl
  and e2el in ms).
- `read_moelab_bench(path)`: the rows of `moelab bench --json` (bench.run: model, phase, batch, prompt,
  measured_s) with its dtype and workload.
- `vllm_measurements`, `moelab_measurements`: a read result as Measurements, given the setting it ran in (a
  result file does not say its plan or dtype); `manifest_measurements(path, hardware)`: every entry of a fit
  manifest (schema.manifest) that way, paths relative to the manifest.

A file that is not what it is said to be (not JSON, another tool's output, a moelab file given as vllm, a run
with speculative decoding) is refused in one line naming the file. Torch-free.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from moelab.cost.measurement import Measurement
from moelab.cost.plan import Plan
from moelab.errors import MoelabError
from moelab.userfile import load_user_file, parse_json, read_user_text

MAX_RESULT_BYTES = 256 * 2**20  # a --save-detailed run keeps every generated text
LENGTH_TOLERANCE = 0.25  # a manifest's input/output may differ this much from the file's mean lengths

_SETUP = ("date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id")
_COUNTS = ("num_prompts", "completed", "failed", "total_input_tokens", "total_output_tokens", "max_concurrency",
           "max_concurrent_requests")
_RATES = ("duration", "burstiness", "request_throughput", "request_goodput", "output_throughput",
          "total_token_throughput", "max_output_tokens_per_s")
_LATENCY = re.compile(r"^(mean|median|std|p\d+(?:\.\d+)?)_(ttft|tpot|itl|e2el)_ms$")
_REQUIRED = ("completed", "request_throughput", "output_throughput")
_SPECULATIVE = "spec_decode_acceptance_rate"  # written when the server ran speculative decoding

# The Measurement metric each vLLM figure is: (key, or None for a latency of the statistic), and its scale.
_VLLM_METRIC = {"ttft_ms": "ttft", "tpot_ms": "tpot", "itl_ms": "itl", "e2e_ms": "e2el",
                "output_tokens_per_second": "output_throughput", "total_tokens_per_second": "total_token_throughput",
                "requests_per_second": "request_throughput", "output_tokens_per_second_per_gpu": "output_throughput"}
VLLM_DEFAULT_METRICS = ("ttft_ms", "tpot_ms", "output_tokens_per_second")
MOELAB_METRICS = {"prefill": "ttft_ms", "decode": "tpot_ms"}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _documents(text: str, source: str) -> list[Any]:
    """Every JSON value in `text`: one, or one per line as --append-result writes them. NaN and Infinity are
    read (Python's json.dump writes them); the figures used are checked finite afterwards."""
    decoder = json.JSONDecoder(parse_constant=float)
    docs, i, n = [], 0, len(text)
    try:
        while True:
            while i < n and text[i].isspace():
                i += 1
            if i >= n:
                break
            value, i = decoder.raw_decode(text, i)
            docs.append(value)
    except json.JSONDecodeError as e:
        raise MoelabError(f"{source}: not a vllm bench serve result (not valid JSON: {e.msg} at line {e.lineno}, "
                          f"column {e.colno})") from None
    except (RecursionError, ValueError):
        raise MoelabError(f"{source}: not a vllm bench serve result (JSON nested too deeply or a number too "
                          "long)") from None
    if not docs:
        raise MoelabError(f"{source}: not a vllm bench serve result (the file is empty)")
    return docs


def _is_moelab_bench(raw: Any) -> bool:
    return isinstance(raw, dict) and "rows" in raw and ("rel_error_definition" in raw or "workload" in raw)


def _vllm_run(raw: Any, source: str) -> dict[str, Any]:
    """The figures of one run object, checked."""
    if _is_moelab_bench(raw):
        raise MoelabError(f"{source}: this is `moelab bench --json` output, not a vllm bench serve result; give "
                          "format: moelab")
    if not isinstance(raw, dict):
        raise MoelabError(f"{source}: not a vllm bench serve result (a JSON {type(raw).__name__}, not an object)")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise MoelabError(f"{source}: not a vllm bench serve result (no {', '.join(repr(k) for k in missing)}; "
                          "expected the JSON `vllm bench serve --save-result` writes)")
    if raw.get(_SPECULATIVE) is not None:
        raise MoelabError(f"{source}: the run used speculative decoding, which moelab does not model")
    out: dict[str, Any] = {}
    for key in _SETUP:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise MoelabError(f"{source}: {key} must be a string, got {value!r}")
        out[key] = value
    for key in _COUNTS:
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise MoelabError(f"{source}: {key} must be a count, got {value!r}")
        out[key] = value
    for key in _RATES:
        value = raw.get(key)
        if value is not None and not _number(value):
            raise MoelabError(f"{source}: {key} must be a number, got {value!r}")
        out[key] = None if value is None else float(value)
    rate = raw.get("request_rate", "inf")
    if rate == "inf" or (_number(rate) and rate > 0):
        out["request_rate"] = math.inf if rate == "inf" else float(rate)
    else:
        raise MoelabError(f"{source}: request_rate must be a positive number or \"inf\", got {rate!r}")
    for key, value in raw.items():
        if _LATENCY.match(key):
            if not _number(value):
                raise MoelabError(f"{source}: {key} must be a number, got {value!r}")
            out[key] = float(value)
    if out["max_concurrency"] == 0:
        raise MoelabError(f"{source}: max_concurrency is 0")
    if not out["completed"]:
        raise MoelabError(f"{source}: no request completed (completed {out['completed']})")
    return out


def read_vllm_serve_runs(path: str | Path) -> list[dict[str, Any]]:
    """Every run in a `vllm bench serve` result file (one, or one per line with --append-result), each as
    read_vllm_serve returns it."""
    path = Path(path)
    text = read_user_text(path, "vllm result file", MAX_RESULT_BYTES)
    docs = _documents(text, str(path))
    return [_vllm_run(doc, str(path) if len(docs) == 1 else f"{path} (run {i + 1})") for i, doc in enumerate(docs)]


def read_vllm_serve(path: str | Path) -> dict[str, Any]:
    """The figures of the one run in a `vllm bench serve --save-result` JSON file, in its own keys and units.

    Always present: completed (requests that finished), request_throughput (req/s), output_throughput and
    total_token_throughput (tokens/s, of the whole server), request_rate (float; inf when unlimited),
    max_concurrency (None when uncapped) and the setup strings (None where absent). When the run recorded them:
    num_prompts, failed, duration (s), total_input_tokens, total_output_tokens, and each latency statistic the
    file holds, `{mean,median,std,p99,...}_{ttft,tpot,itl,e2el}_ms`. NaN stays NaN (the caller checks the
    figures it uses). A file with several runs (--append-result) is refused: read_vllm_serve_runs."""
    runs = read_vllm_serve_runs(path)
    if len(runs) != 1:
        raise MoelabError(f"{path}: holds {len(runs)} runs (written with --append-result); read them with "
                          "read_vllm_serve_runs")
    return runs[0]


def _figure(run: dict[str, Any], metric: str, statistic: str, source: str) -> tuple[str, float]:
    base = _VLLM_METRIC[metric]
    key = f"{statistic}_{base}_ms" if metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms") else base
    value = run.get(key)
    if value is None:
        raise MoelabError(f"{source}: no {key} in the file (run with --percentile-metrics including {base}?)")
    if not (math.isfinite(value) and value > 0):
        raise MoelabError(f"{source}: {key} is {value!r}; a figure to fit must be a positive number")
    return key, value


def _length(given: int | None, total: int | None, completed: int, what: str, source: str) -> int:
    mean = total / completed if total else None
    if given is None:
        if mean is None or round(mean) < 1:
            raise MoelabError(f"{source}: the file does not give the {what} length; give {what} in the manifest")
        return int(round(mean))
    if mean is not None and abs(mean / given - 1) > LENGTH_TOLERANCE:
        raise MoelabError(f"{source}: the manifest says {what} {given}, the file's requests had {mean:.0f} tokens "
                          f"on average; is it the right file?")
    return given


def vllm_measurements(run: dict[str, Any], *, source: str, model: str, hardware: str, plan: str, dtype: str,
                      kv_dtype: str | None = None, input: int | None = None, output: int | None = None,
                      concurrency: int | None = None, mode: str | None = None, metrics=None,
                      statistic: str | None = None) -> list[Measurement]:
    """One run read by read_vllm_serve as Measurements of `metrics` (default: mean TTFT, mean TPOT and output
    tokens/s) in its setting. The concurrency is the run's max_concurrency unless given (they must agree); the
    mode is serving with a concurrency, offline for an uncapped run at an unlimited request rate (every
    request at once). An open-loop run at a finite rate with no cap is refused: the engine models a closed loop."""
    statistic = statistic or "mean"
    file_cap = run.get("max_concurrency")
    if concurrency is not None and file_cap is not None and concurrency != file_cap:
        raise MoelabError(f"{source}: the manifest says concurrency {concurrency}, the run's max_concurrency was "
                          f"{file_cap}")
    concurrency = concurrency or file_cap
    if mode is None:
        if concurrency:
            mode = "serving"
        elif math.isinf(run["request_rate"]):
            mode = "offline"
        else:
            raise MoelabError(f"{source}: an open-loop run at {run['request_rate']:g} requests/s with no "
                              "max_concurrency; moelab models requests in flight: give concurrency (or mode: "
                              "offline) in the manifest")
    if mode == "static":
        raise MoelabError(f"{source}: a vllm bench serve run is not a static batch; mode must be serving or "
                          "offline")
    if mode == "serving" and not concurrency:
        raise MoelabError(f"{source}: a serving run needs its concurrency (the file has no max_concurrency)")
    completed = run["completed"]
    inp = _length(input, run.get("total_input_tokens"), completed, "input", source)
    out = _length(output, run.get("total_output_tokens"), completed, "output", source)
    gpus = Plan.parse(plan).gpus
    result = []
    for metric in metrics or VLLM_DEFAULT_METRICS:
        key, value = _figure(run, metric, statistic, source)
        if metric == "output_tokens_per_second_per_gpu":
            value /= gpus
        result.append(Measurement(model=model, hardware=hardware, plan=plan, dtype=dtype, kv_dtype=kv_dtype or dtype,
                                  input=inp, output=out, mode=mode, metric=metric, value=value,
                                  concurrency=concurrency, num_prompts=completed,
                                  statistic=statistic if metric.endswith("_ms") else "mean",
                                  name=f"{source}:{key}"))
    return result


def read_moelab_bench(path: str | Path) -> dict[str, Any]:
    """The rows of a `moelab bench --json` file: {source, device, dtype, prompt, gen, hardware, rows}, each row
    {model, phase ("prefill": the whole prefill of the batch; "decode": one step), batch, prompt, measured_s}, and
    a bench --offload-experts variant's decode rows their "offload" block as written."""
    path = Path(path)
    text = read_user_text(path, "moelab bench file", MAX_RESULT_BYTES)
    try:
        raw = parse_json(text, str(path))
    except MoelabError as e:
        raise MoelabError(f"{path}: not a moelab bench --json file ({str(e).removeprefix(f'{path}: ')})") from None
    if isinstance(raw, dict) and all(k in raw for k in _REQUIRED):
        raise MoelabError(f"{path}: this is a vllm bench serve result, not moelab bench output; give format: vllm")
    if not _is_moelab_bench(raw) or not isinstance(raw.get("rows"), list) or not isinstance(raw.get("workload"),
                                                                                            dict):
        raise MoelabError(f"{path}: not a moelab bench --json file (expected an object with rows and workload)")
    wl = raw["workload"]
    for key in ("prompt", "gen"):
        if not isinstance(wl.get(key), int) or isinstance(wl.get(key), bool) or wl[key] < 1:
            raise MoelabError(f"{path}: workload.{key} must be a positive integer, got {wl.get(key)!r}")
    if not isinstance(raw.get("dtype"), str):
        raise MoelabError(f"{path}: dtype must be a string, got {raw.get('dtype')!r}")
    rows = []
    for i, row in enumerate(raw["rows"]):
        where = f"{path}: rows[{i}]"
        if not isinstance(row, dict):
            raise MoelabError(f"{where} is not an object")
        if not isinstance(row.get("model"), str) or row.get("phase") not in MOELAB_METRICS:
            raise MoelabError(f"{where}: needs model (a string) and phase (prefill or decode)")
        for key in ("batch", "prompt"):
            if not isinstance(row.get(key), int) or isinstance(row.get(key), bool) or row[key] < 1:
                raise MoelabError(f"{where}: {key} must be a positive integer, got {row.get(key)!r}")
        value = row.get("measured_s")
        if not (_number(value) and math.isfinite(value) and value > 0):
            raise MoelabError(f"{where}: measured_s must be a positive number, got {value!r}")
        kept = {k: row[k] for k in ("model", "phase", "batch", "prompt")} | {"measured_s": float(value)}
        if isinstance(row.get("offload"), dict):  # bench --offload-experts: a variant's hit rate, misses, prediction
            kept["offload"] = row["offload"]
        rows.append(kept)
    if not rows:
        raise MoelabError(f"{path}: the bench file has no rows")
    hardware = raw.get("hardware", {}).get("name") if isinstance(raw.get("hardware"), dict) else None
    return {"source": str(path), "device": raw.get("device"), "dtype": raw["dtype"], "prompt": wl["prompt"],
            "gen": wl["gen"], "hardware": hardware, "rows": rows}


def moelab_measurements(result: dict[str, Any], *, model: str, hardware: str, plan: str | None = None,
                        dtype: str | None = None, kv_dtype: str | None = None, input: int | None = None,
                        output: int | None = None, metrics=None, bench_model: str | None = None
                        ) -> list[Measurement]:
    """A read_moelab_bench result as static-batch Measurements: prefill rows as TTFT, decode rows as TPOT, in
    ms. The rows are those of `bench_model` (default: the file's only model, or the one named `model`)."""
    source = result["source"]
    names = list(dict.fromkeys(r["model"] for r in result["rows"]))
    wanted = bench_model
    if wanted is None:
        wanted = names[0] if len(names) == 1 else next((n for n in names if n in (model, Path(model).stem)), None)
        if wanted is None:
            raise MoelabError(f"{source}: the file has rows of {', '.join(names)}; say whose with bench_model")
    elif wanted not in names:
        raise MoelabError(f"{source}: no rows of {wanted!r} (the file has {', '.join(names)})")
    if dtype is not None and dtype != result["dtype"]:
        raise MoelabError(f"{source}: the manifest says dtype {dtype}, the bench ran {result['dtype']}")
    for key, given, ran in (("input", input, result["prompt"]), ("output", output, result["gen"])):
        if given is not None and given != ran:
            raise MoelabError(f"{source}: the manifest says {key} {given}, the bench ran {ran}")
    dtype = result["dtype"]
    keep = set(metrics or MOELAB_METRICS.values())
    out = []
    for r in result["rows"]:
        metric = MOELAB_METRICS[r["phase"]]
        if r["model"] != wanted or metric not in keep:
            continue
        out.append(Measurement(model=model, hardware=hardware, plan=plan or "tp1", dtype=dtype,
                               kv_dtype=kv_dtype or dtype, input=r["prompt"], output=result["gen"], mode="static",
                               metric=metric, value=r["measured_s"] * 1e3, batch=r["batch"], statistic="median",
                               name=f"{source}:{wanted}:{r['phase']}:b{r['batch']}"))
    return out


def _model_ref(model: str, folder: Path) -> str:
    """A model named in a manifest: a path relative to the manifest's folder when one is there, else as given."""
    candidate = folder / model
    try:
        return str(candidate) if not Path(model).is_absolute() and candidate.exists() else model
    except (OSError, ValueError):
        return model


def _manifest(path: Path):
    from moelab.schema.base import validate
    from moelab.schema.manifest import Manifest

    raw = load_user_file(path, "manifest")
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise MoelabError(f"{path}: a manifest must be a mapping with `entries`, got {got}")
    return validate(Manifest, raw, str(path))


def manifest_files(path: str | Path) -> list[Path]:
    """The manifest and every result file it names (what `moelab fit --out` must not overwrite)."""
    path = Path(path)
    return [path, *(path.parent / entry.file for entry in _manifest(path).entries)]


# the device a moelab bench file must come from for each execution model of the hardware fitted
BENCH_DEVICE = {"gpu": "cuda", "eager": "cpu"}


def manifest_measurements(path: str | Path, hardware: str, execution: str | None = None) -> list[Measurement]:
    """Every figure of a fit manifest's result files as Measurements on `hardware` (a name to show); with
    `execution` ("gpu" / "eager"), a moelab bench file measured on the other kind of device is refused."""
    path = Path(path)
    manifest = _manifest(path)
    folder = path.parent
    out: list[Measurement] = []
    for entry in manifest.entries:
        file = folder / entry.file
        model = _model_ref(entry.model, folder)
        if entry.format == "vllm":
            runs = read_vllm_serve_runs(file)
            for i, run in enumerate(runs):
                source = str(file) if len(runs) == 1 else f"{file} (run {i + 1})"
                out.extend(vllm_measurements(run, source=source, model=model, hardware=hardware, plan=entry.plan,
                                             dtype=entry.dtype, kv_dtype=entry.kv_dtype, input=entry.input,
                                             output=entry.output, concurrency=entry.concurrency, mode=entry.mode,
                                             metrics=entry.metrics, statistic=entry.statistic))
        else:
            bench = read_moelab_bench(file)
            want = BENCH_DEVICE.get(execution or "")
            if want and bench.get("device") != want:
                raise MoelabError(f"{file}: measured on {bench.get('device')!r}, but {hardware} runs the {execution} "
                                  f"model (fit a {want} bench file to it)")
            out.extend(moelab_measurements(bench, model=model, hardware=hardware,
                                           plan=entry.plan, dtype=entry.dtype, kv_dtype=entry.kv_dtype,
                                           input=entry.input, output=entry.output, metrics=entry.metrics,
                                           bench_model=entry.bench_model))
    if not out:
        raise MoelabError(f"{path}: the manifest's files hold no figure to fit")
    return out


def model_specs(measurements) -> dict[str, Any]:
    """Each measurement's model, loaded once (moelab.spec.presets.load_model: preset, config path or HF id)."""
    from moelab.spec.presets import load_model

    return {name: load_model(name) for name in dict.fromkeys(m.model for m in measurements)}
