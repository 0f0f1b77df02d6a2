"""Stopwatch one model at one batch size: prefill, per-step decode with the KV cache, memory and routing share.

Inputs are random token ids (fresh ones every decode step), so that a batch routes like diverse requests.
Across processes (`moelab bench --ep N`) each runner draws the whole batch's ids and runs its part of the
sequences, so that N processes together run the sequences one process runs; every timed region then starts
at a barrier of the group and records its all-to-all seconds (moelab.parallel.clock).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import torch

from moelab.bench.timing import cpu_profile, proc_status_bytes, reset_peak_rss, sync, timed

GEMMS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::_grouped_mm",
         "aten::grouped_mm"}


@dataclass
class Samples:
    """Raw seconds gathered over the rounds for one (model, batch)."""

    prefill: list[float] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)
    prefill_alltoall: list[float] = field(default_factory=list)  # all-to-all seconds of each region (ep runs)
    decode_alltoall: list[float] = field(default_factory=list)


def prefill_last(model: torch.nn.Module, ids: torch.Tensor, cache) -> torch.Tensor:
    """A serving prefill: TransformerLM.forward, but logits only for the last position (the first generated
    token's), as serving engines compute them and as the engine's prefill FLOPs count them."""
    return model.head(model.hidden(ids, cache)[:, -1:])


class Runner:
    """Runs prefill + decode of one model at one batch size with deterministic random inputs.

    `batch` sequences in all, of which this process runs part `part` = (index, count): sequences
    index * batch / count .. (index + 1) * batch / count - 1 (count divides batch). With a process `group`
    (an expert-parallel model), every timed region starts at a barrier of the group."""

    def __init__(self, model: torch.nn.Module, vocab: int, batch: int, prompt: int, gen: int, device: str,
                 seed: int = 0, part: tuple[int, int] = (0, 1), group=None) -> None:
        index, count = part
        if batch % count or not 0 <= index < count:
            raise ValueError(f"part {index} of {count} does not split a batch of {batch}")
        self.model, self.vocab, self.batch, self.prompt, self.gen, self.device = (
            model, vocab, batch, prompt, gen, device)
        self.rows = slice(index * batch // count, (index + 1) * batch // count)
        self.group = group
        self.gen_rng = torch.Generator().manual_seed(seed)

    def _ids(self, t: int) -> torch.Tensor:
        ids = torch.randint(0, self.vocab, (self.batch, t), generator=self.gen_rng)
        return ids[self.rows].to(self.device)

    def _time(self, fn, samples: Samples | None, phase: str) -> None:
        if self.group is not None:
            import torch.distributed as dist

            from moelab.parallel import clock

            sync(self.device)
            dist.barrier(group=self.group)
            clock.take()
        t = timed(fn, self.device)
        if samples is None:
            return
        getattr(samples, phase).append(t)
        if self.group is not None:
            getattr(samples, f"{phase}_alltoall").append(clock.take()["alltoall"])

    def run(self, samples: Samples | None = None, steps: int | None = None) -> object:
        """One prefill and `steps` (default gen) decode steps; times appended to `samples`. Returns the cache."""
        steps = self.gen if steps is None else steps
        with torch.inference_mode():
            cache = self.model.new_cache(self.prompt + self.gen)
            ids = self._ids(self.prompt)
            self._time(lambda: prefill_last(self.model, ids, cache), samples, "prefill")
            for _ in range(steps):
                tok = self._ids(1)
                self._time(lambda tok=tok: self.model(tok, cache), samples, "decode")
        return cache


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cache_bytes(cache) -> tuple[int, int]:
    """(bytes of the cached positions, bytes allocated: the cache grows by doubling)."""
    used = allocated = 0
    for layer, filled in zip(cache.layers, cache.filled, strict=True):
        for t in layer or ():
            allocated += t.numel() * t.element_size()
            used += t.numel() * t.element_size() // t.shape[2] * filled
    return used, allocated


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's stored tensors, each once (a tied table once): its state dict, i.e. the parameters
    plus the persistent buffers. A parameter count alone misses a quantized run's weights (moelab.mitigate.quantize
    keeps q and scales as buffers: its buffer_bytes) and the routers' fp32 selection bias (a buffer, moelab.nn
    .routers.Router.bias); non-persistent buffers (rotary frequencies, router load statistics) are not weights."""
    return sum(t.numel() * t.element_size() for _, t in stored_tensors(model))


def stored_tensors(model: torch.nn.Module):
    """(name, tensor) of the model's state dict, each stored tensor once (a tied table under its first name)."""
    seen = set()
    for name, t in model.state_dict().items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
        if ident not in seen:
            seen.add(ident)
            yield name, t


def memory(runner: Runner) -> dict:
    """Weights (weight_bytes: parameters and persistent buffers), KV cache (bytes of the cached positions, and
    of the tensors allocated), and the peak above the pre-run baseline (RSS high-water mark on CPU, allocator
    peak on CUDA); activations = that peak minus the allocated KV cache."""
    device = runner.device
    if device == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        cache = runner.run(steps=runner.gen)
        sync(device)
        peak = torch.cuda.max_memory_allocated() - base
        absolute = torch.cuda.max_memory_allocated()
    else:
        _malloc_trim()
        base = proc_status_bytes("VmRSS") or 0
        ok = reset_peak_rss()
        cache = runner.run(steps=runner.gen)
        hwm = proc_status_bytes("VmHWM") or 0
        peak = max(0, hwm - base) if ok else None
        absolute = hwm
    kv, kv_allocated = cache_bytes(cache)
    return {"weights_bytes": weight_bytes(runner.model), "kv_cache_bytes": kv,
            "kv_cache_allocated_bytes": kv_allocated,
            "activations_bytes": None if peak is None else max(0, peak - kv_allocated),
            "peak_above_baseline_bytes": peak,
            ("peak_cuda_allocated_bytes" if device == "cuda" else "peak_rss_bytes"): absolute}


def _under(event, label: str) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == label:
            return True
        parent = parent.cpu_parent
    return False


def _outermost_gemm(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in GEMMS:
            return False
        parent = parent.cpu_parent
    return True


def routing_share(runner: Runner, steps: int = 2) -> dict:
    """Share of prefill and of decode time spent routing (moe.route) and dispatching (moe.dispatch minus its
    expert GEMMs), from one torch.profiler session over a prefill and `steps` decode steps (each in its own
    bench.* range); the expert GEMM share beside it. The profiler's per-op cost inflates small ops alike."""
    from torch.profiler import record_function

    with torch.inference_mode():
        cache = runner.model.new_cache(runner.prompt + steps)
        phases = [("prefill", runner._ids(runner.prompt))] + [("decode", runner._ids(1)) for _ in range(steps)]
        with cpu_profile() as prof:
            for phase, ids in phases:
                with record_function(f"bench.{phase}"):
                    (prefill_last(runner.model, ids, cache) if phase == "prefill" else runner.model(ids, cache))
                    sync(runner.device)
    acc: dict[str, dict[str, float]] = {}
    for e in prof.events():
        if e.name.startswith("bench."):
            acc.setdefault(e.name[6:], {}).setdefault("wall", 0.0)
            acc[e.name[6:]]["wall"] += e.cpu_time_total * 1e-6
    for e in prof.events():
        label = e.name if e.name in ("moe.route", "moe.dispatch") else ("gemm" if e.name in GEMMS else None)
        if label is None or (label == "gemm" and not (_outermost_gemm(e) and _under(e, "moe.dispatch"))):
            continue
        phase = next((p.name[6:] for p in _ancestors(e) if p.name.startswith("bench.")), None)
        if phase:
            acc[phase][label] = acc[phase].get(label, 0.0) + e.cpu_time_total * 1e-6
    out = {}
    for phase, a in acc.items():
        wall = a["wall"] or float("inf")
        dispatch = max(0.0, a.get("moe.dispatch", 0.0) - a.get("gemm", 0.0))
        out[phase] = {"routing_share": min(1.0, (a.get("moe.route", 0.0) + dispatch) / wall),
                      "expert_gemm_share": min(1.0, a.get("gemm", 0.0) / wall)}
    return out


def _ancestors(event):
    parent = event.cpu_parent
    while parent is not None:
        yield parent
        parent = parent.cpu_parent
