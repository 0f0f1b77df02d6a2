"""Expert offloading: routed experts live in a slow tier; a fixed budget of N per MoE layer stays resident.

`offload_experts(model, weights_file, resident=N, policy="lru"|"lfu")` replaces each MoE layer's stacked expert
weights (MoELayer.set_expert_store: the stacked parameters are dropped from memory) by an `OffloadedExperts`
store, the seam's `Experts` protocol (moelab.nn.dispatch): `one(e, x_ND)` finds expert e in the layer's cache or,
on a miss, evicts one resident expert (when N are held) and fetches e from the slow tier.

The slow tier on the CPU is the run's model.safetensors itself, read through a file handle. The header is parsed
here (8-byte little-endian length, then JSON {name: {dtype, shape, data_offsets}}; offsets count from the end of
the header) and expert e's slice of `layers.{i}.mlp.gate_up_proj` (E, 2F, D) and `down_proj` (E, D, F) (and
gpt-oss's biases (E, 2F), (E, D)) is contiguous, so one miss is one os.preadv per tensor straight into a fresh
tensor. So that a miss really reads the device and not the page cache, each read is preceded by
`os.posix_fadvise(fd, offset, length, POSIX_FADV_DONTNEED)` over the slice's pages (rounded out to whole pages:
the kernel drops only whole pages), and the handle is opened with POSIX_FADV_RANDOM so that readahead does not
warm the neighbouring experts. Root-only `drop_caches` and O_DIRECT (alignment rules, unsupported on some file
systems) are not used. Where DONTNEED cannot evict (tmpfs: the file *is* page cache) a cold read is as fast as a
warm one; `read_probe` measures both and bench says so.

On CUDA the slow tier is host memory: every expert of the layer read once into pinned CPU tensors, and a miss is
a non-blocking copy over PCIe into a new device tensor (timed with a synchronize). That path is small and has not
been run on a GPU here.

Bit-identical to resident decoding: a fetched expert is the same bytes as the stacked parameter's slice (cast to
the model's dtype as `model.to(dtype)` casts it), laid out (2F, D) / (D, F) contiguous as `w_EFD[e]` is, and
computed by ExpertWeights.one, the function the resident per-expert backends ("sorted", "loop") call. The
grouped_mm backend (CUDA, 16-bit) is another GEMM: any store that is not stacked weights runs per expert.

Cache policies (`ExpertCache`): LRU evicts the expert used longest ago; LFU the one used least often since the
store was made (counts kept across evictions, so the layer's most popular experts settle in), ties by least
recently used. Metrics are OLMo-core style: `compute_metrics()` / `reset_metrics()`, never attributes a forward
overwrites.
"""

from __future__ import annotations

import json
import os
import statistics
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from moelab.cost.mitigations import SEEDS_SWAP_MS
from moelab.errors import MoelabError
from moelab.nn.dispatch import ExpertWeights

POLICIES = ("lru", "lfu")
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on the header
SMALL_READ = 4096  # the latency probe: one cold page
# safetensors dtype names (huggingface/safetensors, safetensors/src/tensor.rs `Dtype`) that moelab writes
ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool}
# the per-expert tensors of a moelab MoE layer, in the order a miss reads them (MoELayer's parameter names)
EXPERT_TENSORS = ("gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias")
SEEDS_SWAP_SECONDS = tuple(ms / 1e3 for ms in SEEDS_SWAP_MS)  # the seeds' "+10-50ms latency per swap"


# ---------------------------------------------------------------- the file: header and slices


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: dtype, shape and its bytes' absolute offsets in the file."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    def slice(self, e: int) -> tuple[int, int, tuple[int, ...]]:
        """(file offset, bytes, shape) of row e along the first dimension (expert e of a stacked tensor)."""
        if not self.shape or not 0 <= e < self.shape[0]:
            raise IndexError(f"{self.name}: no row {e} in shape {self.shape}")
        step = (self.end - self.start) // self.shape[0]
        return self.start + e * step, step, self.shape[1:]


def read_header(path: str | Path) -> dict[str, TensorEntry]:
    """Every tensor of the safetensors file `path`, from its header (no tensor data read)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise MoelabError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
            (n,) = struct.unpack("<Q", raw)
            if not 0 < n <= MAX_HEADER_BYTES:
                raise MoelabError(f"{path}: not a safetensors file (header length {n})")
            header = f.read(n)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise MoelabError(f"{path}: cannot read ({e.strerror})") from None
    try:
        meta = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MoelabError(f"{path}: not a safetensors file (the header is not JSON)") from None
    if not isinstance(meta, dict):
        raise MoelabError(f"{path}: not a safetensors file (the header is not an object)")
    base, out = 8 + n, {}
    for name, info in meta.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (lo, hi) = ST_DTYPES[info["dtype"]], tuple(int(s) for s in info["shape"]), info[
                "data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise MoelabError(f"{path}: tensor {name!r} has no usable dtype/shape/data_offsets") from None
        count = 1
        for s in shape:
            count *= s
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi and hi - lo == count * itemsize
                and base + hi <= size):
            raise MoelabError(f"{path}: tensor {name!r} has offsets {lo}..{hi} that do not match its shape "
                              f"{list(shape)} or the file's {size} bytes")
        out[name] = TensorEntry(name, dtype, shape, base + lo, base + hi)
    return out


class ExpertFile:
    """A safetensors file read by slices through one handle, each read cold (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tensors = read_header(self.path)
        self.fd = os.open(self.path, os.O_RDONLY)
        self._advise(0, 0, "POSIX_FADV_RANDOM")  # no readahead into the neighbouring experts

    def _advise(self, offset: int, length: int, advice: str) -> None:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, offset, length, getattr(os, advice))

    def evict(self, offset: int, nbytes: int) -> None:
        """Drop the pages holding bytes offset .. offset+nbytes from the page cache (whole pages, rounded out)."""
        lo = offset // PAGE * PAGE
        hi = -(-(offset + nbytes) // PAGE) * PAGE
        self._advise(lo, hi - lo, "POSIX_FADV_DONTNEED")

    def read(self, offset: int, nbytes: int, cold: bool = True) -> torch.Tensor:
        """`nbytes` bytes at `offset` as a fresh uint8 tensor, read straight into it (evicted first if `cold`)."""
        if cold:
            self.evict(offset, nbytes)
        buf = torch.empty(nbytes, dtype=torch.uint8)
        view, done = memoryview(buf.numpy()), 0
        while done < nbytes:
            got = os.preadv(self.fd, [view[done:]], offset + done)
            if got <= 0:
                raise MoelabError(f"{self.path}: short read at byte {offset + done} (the file changed?)")
            done += got
        return buf

    def row(self, name: str, e: int, cold: bool = True) -> torch.Tensor:
        """Row e of tensor `name` (expert e of a stacked tensor), in the file's dtype, contiguous."""
        entry = self.tensors[name]
        offset, nbytes, shape = entry.slice(e)
        return self.read(offset, nbytes, cold).view(entry.dtype).reshape(shape)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ---------------------------------------------------------------- the cache


class ExpertCache:
    """Which experts are resident: at most `capacity`, evicted by `policy` (lru or lfu, see the module
    docstring). `access(e)` -> (hit, the expert evicted to make room or None); `admit(e, value)` after a miss."""

    def __init__(self, capacity: int, policy: str = "lru") -> None:
        if policy not in POLICIES:
            raise MoelabError(f"--cache must be one of {', '.join(POLICIES)}, got {policy!r}")
        if capacity < 1:
            raise MoelabError(f"a cache holds at least one expert, got {capacity}")
        self.capacity, self.policy = capacity, policy
        self.values: dict[int, object] = {}
        self.last: dict[int, int] = {}  # expert -> tick of its last access
        self.uses: dict[int, int] = {}  # expert -> accesses since the cache was made (lfu)
        self.tick = 0

    def __contains__(self, e: int) -> bool:
        return e in self.values

    def access(self, e: int) -> tuple[bool, int | None]:
        self.tick += 1
        self.last[e] = self.tick
        self.uses[e] = self.uses.get(e, 0) + 1
        if e in self.values:
            return True, None
        if len(self.values) < self.capacity:
            return False, None
        if self.policy == "lru":
            victim = min(self.values, key=lambda k: self.last[k])
        else:
            victim = min(self.values, key=lambda k: (self.uses[k], self.last[k]))
        del self.values[victim]
        return False, victim

    def admit(self, e: int, value: object) -> None:
        self.values[e] = value

    def get(self, e: int) -> object:
        return self.values[e]

    def resident(self) -> list[int]:
        return sorted(self.values)


# ---------------------------------------------------------------- metrics


@dataclass(frozen=True)
class OffloadMetrics:
    """Counts since the last reset: accesses that hit, misses, bytes read and each miss's seconds."""

    hits: int = 0
    misses: int = 0
    bytes_read: int = 0
    miss_seconds: tuple[float, ...] = ()

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None

    def __add__(self, other: OffloadMetrics) -> OffloadMetrics:
        return OffloadMetrics(self.hits + other.hits, self.misses + other.misses,
                              self.bytes_read + other.bytes_read, self.miss_seconds + other.miss_seconds)

    def since(self, before: OffloadMetrics) -> OffloadMetrics:
        """What happened after `before` (an earlier compute_metrics() of the same stores, no reset between)."""
        return OffloadMetrics(self.hits - before.hits, self.misses - before.misses,
                              self.bytes_read - before.bytes_read, self.miss_seconds[len(before.miss_seconds):])

    def to_dict(self) -> dict:
        secs = self.miss_seconds
        return {"hits": self.hits, "misses": self.misses, "hit_rate": self.hit_rate, "bytes_read": self.bytes_read,
                "miss_seconds_median": statistics.median(secs) if secs else None,
                "miss_seconds_total": sum(secs)}


def total(metrics: Iterable[OffloadMetrics]) -> OffloadMetrics:
    out = OffloadMetrics()
    for m in metrics:
        out = out + m
    return out


# ---------------------------------------------------------------- the store


class OffloadedExperts:
    """One MoE layer's routed experts: N resident in an ExpertCache, the rest fetched from the slow tier."""

    def __init__(self, source: ExpertFile, prefix: str, n_experts: int, resident: int, policy: str = "lru",
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 activation: str = "silu") -> None:
        self.source, self.prefix, self.n_experts = source, prefix, n_experts
        self.names = [n for n in EXPERT_TENSORS if f"{prefix}{n}" in source.tensors]
        self.dtype, self.device, self.activation = dtype, torch.device(device), activation
        self.cache = ExpertCache(resident, policy)
        self.pinned: dict[int, list[torch.Tensor]] | None = None
        if self.device.type == "cuda":  # the slow tier is pinned host memory: read every expert once
            self.pinned = {e: [self._read(n, e, cold=False).pin_memory() for n in self.names]
                           for e in range(n_experts)}
        self.reset_metrics()

    def _read(self, name: str, e: int, cold: bool = True) -> torch.Tensor:
        return self.source.row(f"{self.prefix}{name}", e, cold).to(self.dtype)

    def expert_bytes(self) -> int:
        """Bytes of one expert as the file stores them."""
        return sum(self.source.tensors[f"{self.prefix}{n}"].slice(0)[1] for n in self.names)

    def miss_bytes(self) -> int:
        """Bytes one miss moves: the file's slices on the CPU (at the file's dtype, whatever the model's), the
        pinned copy (at the model's dtype) on CUDA."""
        if self.pinned is not None:
            return sum(t.numel() * t.element_size() for t in self.pinned[0])
        return self.expert_bytes()

    def miss_dtype(self) -> torch.dtype:
        """The dtype of what a miss moves (the file's on the CPU, the model's on CUDA)."""
        return self.dtype if self.pinned is not None else self.source.tensors[f"{self.prefix}gate_up_proj"].dtype

    def resident_bytes(self) -> int:
        """Bytes of N resident experts in the model's dtype (the budget, whether or not the cache is full yet)."""
        size = self.dtype.itemsize
        per = sum(self.source.tensors[f"{self.prefix}{n}"].slice(0)[1] // self.source.tensors[
            f"{self.prefix}{n}"].dtype.itemsize * size for n in self.names)
        return min(self.cache.capacity, self.n_experts) * per

    def fetch(self, e: int) -> ExpertWeights:
        """Expert e from the slow tier (no cache, no metrics)."""
        if self.pinned is not None:
            parts = [t.to(self.device, non_blocking=True) for t in self.pinned[e]]
            torch.cuda.synchronize(self.device)  # the miss's time is the copy's
        else:
            parts = [self._read(n, e).to(self.device) for n in self.names]
        w = dict(zip(self.names, parts, strict=True))
        # leading dimension 1: ExpertWeights.one(0, x) computes w[0] exactly as the stacked weights' w[e]
        return ExpertWeights(w["gate_up_proj"][None], w["down_proj"][None],
                             w["gate_up_proj_bias"][None] if "gate_up_proj_bias" in w else None,
                             w["down_proj_bias"][None] if "down_proj_bias" in w else None, self.activation)

    def order(self, experts: list[int]) -> list[int]:
        """A step's experts with the resident ones first: they run before any miss can evict them (a step that
        touches more experts than are resident would otherwise, in expert order, evict under LRU the very experts
        it reaches next). This is also what an offloading server does: compute the cached experts while the
        missing ones are fetched."""
        return sorted(experts, key=lambda e: e not in self.cache)

    def one(self, e: int, x_ND: torch.Tensor) -> torch.Tensor:
        hit, _ = self.cache.access(e)
        if hit:
            self._hits += 1
        else:
            t0 = time.perf_counter()
            self.cache.admit(e, self.fetch(e))
            self._miss_seconds.append(time.perf_counter() - t0)
            self._bytes += self.miss_bytes()
        return self.cache.get(e).one(0, x_ND)

    def compute_metrics(self) -> OffloadMetrics:
        return OffloadMetrics(self._hits, len(self._miss_seconds), self._bytes, tuple(self._miss_seconds))

    def reset_metrics(self) -> None:
        self._hits, self._bytes, self._miss_seconds = 0, 0, []


@dataclass
class Offload:
    """The stores installed in one model (one per MoE layer, in layer order) and the file they read."""

    file: ExpertFile
    stores: list[OffloadedExperts] = field(default_factory=list)
    resident: int = 0
    policy: str = "lru"

    def compute_metrics(self) -> OffloadMetrics:
        return total(s.compute_metrics() for s in self.stores)

    def reset_metrics(self) -> None:
        for s in self.stores:
            s.reset_metrics()

    def expert_bytes(self) -> int:
        """Bytes of one expert (of the first MoE layer) as the file stores them."""
        return self.stores[0].expert_bytes()

    def miss_bytes(self) -> int:
        """Bytes one miss (of the first MoE layer) moves (OffloadedExperts.miss_bytes)."""
        return self.stores[0].miss_bytes()

    def miss_dtype(self) -> torch.dtype:
        return self.stores[0].miss_dtype()

    def resident_bytes(self) -> int:
        """Bytes the caches hold when full: N experts per layer, in the model's dtype."""
        return sum(s.resident_bytes() for s in self.stores)

    def close(self) -> None:
        self.file.close()


def check_resident(resident: int, model_spec) -> None:
    """`resident` experts per layer must cover one token's top-k and not exceed any MoE layer's expert count."""
    layers = [layer.moe for layer, _ in model_spec.layer_groups if layer.moe is not None]
    if not layers:
        raise MoelabError(f"{model_spec.name} is a dense model: it has no routed experts to offload")
    top_k = max(m.top_k for m in layers)
    fewest = min(m.n_experts for m in layers)
    if isinstance(resident, bool) or not isinstance(resident, int) or not top_k <= resident <= fewest:
        raise MoelabError(f"--resident must be an integer from the top-k ({top_k}) to the experts of the smallest MoE "
                          f"layer ({fewest}), got {resident!r}")


def offload_experts(model: torch.nn.Module, weights_file: str | Path, resident: int, policy: str = "lru"
                    ) -> Offload:
    """Replace every MoE layer's stacked experts in `model` (a moelab TransformerLM built from `weights_file`'s
    run, in its dtype and on its device) by an OffloadedExperts store reading `weights_file`; returns them."""
    from moelab.nn.moe import MoELayer

    check_resident(resident, model.spec)
    source = ExpertFile(weights_file)
    out = Offload(source, resident=resident, policy=policy)
    try:
        for name, layer in model.named_modules():
            if not isinstance(layer, MoELayer):
                continue
            if layer.expert_store is not None:
                raise MoelabError(f"{name}: its experts are already a store (a quantized run?); offloading reads "
                                  "stacked float weights")
            prefix = f"{name}.".removeprefix("_orig_mod.")
            entry = source.tensors.get(f"{prefix}gate_up_proj")
            want = tuple(layer.gate_up_proj.shape)
            if entry is None or entry.shape != want:
                got = "absent" if entry is None else list(entry.shape)
                raise MoelabError(f"{weights_file}: {prefix}gate_up_proj is {got}, the model's is {list(want)}")
            store = OffloadedExperts(source, prefix, layer.spec.n_experts, resident, policy,
                                     layer.gate_up_proj.dtype, layer.gate_up_proj.device, layer.activation)
            layer.set_expert_store(store)
            out.stores.append(store)
    except BaseException:
        source.close()
        raise
    return out


# ---------------------------------------------------------------- cold versus warm


@dataclass(frozen=True)
class ReadProbe:
    """Cold (evicted, then read) and warm (read again) times of the same expert's bytes, medians over repeats,
    and a one-page cold read (the latency)."""

    bytes: int
    cold_s: float
    warm_s: float
    small_cold_s: float
    repeats: int
    filesystem: str

    @property
    def cold_bytes_per_s(self) -> float:
        return self.bytes / self.cold_s

    @property
    def warm_bytes_per_s(self) -> float:
        return self.bytes / self.warm_s

    @property
    def ratio(self) -> float:
        return self.cold_s / self.warm_s

    @property
    def link_bandwidth(self) -> float:
        """The link as latency + bytes / bandwidth through the cold expert read: bytes / (cold - latency)."""
        rest = self.cold_s - self.small_cold_s
        return self.bytes / rest if rest > 0 else self.cold_bytes_per_s

    def warning(self) -> str | None:
        if self.ratio < COLD_WARM_MIN_RATIO:
            return (f"a cold read of an expert ({self.cold_s * 1e6:.0f} us) is not clearly slower than a warm one "
                    f"({self.warm_s * 1e6:.0f} us) on this {self.filesystem} file system: posix_fadvise did not evict "
                    "the pages or the device is as fast as memory, so a miss here costs no device read")
        return None

    def to_dict(self) -> dict:
        return {"bytes": self.bytes, "cold_s": self.cold_s, "warm_s": self.warm_s, "cold_over_warm": self.ratio,
                "cold_bytes_per_s": self.cold_bytes_per_s, "warm_bytes_per_s": self.warm_bytes_per_s,
                "small_read_bytes": SMALL_READ, "small_cold_s": self.small_cold_s,
                "link_bandwidth_bytes_per_s": self.link_bandwidth, "repeats": self.repeats,
                "filesystem": self.filesystem, "warning": self.warning()}


COLD_WARM_MIN_RATIO = 1.5


def filesystem(path: str | Path) -> str:
    """The type of the file system holding `path` (from /proc/mounts: the longest mount point above it)."""
    real = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                point = parts[1].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, kind = point, f"{parts[2]} ({parts[0]} on {point})"
    except OSError:
        pass
    return kind


def read_probe(path: str | Path, tensor_prefix: str | None = None, expert: int = 0, repeats: int = 9) -> ReadProbe:
    """Time reading expert `expert` of the MoE layer `tensor_prefix` (default: the file's first) cold, then warm,
    `repeats` times (medians), the way a miss reads it; and a cold one-page read."""
    source = ExpertFile(path)
    try:
        if tensor_prefix is None:
            names = sorted(n for n in source.tensors if n.endswith(".gate_up_proj"))
            if not names:
                raise MoelabError(f"{path}: no stacked experts (*.gate_up_proj) to read")
            tensor_prefix = names[0].removesuffix("gate_up_proj")
        stacked = source.tensors.get(f"{tensor_prefix}gate_up_proj")
        if stacked is None:
            raise MoelabError(f"{path}: no stacked experts {tensor_prefix}gate_up_proj")
        if isinstance(expert, bool) or not isinstance(expert, int) or not 0 <= expert < stacked.shape[0]:
            raise MoelabError(f"expert must be in [0, {stacked.shape[0] - 1}], got {expert!r}")
        slices = [source.tensors[f"{tensor_prefix}{n}"].slice(expert)
                  for n in EXPERT_TENSORS if f"{tensor_prefix}{n}" in source.tensors]
        cold, warm, small = [], [], []
        for _ in range(repeats):
            for dest, is_cold in ((cold, True), (warm, False)):
                t0 = time.perf_counter()
                for offset, nbytes, _ in slices:
                    source.read(offset, nbytes, cold=is_cold)
                dest.append(time.perf_counter() - t0)
            offset = slices[0][0] // PAGE * PAGE
            t0 = time.perf_counter()
            source.read(offset, SMALL_READ, cold=True)
            small.append(time.perf_counter() - t0)
        return ReadProbe(sum(s[1] for s in slices), statistics.median(cold), statistics.median(warm),
                         statistics.median(small), repeats, filesystem(path))
    finally:
        source.close()
