"""Microbenchmarks of one machine: matmul FLOP/s, streaming and GEMV bandwidth, and moelab's per-op overheads.

Each probe returns plain numbers (and its raw samples) for `calibrate` to turn into a hardware spec.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from moelab.bench.timing import cpu_profile, median_time, repeat

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# (M, K, N): square GEMMs and the tall-skinny shapes of a prefill (many tokens x modest widths).
# Transformer-shaped GEMMs from width 128 to 2048 (tokens x d_model -> FFN or attention widths).
GEMM_SHAPES = [(2048, 128, 512), (2048, 512, 128), (1024, 256, 1024), (4096, 512, 2048), (4096, 2048, 512),
               (1024, 1024, 1024), (2048, 2048, 2048)]
QUICK_GEMM_SHAPES = [(2048, 128, 512), (1024, 256, 1024), (1024, 1024, 1024)]


def matmul_flops(device: str, dtype: str, quick: bool = False) -> dict:
    """Achieved FLOP/s of `linear` (x @ W^T) over several shapes: per shape, and their median."""
    dt = TORCH_DTYPES[dtype]
    per_shape = {}
    with torch.inference_mode():
        for m, k, n in QUICK_GEMM_SHAPES if quick else GEMM_SHAPES:
            x = torch.randn(m, k, device=device).to(dt)
            w = torch.randn(n, k, device=device).to(dt)
            s = median_time(lambda x=x, w=w: torch.nn.functional.linear(x, w), device, min_reps=3 if quick else 5,
                            min_time=0.1 if quick else 0.3, warmup=1)
            per_shape[f"{m}x{k}x{n}"] = 2.0 * m * k * n / s
    return {"flops": statistics.median(per_shape.values()), "per_shape_flops": per_shape}


def stream_bandwidth(device: str, nbytes: int) -> dict:
    """Bytes/s of one full read (a sum) of a buffer larger than the caches."""
    x = torch.ones(nbytes // 4, device=device)
    samples = repeat(lambda: x.sum(), device, min_reps=5, min_time=0.2, warmup=1)
    return {"bandwidth": nbytes / statistics.median(samples), "samples": [nbytes / s for s in samples],
            "bytes": nbytes}


def gemv_bandwidth(device: str, weight_bytes: int, dtype: str = "fp32", rows=(2, 4, 8), quick: bool = False) -> dict:
    """Weight bytes/s that decode-shaped products (a few rows times a big weight matrix) achieve."""
    dt = TORCH_DTYPES[dtype]
    size = torch.tensor([], dtype=dt).element_size()
    n = int((weight_bytes / size) ** 0.5)
    w = torch.randn(n, n, device=device).to(dt)
    per_rows = {}
    with torch.inference_mode():
        for m in rows:
            x = torch.randn(m, n, device=device).to(dt)
            s = median_time(lambda x=x: torch.nn.functional.linear(x, w), device, min_reps=5 if quick else 9,
                            min_time=0.05 if quick else 0.2, warmup=2)
            per_rows[str(m)] = n * n * size / s
    return {"bandwidth": statistics.median(per_rows.values()), "per_rows": per_rows, "weight_bytes": n * n * size}


RESIDUAL_RESOLUTION = 0.05  # a share of a measured time below which a difference of two timings is noise
FRESH_PAGE_SIZES_MIB = (4, 8, 16, 31, 32, 33, 64, 128)  # around glibc's largest mmap threshold (32 MiB)


def fresh_pages(device: str, sizes_mib=FRESH_PAGE_SIZES_MIB, quick: bool = False) -> dict:
    """The cost of eager tensors that the allocator maps fresh from the OS (every page faults on first touch):
    per size, an out-of-place product (a fresh output, as an eager forward allocates) minus the same product
    into a preallocated output. bandwidth: output bytes / extra seconds, the median over the sizes that fault;
    threshold_bytes: the largest size below which none faults (0: every size faults). No fault anywhere
    (extra under a quarter of the large sizes' or the allocator caches): bandwidth 0."""
    extra = {}
    with torch.inference_mode():
        for mib in sizes_mib:
            n = int(mib * 2**20) // 4
            x, y, o = (torch.randn(n, device=device) for _ in range(3))
            reps = dict(min_reps=5, min_time=0.05 if quick else 0.15, warmup=2)
            fresh = median_time(lambda x=x, y=y: x * y, device, **reps)
            reused = median_time(lambda x=x, y=y, o=o: torch.mul(x, y, out=o), device, **reps)
            extra[mib] = max(fresh - reused, 0.0) / (n * 4)
            del x, y, o
    large = statistics.median(extra[m] for m in sorted(sizes_mib)[-2:])  # seconds per byte where it faults
    faults = {m: extra[m] > large / 4 for m in sizes_mib}
    if large * 100e9 < 1 or faults[min(sizes_mib)] == faults[max(sizes_mib)] == False:  # noqa: E712
        return {"bandwidth": 0.0, "threshold_bytes": 0.0, "extra_s_per_gb": {m: e * 1e9 for m, e in extra.items()}}
    below = [m for m in sorted(sizes_mib) if not any(faults[k] for k in sizes_mib if k <= m)]
    threshold = below[-1] * 2**20 if below else 0.0
    faulting = [extra[m] for m in sizes_mib if m * 2**20 > threshold]
    return {"bandwidth": 1.0 / statistics.median(faulting), "threshold_bytes": float(threshold),
            "extra_s_per_gb": {m: e * 1e9 for m, e in extra.items()}}


def attention(device: str, dtype: str = "fp32", quick: bool = False, kv_bytes: int = 64 * 2**20) -> dict:
    """scaled_dot_product_attention as moelab calls it:
    - causal prefill FLOP/s (FLOPs as the engine counts them: 4*head_dim per pair of the causal triangle);
    - decode KV-read bytes/s: one query per sequence against `kv_bytes` of cache (more than the last-level
      cache, as a serving batch's KV is), held as views of larger buffers like moelab's KV cache;
    - the fixed cost per (sequence, head): 64 sequences x 1 head over 8 cached positions, divided by 64."""
    F = torch.nn.functional
    dt = TORCH_DTYPES[dtype]
    b, h, hd, t = 4, 4, 64, 256 if quick else 512
    reps = dict(min_reps=5, min_time=0.1 if quick else 0.3)
    with torch.inference_mode():
        q, k, v = (torch.randn(b, h, t, hd, device=device).to(dt) for _ in range(3))
        s = median_time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), device, **reps)
        prefill_flops = b * h * 4 * hd * t * (t + 1) / 2 / s
        size = torch.tensor([], dtype=dt).element_size()
        b, h, n = 16, 8, max(64, kv_bytes // (2 * 16 * 8 * hd * size))
        kbuf, vbuf = (torch.randn(b, h, n + 16, hd, device=device).to(dt) for _ in range(2))
        q1 = torch.randn(b, h, 1, hd, device=device).to(dt)
        k1, v1 = kbuf[:, :, :n], vbuf[:, :, :n]
        s = median_time(lambda: F.scaled_dot_product_attention(q1, k1, v1), device, **reps)
        kv = 2 * b * h * n * hd * size
        small = [torch.randn(64, 1, 16, hd, device=device).to(dt) for _ in range(3)]
        q2, k2, v2 = small[0][:, :, :1], small[1][:, :, :8], small[2][:, :, :8]
        pair = median_time(lambda: F.scaled_dot_product_attention(q2, k2, v2), device, min_reps=20,
                           min_time=0.05) / 64
    return {"prefill_flops": prefill_flops, "decode_bandwidth": kv / s, "decode_kv_bytes": kv, "pair_s": pair}


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache Linux reports (0 where unknown)."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip()
        mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * mult)
        except ValueError:
            continue
    return max(sizes, default=0)


# --- moelab's fixed costs: tiny modules whose compute is negligible, so their time is dispatch overhead ---

def _tiny_spec(layers: int, moe: bool):
    from moelab.spec.hf import spec_from_config
    from moelab.spec.transform import as_moe

    spec = spec_from_config({"model_type": "llama", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": layers,
                             "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 16,
                             "max_position_embeddings": 4096}, f"probe-{layers}")
    return as_moe(spec, 8, 1) if moe else spec


def _decode_step_fn(spec, device: str, dtype: torch.dtype):
    """A closure running one decode step (batch 1) of a tiny model; the cache is rewound to 8 tokens each call."""
    from moelab.nn.model import build_model

    torch.manual_seed(0)
    model = build_model(spec).to(device=device, dtype=dtype).eval()
    ids = torch.randint(0, spec.vocab_size, (1, 8), device=device)
    cache = model.new_cache(64)
    with torch.inference_mode():
        model(ids, cache)

    def step():
        cache.filled = [8] * spec.n_layers
        with torch.inference_mode():
            model(ids[:, :1], cache)
    return step


def _moe_fns(device: str, dtype: torch.dtype):
    """A tiny MoE layer whose router sends token i to expert i, and a dense SwiGLU of the same size."""
    from moelab.nn.layers import SwiGLU
    from moelab.nn.moe import MoELayer
    from moelab.spec.model import MoESpec

    e = d = 16
    layer = MoELayer(d, MoESpec(n_experts=e, top_k=1, expert_ffn=16, router="softmax_topk")).to(device, dtype).eval()
    ffn = SwiGLU(d, 16).to(device, dtype).eval()
    with torch.no_grad():
        layer.gate.weight.copy_(10.0 * torch.eye(e, d))
    x = torch.eye(e, d, device=device, dtype=dtype)[None]  # (1, 16 tokens, d): token i -> expert i

    def run(mod, t):
        def fn():
            with torch.inference_mode():
                mod(x[:, :t])
        return fn
    return {"ffn": run(ffn, 1), "moe_1": run(layer, 1), f"moe_{e}": run(layer, e)}, e


def overheads(device: str = "cpu", dtype: str = "fp32", quick: bool = False, rounds: int | None = None) -> dict:
    """Fixed seconds per decode step, per layer, per MoE layer and per routed expert touched, of moelab's
    TransformerLM on this machine: tiny models (d=16) whose FLOPs and bytes are negligible, timed in
    interleaved rounds. layer = (t(5 layers) - t(1 layer)) / 4; step = t(1 layer) - layer;
    expert = (t(MoE, 16 tokens to 16 experts) - t(MoE, 1 token)) / 15; moe_layer = t(MoE, 1) - t(SwiGLU) - expert.
    """
    from moelab.bench.timing import timed

    dt = TORCH_DTYPES[dtype]
    fns = {"model_1": _decode_step_fn(_tiny_spec(1, False), device, dt),
           "model_5": _decode_step_fn(_tiny_spec(5, False), device, dt)}
    moe_fns, e = _moe_fns(device, dt)
    fns.update(moe_fns)
    rounds = rounds or (5 if quick else 11)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].extend(timed(fn, device) for _ in range(10 if quick else 20))
    med = {k: statistics.median(v) for k, v in times.items()}
    layer = max(0.0, (med["model_5"] - med["model_1"]) / 4)
    expert = max(0.0, (med[f"moe_{e}"] - med["moe_1"]) / (e - 1))
    return {
        "step_s": max(0.0, med["model_1"] - layer),
        "layer_s": layer,
        "moe_layer_s": max(0.0, med["moe_1"] - med["ffn"] - expert),
        "expert_s": expert,
        "raw_median_s": med,
        "dtype": dtype,
    }


def op_overhead(device: str = "cpu") -> float:
    """Seconds of one tiny elementwise op: the dispatch floor."""
    z = torch.zeros(1, device=device)
    return median_time(lambda: z + z, device, min_reps=200, min_time=0.05)


# --- in situ: the op classes of a real eager forward (cold caches, fresh allocations), by torch.profiler ---

def _probe_model_spec():
    from moelab.spec.hf import spec_from_config

    return spec_from_config({"model_type": "llama", "vocab_size": 2048, "hidden_size": 256, "num_hidden_layers": 4,
                             "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 1024,
                             "max_position_embeddings": 4096}, "probe-d256")


def _op_seconds(prof, steps: int) -> dict[str, float]:
    """Self seconds per step of matmuls, attention and everything else that the profiler saw."""
    out = {"mm": 0.0, "attention": 0.0, "other": 0.0}
    for e in prof.key_averages():
        if e.key in ("aten::mm", "aten::addmm", "aten::bmm"):
            kind = "mm"
        elif "scaled_dot_product" in e.key:
            kind = "attention"
        elif e.key.startswith("aten::"):
            kind = "other"
        else:
            continue
        out[kind] += e.self_cpu_time_total * 1e-6 / steps
    return out


def in_situ(device: str = "cpu", quick: bool = False) -> dict:
    """Achieved rates of each op class inside moelab's eager forward of a d=256, 4-layer probe model (not a
    model that is benched): prefill of 2 x 512 tokens -> matmul FLOP/s, attention FLOP/s and elementwise
    bytes/s (bytes as cost.roofline counts them); decode at batch 16 -> GEMM-path weight bytes/s and KV-read
    bytes/s (after the FLOP and per-head terms). Times are the profiler's self times per op class, the median
    of a few rounds."""
    from moelab.bench.measure import prefill_last
    from moelab.cost.eager import eager_elements_per_token
    from moelab.cost.flops import causal_attention_flops
    from moelab.cost.params import count_params
    from moelab.nn.model import build_model

    spec = _probe_model_spec()
    p = count_params(spec)
    torch.manual_seed(0)
    model = build_model(spec).to(device).eval()
    b, t, steps, rounds = 2, 512, 2, 2 if quick else 4

    def best(run, n) -> dict[str, float]:
        """Per op class, the median per-step seconds over `rounds` profiled rounds (as bench takes medians)."""
        seen = []
        for _ in range(rounds):
            with cpu_profile() as prof:
                for _ in range(n):
                    run()
            seen.append(_op_seconds(prof, n))
        return {k: statistics.median(x[k] for x in seen) for k in seen[0]}

    ids = torch.randint(0, spec.vocab_size, (b, t), device=device)
    with torch.inference_mode():
        prefill_last(model, ids, model.new_cache(t + 64))
        pre = best(lambda: prefill_last(model, ids, model.new_cache(t + 64)), steps)
    mm_flops = 2.0 * p.matmul_active * b * t + 2.0 * spec.d_model * spec.vocab_size * b
    attn_flops = b * causal_attention_flops(spec, t)
    gemm = mm_flops / pre["mm"]
    elementwise = b * t * eager_elements_per_token(spec) * 4.0 / pre["other"]
    attention_flops = attn_flops / pre["attention"]
    # decode at batch 16 over a 256-token context
    b, ctx = 16, 256
    with torch.inference_mode():
        cache = model.new_cache(ctx + 64)
        prefill_last(model, torch.randint(0, spec.vocab_size, (b, ctx), device=device), cache)
        tok = torch.randint(0, spec.vocab_size, (b, 1), device=device)
        for _ in range(2):
            cache.filled = [ctx] * spec.n_layers
            model(tok, cache)

        def step():
            cache.filled = [ctx] * spec.n_layers
            model(tok, cache)
        dec = best(step, 4)
    weights = 4.0 * (p.always_read)
    # The weight-read share of the decode matmuls is what is left after their FLOPs at the prefill GEMM rate.
    # A residual within the probe's noise (under RESIDUAL_RESOLUTION of the matmul time) is taken at that
    # floor: a lower bound on the time, so an upper bound on the bandwidth (a bare residual of ~0 once gave
    # 18.9 PB/s, which no file should hold).
    mm_residual_s = dec["mm"] - b * 2.0 * (p.matmul_active + spec.d_model * spec.vocab_size) / gemm
    mm_weights_s = max(mm_residual_s, RESIDUAL_RESOLUTION * dec["mm"])
    kv = 2.0 * spec.n_layers * b * ctx * spec.attention.n_kv_heads * spec.attention.head_dim * 4.0
    return {"gemm_flops": gemm, "attention_flops": attention_flops, "elementwise_bandwidth": elementwise,
            "gemm_weight_bandwidth": weights / mm_weights_s, "attention_bandwidth": kv / dec["attention"],
            "gemm_weight_bandwidth_resolved": mm_residual_s > RESIDUAL_RESOLUTION * dec["mm"],
            "prefill_op_seconds": pre, "decode_op_seconds": dec, "weights_bytes": weights, "kv_bytes": kv}


MOE_SITU_DECODE_BATCHES = (1, 4, 16, 64)  # 2 .. 8 experts touched per layer, 1 .. 16 rows each
MOE_SITU_PREFILL_TOKENS = 128  # one prompt: every expert touched, ~32 rows each


def fit_overheads(points: list[tuple[float, float, float, float]]) -> tuple[float, float]:
    """(per-MoE-layer, per-touched-expert) seconds L, X >= 0 that best explain residuals r = n * (L + U * X)
    (n MoE layers, U experts touched per layer) by least squares relative to each point's measured time m:
    points are (r, n, U, m). One of them clamped at 0 where the free fit would make it negative."""
    def solve(use_l: bool, use_x: bool) -> tuple[float, float]:
        # weighted normal equations of r/m = (n/m) L + (n U/m) X
        a = [(n / m, n * u / m, r / m) for r, n, u, m in points]
        sll = sum(x * x for x, _, _ in a)
        sxx = sum(y * y for _, y, _ in a)
        slx = sum(x * y for x, y, _ in a)
        slr = sum(x * z for x, _, z in a)
        sxr = sum(y * z for _, y, z in a)
        if use_l and use_x:
            det = sll * sxx - slx * slx
            if det > 0:
                return (slr * sxx - sxr * slx) / det, (sxr * sll - slr * slx) / det
            use_x = False
        if use_l:
            return (slr / sll if sll else 0.0), 0.0
        return 0.0, (sxr / sxx if sxx else 0.0)

    layer, expert = solve(True, True)
    if layer < 0 or expert < 0:
        candidates = [solve(True, False), solve(False, True)]
        candidates = [(max(lv, 0.0), max(xv, 0.0)) for lv, xv in candidates]

        def loss(c):
            return sum(((r - n * (c[0] + u * c[1])) / m) ** 2 for r, n, u, m in points)
        layer, expert = min(candidates, key=loss)
    return layer, expert


def moe_in_situ(device: str, hw_partial: dict, quick: bool = False) -> dict:
    """The MoE overheads of moelab's eager forward in situ: a d=192, 4-layer, 8-expert top-2 probe model (not a
    benched model), decode steps at batches 1, 4, 16 and 64 and a 128-token prefill, each minus the engine's
    prediction with this machine's other calibrated figures and zero MoE overheads; the per-MoE-layer and the
    per-touched-expert overheads are the least-squares fit of those residuals (fit_overheads), so they hold at
    the rows per expert real batches bring: on a 2-core machine an expert of d=128 costs ~40 us up to 8 rows but
    ~150 us from 16 (the GEMM packs its weights), which the tiny-module probe (`overheads`: d=16, one token per
    expert) never reaches. Step times are the median over interleaved rounds, as bench takes medians."""
    from moelab.bench.measure import prefill_last
    from moelab.bench.timing import timed
    from moelab.cost.roofline import Workload, decode_step, prefill
    from moelab.nn.model import build_model
    from moelab.spec.hardware import hardware_from_dict
    from moelab.spec.hf import spec_from_config
    from moelab.spec.transform import as_moe

    spec = as_moe(spec_from_config({"model_type": "llama", "vocab_size": 2048, "hidden_size": 192,
                                    "num_hidden_layers": 4, "num_attention_heads": 3, "num_key_value_heads": 3,
                                    "intermediate_size": 384, "max_position_embeddings": 4096}, "probe"), 8, 2)
    hw = hardware_from_dict("probe", {**hw_partial, "moe_layer_overhead_us": 0, "expert_overhead_us": 0})
    torch.manual_seed(0)
    model = build_model(spec).to(device).eval()
    ctx, rounds, steps = 64, 3 if quick else 6, 8
    gen = torch.Generator().manual_seed(0)
    keys = [("decode", b) for b in MOE_SITU_DECODE_BATCHES] + [("prefill", 1)]
    caches, round_medians = {}, {k: [] for k in keys}
    with torch.inference_mode():
        for phase, b in keys:
            if phase == "decode":
                caches[b] = model.new_cache(ctx + 16)
                model(torch.randint(0, spec.vocab_size, (b, ctx), generator=gen).to(device), caches[b])
        prompt = torch.randint(0, spec.vocab_size, (1, MOE_SITU_PREFILL_TOKENS), generator=gen).to(device)
        for r in range(rounds + 1):  # interleaved rounds; the first warms up
            for phase, b in keys:
                times = []
                for _ in range(steps if phase == "decode" else max(2, steps // 4)):
                    if phase == "prefill":
                        cache = model.new_cache(MOE_SITU_PREFILL_TOKENS + 16)
                        times.append(timed(lambda cache=cache: prefill_last(model, prompt, cache), device))
                        continue
                    tok = torch.randint(0, spec.vocab_size, (b, 1), generator=gen).to(device)
                    caches[b].filled = [ctx] * spec.n_layers

                    def step(tok=tok, cache=caches[b]):
                        model(tok, cache)
                    times.append(timed(step, device))
                if r:
                    round_medians[(phase, b)].append(statistics.median(times))
    n = spec.n_moe_layers
    points, measured, residual, touched = [], {}, {}, {}
    for phase, b in keys:
        name = f"{phase}_{b}"
        measured[name] = statistics.median(round_medians[(phase, b)])
        if phase == "decode":
            pred = decode_step(spec, hw, Workload(batch=b, prompt=ctx, gen=2, dtype="fp32", kv_dtype="fp32"), ctx)
        else:
            pred = prefill(spec, hw, Workload(batch=1, prompt=MOE_SITU_PREFILL_TOKENS, gen=1, dtype="fp32",
                                              kv_dtype="fp32"))
        residual[name], touched[name] = measured[name] - pred.seconds, pred.distinct_experts_per_layer
        points.append((residual[name], n, touched[name], measured[name]))
    layer, expert = fit_overheads(points)
    return {"moe_layer_s": layer, "expert_s": expert, "tiny_module_expert_s": hw_partial["expert_overhead_us"] * 1e-6,
            "measured_s": measured, "residual_s": residual, "experts_touched_per_layer": touched}
