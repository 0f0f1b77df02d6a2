"""Seed 001's inference claims (the performance analysis): its MoE 56B, the latency and throughput tables, the
inference memory table, the energy table and the memory-saving techniques, against the engine on the seed's own
setups (engine.py) and the study's served measurements."""

from __future__ import annotations

from moelab.claims import engine as E
from moelab.claims.evidence import TIME_NOISE, Evidence, NoEvidence, number
from moelab.claims.registry import BASIS_ARITH, BASIS_EXACT, BASIS_MODELLED, BASIS_TINY, claim, out_of_scope
from moelab.claims.rules import (
    APPROX,
    APPROX_RANGE,
    ARITH,
    EXACT,
    MODELLED,
    MODELLED_CHANGE,
    MODELLED_RANGE,
    NOT_REPRO,
    ROUNDED,
    SIGN,
    Above,
    Check,
    Within,
    quoted,
    quoted_range,
    table_column,
)
from moelab.cost.capacity import capacity
from moelab.cost.economics import serving_economics
from moelab.cost.memory import inference_memory, kv_cache_bytes, model_weight_bytes, prefill_activation_bytes
from moelab.cost.mitigations import pruned
from moelab.cost.offload import offloaded_decode
from moelab.cost.params import count_params
from moelab.cost.plan import Plan

S = "001"
LATENCY = (f"A100-80GB, batch 1, fp16, {E.LENGTHS} (lengths assumed): the mean decode step; the "
           "dense on one GPU, the MoE on the fewest that hold it (its fp16 weights exceed one 80 GB GPU)")
THROUGHPUT = (f"4 x A100-80GB, batch 32, fp16, {E.LENGTHS}: decode tokens/s of each model's best "
              "plan on the 4 GPUs (cost.parallel)")


def _latency(kind: str):
    hw = E.hardware(E.A100)
    if kind == "dense":
        return E.on_plan(E.seeds_dense(), hw, int(E.LATENCY_BATCH), "tp1")
    return E.fewest(E.seeds_moe(), hw, int(E.LATENCY_BATCH))


def _moe_why(extra: str = "") -> str:
    return f"the seeds' MoE as Mistral-7B with 8 experts top-2 (Mixtral-8x7B's shape){extra}"


# --- the setup ---------------------------------------------------------------------------------------------

@claim("moe-56b-total", S, E.MOE_SETUP, "56B", "B params", ROUNDED, "Mistral-7B with its FFN as 8 experts, top-2 "
       "(spec.transform.as_moe)", BASIS_EXACT)
def _moe_total(ev: Evidence) -> Check:
    p = count_params(E.seeds_moe())
    return Check(p.total / 1e9, f"{p.total:,}: 8 x 7B counts attention and embeddings eight times; an MoE of 7B FFN "
                                f"experts shares them ({p.active / 1e9:.1f}B active)")


@claim("moe-56b-similar-active", S, "MoE models show higher latency despite activating similar parameters.", None,
       "x the dense model's active parameters", Within("confirmed if the MoE's active parameters are within ±25% of "
       "the dense model's (\"similar\")", 0.25, 1.0), "the seeds' Dense 7B (mistral-7b) and MoE 56B (K=2)",
       BASIS_EXACT)
def _similar_active(ev: Evidence) -> Check:
    moe, dense = count_params(E.seeds_moe()).active, count_params(E.seeds_dense()).active
    return Check(moe / dense, f"{moe / 1e9:.1f}B active against {dense / 1e9:.2f}B: top-2 of 8 FFN experts is two "
                              "FFNs per token")


@claim("moe-56b-single-a100", S, E.LATENCY_SETUP, "Single GPU", "GPUs", EXACT,
       "the seeds' MoE 56B (K=2) at fp16, batch 1: the fewest A100-80GB GPUs on which a plan fits", BASIS_MODELLED)
def _single_a100(ev: Evidence) -> Check:
    r = _latency("moe")
    w = model_weight_bytes(E.seeds_moe(), E.SEEDS_DTYPE).total
    hw = E.hardware(E.A100)
    usable = hw.memory_bytes * hw.memory_utilization
    return Check(r.gpus, f"{w / 1e9:.1f} GB of fp16 weights (the seed's own table: 112 GB) against "
                         f"{usable / 1e9:.0f} GB usable of {hw.memory_bytes / 1e9:.0f} GB: {r.plan}")


# --- latency -----------------------------------------------------------------------------------------------

LATENCY_MEDIAN = "| Median Latency | 12ms | 18ms | +50% |"


MEAN_FOR_MEDIAN = "ms per token (modelled mean, against the seed's median)"


@claim("latency-median-dense", S, LATENCY_MEDIAN, "12ms", MEAN_FOR_MEDIAN, MODELLED, "mistral-7b, " + LATENCY
       + "; the engine models a mean step, held against the seed's median", BASIS_MODELLED)
def _latency_dense(ev: Evidence) -> Check:
    r = _latency("dense")
    return Check(r.decode.seconds * 1e3, f"{r.plan}, {r.decode.bound}-bound (a steady batch-1 step's median is "
                                         "close to its mean)")


@claim("latency-median-moe", S, LATENCY_MEDIAN, "18ms", MEAN_FOR_MEDIAN, MODELLED, _moe_why(", ") + LATENCY
       + "; the engine models a mean step, held against the seed's median", BASIS_MODELLED)
def _latency_moe(ev: Evidence) -> Check:
    r = _latency("moe")
    return Check(r.decode.seconds * 1e3, f"{r.plan}, {r.decode.bound}-bound")


@claim("latency-median-delta", S, LATENCY_MEDIAN, "+50%", "% (MoE over dense)", MODELLED_CHANGE,
       "the two rows above", BASIS_MODELLED)
def _latency_delta(ev: Evidence) -> Check:
    return Check(100 * (_latency("moe").decode.seconds / _latency("dense").decode.seconds - 1),
                 "MoE step over dense step")


def _served_change(ev: Evidence, key: str, concurrency: int | None, highest: bool = False) -> Check:
    dense, moe = ev.served("dense", concurrency, highest), ev.served("moe", concurrency, highest)
    d, m = number(dense.get(key), f"served dense {key}"), number(moe.get(key), f"served MoE {key}")
    # the row's own engine and device (serve.bench: "vLLM 0.x (cpu) on 127.0.0.1"), else the stage's basis
    where = next((w for w in (dense.get("source"), ev.stage("serving").get("basis")) if isinstance(w, str) and w),
                 "an engine the study did not name")
    return Check(100 * (m / d - 1), f"{where[:120]}, concurrency {dense['concurrency']}: {key} "
                                    f"{moe.get('model')} {m:.4g} vs {dense.get('model')} {d:.4g}",
                 noise=100 * TIME_NOISE)


SERVED = "the study's tiny dense and MoE served by vLLM on this machine, concurrency 1 (serving)"


@claim("latency-p95-delta", S, "| P95 Latency | 15ms | 28ms | +87% |", "+87%", "% (MoE over dense)", SIGN,
       SERVED + ": TPOT p95", BASIS_TINY)
def _p95(ev: Evidence) -> Check:
    return _served_change(ev, "tpot_ms_p95", 1)


@claim("latency-p99-delta", S, "| P99 Latency | 18ms | 42ms | +133% |", "+133%", "% (MoE over dense)", SIGN,
       SERVED + ": TPOT p99", BASIS_TINY)
def _p99(ev: Evidence) -> Check:
    return _served_change(ev, "tpot_ms_p99", 1)


ROUTING, AGGREGATION = "Router network adds 2-3ms per token", "Additional 1-2ms per forward pass"


def _router_ms() -> tuple[float, str]:
    r = _latency("moe")
    op = next(o for o in r.decode.operators if o.name == "router")
    return op.seconds * 1e3, r.plan


@claim("routing-overhead", S, ROUTING, "2-3ms", "ms per token", MODELLED_RANGE,
       _moe_why(", ") + LATENCY + ": the router operator (scores, top-k and the routing and permutation kernels)",
       BASIS_MODELLED, is_range=True)
def _routing(ev: Evidence) -> Check:
    ms, plan = _router_ms()
    hw = E.hardware(E.A100)
    return Check(ms, f"{E.seeds_moe().n_moe_layers} MoE layers x {hw.moe_layer_overhead_s * 1e6:.1f} us fixed "
                     f"(fitted on published serving runs) plus the score GEMMs, on {plan}")


@claim("aggregation-overhead", S, AGGREGATION, "1-2ms", "ms per token", NOT_REPRO, _moe_why(", ") + LATENCY,
       BASIS_MODELLED, is_range=True, sources=(ROUTING,))
def _aggregation(ev: Evidence) -> Check:
    ms, _ = _router_ms()
    (r_lo, r_hi), (a_lo, a_hi) = quoted_range("2-3ms", ROUTING), quoted_range("1-2ms", AGGREGATION)
    return Check(None, f"the engine has no separate combine cost: the weighted sum runs inside the per-MoE-layer "
                       f"routing and permutation kernels of the router operator ({ms:.1f} ms per step), which the "
                       f"seeds' routing and aggregation together ({r_lo + a_lo:g}-{r_hi + a_hi:g} ms) compare with")


# --- throughput --------------------------------------------------------------------------------------------

THROUGHPUT_ROW = "| Tokens/sec | 2,400 | 3,800 | +58% |"


def _throughput(kind: str):
    spec = E.seeds_dense() if kind == "dense" else E.seeds_moe()
    return E.best_on(spec, E.hardware(E.A100), int(E.THROUGHPUT_GPUS), int(E.THROUGHPUT_BATCH))


@claim("throughput-dense", S, THROUGHPUT_ROW, "2,400", "tokens/s", MODELLED, "mistral-7b, " + THROUGHPUT,
       BASIS_MODELLED)
def _throughput_dense(ev: Evidence) -> Check:
    r = _throughput("dense")
    return Check(r.tokens_per_second, f"{r.plan}, {r.decode.seconds * 1e3:.1f} ms per step")


@claim("throughput-moe", S, THROUGHPUT_ROW, "3,800", "tokens/s", MODELLED, _moe_why(", ") + THROUGHPUT,
       BASIS_MODELLED)
def _throughput_moe(ev: Evidence) -> Check:
    r = _throughput("moe")
    spec = E.seeds_moe()
    weights = model_weight_bytes(spec, E.SEEDS_DTYPE).total
    return Check(r.tokens_per_second, f"{r.plan}, {r.decode.seconds * 1e3:.1f} ms per step: {E.THROUGHPUT_BATCH:g} "
                                      f"sequences touch {r.decode.distinct_experts_per_layer:.1f} of "
                                      f"{spec.moe.n_experts} experts per layer, so every step reads nearly all "
                                      f"{weights / 1e9:.0f} GB")


@claim("throughput-delta", S, THROUGHPUT_ROW, "+58%", "% (MoE over dense)", MODELLED_CHANGE, "the two rows above",
       BASIS_MODELLED)
def _throughput_delta(ev: Evidence) -> Check:
    return Check(100 * (_throughput("moe").tokens_per_second / _throughput("dense").tokens_per_second - 1),
                 "MoE tokens/s over dense tokens/s")


@claim("throughput-delta-measured", S, THROUGHPUT_ROW, "+58%", "% (MoE over dense)", SIGN,
       "the study's tiny dense and MoE served by vLLM on this machine at its highest concurrency: output tokens/s",
       BASIS_TINY)
def _throughput_measured(ev: Evidence) -> Check:
    return _served_change(ev, "output_tokens_per_second", None, highest=True)


@claim("gpu-utilization", S, "| GPU Utilization | 92% | 76% | -16pp |", "92%", "%", NOT_REPRO, THROUGHPUT,
       BASIS_MODELLED)
def _utilisation(ev: Evidence) -> Check:
    hw = E.hardware(E.A100)
    mfu = [r.decode.flops / (hw.peak(E.SEEDS_DTYPE)[1] * r.decode.seconds) for r in map(_throughput, ("dense", "moe"))]
    return Check(None, "GPU utilisation (the share of time a kernel runs, nvidia-smi's figure) is not a figure the "
                       f"engine gives; its FLOPs utilisation at these points is {mfu[0]:.1%} (dense) and {mfu[1]:.1%} "
                       "(MoE): memory-bound decode")


@claim("throughput-per-gpu", S, "| Tokens/sec/GPU | 600 | 950 | +58% |", "600", "tokens/s per GPU", ARITH,
       "the seed's own tokens/s over its 4 GPUs", BASIS_ARITH, sources=(THROUGHPUT_ROW,))
def _per_gpu(ev: Evidence) -> Check:
    dense, moe = quoted("2,400", THROUGHPUT_ROW), quoted("3,800", THROUGHPUT_ROW)
    return Check(dense / E.THROUGHPUT_GPUS, f"{dense:,.0f} / {E.THROUGHPUT_GPUS:g}; MoE {moe / E.THROUGHPUT_GPUS:,.0f} "
                                            "(the seed's 950 too)", values=(dense / E.THROUGHPUT_GPUS,))


# Mistral-7B's sliding window (its config.json): a sequence's KV cache holds at most this many positions.
MAX_BATCH_CONTEXT = E.seeds_dense().layers[0].attention.sliding_window


@claim("dense-max-batch-32", S, "Dense: Max batch size = 32 (memory limited)", "= 32", "sequences", APPROX,
       f"mistral-7b on one A100-80GB, fp16, sequences of {MAX_BATCH_CONTEXT} tokens or more (its sliding window "
       "caps a sequence's KV cache there): the KV-limited concurrency (cost.capacity)", BASIS_MODELLED)
def _max_batch(ev: Evidence) -> Check:
    cap = capacity(E.seeds_dense(), E.hardware(E.A100), Plan(), E.SEEDS_DTYPE, E.SEEDS_DTYPE, MAX_BATCH_CONTEXT)
    return Check(cap.max_concurrency, f"{cap.kv_bytes_per_sequence / 1e9:.2f} GB of KV per sequence beside "
                                      f"{cap.weights_bytes / 1e9:.1f} GB of weights in {cap.usable_bytes / 1e9:.0f} "
                                      "GB usable")


# --- inference memory ----------------------------------------------------------------------------------------

WEIGHTS_ROW = "| Model Weights | 14 GB | 112 GB (all experts) |"


@claim("inference-weights-dense", S, WEIGHTS_ROW, "14 GB", "GB", ROUNDED, "mistral-7b weights at fp16", BASIS_EXACT)
def _weights_dense(ev: Evidence) -> Check:
    return Check(model_weight_bytes(E.seeds_dense(), E.SEEDS_DTYPE).total / 1e9, "the training table's weights and "
                                                                                 "gradients rows say the same")


@claim("inference-weights-moe", S, WEIGHTS_ROW, "112 GB", "GB", ROUNDED, _moe_why(", weights at fp16"), BASIS_EXACT)
def _weights_moe(ev: Evidence) -> Check:
    w = model_weight_bytes(E.seeds_moe(), E.SEEDS_DTYPE)
    return Check(w.total / 1e9, f"112 GB is 56B x 2 bytes, eight whole 7B models; the experts are "
                                f"{w.routed_experts / 1e9:.1f} GB of it (the training table's 112 GB rows likewise)")


MEMORY_SETTING = f"batch 1, fp16, a {MAX_BATCH_CONTEXT}-token sequence; the dense (mistral-7b) and the seeds' MoE"


@claim("inference-activations-ratio", S, "| Activations (batch=1) | 1 GB | 0.5 GB (sparse) |", "0.5 GB",
       "x (MoE over dense)", MODELLED, MEMORY_SETTING + ": peak prefill activations (cost.memory)", BASIS_MODELLED,
       over="1 GB")
def _activations(ev: Evidence) -> Check:
    moe, dense = (prefill_activation_bytes(s, E.SEEDS_DTYPE, 1, MAX_BATCH_CONTEXT)
                  for s in (E.seeds_moe(), E.seeds_dense()))
    return Check(moe / dense, f"{moe / 1e9:.2f} GB vs {dense / 1e9:.2f} GB: a token's top-2 experts produce two FFN "
                              "intermediates, not half of one")


@claim("inference-kv-equal", S, "| KV Cache | 2 GB | 2 GB |", "2 GB", "x (MoE over dense)", ROUNDED,
       MEMORY_SETTING + ": the KV cache (cost.memory)", BASIS_EXACT, over="2 GB")
def _kv(ev: Evidence) -> Check:
    moe, dense = (kv_cache_bytes(s, E.SEEDS_DTYPE, 1, MAX_BATCH_CONTEXT) for s in (E.seeds_moe(), E.seeds_dense()))
    per_token = dense / MAX_BATCH_CONTEXT
    return Check(moe / dense, f"the same attention: {dense / 1e9:.2f} GB each at {MAX_BATCH_CONTEXT} tokens "
                              f"({per_token:,.0f} bytes per token); the seed's 2 GB would be {2e9 / per_token:,.0f} "
                              f"tokens, past Mistral's {MAX_BATCH_CONTEXT}-token window")


@claim("framework-overhead", S, "| Framework Overhead | 1 GB | 2 GB |", "2 GB", "GB (MoE)", NOT_REPRO,
       "the runtime overhead per GPU of the A100-80GB preset, on each model's GPUs", BASIS_MODELLED)
def _overhead(ev: Evidence) -> Check:
    hw = E.hardware(E.A100)
    return Check(None, f"moelab assumes {hw.runtime_overhead_bytes / 1e9:g} GB per GPU (hardware.json: 'assumed: CUDA "
                       "context, workspaces and fragmentation'), which gives the seed's 1 GB and 2 GB for one and two "
                       "GPUs by assumption, not by measurement")


TOTAL_ROW = "| Total | 18 GB | 116.5 GB |"
INFERENCE_LINES = (WEIGHTS_ROW, "| Activations (batch=1) | 1 GB | 0.5 GB (sparse) |", "| KV Cache | 2 GB | 2 GB |",
                   "| Framework Overhead | 1 GB | 2 GB |")


def _total_check(column: int, engine_spec) -> Check:
    total = sum(table_column(INFERENCE_LINES, column))
    hw = E.hardware(E.A100)
    mem = inference_memory(engine_spec, hw, E.SEEDS_DTYPE, E.SEEDS_DTYPE, 1, MAX_BATCH_CONTEXT - E.GEN, E.GEN)
    return Check(total, f"the seed's lines add to {total:g} GB; the engine's total for the same model at "
                        f"{MAX_BATCH_CONTEXT} tokens is {mem.total_bytes / 1e9:.1f} GB on {mem.min_gpus} GPU(s)")


@claim("inference-total-dense", S, TOTAL_ROW, "18 GB", "GB", ARITH, "the seed's own inference memory lines",
       BASIS_ARITH, sources=INFERENCE_LINES)
def _total_dense(ev: Evidence) -> Check:
    return _total_check(1, E.seeds_dense())


@claim("inference-total-moe", S, TOTAL_ROW, "116.5 GB", "GB", ARITH, "the seed's own inference memory lines",
       BASIS_ARITH, sources=INFERENCE_LINES)
def _total_moe(ev: Evidence) -> Check:
    return _total_check(2, E.seeds_moe())


# --- energy ---------------------------------------------------------------------------------------------------

ENERGY_ROW = "| GPU Energy | 2.4 kWh | 3.1 kWh |"
ENERGY_LINES = (ENERGY_ROW, "| CPU/Router | 0.1 kWh | 0.3 kWh |", "| Network | 0.05 kWh | 0.2 kWh |",
                "| Cooling | 0.6 kWh | 0.9 kWh |")


def _kwh(kind: str, batch: int) -> tuple[float, str]:
    r = _latency(kind) if batch == 1 else _throughput(kind)
    hw = E.hardware(E.A100)
    econ = serving_economics(hw, E.workload(batch, r.plan), r.prefill, r.decode)
    return econ["kwh_per_million_tokens"], r.plan


ENERGY = ("A100-80GB at TDP (400 W each), fp16, the seeds' latency setup (batch 1: its most energy per token); "
          "per million generated tokens, prefill included (cost.economics)")


@claim("energy-gpu-dense", S, ENERGY_ROW, "2.4 kWh", "kWh per 1M tokens", MODELLED, "mistral-7b, " + ENERGY,
       BASIS_MODELLED)
def _energy_dense(ev: Evidence) -> Check:
    (one, plan), (many, _) = _kwh("dense", 1), _kwh("dense", int(E.THROUGHPUT_BATCH))
    return Check(one, f"{plan}; at the throughput setup (batch 32, 4 GPUs) {many:.3f} kWh")


@claim("energy-gpu-moe", S, ENERGY_ROW, "3.1 kWh", "kWh per 1M tokens", MODELLED, _moe_why(", ") + ENERGY,
       BASIS_MODELLED)
def _energy_moe(ev: Evidence) -> Check:
    (one, plan), (many, _) = _kwh("moe", 1), _kwh("moe", int(E.THROUGHPUT_BATCH))
    return Check(one, f"{plan}; at the throughput setup (batch 32, 4 GPUs) {many:.3f} kWh")


@claim("energy-dense-more-efficient", S, "Verdict: Dense more energy-efficient per token.", None,
       "x (MoE over dense energy per token)", Above("confirmed if the MoE spends more energy per token at batch 1 "
                                                    "and at batch 32", 1.0),
       "the two energy rows' setups, at batch 1 and the throughput setup (the value shown is batch 32)",
       BASIS_MODELLED)
def _energy_direction(ev: Evidence) -> Check:
    ratios = tuple(_kwh("moe", b)[0] / _kwh("dense", b)[0] for b in (1, int(E.THROUGHPUT_BATCH)))
    return Check(ratios[-1], f"MoE / dense: {ratios[0]:.2f}x at batch 1, {ratios[1]:.2f}x at batch 32", values=ratios)


out_of_scope("energy-cpu-router", S, "| CPU/Router | 0.1 kWh | 0.3 kWh |",
             "moelab prices GPUs at TDP; host CPU power is not modelled (the router runs on the GPU, inside the GPU "
             "energy row)", "0.1 kWh", "kWh")
out_of_scope("energy-network", S, "| Network | 0.05 kWh | 0.2 kWh |", "network equipment power is not modelled",
             "0.05 kWh", "kWh")
out_of_scope("energy-cooling", S, "| Cooling | 0.6 kWh | 0.9 kWh |", "cooling (a data centre's PUE) is not modelled",
             "0.6 kWh", "kWh")

ENERGY_TOTAL = "| Total | 3.15 kWh | 4.5 kWh |"
ENERGY_COST = "| Cost @ $0.10/kWh | $0.32 | $0.45 |"


@claim("energy-total-dense", S, ENERGY_TOTAL, "3.15 kWh", "kWh", ARITH, "the seed's own energy lines", BASIS_ARITH,
       sources=ENERGY_LINES)
def _energy_total_dense(ev: Evidence) -> Check:
    return Check(sum(table_column(ENERGY_LINES, 1)), "the sum of its four lines")


@claim("energy-total-moe", S, ENERGY_TOTAL, "4.5 kWh", "kWh", ARITH, "the seed's own energy lines", BASIS_ARITH,
       sources=ENERGY_LINES)
def _energy_total_moe(ev: Evidence) -> Check:
    return Check(sum(table_column(ENERGY_LINES, 2)), "the sum of its four lines")


@claim("energy-cost", S, ENERGY_COST, "$0.32", "$", ARITH, "the seed's own totals at its $0.10/kWh", BASIS_ARITH,
       sources=(ENERGY_TOTAL,))
def _energy_cost(ev: Evidence) -> Check:
    price = quoted("$0.10", ENERGY_COST)
    dense, moe = quoted("3.15 kWh", ENERGY_TOTAL) * price, quoted("4.5 kWh", ENERGY_TOTAL) * price
    return Check(dense, f"{dense:.3f} (rounded to $0.32); MoE {moe:.3f}")


MMLU_ROW = "| MMLU | 63.2 | 68.7 | 70.1 |"


@claim("energy-per-mmlu-dense", S, "Dense: 49.8 Wh per MMLU point", "49.8 Wh", "Wh per MMLU point", ARITH,
       "the seed's own energy total over its own MMLU score", BASIS_ARITH, sources=(ENERGY_TOTAL, MMLU_ROW))
def _per_point_dense(ev: Evidence) -> Check:
    return Check(1e3 * quoted("3.15 kWh", ENERGY_TOTAL) / quoted("63.2", MMLU_ROW), "3150 Wh / 63.2")


@claim("energy-per-mmlu-moe", S, "MoE: 65.5 Wh per MMLU point", "65.5 Wh", "Wh per MMLU point", ARITH,
       "the seed's own energy total over its own MMLU score", BASIS_ARITH, sources=(ENERGY_TOTAL, MMLU_ROW))
def _per_point_moe(ev: Evidence) -> Check:
    return Check(1e3 * quoted("4.5 kWh", ENERGY_TOTAL) / quoted("68.7", MMLU_ROW), "4500 Wh / 68.7")


# --- memory-saving techniques -------------------------------------------------------------------------------

@claim("offload-swap-cost", S, "Cost: +10-50ms latency per swap", "10-50ms", "ms per swap", MODELLED_RANGE,
       _moe_why(", fp16 on A100-80GB") + ": one expert moved over the GPU's PCIe Gen4 x16 host link "
       "(cost.offload)", BASIS_MODELLED, is_range=True)
def _swap(ev: Evidence) -> Check:
    hw = E.hardware(E.A100)
    off = offloaded_decode(E.seeds_moe(), hw, 1, E.PROMPT + E.GEN / 2, E.SEEDS_DTYPE, 4)
    d3 = offloaded_decode(E.model("deepseek-v3"), E.hardware(E.H100), 1, E.PROMPT + E.GEN / 2, "fp8", 128,
                          plan=Plan(ep=8))
    return Check(off.miss_seconds * 1e3, f"{off.miss_bytes / 1e6:.0f} MB at {off.link_bandwidth / 1e9:.1f} GB/s; a "
                                         f"DeepSeek-V3 expert (fp8, {d3.miss_bytes / 1e6:.0f} MB) over an H100's PCIe "
                                         f"Gen5: {d3.miss_seconds * 1e3:.2f} ms")


@claim("quantization-accuracy-cost", S, "Cost: 1-2% accuracy loss", "1-2%", "%", NOT_REPRO,
       "the study's tiny MoE with int8 / int4 routed experts (mitigations)", BASIS_TINY, is_range=True)
def _quant_accuracy(ev: Evidence) -> Check:
    variants = {v.get("name"): v for v in ev.stage("mitigations").get("variants") or [] if isinstance(v, dict)}
    base = variants.get("base MoE")
    if not base or not variants.get("int4 experts"):
        raise NoEvidence("the study's mitigations stage has no int4 variant beside its base MoE")
    loss = number((base.get("loss") or {}).get("mean"), "base MoE loss")
    rise = [100 * number(variants[n].get("loss_delta_mean"), f"{n} loss change") / loss
            for n in ("int8 experts", "int4 experts") if n in variants]
    return Check(None, "accuracy on the seeds' benchmarks is not measured on quantized models; the validation loss "
                       "rose " + ", ".join(f"{r:.2f}%" for r in rise) + " (int8, int4) at tiny scale")


@claim("quantization-memory", S, "Benefit: 4-8x memory reduction", "4-8x", "x smaller weights", APPROX_RANGE,
       _moe_why(": its fp16 weights against int8 and int4 (group 128) routed experts, the rest fp16 (cost.memory); "
                "the value shown is int8"), BASIS_EXACT, is_range=True)
def _quant_memory(ev: Evidence) -> Check:
    spec = E.seeds_moe()
    base = model_weight_bytes(spec, E.SEEDS_DTYPE).total
    ratios = tuple(base / model_weight_bytes(spec, E.SEEDS_DTYPE, (("routed_experts", q),)).total
                   for q in ("int8", "int4"))
    fp32 = model_weight_bytes(spec, "fp32").total
    from32 = [fp32 / model_weight_bytes(spec, "fp32", (("routed_experts", q),)).total for q in ("int8", "int4")]
    return Check(ratios[0], f"int8 {ratios[0]:.2f}x, int4 {ratios[1]:.2f}x from the 16-bit weights the seeds' tables "
                            f"hold; only from fp32 do they reach {from32[0]:.1f}x and {from32[1]:.1f}x", values=ratios)


@claim("pruning-linear", S, "Benefit: Linear memory reduction", None, "x (saving of 4 experts over 4 x saving of 1)",
       Within("confirmed if removing j experts saves j times what removing one saves, within ±1%", 0.01, 1.0),
       _moe_why(": fp16 weights with 1 to 4 of its 8 experts per layer removed (cost.mitigations.pruned)"),
       BASIS_EXACT)
def _pruning(ev: Evidence) -> Check:
    spec = E.seeds_moe()
    n = spec.moe.n_experts
    base = model_weight_bytes(spec, E.SEEDS_DTYPE).total
    saved = [base - model_weight_bytes(pruned(spec, (n - j) / n), E.SEEDS_DTYPE).total for j in range(1, 5)]
    ratios = tuple(s / (j * saved[0]) for j, s in enumerate(saved, 1))
    return Check(ratios[-1], f"each expert removed saves {saved[0] / 1e9:.2f} GB ({saved[0] / base:.1%} of the "
                             "weights): linear in the experts removed, with the rest of the model fixed",
                 values=ratios)

