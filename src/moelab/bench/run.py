"""`moelab bench`: measure models on this machine beside the engine's prediction on the calibrated hardware.

Rows: one "prefill" and one "decode" row per model and batch size. measured_s is the median (prefill: the
whole prefill of batch x prompt tokens; decode: one step of the batch, each step timed on its own, over the
`gen` steps after the prefill, at contexts prompt .. prompt+gen-1). predicted_s is the engine's roofline
(moelab.cost.roofline) for the same workload at the mean decode context. rel_error = (predicted - measured)
/ measured: positive when the engine predicts too slow. Models are interleaved batch by batch in every
round, so that drift on a shared machine hits all alike.

Across processes (`torchrun --nproc-per-node N -m moelab bench MODEL --ep N`, moelab.bench.parallel) the experts
are sharded over the N ranks, each runs batch/N of the sequences, a region's time is its slowest rank's, rows
carry the all-to-all seconds, and the prediction is the engine's for plan epN; rank 0 alone reports.

With `--offload-experts --resident N[,N...]` one run is measured beside a variant per resident count whose
experts are offloaded (moelab.bench.offload: hit rate, per-miss seconds, the engine's offloaded decode).
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from moelab import limits
from moelab.bench import drift
from moelab.bench import offload as offloading
from moelab.bench import parallel as ep_bench
from moelab.bench.calibrate import available_memory_bytes, calibrated_hardware, check_device
from moelab.bench.measure import Runner, Samples, memory, routing_share
from moelab.bench.models import Loaded, Resolved, check_fits, resolve
from moelab.bench.probes import TORCH_DTYPES
from moelab.bench.timing import load_average, percentile
from moelab.cost.memory import inference_memory, model_weight_bytes
from moelab.cost.params import count_params
from moelab.cost.roofline import Workload, decode_step, prefill
from moelab.errors import MoelabError
from moelab.nn.model import check_buildable
from moelab.parallel import layout as parallel
from moelab.parallel.layout import Layout, Mesh
from moelab.progress import Progress
from moelab.progress import resolve as progress_mode
from moelab.spec.hardware import HardwareSpec, load_hardware
from moelab.validation import show_value

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64)
QUICK_BATCHES = (1, 4, 16)
ONE_PROCESS = Layout()


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


def _workload(batch: int, prompt: int, gen: int, dtype: str, ep: int = 1, components=None) -> Workload:
    """The engine's workload for a bench row: one process, or plan epN on N GPUs (one per rank); `components`:
    a quantized run's per-component weight dtypes ({component: dtype}, bench.models.Loaded.components)."""
    return Workload(batch=batch, prompt=prompt, gen=gen, dtype=dtype, kv_dtype=dtype, gpus=ep,
                    plan=f"ep{ep}" if ep > 1 else "tp", components=components or ())


def _alltoall(p) -> float:
    """The predicted all-to-all seconds of a phase (the gpu model's alltoall operators; the eager model's epN
    communication is its all-to-all alone)."""
    return sum(op.seconds for op in p.operators if op.name == "alltoall") if p.operators else p.comm_seconds


def _rows(m: Loaded, hw: HardwareSpec, dtype: str, batch: int, prompt: int, gen: int, s: Samples, mem: dict,
          share: dict | None, at_calibration: HardwareSpec | None = None, layout: Layout = ONE_PROCESS) -> list[dict]:
    ep = layout.ep
    components = m.components  # a quantized run: the engine prices its weights at their stored dtypes
    wl = _workload(batch, prompt, gen, dtype, ep, components)
    context = prompt + (gen - 1) / 2
    pred = {"prefill": prefill(m.spec, hw, wl), "decode": decode_step(m.spec, hw, wl, context)}
    unscaled = ({"prefill": prefill(m.spec, at_calibration, wl).seconds,
                 "decode": decode_step(m.spec, at_calibration, wl, context).seconds} if at_calibration else None)
    pmem = inference_memory(m.spec, hw, dtype, dtype, batch // ep, prompt, gen,  # one rank's sequences
                            components=components)
    # one rank's weights: the replicated ones and 1/ep of the routed experts
    pweights = pmem.weights_bytes - (1 - 1 / ep) * model_weight_bytes(m.spec, dtype, components).routed_experts
    memory_block = {**mem, "predicted_weights_bytes": pweights,
                    "predicted_kv_cache_bytes": pmem.kv_cache_bytes,
                    "predicted_activations_bytes": pmem.activation_bytes}
    rows = []
    for phase, times in (("prefill", s.prefill), ("decode", s.decode)):
        measured = statistics.median(times)
        p = pred[phase]
        a2a = statistics.median(getattr(s, f"{phase}_alltoall")) if layout.distributed else None
        pa2a = _alltoall(p) if layout.distributed else None
        tokens = batch * prompt if phase == "prefill" else batch
        moe_overhead = m.spec.n_moe_layers * (hw.moe_layer_overhead_s
                                              + p.distinct_experts_per_layer * hw.expert_overhead_s)
        rows.append({
            "model": m.name, "plan": layout.plan, "phase": phase, "batch": batch, "prompt": prompt,
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
            "alltoall_seconds": a2a, "alltoall_share": None if a2a is None else a2a / measured,
            "predicted_alltoall_seconds": pa2a, "predicted_alltoall_share": None if pa2a is None else pa2a / p.seconds,
        })
    return rows


def bench(models: list[str], *, device: str = "cpu", dtype: str = "fp32", batches=DEFAULT_BATCHES,
          prompt: int = 128, gen: int = 32, shrink_to: float | str | None = None, hardware: str | None = None,
          repeats: int | None = None, quick: bool = False, progress: bool | str = False,
          threads: int | None = None, ep: int | None = None, offload_experts: bool = False, resident=None,
          cache: str | None = None) -> dict | None:
    """Measure `models` over `batches` beside the engine's prediction; the object `moelab bench --json` prints.

    Everything that can be refused is refused before any work (a calibration or a process group included): the
    flags, the models (resolved, not built), prompt + gen against each model's positions, the sweep against this
    machine's available memory, the layout of `ep` (under torchrun: experts over `ep` processes, see
    moelab.bench.parallel) and the predictions. `progress`: False (silent), True (a bar on a terminal, else a line
    per round, on stderr) or a mode of moelab.progress. `threads`: torch CPU threads per process (default: every
    core, as calibrate measures with, shared out over the processes). Under torchrun: the result on rank 0,
    None on the others.

    `offload_experts` with `resident` (an integer, or several: a list or "2,4,6") and `cache` ("lru" or
    "lfu"): the one run's resident model beside a variant per resident count whose experts are offloaded
    (moelab.bench.offload)."""
    batches = tuple(batches)
    _check(models, device, dtype, batches, prompt, gen, repeats)
    oplan = offloading.plan(offload_experts, resident, cache, models, ep, shrink_to)
    width = ep if isinstance(ep, int) and ep > 1 else 1
    if batches == DEFAULT_BATCHES:
        batches = (QUICK_BATCHES if width == 1 else (width, 2 * width, 4 * width)) if quick else (
            ep_bench.default_batches(DEFAULT_BATCHES, width))
    if quick:
        gen = min(gen, 8)
    repeats = repeats or (2 if quick else 5)
    resolved = [resolve(ref, shrink_to) for ref in models]
    if oplan:
        offloading.check_model(oplan, resolved[0])
    layout = ep_bench.check(ep, resolved, batches)
    _check_models(resolved, prompt, gen)  # every cheap refusal before the calibration `_hardware` may start
    available, where = available_memory_bytes(device)
    # on CPU the ranks share the RAM, and each builds the whole model before keeping its experts
    check_fits(resolved, dtype, batches, prompt, gen, available / (layout.world if device == "cpu" else 1), where)
    if oplan:  # the variants beside the resident model, and the full copy each is built as before offloading
        offloading.check_fits(oplan, resolved[0], dtype, batches, prompt, gen, available, where)
    if layout.distributed and hardware is None:
        hardware = ep_bench.cached_hardware(device, quick)
    started = time.perf_counter()
    hw, hw_ref, reference = _hardware(hardware, device, quick, progress)
    for r in resolved:  # a plan the engine refuses is refused now, not after the measurements
        for b in batches:
            wl = _workload(b, prompt, gen, dtype, layout.ep, r.components)
            prefill(r.spec, hw, wl)
            decode_step(r.spec, hw, wl)
    kw = dict(device=device, dtype=dtype, batches=batches, prompt=prompt, gen=gen, repeats=repeats, quick=quick,
              progress=progress if layout.writer else False, threads=threads, hw=hw, hw_ref=hw_ref,
              reference=reference, started=started, oplan=oplan)
    if not layout.distributed:
        return _measure(resolved, None, layout, **kw)
    with parallel.started(layout, device) as mesh:
        result = _measure(resolved, mesh, layout, **kw)
    return result if layout.writer else None


def _measure(resolved: list[Resolved], mesh: Mesh | None, layout: Layout, *, device: str, dtype: str, batches,
             prompt: int, gen: int, repeats: int, quick: bool, progress, threads: int | None, hw: HardwareSpec,
             hw_ref: str, reference: dict | None, started: float,
             oplan: offloading.OffloadPlan | None = None) -> dict:
    """bench's measurements and result, on every rank of `mesh` (None: one process)."""
    if device == "cpu":
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // layout.world))
    tdtype = TORCH_DTYPES[dtype]
    loaded = [ep_bench.build_sharded(r, device, tdtype, mesh) for r in resolved]
    probe, offloads = None, {}
    if oplan:  # the cold-versus-warm read first, then the offloaded variants beside the resident model
        probe = offloading.probe(resolved[0])
        for m, off in offloading.variants(resolved[0], oplan, device, tdtype):
            loaded.append(m)
            offloads[m.name] = off
    names = [m.name for m in loaded]
    if len(set(names)) != len(names):
        for i, m in enumerate(loaded):
            m.name = f"{m.name}#{i + 1}"
        names = [m.name for m in loaded]
    load_before = load_average()
    group = mesh.ep_group if mesh else None
    runners = {(m.name, b): (offloading.OffloadRunner(m.model, m.spec.vocab_size, b, prompt, gen, device, seed=b,
                                                      offload=offloads[m.name]) if m.name in offloads else
                             Runner(m.model, m.spec.vocab_size, b, prompt, gen, device, seed=b,
                                    part=(layout.ep_rank, layout.ep), group=group))
               for m in loaded for b in batches}
    samples = {key: Samples() for key in runners}
    # the reference probes are one process's: with ranks side by side they would time the ranks' contention
    probe_fns = drift.probes(device) if reference and not layout.distributed else None
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
        if group is not None:  # a region lasts until its slowest rank ends it
            ep_bench.slowest(list(samples.values()), group)
        extras = {}
        for key, runner in runners.items():
            bar.step(f"memory and routing {key[0]} batch {key[1]}", stage="memory and routing")
            m = next(x for x in loaded if x.name == key[0])
            extras[key] = (memory(runner), routing_share(runner) if m.spec.is_moe else None)
    if not layout.writer:
        return {}
    moved = drift.drift(reference, probe_times) if probe_fns else None
    hw_now = drift.scaled(hw, moved) if moved else hw
    hw_link = offloading.link_hardware(hw_now, probe) if oplan and offloading.engine_available() else None
    hw_link_calibration = offloading.link_hardware(hw, probe) if hw_link is not None and moved else None
    rows = []
    for m in loaded:
        for b in batches:
            made = _rows(m, hw_now, dtype, b, prompt, gen, samples[(m.name, b)], *extras[(m.name, b)],
                         at_calibration=hw if moved else None, layout=layout)
            if m.name in offloads:  # an offloaded variant: its decode row, priced by the engine's offload model
                base = next(r for r in rows if r["model"] == loaded[0].name and r["phase"] == "decode"
                            and r["batch"] == b)
                made = [offloading.decode_row(made[1], runners[(m.name, b)], samples[(m.name, b)],
                                              offloads[m.name], base, hw_link, m.spec, dtype, prompt, gen,
                                              hw_link_calibration)]
            rows.extend(made)
    for off in offloads.values():
        off.close()
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
        if m.quantization:  # what the engine priced it as (its rows' predictions use these dtypes)
            info["quantization"] = {"components": m.components, "group_size": m.quantization.get("group_size")}
        if m.name in offloads:
            info["offload"] = {"resident": offloads[m.name].resident, "cache": offloads[m.name].policy}
        model_info.append(info)
    hw_dict = hw.to_dict()
    load_after, cores = load_average(), os.cpu_count() or 1
    warnings = []
    if probe is not None and probe.warning():
        warnings.append(probe.warning())
    if oplan and hw_link is None:
        warnings.append("this tree has no engine offload model (moelab.cost.offload): the offloaded rows carry no "
                        "prediction of their own (predicted_s is the resident model's)")
    busiest = max(x for x in (load_before, load_after, 0.0) if x is not None)
    if moved and moved.largest > drift.DRIFT_WARNING:
        warnings.append(f"this machine ran {moved.compute:.2f}x (matmul) and {moved.overhead:.2f}x (fixed costs) "
                        "the time of its calibration's reference probes: predictions use the calibration scaled by "
                        "those ratios (predicted_at_calibration_s: unscaled)")
    if device == "cpu" and busiest > cores:
        warnings.append(f"the machine was busy (load average {busiest:.1f} on {cores} cores): other processes "
                        "inflate the measurements; rerun on a quiet machine")
    if device == "cpu" and layout.distributed:
        warnings.append(f"the {layout.world} processes share this machine's {cores} cores "
                        f"({torch.get_num_threads()} threads each), while the calibration ran one process on all of "
                        f"them: the {layout.plan} prediction prices each rank as the whole calibrated machine, and "
                        "no drift correction is made")
    return {
        "device": device, "dtype": dtype,
        "hardware": {"name": hw.name, "ref": hw_ref,
                     **{k: hw_dict[k] for k in ("peak_tflops", "memory_bandwidth_gbps", "cache_gb",
                                                 "cache_bandwidth_gbps", "step_overhead_us", "layer_overhead_us",
                                                 "moe_layer_overhead_us", "expert_overhead_us")}},
        "models": model_info,
        "workload": {"batches": list(batches), "prompt": prompt, "gen": gen, "repeats": repeats, "quick": quick},
        "parallel": {**layout.to_dict(), "sequences_per_rank": [b // layout.ep for b in batches],
                     "timing": ("each region after a barrier, its seconds the slowest rank's (all-to-all seconds: "
                                "the most any rank spent in all-to-all calls, waits included); memory and routing: "
                                "rank 0's") if layout.distributed else "one process"},
        "threads": torch.get_num_threads() if device == "cpu" else None,
        "load_average": {"before": load_before, "after": load_after},
        "drift": moved.to_dict() if moved else None,
        "warnings": warnings,
        "seconds": time.perf_counter() - started,
        "rel_error_definition": "(predicted_s - measured_s) / measured_s",
        "rows": rows,
        "summary": _summary(rows),
        "flip": None if oplan else flip(rows, names),
        "offload": offloading.summary_block(oplan, resolved[0], probe, hw_link) if oplan else None,
    }


__all__ = ["bench", "flip"]
