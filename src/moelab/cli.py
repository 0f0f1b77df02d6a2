"""The `moelab` command line: wiring only, every command a thin call into the packages, each with --json."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from moelab import format as fmt
from moelab import limits
from moelab.errors import MoelabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Dense or Mixture-of-Experts? Model the economics, build both, measure, decide.")
# Piped output (files, tests, CI logs) gets a wide fixed width so that tables are not folded. Markup is off:
# names, reasons and paths are user text, so "[/red]" in a model name prints as it is; styles are Text objects.
console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 160)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
HardwareOpt = Annotated[str, typer.Option("--hardware", "-H", help="Preset name or a YAML/JSON hardware file.")]
GpusOpt = Annotated[int | None, typer.Option(min=1, max=limits.MAX_GPUS,
                                              help="GPU count (default: fewest that hold it, power of two).")]
DtypeOpt = Annotated[str, typer.Option(help="Weight dtype: fp32, bf16, fp16, fp8, int8, int4.")]
KvDtypeOpt = Annotated[str | None, typer.Option("--kv-dtype", help="KV cache dtype (default: 16-bit or --dtype).")]
BatchOpt = Annotated[int, typer.Option(min=1, max=limits.MAX_BATCH, help="Concurrent sequences in a decode step.")]
PromptOpt = Annotated[int, typer.Option("--prompt", "--input", min=1, max=limits.MAX_TOKENS,
                                        help="Prompt (input) tokens per sequence.")]
GenOpt = Annotated[int, typer.Option("--gen", "--output", min=1, max=limits.MAX_TOKENS,
                                     help="Generated (output) tokens per sequence.")]
PlanOpt = Annotated[str | None, typer.Option(help="Fix the plan: [ppN][tpN][epN][xN], e.g. tp8, ep8, tp2ep4, pp2tp8, "
                                                  "tp2x4 (default: search plans and replicas).")]
SkewOpt = Annotated[float, typer.Option(min=0.0, max=limits.MAX_SKEW,
                                        help="Routing skew: Zipf exponent of expert load (0 = uniform).")]
AsMoeOpt = Annotated[str | None, typer.Option("--as-moe", help="Turn a dense model into EXPERTSxTOPK, e.g. 8x2.")]
FineOpt = Annotated[int | None, typer.Option("--fine-grained", min=1, max=limits.MAX_EXPERTS,
                                             help="Split each expert into M (DeepSeekMoE).")]
SharedOpt = Annotated[int, typer.Option("--shared", min=0, max=limits.MAX_EXPERTS,
                                        help="With --fine-grained: S of them become shared.")]


def _print_version(value: bool) -> None:
    if value:
        import moelab

        sys.stdout.write(f"moelab {moelab.__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print moelab's version and exit.")] = False,
) -> None:
    """Dense or Mixture-of-Experts? Model the economics, build both, measure, decide."""


def _emit_json(obj: object) -> None:
    """The result on stdout as strict JSON: NaN and infinities become null (see moelab.jsonout)."""
    from moelab.jsonout import dumps

    sys.stdout.write(dumps(obj) + "\n")


def _spec(model: str, as_moe: str | None, fine: int | None, shared: int):
    from moelab.spec import load_model
    from moelab.spec.transform import as_moe as to_moe
    from moelab.spec.transform import fine_grained, parse_as_moe

    spec = load_model(model)
    if as_moe:
        n_experts, top_k = parse_as_moe(as_moe)
        limits.check_finite("--as-moe EXPERTS", n_experts, 1, limits.MAX_EXPERTS)
        spec = to_moe(spec, n_experts, top_k)
    if fine:
        spec = fine_grained(spec, fine, shared)
    elif shared:
        raise MoelabError("--shared needs --fine-grained M")
    return spec


def _workload(dtype: str, kv_dtype: str | None, batch: int, prompt: int, gen: int, skew: float,
              components: dict[str, str] | None = None):
    from moelab.cost.dtypes import check_dtype, kv_dtype_for
    from moelab.cost.roofline import Workload

    check_dtype(dtype)
    kv = kv_dtype_for(dtype, kv_dtype)
    return Workload(batch=batch, prompt=prompt, gen=gen, dtype=dtype, kv_dtype=kv, skew=skew,
                    components=components or ())


@app.command()
def models(as_json: JsonFlag = False) -> None:
    """The bundled model presets, with computed and published parameter counts."""
    from moelab.cost.params import count_params
    from moelab.spec import load_model
    from moelab.spec.presets import model_presets, published_counts

    rows = []
    published = published_counts()
    for name in model_presets():
        spec, p = load_model(name), count_params(load_model(name))
        row = {"name": name, "family": spec.family, "total": p.total, "active": p.active,
               "experts": spec.moe.n_experts if spec.is_moe else 0, "top_k": spec.moe.top_k if spec.is_moe else 0,
               "layers": spec.n_layers, "d_model": spec.d_model}
        row.update({k: v for k, v in published.get(name, {}).items() if k != "name"})
        rows.append(row)
    if as_json:
        return _emit_json(rows)
    table = Table(title="Model presets")
    for col in ("name", "family", "layers", "d_model", "experts", "top-k", "total", "active", "published"):
        table.add_column(col, justify="left" if col in ("name", "family") else "right")
    for r in rows:
        table.add_row(r["name"], r["family"], str(r["layers"]), str(r["d_model"]), str(r["experts"] or "-"),
                      str(r["top_k"] or "-"), fmt.count(r["total"]), fmt.count(r["active"]),
                      f"{r.get('published_total', '?')} / {r.get('published_active', '?')}")
    console.print(table)


@app.command()
def hardware(as_json: JsonFlag = False) -> None:
    """The bundled hardware presets (datasheet figures, with their sources)."""
    from moelab.spec.hardware import hardware_presets

    presets = hardware_presets()
    if as_json:
        return _emit_json([hw.to_dict() for hw in presets.values()])
    table = Table(title="Hardware presets (dense peaks; links per direction)")
    for col in ("name", "bf16 TFLOPS", "fp8 TFLOPS", "memory", "bandwidth", "intra-node", "host link", "TDP", "$/h"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for hw in presets.values():
        fp8 = hw.peak_flops.get("fp8")
        host = f"{hw.host_link_bandwidth / 1e9:.1f} GB/s" if hw.host_link_bandwidth else "-"
        table.add_row(hw.name, f"{hw.peak_flops['bf16'] / 1e12:.0f}", f"{fp8 / 1e12:.0f}" if fp8 else "-",
                      fmt.nbytes(hw.memory_bytes), f"{hw.memory_bandwidth / 1e9:.0f} GB/s",
                      f"{hw.intra_node_bandwidth / 1e9:.0f} GB/s", host, f"{hw.tdp_watts:.0f} W",
                      f"{hw.usd_per_hour:.2f}")
    console.print(table)


@app.command()
def schema(kind: Annotated[str, typer.Argument(help="The file kind: workload, hardware or manifest.")]) -> None:
    """The JSON Schema of a workload or hardware file, for editors (on stdout)."""
    from moelab.schema import json_schema

    _emit_json(json_schema(kind))


def _print_estimate(r) -> None:
    """The table of an Estimate (moelab.cost.estimate)."""
    p, m, pre, dec, wl, par = r.params, r.memory, r.prefill, r.decode, r.workload, r.parallel
    label = f"{par.gpus} x {r.hardware}"
    table = Table(title=f"{r.model} on {label} (modelled; times are means)", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    cross = r.crossover_batch
    experts = (f"{dec.distinct_experts_per_layer:.2f} of {r.experts_per_layer} (top-{r.top_k})"
               if r.experts_per_layer else "dense")
    train = r.training
    rows = [
        ("parameters", f"{fmt.count(p.total)} total, {fmt.count(p.active)} active "
                       f"({p.active / p.total:.0%})"),
        ("weights", f"{fmt.nbytes(m.weights_bytes)} at {wl.dtype}"
                    + "".join(f", {name} {dt}" for name, dt in wl.components)),
        ("KV cache", f"{fmt.nbytes(m.kv_cache_bytes)} ({fmt.nbytes(m.kv_bytes_per_token)}/token, "
                     f"{wl.kv_dtype})"),
        ("memory", f"{fmt.nbytes(m.total_bytes)} in all; min {m.min_gpus} GPU(s); "
                   f"{fmt.nbytes(m.memory_per_gpu_bytes)}/GPU on {m.gpus} "
                   f"({'fits' if m.fits else 'DOES NOT FIT'} in {fmt.nbytes(m.capacity_per_gpu_bytes)} usable)"),
        ("prefill", f"{fmt.seconds(pre.seconds)} for {wl.batch}x{wl.prompt} tokens ({pre.bound}-bound)"),
        ("decode step", f"{fmt.seconds(dec.seconds)} at batch {wl.batch}, context {wl.decode_context:g} "
                        f"({dec.bound}-bound)"),
        ("throughput", f"{fmt.rate(r.tokens_per_second)} tokens, "
                       f"{fmt.rate(r.tokens_per_second_per_gpu)} per GPU"),
        ("experts read", experts),
        ("compute-bound from", f"batch {cross}" if cross else "never (KV reads keep decode memory-bound)"),
        ("plan", f"{par.plan} on {par.gpus} GPU(s){' (asked for)' if par.fixed else ''}, "
                 f"{par.chosen.replicas} replica(s), KV-limited max concurrency {par.chosen.max_concurrency:,}, "
                 f"scaling efficiency {par.scaling_efficiency:.0%}" + "".join(f"; {n}" for n in par.notes)),
        ("energy", f"{r.energy.kwh_per_million_tokens:.3f} kWh per 1M output tokens"),
        ("cost", f"${r.cost.usd_per_million_tokens:.3f} per 1M output tokens"),
        (f"training {fmt.count(train.tokens)} tok",
         f"{train.gpu_hours:.3g} GPU-hours, ${train.usd:.3g} at {train.mfu:.0%} MFU;"
         f" {fmt.nbytes(train.memory.total_bytes)}/GPU with ZeRO-{train.plan.zero}"
         f" over {par.gpus} ({'fits' if train.memory.fits else 'DOES NOT FIT'} in "
         f"{fmt.nbytes(train.capacity_per_gpu_bytes)})"),
        ("dense equivalent", f"{fmt.count(r.dense_equivalent.heuristic)} (heuristic), "
                             f"{fmt.count(r.dense_equivalent.workload)} (this workload)"),
    ]
    rows += [("note", note) for note in r.notes]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


def _print_plans(r) -> None:
    """The best few plans (all of them are in --json), the chosen one marked."""
    from moelab.cost.parallel import SHOWN

    par = r.parallel
    shown = list(par.plans[:SHOWN])
    if par.chosen not in shown:
        shown.append(par.chosen)
    title = (f"Plans on {par.gpus} GPUs: {'the plan asked for' if par.fixed else 'best first'} "
             f"({len(shown)} of {len(par.plans)} shown; all in --json); decode at batch {r.workload.batch}")
    table = Table(title=title)
    for col in ("plan", "replicas", "fits", "max concurrency", "memory/GPU", "prefill", "decode step", "tok/s",
                "tok/s/GPU"):
        table.add_column(col, justify="left" if col == "plan" else "right")
    for p in shown:
        name = p.plan + (" (chosen)" if p is par.chosen else "")
        table.add_row(name, str(p.replicas), "yes" if p.fits else "DOES NOT FIT", f"{p.max_concurrency:,}",
                      fmt.nbytes(p.memory_per_gpu_bytes), fmt.seconds(p.prefill.seconds),
                      fmt.seconds(p.decode.seconds), fmt.rate(p.tokens_per_second),
                      fmt.rate(p.tokens_per_second_per_gpu))
    console.print(table)


def _print_breakdown(r) -> None:
    """Per-operator tables of the chosen plan's prefill and decode step (one GPU of it)."""
    for label, phase in (("prefill", r.prefill), ("decode step", r.decode)):
        if not phase.operators:
            console.print(f"{label}: no per-operator breakdown on {r.hardware} (eager execution model)")
            continue
        where = ("one micro-batch through every pipeline stage" if r.workload.parallel.pp > 1 else "per GPU")
        table = Table(title=f"{label} of {r.parallel.plan}, {where}: {fmt.seconds(phase.seconds)} by operator "
                            "(modelled)")
        for col in ("operator", "seconds", "share", "bound", "detail"):
            table.add_column(col, justify="left" if col in ("operator", "bound", "detail") else "right")
        for op in sorted(phase.operators, key=lambda o: -o.seconds):
            share = op.seconds / phase.seconds if phase.seconds else 0.0
            table.add_row(op.name, fmt.seconds(op.seconds), f"{share:.1%}", op.bound, op.detail)
        console.print(table)


def _print_serving(r) -> None:
    table = Table(title=f"Serving {r.workload.prompt} input + {r.workload.gen} output tokens at a concurrency "
                        "(continuous batching; modelled means, not p50/p99)")
    for col in ("concurrency", "plan", "mean TTFT", "mean TPOT", "requests/s", "out tok/s/GPU", "out tok/s/user",
                "fits (max concurrency)"):
        table.add_column(col, justify="left" if col == "plan" else "right")
    for p in r.serving:
        fits = f"yes ({p.max_concurrency:,})" if p.fits else f"DOES NOT FIT ({p.max_concurrency:,})"
        table.add_row(str(p.concurrency), p.plan, f"{p.ttft_ms:.1f} ms", f"{p.tpot_ms:.2f} ms",
                      f"{p.requests_per_second:.3g}", f"{p.output_tokens_per_second_per_gpu:.4g}",
                      f"{p.output_tokens_per_second_per_user:.4g}", fits)
    console.print(table)
    for note in r.serving_notes:
        console.print(f"note: {note}")


def _parse_plan(text: str | None, gpus: int | None):
    """--plan as a Plan; one line when it is malformed or contradicts --gpus (the model's checks come later)."""
    if text is None:
        return None
    from moelab.cost.plan import Plan

    plan = Plan.parse(text)
    if gpus is not None and gpus != plan.gpus:
        raise MoelabError(f"--gpus {gpus} contradicts --plan {plan.name}, which uses {plan.gpus} GPUs")
    return plan


def _parse_concurrency(text: str | None, batch: int | None) -> list[int] | None:
    """--concurrency 1,8,64: every item a positive integer; the static --batch view is another question."""
    if text is None:
        return None
    if batch is not None:
        raise MoelabError("--concurrency and --batch ask different questions (serving at a concurrency, or one "
                          "static batch): give one of them")
    try:
        values = [int(c) for c in text.split(",")]
    except ValueError:
        raise MoelabError(f"--concurrency expects comma-separated positive integers, got {text!r}"[:300]) from None
    if not values or min(values) < 1 or max(values) > limits.MAX_BATCH:
        raise MoelabError(f"--concurrency must list integers from 1 to {limits.MAX_BATCH:,}, got {text!r}"[:300])
    if len(values) > limits.MAX_SWEEP:
        raise MoelabError(f"--concurrency lists {len(values)} values; at most {limits.MAX_SWEEP} in one sweep")
    return sorted(set(values))


@app.command()
def estimate(
    model: Annotated[str, typer.Argument(help="Preset name, config.json path, or a folder holding one.")],
    hardware: HardwareOpt = "H100-SXM",
    gpus: GpusOpt = None,
    plan: PlanOpt = None,
    dtype: DtypeOpt = "bf16",
    kv_dtype: KvDtypeOpt = None,
    batch: Annotated[int | None, typer.Option(min=1, max=limits.MAX_BATCH,
                                              help="Concurrent sequences in a static decode step (default 1).")]
    = None,
    prompt: PromptOpt = 512,
    gen: GenOpt = 256,
    concurrency: Annotated[str | None, typer.Option(help="Serve at these concurrencies (comma-separated, e.g. "
                                                         "1,8,64): continuous batching, one row each.")] = None,
    skew: SkewOpt = 0.0,
    as_moe: AsMoeOpt = None,
    fine_grained: FineOpt = None,
    shared: SharedOpt = 0,
    breakdown: Annotated[bool, typer.Option("--breakdown", help="Show the per-operator time of prefill and "
                                                                "decode (always in --json).")] = False,
    train_tokens: Annotated[float, typer.Option(min=1.0, max=limits.MAX_TRAIN_TOKENS,
                                                help="Training budget to price, tokens.")] = 1e12,
    mfu: Annotated[float, typer.Option(min=0.01, max=1.0, help="Training model-FLOPs utilisation.")] = 0.4,
    zero: Annotated[int, typer.Option(min=0, max=3, help="ZeRO stage for training memory.")] = 1,
    recompute: Annotated[bool, typer.Option(help="Activation recomputation in training.")] = True,
    expert_dtype: Annotated[str | None, typer.Option("--expert-dtype", help="Routed experts' weight dtype (the "
                                                     "shorthand for --component routed_experts=DTYPE).")] = None,
    component: Annotated[list[str] | None, typer.Option("--component", help="NAME=DTYPE, repeatable: a component's "
                                                        "weight dtype (routed_experts, shared_experts, attention, "
                                                        "dense_ffn, embeddings); the rest stay at --dtype.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """What a model costs on a GPU: parameters, memory, FLOPs, latency, throughput, plans, energy, dollars."""
    from moelab.cost.estimate import TrainingPlan
    from moelab.cost.estimate import estimate as run
    from moelab.spec import load_hardware

    fixed = _parse_plan(plan, gpus)
    levels = _parse_concurrency(concurrency, batch)
    spec = _spec(model, as_moe, fine_grained, shared)
    training = TrainingPlan(tokens=train_tokens, mfu=mfu, zero=zero, recompute=recompute)
    from moelab.cost.dtypes import parse_components

    components = parse_components(component or [], expert_dtype)
    wl = _workload(dtype, kv_dtype, batch or 1, prompt, gen, skew, components)
    result = run(spec, load_hardware(hardware), wl, gpus, training, plan=fixed, concurrency=levels)
    if as_json:
        return _emit_json(result.to_dict())
    _print_estimate(result)
    _print_plans(result)
    if breakdown:
        _print_breakdown(result)
    if result.serving:
        _print_serving(result)


def _parse_batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise MoelabError(f"--batches expects comma-separated integers, got {text!r}") from None
    if not batches or min(batches) <= 0 or max(batches) > limits.MAX_BATCH:
        raise MoelabError(f"--batches must list integers from 1 to {limits.MAX_BATCH:,}, got {text!r}"[:300])
    if len(batches) > limits.MAX_SWEEP:
        raise MoelabError(f"--batches lists {len(batches)} batch sizes; at most {limits.MAX_SWEEP} are compared "
                          "in one sweep")
    return batches


@app.command()
def compare(
    model_a: Annotated[str, typer.Argument(help="First model (preset, config.json or folder).")],
    model_b: Annotated[str, typer.Argument(help="Second model.")],
    hardware: HardwareOpt = "H100-SXM",
    gpus: GpusOpt = None,
    plan: PlanOpt = None,
    dtype: DtypeOpt = "bf16",
    kv_dtype: KvDtypeOpt = None,
    prompt: PromptOpt = 512,
    gen: GenOpt = 256,
    skew: SkewOpt = 0.0,
    batches: Annotated[str, typer.Option(help="Decode batch sizes, comma-separated.")] = "1,8,32,128",
    as_moe: AsMoeOpt = None,
    fine_grained: FineOpt = None,
    shared: SharedOpt = 0,
    as_json: JsonFlag = False,
) -> None:
    """Two models side by side across batch sizes, and where the throughput winner flips.

    --as-moe / --fine-grained apply to the second model, so `compare X X --as-moe 8x2` pits a dense model
    against its MoE counterpart."""
    from moelab.cost.compare import compare as run
    from moelab.spec import load_hardware

    fixed = _parse_plan(plan, gpus)
    spec_a = _spec(model_a, None, None, 0)
    spec_b = _spec(model_b, as_moe, fine_grained, shared)
    wl = _workload(dtype, kv_dtype, 1, prompt, gen, skew)
    result = run(spec_a, spec_b, load_hardware(hardware), wl, _parse_batches(batches), gpus, plan=fixed)
    if as_json:
        return _emit_json(result)
    usable = fmt.nbytes(result["rows"][0]["a"]["capacity_per_gpu_bytes"])
    table = Table(title=f"A = {result['a']} vs B = {result['b']} on {result['hardware']} ({usable} usable per GPU): "
                        f"decode, per GPU, modelled; GPUs: {result['gpus_basis']}; plans: {result['plan_basis']}")
    for col in ("batch", "A GPUs", "A plan", "A mem/GPU", "A tok/s/GPU", "A step", "A $/Mtok", "B GPUs", "B plan",
                "B mem/GPU", "B tok/s/GPU", "B step", "B $/Mtok", "winner"):
        table.add_column(col, justify="right", no_wrap=col.endswith("mem/GPU") or col == "winner")
    names = {"a": result["a"], "b": result["b"]}

    def mem(side: dict) -> str:
        used = f"{side['memory_per_gpu_bytes'] / 1e9:.1f} GB"
        return used if side["fits"] else f"{used} DOES NOT FIT"

    for row in result["rows"]:
        a, b = row["a"], row["b"]
        winner = names[row["winner"]] if a["fits"] or b["fits"] else "neither fits"
        table.add_row(str(row["batch"]), str(a["gpus"]), a["plan"], mem(a), f"{a['tokens_per_second_per_gpu']:.0f}",
                      fmt.seconds(a["step_seconds"]), f"{a['usd_per_million_tokens']:.3f}", str(b["gpus"]),
                      b["plan"], mem(b), f"{b['tokens_per_second_per_gpu']:.0f}", fmt.seconds(b["step_seconds"]),
                      f"{b['usd_per_million_tokens']:.3f}", winner)
    console.print(table)
    if any(not row[k]["fits"] for row in result["rows"] for k in ("a", "b")):
        console.print(f"DOES NOT FIT: memory per GPU above the usable {usable}; a model that does not fit never "
                      "wins a row against one that fits")
    if result["flips"]:
        for flip in result["flips"]:
            note = f" {flip['note']}" if flip.get("note") else ""
            console.print(f"{flip['to']} wins from batch {flip['batch']} (before it: {flip['from']}){note}")
    else:
        winner = names[result["rows"][0]["winner"]]
        neither = any(not (row["a"]["fits"] or row["b"]["fits"]) for row in result["rows"])
        console.print(f"{winner} wins at every batch listed" + (" (by modelled tokens/s per GPU where neither fits)"
                                                                 if neither else ""))


@app.command()
def frontier(
    models: Annotated[list[str], typer.Argument(help="Models (presets, config.json or folders): dense and MoE on "
                                                     "one plot.")],
    hardware: HardwareOpt = "H100-SXM",
    gpus: Annotated[int, typer.Option(min=1, max=limits.MAX_GPUS, help="GPUs of the deployment: every plan on "
                                                                         "exactly this many is searched.")] = 8,
    input: Annotated[int, typer.Option("--input", "--prompt", min=1, max=limits.MAX_TOKENS,
                                       help="Prompt tokens per request.")] = 512,
    output: Annotated[int, typer.Option("--output", "--gen", min=1, max=limits.MAX_TOKENS,
                                        help="Generated tokens per request.")] = 256,
    dtype: DtypeOpt = "bf16",
    kv_dtype: KvDtypeOpt = None,
    plot: Annotated[str | None, typer.Option("--plot", help="Also write the frontiers as a PNG to this path.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The interactivity-throughput frontier: output tokens/s per user against per GPU, over plans and
    concurrencies (modelled means on the named hardware; only points that fit)."""

    from moelab.cost.frontier import candidate_plans
    from moelab.cost.frontier import frontier as run
    from moelab.spec import load_hardware

    if len(set(models)) != len(models):
        raise MoelabError("frontier: a model is named twice")
    from moelab.outfile import check_output_file

    target = check_output_file(plot, "--plot") if plot else None
    hw = load_hardware(hardware)
    results = []
    for name in models:
        spec = _spec(name, None, None, 0)
        points = run(spec, hw, gpus, input, output, dtype, kv_dtype)
        if not points:
            searched = ", ".join(p.name for p in candidate_plans(spec, hw, gpus)) or "none"
            raise MoelabError(f"{spec.name} fits no plan on {gpus} x {hw.name} at {input}+{output} tokens "
                              f"({dtype}; plans searched: {searched})")
        results.append({"model": spec.name, "kind": "moe" if spec.is_moe else "dense",
                        "points": [p.to_dict() for p in points]})
    label = f"{gpus} x {hw.name}, {input}+{output} tokens, {dtype}"
    if target is not None:
        from moelab.report.plots import frontier_png

        frontier_png(results, f"Modelled means on {label}", target)
    if as_json:
        return _emit_json({"hardware": hw.name, "gpus": gpus, "input": input, "output": output, "dtype": dtype,
                           "basis": "modelled means (cost.serving), not measurements", "models": results,
                           "plot": str(target) if target is not None else None})
    for r in results:
        table = Table(title=f"{r['model']} ({r['kind']}) on {label}: interactivity-throughput frontier "
                            "(modelled means)")
        for col in ("plan", "concurrency", "tok/s/user", "tok/s/GPU", "TTFT", "TPOT"):
            table.add_column(col, justify="left" if col == "plan" else "right")
        for p in r["points"]:
            table.add_row(p["plan"], str(p["concurrency"]), f"{p['tokens_per_second_per_user']:.1f}",
                          f"{p['tokens_per_second_per_gpu']:.0f}", f"{p['ttft_ms']:.1f} ms", f"{p['tpot_ms']:.2f} ms")
        console.print(table)
    if target is not None:
        console.print(f"plot: {target}")


# --- training -------------------------------------------------------------------------------------------

DeviceOpt = Annotated[str, typer.Option(help="cpu or cuda.")]
StepsOpt = Annotated[int, typer.Option(min=1, help="Optimizer steps.")]
DataOpt = Annotated[str | None, typer.Option(help="Corpus: folder of domain subfolders, .txt or .jsonl "
                                                  "(default: built from this Python installation).")]
SeedOpt = Annotated[int, typer.Option(help="Seed for weights and data order.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per micro-batch.")]
SeqLenOpt = Annotated[int, typer.Option("--seq-len", min=1, help="Tokens per sequence.")]
LrOpt = Annotated[float, typer.Option(min=0.0, help="Peak learning rate (AdamW, warmup + cosine).")]
AccumOpt = Annotated[int, typer.Option("--grad-accum", min=1, help="Micro-batches per optimizer step.")]
BalanceOpt = Annotated[str, typer.Option(help="Expert balancing: none, aux, aux-free.")]
EvalOpt = Annotated[int, typer.Option("--eval-every", min=1, help="Steps between validation evaluations.")]
CkptOpt = Annotated[int, typer.Option("--ckpt-every", min=1, help="Steps between checkpoints.")]


def _train_config(steps, batch_size, seq_len, lr, grad_accum, balancing, eval_every, ckpt_every, seed, data,
                  **extra):
    from moelab.train.config import TrainConfig

    return TrainConfig(steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, grad_accum=grad_accum,
                       balancing=balancing, eval_every=eval_every, ckpt_every=ckpt_every, seed=seed, data=data,
                       **extra)


@app.command()
def train(
    out: Annotated[str, typer.Option(help="Run folder: metrics.jsonl, ckpt-STEP/, final/.")],
    model: Annotated[str | None, typer.Option(help="Training preset (tiny-dense, tiny-moe, tiny-moe-fine, "
                                                   "tiny-dense-wide), config.json or moelab spec JSON (with "
                                                   "--init-from: omit it to train the run's own).")] = None,
    steps: StepsOpt = 300,
    data: DataOpt = None,
    corpus: Annotated[str | None, typer.Option("--corpus", help="Built-in corpus when no --data: default (code, "
                                               "prose, math, json) or study (+ the facts domain and the math "
                                               "ladder the probes ask; with --init-from: the run's own).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in --out.")] = False,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 16,
    seq_len: SeqLenOpt = 128,
    lr: LrOpt = 3e-3,
    grad_accum: AccumOpt = 1,
    balancing: BalanceOpt = "aux",
    ds_moe: Annotated[bool, typer.Option("--ds-moe", help="Dense training, sparse top-k inference.")] = False,
    capacity_factor: Annotated[float | None, typer.Option("--capacity-factor", help="Drop tokens beyond it.")] = None,
    bf16: Annotated[bool, typer.Option("--bf16", help="bfloat16 autocast.")] = False,
    eval_every: EvalOpt = 50,
    ckpt_every: CkptOpt = 50,
    keep_last: Annotated[int, typer.Option("--keep-last", min=1, help="Checkpoints kept.")] = 2,
    shrink_to: Annotated[str | None, typer.Option("--shrink-to", help="Train a smaller model of the same layer "
                                                  "pattern with about N parameters (e.g. 2M), as bench does.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    ep: Annotated[int | None, typer.Option("--ep", help="Expert-parallel ranks under torchrun (`torchrun "
                                           "--nproc-per-node N -m moelab train ... --ep E`: world = ep x dp).")] = None,
    device: DeviceOpt = "cpu",
    eval_tokens: Annotated[int, typer.Option("--eval-tokens", min=1, help="Validation tokens per domain at "
                                             "each evaluation.")] = 16384,
    max_bytes_per_domain: Annotated[int, typer.Option("--max-bytes-per-domain", min=1, help="Corpus bytes read "
                                                      "per domain (the default corpus or --data).")] = 1_500_000,
    hardware: Annotated[str | None, typer.Option("--hardware", "-H", help="Hardware for the engine's prediction "
                                                 "of the step beside the measured one (default: this machine's "
                                                 "cached calibration, if any; nothing is measured).")] = None,
    init_from: Annotated[str | None, typer.Option("--init-from", help="Start from this run's final weights "
                                                  "(weights only: a fresh optimizer and schedule; the lineage is "
                                                  "recorded). Its model must be --model's.")] = None,
    data_offset: Annotated[int | None, typer.Option("--data-offset", min=0, help="Step k trains on the batch of "
                                                    "step k + N (continue a run's data order where it stopped; "
                                                    "default 0, with --init-from the run's steps plus its own "
                                                    "offset: the batches after the ones it saw).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train a dense or MoE model on the default (or your) corpus; resumable bit for bit, in one process or
    across torchrun's (experts sharded with --ep, the rest data-parallel)."""
    from moelab.bench.calibrate import check_device
    from moelab.bench.shrink import parse_size, shrink
    from moelab.cost.plan import expert_counts
    from moelab.parallel import layout as parallel
    from moelab.train.loop import check_parallel
    from moelab.train.loop import train as run
    from moelab.train.presets import load_train_spec

    check_device(device)
    if model is None and init_from is None:
        raise MoelabError("train needs --model (or --init-from RUN to train the run's own model)")
    if init_from is not None and shrink_to is not None:
        raise MoelabError("--shrink-to cannot be combined with --init-from: the run's weights fix the model")
    source = None
    if init_from is not None:  # its tokens must mean what they meant: the run's vocabulary (no --vocab-size here)
        from moelab.train.loop import init_source

        source = init_source(init_from, None, out)
        if data_offset is None:
            from moelab.train.loop import init_data_offset

            data_offset = init_data_offset(source)
    vocab = {"vocab_size": source.config["vocab_size"]} if source and "vocab_size" in source.config else {}
    if corpus is None:  # a continued run reads its source's corpus unless told otherwise
        corpus = (source.config.get("corpus") if source and data is None else None) or "default"
    cfg = _train_config(steps, batch_size, seq_len, lr, grad_accum, balancing, eval_every, ckpt_every, seed, data,
                        ds_moe=ds_moe, capacity_factor=capacity_factor, bf16=bf16, keep_last=keep_last,
                        eval_tokens=eval_tokens, max_bytes_per_domain=max_bytes_per_domain,
                        data_offset=data_offset or 0, corpus=corpus, **vocab)
    size = parse_size(shrink_to) if shrink_to is not None else None
    spec = source.spec if model is None else load_train_spec(model)
    spec = shrink(spec, size) if size is not None else spec
    layout = parallel.check(ep, expert_counts(spec) if spec.is_moe else set(), "train")
    check_parallel(cfg, layout)
    hw = _train_hardware(hardware, device) if layout.writer else None  # rank 0 alone predicts (and reads caches)
    if layout.distributed:  # the corpus first, outside the group: its first build can outlast a collective's timeout
        from moelab.data import prepare

        prepare(cfg.data, cfg.vocab_size, max_bytes_per_domain=cfg.max_bytes_per_domain, corpus=cfg.corpus)
    with parallel.started(layout, device) as mesh:
        summary = run(spec, cfg, out, resume=resume, progress=progress and not as_json,
                      log=lambda msg: sys.stderr.write(msg + "\n"), mesh=mesh, device=device, hardware=hw,
                      init_from=init_from)
    if not layout.writer:
        return None
    if as_json:
        return _emit_json(summary)
    val = summary["val"] or {}
    out_line = ", ".join(f"{k} {v:.3f}" for k, v in val.items() if isinstance(v, float))
    console.print(f"{summary['model']}: {summary['tokens']} tokens in {summary['wall_seconds']:.1f} s "
                  f"({summary['train_seconds']:.1f} s of training steps at {summary['tokens_per_second']:.0f} tok/s, "
                  f"the rest evaluation and checkpoints); validation loss: {out_line}")
    steps = summary.get("steps") or {}
    m, p = steps.get("measured"), steps.get("predicted") or {}
    if m:
        line = (f"median step {fmt.seconds(m['step_seconds'])} ({summary['parallel']['plan']}): all-to-all "
                f"{_share(m['alltoall_seconds'], m['step_seconds'])}, all-reduce "
                f"{_share(m['allreduce_seconds'], m['step_seconds'])}, compute "
                f"{_share(m['compute_seconds'], m['step_seconds'])}")
        if "step_seconds" in p:
            line += (f"; predicted {fmt.seconds(p['step_seconds'])} on {p['hardware']}, all-to-all "
                     f"{_share(p['alltoall_seconds'], p['step_seconds'])}")
        elif "error" in p:
            line += f"; no prediction: {p['error']}"
        console.print(line)


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def _train_hardware(hardware: str | None, device: str):
    """The hardware a training run's prediction is made on: --hardware, else the cached calibration, else none."""
    from moelab.bench.calibrate import cached_calibration
    from moelab.spec.hardware import load_hardware

    if hardware is not None:
        return load_hardware(hardware)
    path = cached_calibration(device)
    return load_hardware(str(path)) if path else None


@app.command("train-compare")
def train_compare(
    models: Annotated[list[str], typer.Argument(help="Two or more training presets or spec files.")],
    target_loss: Annotated[float, typer.Option("--target-loss", help="Validation loss to reach.")],
    out: Annotated[str, typer.Option(help="Folder; each model trains into out/<name>.")] = "runs/compare",
    steps: StepsOpt = 300,
    data: DataOpt = None,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 16,
    seq_len: SeqLenOpt = 128,
    lr: LrOpt = 3e-3,
    grad_accum: AccumOpt = 1,
    balancing: BalanceOpt = "aux",
    eval_every: EvalOpt = 25,
    ckpt_every: CkptOpt = 50,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Train several models on the same data order and budget: tokens, FLOPs and seconds to a target loss."""
    from moelab.train.compare import train_compare as run
    from moelab.train.presets import load_train_spec

    if len(models) < 2:
        raise MoelabError("train-compare needs at least two models")
    cfg = _train_config(steps, batch_size, seq_len, lr, grad_accum, balancing, eval_every, ckpt_every, seed, data)
    result = run([load_train_spec(m) for m in models], cfg, out, target_loss,
                 progress=progress and not as_json, log=lambda msg: sys.stderr.write(msg + "\n"))
    if as_json:
        return _emit_json(result)
    table = Table(title=f"Training to validation loss {target_loss:g} ({steps} steps budget)")
    domains = sorted(k for k in (result["rows"][0]["final_val"] or {}) if k not in ("mean", "dense"))
    for col in ("model", "total", "active", "tokens to target", "FLOPs to target", "training s to target",
                "train tok/s", "final val", *domains):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in result["rows"]:
        hit = r["to_target"]
        val = r["final_val"] or {}
        table.add_row(r["model"], fmt.count(r["params_total"]), fmt.count(r["params_active"]),
                      fmt.count(hit["tokens"]) if hit else "not reached", f"{hit['flops']:.3g}" if hit else "-",
                      f"{hit['train_seconds']:.1f}" if hit else "-", f"{r['tokens_per_second']:.0f}",
                      f"{val.get('mean', float('nan')):.3f}", *(f"{val.get(d, float('nan')):.3f}" for d in domains))
    console.print(table)


# --- decision -------------------------------------------------------------------------------------------


@app.command()
def decide(
    workload: Annotated[str | None, typer.Option("--workload", "-w", help="Workload YAML file (default: the "
                                                 "built-in chat-assistant workload on 8 x H100-SXM).")] = None,
    evidence: Annotated[str | None, typer.Option("--evidence", metavar="STUDY_DIR", help="A `moelab study` "
                                                 "folder or its study.json: the study's training, bench, task-type "
                                                 "probes and hybrid curve join the decision as measured "
                                                 "evidence.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Dense, MoE or a hybrid for a workload: the seeds' factor table, the choice, and what would flip it."""
    from moelab.cost.finite import require_finite
    from moelab.decide import default_workload, load_workload, recommend
    from moelab.decide.evidence import load_study

    measured = load_study(evidence) if evidence is not None else None
    wl = load_workload(workload) if workload else default_workload()
    result = require_finite(recommend(wl, measured) if measured else recommend(wl), "decide")
    if as_json:
        return _emit_json(result)
    from moelab.decide.recommend import LATENCY_MEAN, basis_text

    table = Table(title=f"Candidates for {wl.name}: batch {wl.batch}, {wl.prompt}+{wl.gen} tokens, "
                        f"{wl.gpus} x {result['hardware']} (modelled; latency: {result['latency_label']} against the "
                        f"p99 target of {wl.latency_p99_ms:g} ms)")
    latency_col = "mean/token" if result["latency_label"] == LATENCY_MEAN else "est. p99/token"
    for col in ("model", "kind", "total", "active", "dense-eq", "memory", "replica", latency_col, "tok/s/GPU",
                "fleet tok/s", "$/Mtok", "max batch in target", "fails"):
        table.add_column(col, justify="left" if col in ("model", "kind", "fails") else "right",
                         no_wrap=col == "memory")
    for c in result["candidates"]:
        memory = f"{c['memory_gb']:.0f} GB" + ("" if c["fits"] else " DOES NOT FIT")
        table.add_row(c["name"], c["kind"], fmt.count(c["params_total"]), fmt.count(c["params_active"]),
                      f"{c['dense_equivalent_b']:.0f}B", memory,
                      f"{c['gpus_per_replica']} GPU x{c['replicas']}", f"{c['latency_ms']:.1f} ms",
                      f"{c['tokens_per_second_per_gpu']:.0f}", f"{c['tokens_per_second']:.0f}",
                      f"{c['usd_per_million_tokens']:.2f}", str(c["max_batch_p99"]),
                      ", ".join(c["violations"]) or "-")
    console.print(table)
    factors = Table(title=f"Factors ({result['best']['dense']} vs {result['best']['moe']})")
    for col in ("factor", "favours", "basis", "why"):
        factors.add_column(col, overflow="fold")
    colour = {"moe": "magenta", "dense": "cyan", "neutral": "white"}
    for f in result["factors"]:
        factors.add_row(f["factor"], Text(f["favours"], style=colour[f["favours"]]), basis_text(f), f["why"])
    if result["factors"]:
        console.print(factors)
    rec = result["recommendation"]
    console.print(Text(f"Recommendation: {rec['choice']} — {rec['model']}", style="bold"))
    console.print(rec["reason"])
    console.print(Text("What would flip it:", style="bold"))
    for flip in result["flips"]:
        console.print(f"  - {flip}")


# --- measurement ----------------------------------------------------------------------------------------



@app.command()
def calibrate(
    device: DeviceOpt = "cpu",
    out: Annotated[str | None, typer.Option(help="Also write the hardware spec to this file.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Fewer shapes and repeats (about 15 s).")] = False,
    refresh: Annotated[bool, typer.Option("--refresh", help="Measure again even if cached.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Measure this machine (matmul FLOP/s, bandwidth, overheads, all-to-all) into a hardware spec file."""
    from pathlib import Path

    from moelab.bench.calibrate import calibrated_hardware, check_device, write_hardware
    from moelab.data.cache import check_writable_file
    from moelab.progress import cli_mode

    check_device(device)
    if out:
        check_writable_file(Path(out), "--out")
    path = calibrated_hardware(device, quick=quick, refresh=refresh, progress=cli_mode(as_json))
    hw = json.loads(path.read_text())
    if out:
        write_hardware(hw, Path(out))
    if as_json:
        return _emit_json({**hw, "path": str(path), "out": out})
    table = Table(title=f"{hw['name']} ({hw['measurements']['machine']['cpu']}, "
                               f"{hw['measurements']['threads']} threads)", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    links = (f"{hw['intra_node_gbps']:.2f} GB/s, {hw['intra_node_latency_us']:.0f} us latency"
             if "intra_node_gbps" in hw else "not measured")
    for key, value in (
        ("matmul", ", ".join(f"{dt} {v * 1e3:.1f} GFLOP/s" for dt, v in hw["peak_tflops"].items())),
        ("decode bandwidth", f"{hw['memory_bandwidth_gbps']:.1f} GB/s batched (2-8 rows), "
                             f"{hw.get('gemv_bandwidth_gbps', 0):.1f} GB/s one row"),
        ("cache", f"{fmt.nbytes(hw.get('cache_gb', 0) * 1e9)} at {hw.get('cache_bandwidth_gbps', 0):.1f} GB/s"),
        ("overheads", f"step {hw['step_overhead_us']:.0f} us, layer {hw['layer_overhead_us']:.0f} us, MoE layer "
                      f"{hw['moe_layer_overhead_us']:.0f} us, expert {hw['expert_overhead_us']:.0f} us"),
        ("all-to-all", links),
        ("memory", fmt.nbytes(hw["memory_gb"] * 1e9)),
        ("file", str(path) + (f" (and {out})" if out else "")),
    ):
        table.add_row(key, value)
    console.print(table)


@app.command()
def fit(
    manifest: Annotated[str, typer.Argument(help="Manifest YAML/JSON: result files and the setting of each.")],
    hardware: Annotated[str, typer.Option("--hardware", "-H", help="The base: preset name or hardware file.")],
    out: Annotated[str, typer.Option(help="The fitted hardware file to write (.yaml, or .json).")],
    holdout: Annotated[list[str] | None, typer.Option(help="A manifest to report the fit's error on "
                                                          "(repeatable; not fitted).")] = None,
    params: Annotated[str | None, typer.Option(help="Parameters to fit, comma-separated (default: those the "
                                                    "points inform; see moelab.cost.fit).")] = None,
    loss: Annotated[str, typer.Option(help="squared (least squares on log time) or soft_l1 (a few outliers "
                                           "do not pull every parameter).")] = "squared",
    as_json: JsonFlag = False,
) -> None:
    """Fit the hardware's efficiency curves and overheads to your measurements; write a --hardware file."""
    from pathlib import Path

    from moelab.bench.results import manifest_files, manifest_measurements, model_specs
    from moelab.cost.fit import (
        LOSSES,
        dump_hardware_file,
        evaluate,
        fitted_hardware_file,
        median_abs,
        write_file_atomically,
    )
    from moelab.cost.fit import fit as run_fit
    from moelab.outfile import check_output_file
    from moelab.spec.hardware import load_hardware

    target = check_output_file(out, "--out")
    if loss not in LOSSES:
        raise MoelabError(f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    names = None if params is None else [p.strip() for p in params.split(",") if p.strip()]
    if names is not None and not names:
        raise MoelabError("--params names no parameter")
    base = load_hardware(hardware)
    inputs = [f for m in (manifest, *(holdout or [])) for f in manifest_files(m)]
    if any(os.path.realpath(target) == os.path.realpath(f) for f in inputs):
        raise MoelabError(f"--out {out}: is one of the fit's own input files; name a new file")
    points = manifest_measurements(manifest, base.name, base.execution)
    holdouts = [(path, manifest_measurements(path, base.name, base.execution)) for path in holdout or []]
    specs = model_specs(points + [m for _, ms in holdouts for m in ms])
    result = run_fit(points, base, names, specs, loss=loss)
    after = result.hardware[base.name]
    checks = [(path, evaluate(ms, {base.name: base}, {base.name: after}, specs)) for path, ms in holdouts]
    raw = fitted_hardware_file(result, base.name, Path(manifest).name)
    write_file_atomically(target, dump_hardware_file(raw, target))
    load_hardware(str(target))  # what --hardware will read: a file that does not load is a bug, not a result

    def block(pts):
        return {"points": sum(p.failed is None for p in pts),
                "median_abs_error_before": median_abs([p.error_before for p in pts]),
                "median_abs_error_after": median_abs([p.error_after for p in pts]),
                "failed": [{"name": p.name, "reason": p.failed} for p in pts if p.failed],
                "per_point": [p.to_dict() for p in pts]}

    if as_json:
        return _emit_json({"out": out, "hardware": base.name, "manifest": manifest, **result.to_dict(),
                           "failed": [{"name": p.name, "reason": p.failed} for p in result.failed],
                           "holdout": [{"manifest": path, **block(pts)} for path, pts in checks]})
    table = Table(title=f"moelab fit: {len(result.fitted)} points from {Path(manifest).name} on {base.name} "
                        f"({result.iterations} iterations{'' if result.converged else ', not converged'})")
    for col in ("parameter", "before", "after"):
        table.add_column(col, justify="left" if col == "parameter" else "right")
    for k in result.params:
        table.add_row(k + (" (at a bound)" if k in result.at_bound else ""), f"{result.before[k]:.4g}",
                      f"{result.values[k]:.4g}")
    console.print(table)
    errors = Table(title="Median |error| = |predicted / measured - 1|")
    for col in ("points", "n", "before", "after"):
        errors.add_column(col, justify="left" if col == "points" else "right")
    errors.add_row(f"fit: {manifest}", str(len(result.fitted)), _fit_share(result.median_before),
                   _fit_share(result.median_after))
    for path, pts in checks:
        b = block(pts)
        errors.add_row(f"holdout: {path}", str(b["points"]), _fit_share(b["median_abs_error_before"]),
                       _fit_share(b["median_abs_error_after"]))
    console.print(errors)
    for p in result.failed + [p for _, pts in checks for p in pts if p.failed]:
        console.print(f"not predicted: {p.name}: {p.failed}")
    console.print(f"wrote {out}; use it with --hardware {out}")


def _fit_share(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0%}"


@app.command()
def bench(
    model: Annotated[str, typer.Argument(help="Training preset, model preset, config.json, run folder or HF folder.")],
    model_b: Annotated[str | None, typer.Argument(help="A second model to compare.")] = None,
    device: DeviceOpt = "cpu",
    dtype: Annotated[str, typer.Option(help="fp32, bf16 or fp16.")] = "fp32",
    batches: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1,2,4,8,16,32,64",
    prompt: Annotated[int, typer.Option("--prompt", "--input", min=1, max=limits.MAX_BENCH_TOKENS,
                                        help="Prompt tokens per sequence "
                                        "(prompt + gen at most the model's positions).")] = 128,
    gen: Annotated[int, typer.Option("--gen", "--output", min=1, max=limits.MAX_BENCH_TOKENS,
                                     help="Decode steps timed after the prefill.")] = 32,
    shrink_to: Annotated[str | None, typer.Option("--shrink-to", help="Shrink to N parameters (e.g. 50M), "
                                                                       "keeping the expert structure.")] = None,
    hardware: Annotated[str | None, typer.Option("--hardware", "-H", help="Hardware for the prediction "
                                                 "(default: this machine's calibration).")] = None,
    repeats: Annotated[int | None, typer.Option(min=1, max=limits.MAX_REPEATS,
                                                help="Rounds of prefill + decode per batch size.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A smaller sweep and fewer repeats.")] = False,
    ep: Annotated[int | None, typer.Option("--ep", help="Experts over N processes, each running 1/N of the "
                                           "sequences (`torchrun --nproc-per-node N -m moelab bench MODEL --ep N`); "
                                           "predicted as plan epN.")] = None,
    offload_experts: Annotated[bool, typer.Option("--offload-experts", help="Also measure the run with its "
                                                  "experts offloaded: --resident N per MoE layer in memory, misses "
                                                  "read cold from its model.safetensors.")] = False,
    resident: Annotated[str | None, typer.Option("--resident", help="Experts per MoE layer kept in memory with "
                                                 "--offload-experts (a list like 2,4,6 measures each).")] = None,
    cache: Annotated[str | None, typer.Option("--cache", help="Which resident expert --offload-experts evicts: "
                                              "lru (default) or lfu.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Measure models on this machine beside the engine's prediction: latency, percentiles, memory, routing;
    with --ep under torchrun, one model's experts sharded over the processes; with --offload-experts, the run
    beside its offloaded variants (hit rate, per-miss seconds, the engine's offloaded decode)."""
    import statistics

    from moelab.bench.run import bench as run
    from moelab.progress import cli_mode

    models = [model] + ([model_b] if model_b else [])
    result = run(models, device=device, dtype=dtype, batches=_parse_batches(batches), prompt=prompt, gen=gen,
                 shrink_to=shrink_to, hardware=hardware, repeats=repeats, quick=quick, progress=cli_mode(as_json),
                 ep=ep, offload_experts=offload_experts, resident=resident, cache=cache)
    if result is None:  # a rank other than 0 of a torchrun job: rank 0 reports
        return None
    if as_json:
        return _emit_json(result)
    table = Table(title=f"Measured vs predicted on {result['device']} ({result['dtype']}, hardware "
                               f"{result['hardware']['name']}); error = (predicted - measured) / measured")
    for col in ("model", "phase", "batch", "measured", "predicted", "error", "p50", "p95", "p99", "tok/s",
                "pred tok/s", "KV", "act peak", "routing"):
        table.add_column(col, justify="left" if col in ("model", "phase") else "right")
    for r in result["rows"]:
        mem = r["memory"]
        act = mem.get("activations_bytes")
        table.add_row(r["model"], r["phase"], str(r["batch"]), fmt.seconds(r["measured_s"]),
                      fmt.seconds(r["predicted_s"]), _pct(r["rel_error"]), fmt.seconds(r["p50_s"]),
                      fmt.seconds(r["p95_s"]), fmt.seconds(r["p99_s"]), f"{r['tokens_per_second']:.0f}",
                      f"{r['predicted_tokens_per_second']:.0f}", fmt.nbytes(mem["kv_cache_bytes"]),
                      "-" if act is None else fmt.nbytes(act),
                      "-" if r["routing_share"] is None else f"{r['routing_share']:.0%}")
    console.print(table)
    for m in result["models"]:
        shrunk = f", shrunk from {m['shrunk_from']}" if "shrunk_from" in m else ""
        quantized = m.get("quantization")
        if quantized:  # the engine priced it at these dtypes
            shrunk += "; quantized " + ", ".join(f"{c}={d}" for c, d in quantized["components"].items())
        weights = next(r["memory"]["weights_bytes"] for r in result["rows"] if r["model"] == m["name"])
        held = (f" held ({m['offload']['resident']} resident experts per MoE layer, the rest read on a miss)"
                if m.get("offload") else "")
        console.print(f"{m['name']}: {fmt.count(m['params_total'])} total, "
                             f"{fmt.count(m['params_active'])} active{shrunk}; {fmt.nbytes(weights)} of weights{held} "
                             f"({m['weights']})")
    s = result["summary"]
    console.print("median |error|: " + ", ".join(
        f"{phase} {s[phase]['median_abs_rel_error']:.0%} (n={s[phase]['n']})" for phase in ("prefill", "decode")))
    par = result["parallel"]
    if par["world"] > 1:
        shares = {phase: [(r["alltoall_share"], r["predicted_alltoall_share"]) for r in result["rows"]
                          if r["phase"] == phase] for phase in ("prefill", "decode")}
        console.print(f"plan {par['plan']} over {par['world']} processes; all-to-all share of the step (median "
                      "measured / predicted): " + ", ".join(
                          f"{phase} {statistics.median(m for m, _ in v):.0%} / {statistics.median(p for _, p in v):.0%}"
                          for phase, v in shares.items()))
    if result.get("offload"):
        _print_offload(result)
    for warning in result["warnings"]:
        console.print(f"warning: {warning}")
    flip = result["flip"]
    if flip:
        for kind in ("measured", "predicted"):
            winners = flip[f"{kind}_winner_by_batch"]
            at = flip[f"{kind}_batch"]
            first = next(iter(winners.values()))
            line = (f"{winners[str(at)]} wins decode throughput from batch {at} (before: {first})" if at
                    else f"{first} wins decode throughput at every batch")
            console.print(f"{kind}: {line}")


def _print_offload(result: dict) -> None:
    """bench --offload-experts: the variants' decode rows beside the engine's offloaded decode and the seeds."""
    off = result["offload"]
    table = Table(title=f"Offloaded experts ({off['cache']}): decode per step; predicted = the engine's offloaded "
                        "decode at its modelled hit rate (and at the measured one); errors against the mean step (the "
                        "engine models a mean)")
    for col in ("resident", "batch", "hit rate", "misses/step", "miss (median)", "p50", "p95", "p99", "vs resident",
                "mean", "predicted", "error", "pred @ hit", "error @ hit"):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        o = r.get("offload")
        if not o:
            continue
        pred, at_hit = o["predicted"], o["predicted_at_measured_hit_rate"]
        table.add_row(str(o["resident"]), str(r["batch"]), "-" if o["hit_rate"] is None else f"{o['hit_rate']:.0%}",
                      f"{o['misses_per_step']:.1f}",
                      "-" if o["miss_seconds_median"] is None else fmt.seconds(o["miss_seconds_median"]),
                      fmt.seconds(r["p50_s"]), fmt.seconds(r["p95_s"]), fmt.seconds(r["p99_s"]),
                      "-" if o["slowdown_vs_resident"] is None else f"{o['slowdown_vs_resident']:.2f}x",
                      fmt.seconds(r["measured_mean_s"]),
                      "-" if pred is None else fmt.seconds(pred["step_seconds"]),
                      "-" if pred is None else _pct(r["rel_error"]),
                      "-" if at_hit is None else fmt.seconds(at_hit["step_seconds"]),
                      _pct(o["rel_error_at_measured_hit_rate"]))
    console.print(table)
    probe = off["read_probe"]
    console.print(f"a miss: {off['method']}; cold vs warm read of one expert ({fmt.nbytes(probe['bytes'])}): "
                  f"{fmt.seconds(probe['cold_s'])} vs {fmt.seconds(probe['warm_s'])} "
                  f"({probe['cold_over_warm']:.1f}x) on {probe['filesystem']}")
    low, high = off["seeds"]["swap_seconds"]
    console.print(f"the seeds: +{low * 1e3:.0f}-{high * 1e3:.0f} ms per swap ({off['seeds']['source']})")


@app.command()
def export(
    source: Annotated[str, typer.Argument(help="A moelab run folder or a Hugging Face folder.")],
    out: Annotated[str, typer.Option(help="The folder to write (new, empty, or an earlier export).")],
    as_json: JsonFlag = False,
) -> None:
    """Write a run or HF folder as a folder vLLM loads: config, safetensors weights and the HF tokenizer."""
    from moelab.serve.export import export as run

    done = run(source, out)
    info = {"folder": str(done.folder), "source": done.source, "model_type": done.model_type,
            "architecture": done.architecture, "name": done.name}
    if done.dequantized:  # a quantized run: serving engines cannot read moelab's layout
        info["dequantized"] = done.dequantized
    if as_json:
        return _emit_json(info)
    console.print(f"{done.name}: exported as {done.architecture} ({done.model_type}) to {done.folder}")
    if done.dequantized:
        parts = ", ".join(f"{c}={d}" for c, d in done.dequantized.get("components", {}).items())
        console.print(f"note: a quantized run ({parts}): its weights were written dequantized to float32")


def _serve_levels(text: str) -> tuple[int, ...]:
    try:
        values = [int(c) for c in text.split(",")]
    except ValueError:
        raise MoelabError(f"--concurrency expects comma-separated positive integers, got {text!r}"[:300]) from None
    if not values or min(values) < 1:
        raise MoelabError(f"--concurrency levels must be positive integers, got {text!r}"[:300])
    return tuple(dict.fromkeys(values))


@app.command("serve-bench")
def serve_bench(
    models: Annotated[list[str] | None, typer.Argument(help="Run folders, HF folders or exported folders to "
                                                           "serve with vLLM here.")] = None,
    engine: Annotated[str, typer.Option(help="The serving engine started for MODELs (vllm).")] = "vllm",
    endpoint: Annotated[list[str] | None, typer.Option(help="An OpenAI-compatible server already running: URL or "
                                                            "NAME=URL (repeatable).")] = None,
    model_id: Annotated[list[str] | None, typer.Option("--model-id", help="The model name each --endpoint "
                                                       "serves (one for all, or one per endpoint).")] = None,
    api_key_env: Annotated[str, typer.Option(help="The variable holding the endpoints' API key.")]
    = "OPENAI_API_KEY",
    from_results: Annotated[list[str] | None, typer.Option("--from-results", help="A `vllm bench serve "
                                                           "--save-result` file to report (repeatable).")] = None,
    concurrency: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,4,16,64",
    input: Annotated[int, typer.Option("--input", min=1, max=limits.MAX_TOKENS,
                                       help="Prompt tokens per request.")] = 128,
    output: Annotated[int, typer.Option("--output", min=1, max=limits.MAX_TOKENS,
                                        help="Output tokens per request (ignore_eos).")] = 64,
    requests: Annotated[int, typer.Option(min=1, max=100_000, help="Requests per level.")] = 64,
    request_timeout: Annotated[float, typer.Option(min=0.001, help="Seconds before one request is failed.")]
    = 300.0,
    slo_ttft_ms: Annotated[float | None, typer.Option(min=0.001, help="Goodput's TTFT objective, ms.")] = None,
    slo_tpot_ms: Annotated[float | None, typer.Option(min=0.001, help="Goodput's TPOT objective, ms.")] = None,
    port: Annotated[int | None, typer.Option(help="The port vLLM listens on (default: a free one).")] = None,
    dtype: Annotated[str | None, typer.Option(help="For MODELs: the dtype vLLM serves (default fp32); for "
                                                   "endpoints and results: the dtype predicted (default bf16).")]
    = None,
    hardware: Annotated[str | None, typer.Option("--hardware", "-H", help="Hardware for the prediction "
                                                 "(default for MODELs: this machine's calibration).")] = None,
    gpus: Annotated[int | None, typer.Option(min=1, max=limits.MAX_GPUS, help="GPUs behind an endpoint.")] = None,
    plan: Annotated[str | None, typer.Option(help="The endpoint's plan, e.g. tp8 (default tpGPUS).")] = None,
    spec: Annotated[str | None, typer.Option(help="The model an endpoint or result file serves, as moelab "
                                                  "knows it (default: its model id).")] = None,
    start_timeout: Annotated[float, typer.Option(min=1.0, help="Seconds to wait for vLLM to be ready.")] = 600.0,
    warmup: Annotated[bool, typer.Option(help="Before each level, one unmeasured round of CONCURRENCY requests "
                                              "(as vllm bench serve --num-warmups).")] = True,
    check_greedy: Annotated[int, typer.Option(min=0, max=1000, help="For MODELs: compare vLLM's greedy token ids "
                                                                    "with moelab's on N prompts.")] = 0,
    out: Annotated[str, typer.Option(help="Folder for result files, exports and server logs.")]
    = "runs/serve-bench",
    as_json: JsonFlag = False,
) -> None:
    """Serve models with vLLM (or drive running endpoints) at each concurrency; TTFT/TPOT beside predictions."""
    from pathlib import Path

    from moelab.data.cache import check_writable_dir
    from moelab.serve import bench, load

    if engine != "vllm":
        raise MoelabError(f"--engine must be vllm (the engine moelab starts), got {engine!r}; drive any other "
                          "server with --endpoint")
    models, endpoints_given, results, ids = models or [], endpoint or [], from_results or [], model_id or []
    settings = None
    if models or endpoints_given:
        settings = bench.LoadSettings(concurrency=_serve_levels(concurrency), input=input, output=output,
                                      requests=requests, request_timeout_s=request_timeout,
                                      slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms, warmup=warmup)
    targets = []
    if endpoints_given:
        if not ids:
            raise MoelabError("--endpoint needs --model-id: the model name the server serves")
        if len(ids) not in (1, len(endpoints_given)):
            raise MoelabError(f"give one --model-id for all endpoints or one per endpoint ({len(endpoints_given)}), "
                              f"got {len(ids)}")
        key = os.environ.get(api_key_env) or None
        names = set()
        for i, text in enumerate(endpoints_given):
            name, url = bench.parse_endpoint(text, i)
            if name in names:
                raise MoelabError(f"--endpoint name {name!r} is given twice; each endpoint needs its own name "
                                  "(NAME=URL)")
            names.add(name)
            targets.append(load.Endpoint(name=name, base_url=url, model_id=ids[i if len(ids) > 1 else 0],
                                         api_key=key))
    elif ids:
        raise MoelabError("--model-id names an --endpoint's model; give --endpoint too")
    if port is not None and not 1 <= port <= 65535:
        raise MoelabError(f"--port must be in 1..65535, got {port}")
    folder = check_writable_dir(Path(out), "--out") if (models or endpoints_given) else Path(out)
    prediction = bench.Prediction(hardware=hardware, gpus=gpus, plan=plan, dtype=dtype or "bf16")
    options = bench.ServeOptions(out=folder, port=port, dtype=dtype, start_timeout_s=start_timeout,
                                 check_greedy=check_greedy)
    say = _stderr_line("serve-bench")
    report = bench.run(models, targets, results, settings, prediction, options, spec_ref=spec, say=say)
    if as_json:
        _emit_json(report.rows)
        for line in report.notes + report.warnings:  # what the rows alone do not say, on stderr
            sys.stderr.write(f"serve-bench: note: {line}\n")
    else:
        _print_serve_bench(report)
    for failure in report.failures:
        sys.stderr.write(f"moelab: error: {failure}\n")
    if report.failures:
        raise typer.Exit(2)


def _stderr_line(prefix: str):
    def say(message: str) -> None:
        sys.stderr.write(f"{prefix}: {message}\n")
        sys.stderr.flush()
    return say


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _print_serve_bench(report) -> None:
    """Measured percentiles beside the engine's modelled means (p95, ITL and E2E are in --json)."""
    if report.rows:
        table = Table(title="Served (measured percentiles, ms) beside the engine's modelled means; error = "
                            "predicted / measured mean - 1")
        for col in ("model", "conc", "done", "TTFT p50", "TTFT p99", "pred mean", "err", "TPOT p50", "TPOT p99",
                    "pred mean", "err", "out tok/s", "pred", "err", "goodput req/s"):
            table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model",
                             overflow="fold")
        for r in report.rows:
            table.add_row(f"{r['model']} ({r['engine']})", str(r["concurrency"]), f"{r['completed']}/{r['requests']}",
                          _ms(r["ttft_ms_p50"]), _ms(r["ttft_ms_p99"]), _ms(r["predicted_ttft_ms"]),
                          _pct(r["rel_error_ttft_ms"]), _ms(r["tpot_ms_p50"]), _ms(r["tpot_ms_p99"]),
                          _ms(r["predicted_tpot_ms"]), _pct(r["rel_error_tpot_ms"]),
                          _ms(r["output_tokens_per_second"]), _ms(r["predicted_output_tokens_per_second"]),
                          _pct(r["rel_error_output_tokens_per_second"]), _ms(r["goodput_requests_per_second"]))
        console.print(table)
    for r in report.rows:
        if not (r.get("prediction") or {}).get("fits", True):
            console.print(f"note: {r['model']} at concurrency {r['concurrency']}: the predicted setting does not fit "
                          f"in memory on {r['prediction']['hardware']} ({r['prediction']['plan']}, "
                          f"{r['prediction']['dtype']}); its figures describe a deployment that cannot run")
    for server in report.servers:
        g = server.get("greedy")
        check = "" if not g else (f"; greedy ids equal to moelab's on {g['matched']}/{g['prompts']} prompts, "
                                  f"{g['near_ties']} near-ties, {len(g['mismatches'])} mismatches")
        console.print(f"{server['model']}: vLLM {server['vllm']} ({server['device']}, {server['dtype']}), ready "
                      f"after {server['ready_after_s']:.0f} s{check}")
    for line in report.notes + report.warnings:
        console.print(f"note: {line}")


@app.command()
def runs(
    ids: Annotated[list[int] | None, typer.Argument(help="Run ids to compare (default: all).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Every recorded training run: what ran, where, its status and summary metrics, side by side."""
    from moelab.train.store import list_runs

    rows = list_runs(ids)
    if as_json:
        return _emit_json(rows)
    table = Table(title="Training runs")
    for col in ("id", "model", "status", "steps", "tokens", "tok/s", "val loss", "machine", "out"):
        table.add_column(col, justify="right" if col in ("id", "steps", "tokens", "tok/s", "val loss") else "left")
    def number(value, show) -> str:  # a store row holds whatever its writer put there
        finite = isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < float("inf")
        return show(value) if finite else "-"

    for r in rows:
        summary = r["summary"]
        val = summary.get("val") if isinstance(summary.get("val"), dict) else {}
        table.add_row(str(r["id"]), r["model"], r["status"],
                      number(r["config"].get("steps"), str), number(summary.get("tokens"), lambda v: fmt.count(int(v))),
                      number(summary.get("tokens_per_second"), lambda v: f"{v:.0f}"),
                      number(val.get("mean"), lambda v: f"{v:.3f}"),
                      str(r["machine"].get("processor", "")), r["out_dir"])
    console.print(table)


# --- study ----------------------------------------------------------------------------------------------


@app.command()
def study(
    workload: Annotated[str | None, typer.Option(help="Workload YAML (default: the embedded chat-assistant "
                                                      "workload; see `moelab decide`).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A smaller budget: at most 2 minutes here.")] = False,
    out: Annotated[str, typer.Option(help="Folder for runs/, report.html, summary.json, study.json, CSVs.")]
    = "runs/study",
    progress: Annotated[bool, typer.Option(help="Show training progress bars.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """The whole decision end to end: train dense and MoE, calibrate, bench beside predictions, model the
    frontier pairs, decide, and write DIR/report.html."""
    from pathlib import Path

    from moelab.data.cache import check_writable_dir
    from moelab.decide.workload import load_workload
    from moelab.study import run_study

    wl = load_workload(workload) if workload else None
    check_writable_dir(out, "--out")

    def say(msg: str) -> None:  # stage lines: logs, so on stderr, with --json too (stdout holds the result)
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    result = run_study(Path(out), wl, quick=quick, progress=progress and not as_json, log=say)
    summary = json.loads((Path(out) / "summary.json").read_text())
    if as_json:
        return _emit_json({**summary, "wall_seconds": result["wall_seconds"], "out": out})
    rec = result["decision"]["recommendation"]
    headline = f"Recommendation: {rec['choice']} — {rec['model']}"
    console.print(Text(headline, style="bold"))
    console.print(rec["reason"])
    for flip in result["decision"].get("flips", []):
        console.print(f"  - {flip}")
    console.print(f"study finished in {result['wall_seconds']:.0f} s; report: {Path(out) / 'report.html'}")


# --- mitigations (moelab.mitigate): each command writes a run folder ------------------------------------

UpModeOpt = Annotated[str, typer.Option("--mode", help="copy (every expert the dense FFN), split (its hidden units "
                                        "cut into E experts), granular (E*M slices, S shared).")]
UpExpertsOpt = Annotated[int, typer.Option("--experts", min=1, max=limits.MAX_EXPERTS, help="Experts E per layer.")]
UpTopKOpt = Annotated[int, typer.Option("--top-k", min=1, max=limits.MAX_EXPERTS, help="Experts K per token.")]
UpGranOpt = Annotated[int, typer.Option("--granularity", min=1, max=limits.MAX_EXPERTS,
                                        help="granular: each of the E experts cut M ways.")]
UpSharedOpt = Annotated[int, typer.Option("--shared", min=0, max=limits.MAX_EXPERTS,
                                          help="granular: S of the E*M slices become shared experts.")]


def _val_cells(val: dict | None, domains: list[str]) -> list[str]:
    val = val or {}
    return [f"{val[d]:.3f}" if isinstance(val.get(d), float) else "-" for d in [*domains, "mean"]]


@app.command()
def upcycle(
    run: Annotated[str, typer.Argument(help="A dense moelab run folder, or a dense HF folder (config.json + "
                                             "safetensors).")],
    experts: UpExpertsOpt,
    top_k: UpTopKOpt,
    out: Annotated[str, typer.Option(help="New run folder (must be missing or empty).")],
    mode: UpModeOpt = "copy",
    granularity: UpGranOpt = 1,
    shared: UpSharedOpt = 0,
    seed: SeedOpt = 0,
    as_json: JsonFlag = False,
) -> None:
    """Upcycle a dense run into a MoE run: its FFN weights moved into experts, a new small random router."""
    from moelab.mitigate.upcycle import upcycle as run_upcycle

    result = run_upcycle(run, experts, top_k, out, mode, granularity, shared, seed=seed)
    if as_json:
        return _emit_json(result)
    p, a = result["params_total"], result["params_active"]
    console.print(f"{result['source_model']} -> {result['model']} ({result['mode']}, router {result['router']} x "
                  f"{result['routed_scaling_factor']:g}): {fmt.count(p['before'])} -> {fmt.count(p['after'])} "
                  f"parameters, {fmt.count(a['before'])} -> {fmt.count(a['after'])} active; {result['out']}")
    if "loss_before" in result:
        domains = sorted(k for k in result["loss_before"] if k != "mean")
        table = Table(title="validation loss per domain, before training")
        for col in ("", *domains, "mean"):
            table.add_column(col, justify="left" if not col else "right")
        table.add_row("dense", *_val_cells(result["loss_before"], domains))
        table.add_row("upcycled", *_val_cells(result["loss_after"], domains))
        console.print(table)


@app.command("upcycle-compare")
def upcycle_compare(
    run: Annotated[str, typer.Argument(help="The dense run (its pretraining sets the batch, schedule and corpus).")],
    experts: UpExpertsOpt,
    top_k: UpTopKOpt,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Steps N after the pretraining (the scratch MoE "
                                       "trains pretraining + N).")],
    out: Annotated[str, typer.Option(help="Folder for the three arms and result.json (a rerun resumes).")],
    mode: UpModeOpt = "copy",
    granularity: UpGranOpt = 1,
    shared: UpSharedOpt = 0,
    target_margin: Annotated[float, typer.Option("--target-margin", min=0.0, help="The target loss is the dense "
                                                 "run's final mean validation loss minus this (nats).")] = 0.05,
    eval_every: Annotated[int | None, typer.Option("--eval-every", min=1, help="Steps between evaluations "
                                                   "(default: N/6).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Continued dense training vs the upcycled MoE vs that MoE from scratch, on one budget after the dense
    pretraining: loss per domain, tokens, FLOPs and seconds to a target fixed before the runs."""
    from moelab.mitigate.upcycling import upcycle_compare as run_compare

    result = run_compare(run, experts, top_k, steps, out, mode, granularity, shared, target_margin, eval_every,
                         progress=progress and not as_json, log=lambda msg: sys.stderr.write(msg + "\n"))
    if as_json:
        return _emit_json(result)
    arms = result["arms"]
    domains = sorted(k for k in (arms["dense_continued"]["final_val"] or {}) if k not in ("mean", "dense"))
    table = Table(title=f"{result['budget']['total_steps']} steps in all; target {result['target_loss']:.3f} "
                        f"({result['target_rule']})")
    for col in ("arm", "model", "total", "active", "tokens to target", "FLOPs to target", "wall s to target",
                "wall s", *domains, "mean"):
        table.add_column(col, justify="left" if col in ("arm", "model") else "right")
    for name, r in arms.items():
        hit = r["to_target"]
        table.add_row(name, r["model"], fmt.count(r["params_total"]), fmt.count(r["params_active"]),
                      fmt.count(hit["tokens_total"]) if hit else "not reached",
                      f"{hit['flops_total']:.3g}" if hit else "-", f"{hit['wall_seconds_total']:.1f}" if hit else "-",
                      f"{r['wall_seconds_total']:.1f}", *_val_cells(r["final_val"], domains))
    console.print(table)
    console.print(result["note"])


@app.command()
def prune(
    run: Annotated[str, typer.Argument(help="A moelab MoE run folder (moelab train --out).")],
    out: Annotated[str, typer.Option(help="The new run folder to write (missing or empty).")],
    keep: Annotated[int | None, typer.Option(help="Experts kept per MoE layer: the N most used.")] = None,
    min_share: Annotated[float | None, typer.Option("--min-share", help="Keep the experts with at least this "
                                                    "share of their layer's load, in (0, 1).")] = None,
    calibration_tokens: Annotated[int, typer.Option("--calibration-tokens", help="Training tokens per domain "
                                                    "the load is counted on.")] = 16384,
    eval_tokens: Annotated[int | None, typer.Option("--eval-tokens", help="Validation tokens per domain for "
                                                    "the loss before and after (default: the run's own "
                                                    "--eval-tokens, else 16384).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Drop the least used routed experts of a MoE run (load counted on a calibration slice of its corpus) and
    renormalise the router over the kept ones; write the pruned run with its memory and loss per domain."""
    from moelab.mitigate.prune import prune as run_prune

    s = run_prune(run, out, keep=keep, min_share=min_share, calibration_tokens=calibration_tokens,
                  eval_tokens=eval_tokens)
    if as_json:
        return _emit_json(s)
    table = Table(title=f"{s['from_model']} -> {s['model']}: experts kept per layer (load on "
                        f"{sum(s['calibration_tokens_counted'].values())} calibration tokens)")
    for col in ("layer", "experts", "kept", "kept ids", "load kept"):
        table.add_column(col, justify="right")
    for r in s["layers"]:
        table.add_row(str(r["layer"]), str(r["experts"]), str(len(r["kept"])), ",".join(map(str, r["kept"])),
                      f"{r['kept_load_share']:.1%}")
    console.print(table)
    w = s["weight_bytes"]
    console.print(f"weights {fmt.nbytes(w['before'])} -> {fmt.nbytes(w['after'])} "
                  f"(saved {fmt.nbytes(w['saved'])}, {w['saved_fraction']:.1%})")
    _print_loss_delta(s["loss"])
    console.print(f"pruned run: {s['folder']} (decode speed: moelab bench {s['folder']})")

def _print_loss_delta(loss: dict) -> None:
    """A transform's validation loss per domain, before and after (its summary's "loss")."""
    table = Table(title="validation loss per domain (rare: under half the mean domain's training tokens)")
    for col in ("domain", "before", "after", "delta"):
        table.add_column(col, justify="left" if col == "domain" else "right")
    for d, delta in loss["delta"].items():
        label = f"{d} (rare)" if d in loss["rare_domains"] else d
        table.add_row(label, f"{loss['before'][d]:.4f}", f"{loss['after'][d]:.4f}", f"{delta:+.4f}")
    console.print(table)


@app.command()
def quantize(
    run: Annotated[str, typer.Argument(help="A moelab run folder (moelab train --out), not already quantized.")],
    out: Annotated[str, typer.Option(help="The new run folder to write (missing or empty).")],
    experts: Annotated[str | None, typer.Option(help="The routed experts' dtype: int8 (per output channel) or "
                                                "int4 (per group); shorthand for --component "
                                                "routed_experts=DTYPE.")] = None,
    component: Annotated[list[str] | None, typer.Option(help="NAME=DTYPE (repeatable): shared_experts, attention, "
                                                        "dense_ffn, embeddings (or routed_experts) at int8 or "
                                                        "int4; what is not named keeps its dtype.")] = None,
    group_size: Annotated[int, typer.Option("--group-size", help="int4: input elements per scale (must divide "
                                            "every quantized row).")] = 128,
    eval_tokens: Annotated[int | None, typer.Option("--eval-tokens", help="Validation tokens per domain for "
                                                    "the loss before and after (default: the run's own "
                                                    "--eval-tokens, else 16384).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Weight-only symmetric quantization (int8 per channel, int4 per group, fp32 scales) of a run's experts and
    other components, dequantized on the fly; write the run with its exact weight bytes, rounding error and loss
    per domain."""
    from moelab.mitigate.quantize import quantize as run_quantize

    s = run_quantize(run, out, experts=experts, component=component, group_size=group_size, eval_tokens=eval_tokens)
    if as_json:
        return _emit_json(s)
    w, parts = s["weight_bytes"], ", ".join(f"{c}={d}" for c, d in s["components"].items())
    group = f"; int4 group {s['group_size']}" if "int4" in s["components"].values() else ""
    table = Table(title=f"{s['from_model']} -> {s['model']} ({parts}{group})")
    for col in ("component", "before", "after", "max |error|", "bound s/2"):
        table.add_column(col, justify="left" if col == "component" else "right")
    for c, before in w["before"].items():
        if before or w["after"][c]:
            e = s["error"].get(c)
            table.add_row(c, fmt.nbytes(before), fmt.nbytes(w["after"][c]),
                          f"{e['max_abs_error']:.3g}" if e else "-", f"{e['max_bound']:.3g}" if e else "-")
    console.print(table)
    console.print(f"weights {fmt.nbytes(w['before']['total'])} -> {fmt.nbytes(w['after']['total'])} "
                  f"({w['ratio']:.2f}x smaller); file {fmt.nbytes(w['file_before'])} -> {fmt.nbytes(w['file_after'])}")
    _print_loss_delta(s["loss"])
    console.print(f"quantized run: {s['folder']} (decode speed: moelab bench {s['folder']})")


# Typer >= 0.22 raises its own click fork's exceptions; older releases raise click's.
_CLI_ERRORS = tuple({click.ClickException, getattr(typer, "TyperException", click.ClickException)})
_EXITS = tuple({click.exceptions.Exit, typer.Exit})
_ABORTS = tuple({click.exceptions.Abort, typer.Abort})


# --- issue 16: task probes, hybrids, scaling laws, claims -------------------------------------------

@app.command()
def probe(
    runs: Annotated[list[str], typer.Argument(help="Trained run folders (moelab train --out), one or more.")],
    per_level: Annotated[int, typer.Option("--per-level", min=1, max=10_000, help="Items per level: per attribute "
                                           "(knowledge, at most its held-out pairs) and per math level (reasoning; "
                                           "levels 1 and 2 have 10 and 90).")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Exact-match accuracy of greedy answers on held-out questions: knowledge (facts of people whose biographies
    the study corpus holds) and reasoning (a ladder of math levels), with Wilson 95% intervals, n and chance."""
    from moelab.eval.probes import probe_items
    from moelab.eval.run import probe_run
    from moelab.mitigate.runs import read_run

    sources = [read_run(ref) for ref in runs]  # every run checked before any work
    items = probe_items(per_level)
    results = []
    for source in sources:
        sys.stderr.write(f"probe: {source.run_folder}: {len(items)} questions\n")
        results.append(probe_run(source, items))
    if as_json:
        return _emit_json({"per_level": per_level, "ci": "Wilson 95%", "runs": results})
    table = Table(title="Probe accuracy (exact match, greedy; Wilson 95% interval; chance = best constant answer)")
    for col in ("run", "kind", "set", "level", "n", "accuracy", "95% CI", "chance"):
        table.add_column(col, justify="left" if col in ("run", "kind", "set", "level") else "right")
    for r in results:
        for item_set, cell in r["scores"].items():
            for level, c in [("all", cell), *cell["levels"].items()]:
                table.add_row(r["model"] if level == "all" else "", r["kind"] if level == "all" else "",
                              item_set if level == "all" else "", level, str(c["n"]), f"{c['accuracy']:.1%}",
                              f"{c['ci_low']:.1%}-{c['ci_high']:.1%}", f"{c['chance']:.1%}")
    console.print(table)
    for r in results:
        for note in r["notes"]:
            console.print(f"{r['run']}: {note}")
    console.print("reasoning levels 1 and 2 (the 10 one-digit successors, the 90 other one-digit sums) are in the "
                  "study corpus verbatim: they measure what was learned, not held-out generalisation; every other "
                  "question is held out")

@app.command()
def hybrid(
    run_dense: Annotated[str, typer.Argument(help="The dense run (moelab train --out).")],
    run_moe: Annotated[str, typer.Argument(help="The MoE run, trained with the same tokenizer.")],
    out: Annotated[str, typer.Option(help="Folder for hybrid.json (and, with vLLM, the exports, server logs and "
                                          "caches); not inside a run.")],
    thresholds: Annotated[str, typer.Option(help="Comma-separated thresholds in [0, 1]: the cascade escalates when "
                                                 "the dense confidence is below one; the route sends to the MoE "
                                                 "when P(MoE needed) is at least one.")]
    = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
    engine: Annotated[str, typer.Option(help="Who answers: vllm (served on 127.0.0.1), moelab (its own greedy "
                                             "generation) or auto (vllm where the serving environment is).")]
    = "auto",
    per_level: Annotated[int, typer.Option("--per-level", help="Probe items per level (both sets); the router "
                                           "trains on as many of another draw.")] = 16,
    as_json: JsonFlag = False,
) -> None:
    """Hybrid serving measured: each probe query answered once by the dense and the MoE model (accuracy, confidence,
    seconds, FLOPs); dense, MoE, cascade and route at every threshold composed from those measurements into a
    cost-quality curve with Wilson 95% intervals and Pareto flags."""
    from moelab.hybrid.run import run_hybrid

    result = run_hybrid(run_dense, run_moe, out, thresholds=thresholds, engine=engine, per_level=per_level,
                        log=_stderr_line("hybrid"))
    if as_json:
        return _emit_json(result)
    table = Table(title=f"Hybrid cost-quality curve ({result['engine']}; {result['items']} queries, "
                        "composed from per-query measurements)")
    for col in ("policy", "threshold", "accuracy", "95% CI", "n", "ms/query", "MFLOPs/query", "to MoE",
                "Pareto (latency)", "Pareto (FLOPs)"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for p in result["points"]:
        label = p["policy"] + (f" ({p['router']})" if p.get("router") == "domain" else "")
        table.add_row(label, "-" if p["threshold"] is None else f"{p['threshold']:g}", f"{p['accuracy']:.1%}",
                      f"{p['ci_low']:.1%}-{p['ci_high']:.1%}", str(p["n"]), f"{p['latency_s_mean'] * 1e3:.1f}",
                      f"{p['flops_per_query'] / 1e6:.2f}", f"{p['escalation_rate']:.0%}",
                      "yes" if p["pareto"] else "", "yes" if p["pareto_flops"] else "")
    console.print(table)
    console.print(f"engine: {result['engine_note']}")
    r = result["router"]
    console.print(f"router: {r['kind']}, cross-fitted in {r['folds']} folds on {r['extra_items']} items of another "
                  f"probe draw and the other folds' scored items ({r['positives']} of {r['n']} needed the MoE)"
                  + (", constant: every label alike" if r.get("constant") else ""))
    console.print(f"wrote {result['path']} in {result['seconds']:.1f} s")

@app.command()
def sweep(
    out: Annotated[str, typer.Option(help="Folder: runs/<name>/ per model and sweep.json (rerun the same command "
                                          "to resume: finished runs are skipped).")],
    sizes: Annotated[str | None, typer.Option(help="Non-embedding active parameter counts, comma-separated, at "
                                              "least 3 (default 0.5M,1M,2M,4M,8M; with --quick 10k,20k,40k,80k,160k).")]
    = None,
    kinds: Annotated[str, typer.Option(help="dense, moe or dense,moe (MoE: 8 experts, top-2).")] = "dense,moe",
    experts: Annotated[str | None, typer.Option(help="The expert axis: MoE models of each count (e.g. 4,8,16, "
                                                "top-2) at one size, for the seeds' (C*E)^-beta form.")] = None,
    experts_at: Annotated[str | None, typer.Option("--experts-at", help="The expert axis' size (default: the "
                                                   "median of --sizes).")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Optimizer steps of every run (default 300 of 16 x 128 "
                                              "tokens; with --quick 12 of 4 x 32).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A tiny budget and tiny sizes, for tests (seconds).")]
    = False,
    data: DataOpt = None,
    vocab_size: Annotated[int | None, typer.Option("--vocab-size", min=2, help="Tokenizer vocabulary (default "
                                                   "2048); the models' vocabulary is the same.")] = None,
    seed: SeedOpt = 0,
    lr: Annotated[float | None, typer.Option(help="One peak learning rate for every run (default: each run's by "
                                             "Kaplan et al. 2020's rule, 0.003239 - 0.0001395 ln N).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Train a grid of dense and MoE models by active size on one token budget and data order (resumable); fit it
    with `moelab fit-laws DIR`."""
    from moelab.laws import grid as g
    from moelab.laws.sweep import DEFAULT_SIZES, LR_RULE, QUICK_SIZES, run_sweep, sweep_config

    size_list = g.parse_sizes(sizes if sizes is not None else QUICK_SIZES if quick else DEFAULT_SIZES)
    kind_list, expert_list = g.parse_kinds(kinds), g.parse_experts(experts)
    at = g.parse_size(experts_at) if experts_at is not None else None
    if (expert_list or at is not None) and "moe" not in kind_list:
        raise MoelabError("--experts / --experts-at need --kinds with moe")
    if at is not None and not expert_list:
        raise MoelabError("--experts-at needs --experts")
    cfg = sweep_config(quick, steps, data=data, vocab_size=vocab_size, seed=seed, lr=lr)
    points = g.build_grid(size_list, kind_list, expert_list, at, vocab=cfg.vocab_size)
    result = run_sweep(points, cfg, out, progress=progress and not as_json,
                       log=lambda msg: sys.stderr.write(msg + "\n"),
                       grid={"sizes": size_list, "kinds": kind_list, "experts": expert_list, "experts_at": at},
                       lr_rule=None if lr is not None else LR_RULE)
    if as_json:
        return _emit_json(result)
    table = Table(title=f"Sweep: {len(result['rows'])} runs of {fmt.count(result['token_budget'])} tokens each "
                        f"({cfg.steps} steps of {cfg.batch_size} x {cfg.seq_len}), in {result['seconds']:.0f} s")
    for col in ("run", "kind", "active (non-emb.)", "total", "experts", "layers x d", "peak lr", "compute 6ND",
                "final val", "status", "s here"):
        table.add_column(col, justify="left" if col in ("run", "kind", "status") else "right")
    for r in result["rows"]:
        table.add_row(r["name"], r["kind"], fmt.count(r["params_active"]), fmt.count(r["params_total"]),
                      str(r["experts"] or "-"), f"{r['layers']} x {r['d_model']}", f"{r['lr']:.3g}",
                      f"{r['compute']:.3g}",
                      "-" if r["final_val"] is None else f"{r['final_val']:.4f}", r["status"],
                      f"{r['seconds_here']:.0f}")
    console.print(table)
    console.print(f"fit it: moelab fit-laws {out}")


@app.command("fit-laws")
def fit_laws(
    folder: Annotated[str, typer.Argument(help="A sweep folder (moelab sweep --out), holding sweep.json.")],
    as_json: JsonFlag = False,
) -> None:
    """Fit L(C) = E + A*C^-alpha per kind on all but the largest size (with a 95% interval and the error of
    predicting the largest), and the seeds' L = E + A*(C*E)^-beta over the MoE expert axis."""
    from moelab.laws.fits import fit_sweep, load_sweep

    result = fit_sweep(load_sweep(folder))
    if as_json:
        return _emit_json(result)
    table = Table(title=f"Scaling-law fits ({result['basis']}; C = 6 N D, N = non-embedding active parameters, "
                        f"one budget of {fmt.count(result['token_budget'])} tokens)")
    for col in ("fit", "form", "points", "E", "exponent", "95% interval", "at bound",
                "pure power law (vs seeds)", "seeds (pure)", "held out", "predicted", "measured", "error"):
        table.add_column(col, justify="left" if col in ("fit", "form", "at bound") else "right")

    def num(x: float, spec: str) -> str:
        return format(x + 0.0, spec)  # + 0.0: never "-0"

    for name, f in result["fits"].items():
        key = f["exponent_name"]
        ci, h, pure = f[f"{key}_ci"], f["holdout"] or {}, f["pure"]
        interval = "-" if ci is None else (f"[{num(ci[0], '.3g')}, {num(ci[1], '.3g')}]"
                                           + (" (open: uninformative)" if f["ci_open"] else ""))
        exponent = "no power law (A = 0)" if "A=0" in f["at_bound"] else f"{key} {num(f[key], '.4g')}"
        pci = pure[f"{key}_ci"]
        table.add_row(name, f["form"], str(f["points"]), num(f["E"], ".4g"), exponent, interval,
                      ", ".join(f["at_bound"]) or "-",
                      f"{num(pure[key], '.3g')} [{num(pci[0], '.3g')}, {num(pci[1], '.3g')}]", f"{f['seed']:g}",
                      h.get("name", "-"), f"{h['predicted']:.4f}" if h else "-", f"{h['measured']:.4f}" if h else "-",
                      f"{h['rel_error']:+.2%}" if h else "-")
    console.print(table)
    for name, f in result["fits"].items():
        if f.get("uninformative"):
            console.print(f"{name}: the E + A*x^-{f['exponent_name']} exponent is uninformative: "
                          + "; ".join(f["uninformative"]))
    only = (result["fits"].get("moe_experts") or {}).get("expert_axis_only")
    if only:
        losses = ", ".join(f"E={n}: {v:.4f}" for n, v in zip(only["experts"], only["losses"], strict=True))
        console.print(f"the expert axis alone at {fmt.count(only['size'])} active ({losses}): loss ~ E^-beta with beta "
                      f"{num(only['beta'], '.3g')} [{num(only['beta_ci'][0], '.3g')}, "
                      f"{num(only['beta_ci'][1], '.3g')}]")
    for note in result["notes"]:
        console.print(note)

@app.command()
def claims(
    evidence: Annotated[str | None, typer.Option("--evidence", help="A study folder (moelab study --out) or its "
                                                 "study.json: the measured claims are checked against it.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Every checkable numeric claim of the two seed analyses: the seed's words, moelab's figure for the same
    setting (the engine's, or the study's measurement), the setting assumed, and a verdict (confirmed,
    contradicted, not_reproducible, out_of_scope) under a stated tolerance."""
    from moelab.claims import STUDY_PARTS, claims_table, verdict_counts
    from moelab.claims.text import show
    from moelab.decide.evidence import load_study

    study = load_study(evidence, STUDY_PARTS) if evidence is not None else None
    rows = claims_table(study)
    if as_json:
        return _emit_json(rows)
    styles = {"confirmed": "green", "contradicted": "bold red", "not_reproducible": "yellow", "out_of_scope": "dim"}
    table = Table(title="The seeds' claims against moelab (seed 000: architecture and inference economics; 001: "
                        "performance tables)", show_lines=True)
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    for col, width in (("claim", 34), ("seed says", 11), ("moelab", 11), ("unit", 12), ("verdict", 16),
                       ("rule", 4), ("setting (basis) · why", None)):
        table.add_column(col, justify="right" if col in ("seed says", "moelab", "rule") else "left",
                         max_width=width)
    for r in rows:
        table.add_row(Text(f"{r['seed']} {r['id']}\n\u201c{r['quote']}\u201d"), show(r["seed_value"]),
                      show(r["moelab_value"]), r["unit"], Text(r["verdict"], style=styles.get(r["verdict"], "")),
                      str(rules.index(r["rule"]) + 1), Text(f"{r['setting']} ({r['basis']}) · {r['why']}"))
    console.print(table)
    for n, rule in enumerate(rules, 1):
        console.print(f"rule {n}: {rule}")
    counts = verdict_counts(rows)
    valued = sum(r["moelab_value"] is not None for r in rows)
    console.print(f"{len(rows)} claims: " + ", ".join(f"{n} {v}" for v, n in counts.items())
                  + f"; {valued} with a moelab figure; measured claims "
                  + (f"from {evidence}" if study is not None else "need --evidence STUDY_DIR (none given)"))


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback; Ctrl-C exits 130.

    The command is parsed and invoked here, not through `app(standalone_mode=False)`: typer's main turns a
    KeyboardInterrupt into `Exit(130)` and, outside standalone mode, *returns* that code as if it were the
    command's result (typer 0.29, its own click fork), so an interrupted run looked like a success."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    try:
        with command.make_context("moelab", args) as ctx:
            command.invoke(ctx)
    except KeyboardInterrupt:
        sys.stderr.write("moelab: interrupted\n")
        return 130
    except MoelabError as e:
        return _fail(str(e))
    except _EXITS as e:
        return getattr(e, "exit_code", 0)
    except _ABORTS:
        sys.stderr.write("moelab: aborted\n")
        return 130
    except _CLI_ERRORS as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `moelab` alone: the help is already on stdout
            return _fail("no command given; the commands are listed above")
        return _fail(e.format_message())
    except BrokenPipeError:  # `moelab ... | head`: the reader left; say nothing more
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed pipe for interpreter exit
        return 1
    return 0


def _fail(message: str) -> int:
    sys.stderr.write(f"moelab: error: {' '.join(message.split())}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
