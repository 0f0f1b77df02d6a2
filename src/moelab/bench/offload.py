"""`moelab bench RUN --offload-experts --resident N[,N...] [--cache lru|lfu]`: the offloaded variants of one run.

Beside the run with every expert resident (its usual rows), one variant per resident count N: the same weights
with each MoE layer's experts behind moelab.mitigate.offload's store (N resident, misses read cold from the run's
model.safetensors; on CUDA, pinned host memory). The variants are interleaved with the resident model in every
round like any two bench models, and each variant's decode row gains an "offload" block:

- hit_rate, hits/misses per decode step (summed over the MoE layers), bytes read per step, the median and p95
  seconds of one miss and the share of the step they take, the slowdown against the resident model's step;
- the engine's offloaded decode (moelab.cost.offload.offloaded_decode) on the calibrated hardware whose host
  link is this file's measured cold read (latency: a cold one-page read; bandwidth: the expert's bytes over the
  rest of its cold read), a miss priced at the bytes it moves (the file's dtype on the CPU), with the hit rate it
  models (uniform routing: resident / E) as predicted_s, and again with the measured hit rate; its errors are
  against the mean decode step (measured_mean_s; the engine models a mean, and misses come in bursts);
- the memory the variant holds (the state dict plus the N resident experts per MoE layer), predicted as the
  all-resident model's less the offloaded experts;
- the seeds' "+10-50 ms per swap" beside the measured per-miss seconds.

Only decode rows are kept for the variants (their prefill median and misses are in the block): the engine prices
an offloaded decode step, not an offloaded prefill. The cache persists across steps and rounds (as a server's
does); warm-up steps fill it and are not counted.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import statistics
from dataclasses import dataclass

from moelab.bench.measure import Runner, Samples
from moelab.bench.models import Loaded, Resolved, build
from moelab.bench.timing import percentile
from moelab.cost.mitigations import SEEDS_SWAP_SOURCE
from moelab.errors import MoelabError
from moelab.mitigate import offload as store
from moelab.mitigate.offload import Offload, OffloadMetrics, ReadProbe

METHOD = ("a miss reads the expert's slices of the run's model.safetensors with os.preadv after "
          "posix_fadvise(POSIX_FADV_DONTNEED) over their pages (the handle opened with POSIX_FADV_RANDOM: no "
          "readahead); no drop_caches, no O_DIRECT")


@dataclass(frozen=True)
class OffloadPlan:
    """The resident counts to measure (each a variant) and the cache policy."""

    resident: tuple[int, ...]
    cache: str = "lru"


def parse_resident(value) -> tuple[int, ...]:
    """`--resident`: an integer or a comma-separated list of them (each a variant, in the order given)."""
    if isinstance(value, bool):
        raise MoelabError(f"--resident expects integers, got {value!r}")
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        try:
            values = [int(v) for v in value.split(",")]
        except ValueError:
            raise MoelabError(f"--resident expects comma-separated integers, got {value!r}"[:300]) from None
    else:
        values = list(value)
        if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise MoelabError(f"--resident expects integers, got {value!r}"[:300])
    if not values:
        raise MoelabError("--resident expects at least one integer")
    return tuple(dict.fromkeys(values))


def plan(offload_experts: bool, resident, cache: str | None, models: list[str], ep: int | None,
         shrink_to) -> OffloadPlan | None:
    """The flags' plan (None without --offload-experts), refused in one line where they do not go together."""
    if not offload_experts:
        if resident is not None:
            raise MoelabError("--resident sets the experts kept in memory by --offload-experts; give both")
        if cache is not None:
            raise MoelabError("--cache is the policy of --offload-experts; give both")
        return None
    if ep is not None:
        raise MoelabError("--offload-experts runs in one process; it does not combine with --ep")
    if len(models) != 1:
        raise MoelabError("--offload-experts benchmarks one run (its resident model beside the offloaded variants)")
    if shrink_to is not None:
        raise MoelabError("--offload-experts reads a run's trained weights from its file; --shrink-to builds random "
                          "ones")
    if resident is None:
        raise MoelabError("--offload-experts needs --resident N (experts per MoE layer kept in memory; a list "
                          "like 2,4,6 measures each)")
    cache = "lru" if cache is None else cache
    if cache not in store.POLICIES:
        raise MoelabError(f"--cache must be one of {', '.join(store.POLICIES)}, got {cache!r}")
    return OffloadPlan(parse_resident(resident), cache)


def check_model(p: OffloadPlan, r: Resolved) -> None:
    """The resolved model must be a float moelab MoE run with its weights file; every resident count in range."""
    if not r.spec.is_moe:
        raise MoelabError(f"{r.ref} is a dense model: --offload-experts needs routed experts")
    if r.source != "run" or r.folder is None:
        kind = {"hf": "a Hugging Face folder (its own weight layout)", "preset": "a preset (no weights file)",
                "config": "a config (random weights, no file)"}.get(r.source, r.source)
        raise MoelabError(f"--offload-experts reads experts from a moelab run folder's model.safetensors; {r.ref} "
                          f"is {kind}")
    if r.quantization:
        raise MoelabError(f"{r.ref} is a quantized run: offloading quantized experts is not supported yet")
    for n in p.resident:
        store.check_resident(n, r.spec)


def variant_name(name: str, resident: int, cache: str) -> str:
    return f"{name} offload {resident} {cache}"


class OffloadRunner(Runner):
    """A Runner that records each timed region's offload metrics (hits, misses, bytes, miss seconds)."""

    def __init__(self, *args, offload: Offload, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.offload = offload
        self.regions: dict[str, list[OffloadMetrics]] = {"prefill": [], "decode": []}

    def _time(self, fn, samples, phase: str) -> None:
        before = self.offload.compute_metrics()
        super()._time(fn, samples, phase)
        if samples is not None:
            self.regions[phase].append(self.offload.compute_metrics().since(before))


def variants(base: Resolved, p: OffloadPlan, device: str, dtype) -> list[tuple[Loaded, Offload]]:
    """One model per resident count, built as bench builds the resident one, its experts then offloaded."""
    out = []
    for n in p.resident:
        m = build(base, device, dtype)
        offload = store.offload_experts(m.model, base.folder / "model.safetensors", n, p.cache)
        m.name = variant_name(m.name, n, p.cache)
        out.append((m, offload))
    return out


def probe(r: Resolved, repeats: int = 9) -> ReadProbe:
    return store.read_probe(r.folder / "model.safetensors", repeats=repeats)


def engine_available() -> bool:
    """Whether this tree has the engine's offload model (moelab.cost.offload)."""
    return importlib.util.find_spec("moelab.cost.offload") is not None


def link_hardware(hw, pr: ReadProbe):
    """`hw` with its host link set to the measured cold read of the file (latency + bytes / bandwidth)."""
    return dataclasses.replace(hw, host_link_bandwidth=pr.link_bandwidth, host_link_latency_s=pr.small_cold_s,
                               host_link_efficiency=1.0)  # measured: what it achieves


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def offloaded_bytes(spec, dtype: str, resident: int) -> float:
    """The engine's bytes of the routed experts an offloaded model does not hold: (E - N) experts in every MoE
    layer at `dtype` (moelab.cost: expert_params x routed_expert_bytes)."""
    from moelab.cost.memory import routed_expert_bytes
    from moelab.cost.params import expert_params

    per_param = routed_expert_bytes(dtype, spec.expert_storage)
    return sum(n * (layer.moe.n_experts - min(resident, layer.moe.n_experts)) * expert_params(spec.d_model, layer.moe)
               * per_param for layer, n in spec.layer_groups if layer.moe is not None)


def check_fits(p: OffloadPlan, r: Resolved, dtype: str, batches, prompt: int, gen: int, available: float,
               where: str) -> None:
    """Refuse, in one line and before anything is built, variants this machine cannot hold beside the resident
    model: its weights, each variant's held weights (all but the offloaded experts), one transient full copy (a
    variant is built whole before its experts are offloaded) and the largest batch's run, against
    MAX_RUN_SHARE of the `available` memory (bench.models.check_fits's rule)."""
    from moelab.bench.models import MAX_RUN_SHARE, run_bytes, weights_bytes

    full = weights_bytes(r, dtype)
    held = [full - offloaded_bytes(r.spec, dtype, n) for n in p.resident]
    batch = max(batches)
    need = full + sum(held) + full + run_bytes(r.spec, dtype, batch, prompt, gen)
    if need > MAX_RUN_SHARE * available:
        raise MoelabError(f"--offload-experts --resident {','.join(map(str, p.resident))}: the resident {r.ref} "
                          f"({full / 1e9:.1f} GB of {dtype} weights), the variants' held weights "
                          f"({sum(held) / 1e9:.1f} GB), one full copy while a variant is built and batch {batch} x "
                          f"{prompt}+{gen} tokens need about {need / 1e9:.1f} GB, more than this machine's "
                          f"{available / 1e9:.1f} GB of {where} available holds; measure fewer resident counts or "
                          "use smaller --batches, --prompt or --gen")


def dtype_name(dtype) -> str:
    """moelab's name of a torch dtype (bench.probes.TORCH_DTYPES)."""
    from moelab.bench.probes import TORCH_DTYPES

    return next(name for name, t in TORCH_DTYPES.items() if t == dtype)


def _memory(row: dict, offload: Offload, spec, dtype: str) -> dict:
    """The variant's memory: what it holds with N experts per MoE layer resident (the store is no nn.Module, so
    the state dict leaves the resident experts out), predicted as the resident model's less the offloaded ones."""
    mem = dict(row["memory"])
    held = offload.resident_bytes()
    mem.update(state_dict_bytes=mem["weights_bytes"], resident_expert_bytes=held,
               weights_bytes=mem["weights_bytes"] + held,
               predicted_weights_bytes=mem["predicted_weights_bytes"] - offloaded_bytes(spec, dtype, offload.resident),
               weights_basis=f"held in memory with {offload.resident} resident experts per MoE layer: the state dict "
                             "(its stacked experts dropped) + the full caches; predicted: the all-resident weights "
                             "less (E - N) experts per MoE layer")
    if offload.stores and offload.stores[0].pinned is not None:
        mem["pinned_host_bytes"] = sum(s.miss_bytes() * s.n_experts for s in offload.stores)
    return mem


def decode_row(row: dict, runner: OffloadRunner, samples: Samples, offload: Offload, resident_row: dict | None,
               hw_link, spec, dtype: str, prompt: int, gen: int, hw_link_calibration=None) -> dict:
    """The variant's decode row: measured as any row, predicted by the engine's offloaded decode (`hw_link`
    None: this tree has no engine offload model, and the row keeps no prediction of its own).

    Misses come in bursts (a step that misses several experts is far slower than one that hits), so the engine's
    step (the resident step + misses per step x seconds per miss) is a mean: the offload errors compare it with
    measured_mean_s, the mean of the timed decode steps (p50/p95/p99 as in every row). `hw_link_calibration`: the
    same link on the calibrated hardware before any drift scaling (predicted_at_calibration_s)."""
    steps, prefills = runner.regions["decode"], runner.regions["prefill"]
    every = store.total(steps)
    secs = every.miss_seconds
    measured = row["measured_s"]
    mean = statistics.fmean(samples.decode) if samples.decode else measured
    context = prompt + (gen - 1) / 2
    block = {
        "resident": offload.resident, "cache": offload.policy,
        "experts": [s.n_experts for s in offload.stores], "moe_layers": len(offload.stores),
        "hit_rate": every.hit_rate, "hits_per_step": _mean(s.hits for s in steps),
        "misses_per_step": _mean(s.misses for s in steps),
        "misses_per_step_p95": percentile([s.misses for s in steps], 95),
        "bytes_read_per_step": _mean(s.bytes_read for s in steps),
        "miss_seconds_median": statistics.median(secs) if secs else None,
        "miss_seconds_p95": percentile(secs, 95) if secs else None,
        "miss_share_of_step": sum(secs) / sum(samples.decode) if samples.decode else None,
        "expert_bytes": offload.expert_bytes(), "miss_bytes": offload.miss_bytes(),
        "miss_dtype": dtype_name(offload.miss_dtype()), "resident_expert_bytes": offload.resident_bytes(),
        "prefill_s": statistics.median(samples.prefill) if samples.prefill else None,
        "prefill_misses": _mean(s.misses for s in prefills),
        "resident_decode_s": resident_row["measured_s"] if resident_row else None,
        "slowdown_vs_resident": measured / resident_row["measured_s"] if resident_row else None,
        "seeds_swap_seconds": list(store.SEEDS_SWAP_SECONDS), "seeds_source": SEEDS_SWAP_SOURCE,
        "predicted": None, "predicted_at_measured_hit_rate": None, "rel_error_at_measured_hit_rate": None,
        "error_basis": "error against the mean step: the engine models a mean (misses come in bursts)",
    }
    out = dict(row, offload=block, measured_mean_s=mean, memory=_memory(row, offload, spec, dtype))
    if hw_link is not None:
        from moelab.cost.offload import offloaded_decode

        batch = row["batch"]
        # a miss moves the slow tier's bytes (the file's dtype on the CPU: an fp32 file read for a bf16 model)
        kw = {"miss_dtype": block["miss_dtype"]}
        modelled = offloaded_decode(spec, hw_link, batch, context, dtype, offload.resident, **kw)
        at_calibration = (offloaded_decode(spec, hw_link_calibration, batch, context, dtype, offload.resident, **kw)
                          if hw_link_calibration is not None else modelled)
        block["predicted"] = modelled.to_dict()
        if every.hit_rate is not None:
            at_hit = offloaded_decode(spec, hw_link, batch, context, dtype, offload.resident, hit_rate=every.hit_rate,
                                      **kw)
            block["predicted_at_measured_hit_rate"] = at_hit.to_dict()
            block["rel_error_at_measured_hit_rate"] = (at_hit.step_seconds - mean) / mean
        share = row.get("predicted_routing_share")
        out.update(predicted_s=modelled.step_seconds, rel_error=(modelled.step_seconds - mean) / mean,
                   predicted_tokens_per_second=batch / modelled.step_seconds,
                   predicted_at_calibration_s=at_calibration.step_seconds, predicted_bound="offload",
                   # the resident step's parts, plus the misses' transfers the offloaded step adds to them
                   predicted_parts_s={**row["predicted_parts_s"], "transfer": modelled.transfer_seconds},
                   # the same MoE overheads, a share of the longer step
                   predicted_routing_share=None if share is None else
                   share * row["predicted_s"] / modelled.step_seconds)
    return out


def summary_block(p: OffloadPlan, r: Resolved, pr: ReadProbe, hw_link) -> dict:
    """The result's top-level "offload" object: what was offloaded, how a miss reads, the read probe, the link."""
    return {"run": str(r.folder), "file": str(r.folder / "model.safetensors"), "cache": p.cache,
            "resident": list(p.resident), "method": METHOD, "read_probe": pr.to_dict(),
            "link": None if hw_link is None else {"host_link_bandwidth_bytes_per_s": hw_link.host_link_bandwidth,
                                                  "host_link_latency_s": hw_link.host_link_latency_s,
                                                  "from": "the read probe: latency = cold one-page read, "
                                                          "bandwidth = expert bytes / (cold expert read - latency)"},
            "gemm_path": "per expert (ExpertWeights.one), as the resident model's 'sorted' backend computes on "
                         "the CPU in fp32; the grouped_mm backend (CUDA, 16-bit) runs only on stacked weights",
            "seeds": {"swap_seconds": list(store.SEEDS_SWAP_SECONDS), "source": SEEDS_SWAP_SOURCE}}
