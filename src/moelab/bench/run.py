"""`moelab bench`: measure models on this machine beside the engine's prediction on the calibrated hardware.

Rows: one "prefill" and one "decode" row per model and batch size. measured_s is the median (prefill: the
whole prefill of batch x prompt tokens; decode: one step of the batch, each step timed on its own, over the
`gen` steps after the prefill, at contexts prompt .. prompt+gen-1). predicted_s is the engine's roofline
(moelab.cost.roofline) for the same workload at the mean decode context. rel_error = (predicted - measured)
/ measured: positive when the engine predicts too slow. Models are interleaved batch by batch in every
round, so that drift on a shared machine hits all alike.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from moelab import limits
from moelab.bench import drift
from moelab.bench.calibrate import available_memory_bytes, calibrated_hardware, check_device
from moelab.bench.measure import Runner, Samples, memory, routing_share
from moelab.bench.models import Loaded, Resolved, build, check_fits, resolve
from moelab.bench.probes import TORCH_DTYPES
from moelab.bench.timing import load_average, percentile
from moelab.cost.memory import inference_memory
from moelab.cost.params import count_params
from moelab.cost.roofline import Workload, decode_step, prefill
from moelab.errors import MoelabError
from moelab.nn.model import check_buildable
from moelab.progress import Progress
from moelab.progress import resolve as progress_mode
from moelab.spec.hardware import HardwareSpec, load_hardware
from moelab.validation import show_value

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64)
QUICK_BATCHES = (1, 4, 16)


def _count(name: str, value, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise MoelabError(f"{name} must be an integer in [1, {high}], got {show_value(value)}")


def _check(models, device, dtype, batches, prompt, gen, repeats) -> None:
    if not models:
        raise MoelabError("bench needs at least one model")
    check_device(device)
    if dtype not in TORCH_DTYPES:
        raise MoelabError(f"--dtype must be one of {', '.join(TORCH_DTYPES)}, got {dtype!r}")
    if not batches or any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in batches):
        raise MoelabError("--batches must list positive integers")
    for b in batches:
        _count("--batches", b, limits.MAX_BENCH_BATCH)
    _count("--prompt", prompt, limits.MAX_BENCH_TOKENS)
    _count("--gen", gen, limits.MAX_BENCH_TOKENS)
    if repeats is not None:
        _count("--repeats", repeats, limits.MAX_REPEATS)


def _check_models(models: list[Resolved], prompt: int, gen: int) -> None:
    """What each resolved model needs of moelab.nn and of the sweep: a rope it can build, enough positions."""
    for r in models:
        check_buildable(r.spec, r.ref)
        most = r.spec.max_position
        if most is not None and prompt + gen > most:
            raise MoelabError(f"--prompt {prompt} + --gen {gen} = {prompt + gen} tokens exceeds the {most} positions "
                              f"of {r.ref}")


def _hardware(hardware: str | None, device: str, quick: bool, progress) -> tuple[HardwareSpec, str, dict | None]:
    """(hardware, where it came from, the calibration's reference probe timings if it has them)."""
    path = str(calibrated_hardware(device, quick=quick, progress=progress)) if hardware is None else hardware
    hw = load_hardware(path)
    reference = None
    if os.path.isfile(path):
        from moelab.userfile import load_user_file

        raw = load_user_file(path, "hardware file")
        measured = raw.get("measurements") if isinstance(raw, dict) else None
        reference = measured.get("reference") if isinstance(measured, dict) else None
        reference = reference if isinstance(reference, dict) else None
    return hw, path, reference


def _rel(measured: float, predicted: float) -> float:
    return (predicted - measured) / measured


def _summary(rows: list[dict]) -> dict:
    def block(subset):
        errors = [abs(r["rel_error"]) for r in subset]
        return {"median_abs_rel_error": statistics.median(errors) if errors else None, "n": len(errors)}

    out = {phase: block([r for r in rows if r["phase"] == phase]) for phase in ("prefill", "decode")}
    models = list(dict.fromkeys(r["model"] for r in rows))
    out["by_model"] = {m: {phase: block([r for r in rows if r["model"] == m and r["phase"] == phase])
                           for phase in ("prefill", "decode")} for m in models}
    return out


def flip(rows: list[dict], names: list[str]) -> dict | None:
    """Decode throughput winner per batch, measured and predicted, and the first batch where it changes."""
    if len(names) != 2:
        return None
    decode = {(r["model"], r["batch"]): r for r in rows if r["phase"] == "decode"}
    batches = sorted({b for _, b in decode})
    out = {}
    for kind, key in (("measured", "tokens_per_second"), ("predicted", "predicted_tokens_per_second")):
        winners = {b: max(names, key=lambda n, b=b: decode[(n, b)][key]) for b in batches}
        first = winners[batches[0]]
        out[f"{kind}_batch"] = next((b for b in batches if winners[b] != first), None)
        out[f"{kind}_winner_by_batch"] = {str(b): w for b, w in winners.items()}
    return out


def _rows(m: Loaded, hw: HardwareSpec, dtype: str, batch: int, prompt: int, gen: int, s: Samples, mem: dict,
          share: dict | None, at_calibration: HardwareSpec | None = None) -> list[dict]:
    wl = Workload(batch=batch, prompt=prompt, gen=gen, dtype=dtype, kv_dtype=dtype)
    context = prompt + (gen - 1) / 2
    pred = {"prefill": prefill(m.spec, hw, wl), "decode": decode_step(m.spec, hw, wl, context)}
    unscaled = ({"prefill": prefill(m.spec, at_calibration, wl).seconds,
                 "decode": decode_step(m.spec, at_calibration, wl, context).seconds} if at_calibration else None)
    pmem = inference_memory(m.spec, hw, dtype, dtype, batch, prompt, gen)
    memory_block = {**mem, "predicted_weights_bytes": pmem.weights_bytes,
                    "predicted_kv_cache_bytes": pmem.kv_cache_bytes,
                    "predicted_activations_bytes": pmem.activation_bytes}
    rows = []
    for phase, times in (("prefill", s.prefill), ("decode", s.decode)):
        measured = statistics.median(times)
        p = pred[phase]
        tokens = batch * prompt if phase == "prefill" else batch
        moe_overhead = m.spec.n_moe_layers * (hw.moe_layer_overhead_s
                                              + p.distinct_experts_per_layer * hw.expert_overhead_s)
        rows.append({
            "model": m.name, "phase": phase, "batch": batch, "prompt": prompt,
            "context": prompt if phase == "prefill" else context,
            "measured_s": measured, "predicted_s": p.seconds, "rel_error": _rel(measured, p.seconds),
            "predicted_at_calibration_s": unscaled[phase] if unscaled else p.seconds,
            "p50_s": percentile(times, 50), "p95_s": percentile(times, 95), "p99_s": percentile(times, 99),
            "samples": len(times),
            "tokens_per_second": tokens / measured, "predicted_tokens_per_second": tokens / p.seconds,
            "predicted_bound": p.bound,
            "predicted_parts_s": {"compute": p.compute_seconds, "memory": p.memory_seconds,
                                  "overhead": p.overhead_seconds},
            "memory": memory_block,
            "routing_share": (share or {}).get(phase, {}).get("routing_share") if m.spec.is_moe else None,
            "expert_gemm_share": (share or {}).get(phase, {}).get("expert_gemm_share") if m.spec.is_moe else None,
            "predicted_routing_share": moe_overhead / p.seconds if m.spec.is_moe else None,
        })
    return rows


def bench(models: list[str], *, device: str = "cpu", dtype: str = "fp32", batches=DEFAULT_BATCHES,
          prompt: int = 128, gen: int = 32, shrink_to: float | str | None = None, hardware: str | None = None,
          repeats: int | None = None, quick: bool = False, progress: bool | str = False,
          threads: int | None = None) -> dict:
    """Measure `models` over `batches` beside the engine's prediction; the object `moelab bench --json` prints.

    Everything that can be refused is refused before any work (a calibration included): the flags, the models
    (resolved, not built), prompt + gen against each model's positions, and the sweep against this machine's
    available memory. `progress`: False (silent), True (a bar on a terminal, else a line per round, on stderr)
    or a mode of moelab.progress. `threads`: torch CPU threads (default: every core, as calibrate measures with)."""
    batches = tuple(batches)
    _check(models, device, dtype, batches, prompt, gen, repeats)
    if quick and batches == DEFAULT_BATCHES:
        batches = QUICK_BATCHES
    if quick:
        gen = min(gen, 8)
    repeats = repeats or (2 if quick else 5)
    resolved = [resolve(ref, shrink_to) for ref in models]
    _check_models(resolved, prompt, gen)  # every cheap refusal before the calibration `_hardware` may start
    check_fits(resolved, dtype, batches, prompt, gen, *available_memory_bytes(device))
    started = time.perf_counter()
    hw, hw_ref, reference = _hardware(hardware, device, quick, progress)
    if device == "cpu":
        torch.set_num_threads(threads or os.cpu_count() or 1)
    tdtype = TORCH_DTYPES[dtype]
    loaded = [build(r, device, tdtype) for r in resolved]
    names = [m.name for m in loaded]
    if len(set(names)) != len(names):
        for i, m in enumerate(loaded):
            m.name = f"{m.name}#{i + 1}"
        names = [m.name for m in loaded]
    load_before = load_average()
    runners = {(m.name, b): Runner(m.model, m.spec.vocab_size, b, prompt, gen, device, seed=b) for m in loaded
               for b in batches}
    samples = {key: Samples() for key in runners}
    probe_fns = drift.probes(device) if reference else None
    probe_times: dict[str, list[float]] = {"compute": [], "overhead": []}
    steps = 2 * len(runners) + repeats * len(runners)
    with Progress("bench", steps, progress_mode(progress)) as bar:
        for key, runner in runners.items():  # warm-up: allocator, caches, lazy init
            bar.step(f"warm-up {key[0]} batch {key[1]}", stage="warm-up")
            runner.run(steps=min(gen, 4))
        for r in range(repeats):
            for b in batches:
                for m in loaded:
                    bar.step(f"round {r + 1}/{repeats}: {m.name} batch {b}", stage=f"round {r + 1}/{repeats}")
                    runners[(m.name, b)].run(samples[(m.name, b)])
                if probe_fns:  # the reference probes, interleaved with the models (moelab.bench.drift)
                    for name, values in drift.time_probes(probe_fns, device, reps=2).items():
                        probe_times[name].extend(values)
        extras = {}
        for key, runner in runners.items():
            bar.step(f"memory and routing {key[0]} batch {key[1]}", stage="memory and routing")
            m = next(x for x in loaded if x.name == key[0])
            extras[key] = (memory(runner), routing_share(runner) if m.spec.is_moe else None)
    moved = drift.drift(reference, probe_times) if probe_fns else None
    hw_now = drift.scaled(hw, moved) if moved else hw
    rows = []
    for m in loaded:
        for b in batches:
            rows.extend(_rows(m, hw_now, dtype, b, prompt, gen, samples[(m.name, b)], *extras[(m.name, b)],
                              at_calibration=hw if moved else None))
    model_info = []
    for m in loaded:
        p = count_params(m.spec)
        info = {"name": m.name, "source": m.source, "params_total": p.total, "params_active": p.active,
                "n_layers": m.spec.n_layers, "d_model": m.spec.d_model,
                "experts": m.spec.moe.n_experts if m.spec.is_moe else 0,
                "top_k": m.spec.moe.top_k if m.spec.is_moe else 0,
                "shared_experts": m.spec.moe.n_shared if m.spec.is_moe else 0,
                "moe_layers": list(m.spec.moe_layers), "weights": m.weights_file or "random"}
        if m.shrunk_from:
            info["shrunk_from"] = m.shrunk_from
        model_info.append(info)
    hw_dict = hw.to_dict()
    load_after, cores = load_average(), os.cpu_count() or 1
    warnings = []
    busiest = max(x for x in (load_before, load_after, 0.0) if x is not None)
    if moved and moved.largest > drift.DRIFT_WARNING:
        warnings.append(f"this machine ran {moved.compute:.2f}x (matmul) and {moved.overhead:.2f}x (fixed costs) "
                        "the time of its calibration's reference probes: predictions use the calibration scaled by "
                        "those ratios (predicted_at_calibration_s: unscaled)")
    if device == "cpu" and busiest > cores:
        warnings.append(f"the machine was busy (load average {busiest:.1f} on {cores} cores): other processes "
                        "inflate the measurements; rerun on a quiet machine")
    return {
        "device": device, "dtype": dtype,
        "hardware": {"name": hw.name, "ref": hw_ref,
                     **{k: hw_dict[k] for k in ("peak_tflops", "memory_bandwidth_gbps", "cache_gb",
                                                 "cache_bandwidth_gbps", "step_overhead_us", "layer_overhead_us",
                                                 "moe_layer_overhead_us", "expert_overhead_us")}},
        "models": model_info,
        "workload": {"batches": list(batches), "prompt": prompt, "gen": gen, "repeats": repeats, "quick": quick},
        "threads": torch.get_num_threads() if device == "cpu" else None,
        "load_average": {"before": load_before, "after": load_after},
        "drift": moved.to_dict() if moved else None,
        "warnings": warnings,
        "seconds": time.perf_counter() - started,
        "rel_error_definition": "(predicted_s - measured_s) / measured_s",
        "rows": rows,
        "summary": _summary(rows),
        "flip": flip(rows, names),
    }


__all__ = ["bench", "flip"]
