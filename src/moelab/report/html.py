"""The study report: one self-contained HTML page (inline CSS and SVG, no script, no network), summary.json and
a CSV of every table, written into one folder.

The page follows the seeds' method: objective -> resources -> workload -> scale (frontier economics) ->
prototype (training) -> task type (probe accuracy) -> benchmark (measured vs predicted) -> served with vLLM
(measured TTFT, TPOT, throughput) -> hybrid serving -> scaling across processes -> mitigations -> scaling laws ->
the seeds' claims -> decision. Every figure and table says whether its numbers were measured on this machine,
modelled by the engine, or are priors; parts a study did not run are shown as "not run", never as an error.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moelab import jsonout
from moelab.decide.recommend import (
    BASIS_MEASURED,
    BASIS_MODELLED,
    BASIS_MODELLED_TINY,
    BASIS_PRIOR,
    BASIS_TINY,
    LATENCY_MEAN,
    TINY_PARAMS,
    basis_text,
    bench_basis,
    tiny_detail,
    training_basis,
)
from moelab.report import plots
from moelab.train.clocks import training_seconds

DATASHEET_MEASURED = "datasheet + measured"  # the hardware table: a datasheet column beside a calibrated one
BASIS_LABEL = {BASIS_MEASURED: "measured", BASIS_MODELLED: "modelled", BASIS_PRIOR: "prior",
               BASIS_TINY: "measured at tiny scale", BASIS_MODELLED_TINY: "modelled + measured at tiny scale",
               DATASHEET_MEASURED: "datasheet + measured"}
BADGE_CLASS = {BASIS_MEASURED: "measured", BASIS_MODELLED: "modelled", BASIS_PRIOR: "prior", BASIS_TINY: "tiny",
               BASIS_MODELLED_TINY: "mixed", DATASHEET_MEASURED: "mixed"}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, digits: int = 3) -> str:
    """A compact human number: 3 significant digits, thousands separators for big ones."""
    if x is None or x == "":
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return "–"
        if x != 0 and (abs(x) >= 1e7 or abs(x) < 1e-3):
            return f"{x:.{digits}g}"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def _g(d: Any, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d or d[k] is None:
            return default
        d = d[k]
    return d


class _Page:
    """Collects tables (each also written as a CSV) and figures while the page is built."""

    def __init__(self) -> None:
        self.csvs: dict[str, tuple[list[str], list[list[Any]]]] = {}
        self.figures = 0

    def table(self, name: str, headers: list[str], rows: list[list[Any]], basis: str | None = None,
              caption: str = "", detail: str = "") -> str:
        self.csvs[name] = (headers, rows)
        head = "".join(f"<th>{_e(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in rows)
        badge = _badge(basis, detail) if basis else ""
        cap = f"<caption>{badge}{_e(caption)} <span class='csv'>{_e(name)}.csv</span></caption>"
        return f"<div class='tablewrap'><table id='table-{_e(name)}'>{cap}<thead><tr>{head}</tr></thead>" \
               f"<tbody>{body}</tbody></table></div>"

    def figure(self, key: str, svg: str | None, caption: str, basis: str, missing: str, detail: str = "") -> str:
        """A figure with its basis badge; data-basis holds the coarse kind (measured, modelled, prior), the
        badge the full basis ("measured at tiny scale") and its detail."""
        if not svg:
            return _not_run(missing)
        self.figures += 1
        return (f"<figure class='plot' id='fig-{_e(key)}' data-basis='{_e(_coarse(basis))}'>{svg}"
                f"<figcaption>{_badge(basis, detail)}<b>Figure {self.figures}.</b> {_e(caption)}</figcaption>"
                "</figure>")


def _cell(c: Any) -> str:
    if isinstance(c, _Raw):
        return f"<td class='num'>{c.html}</td>" if c.numeric else f"<td>{c.html}</td>"
    numeric = isinstance(c, (int, float)) and not isinstance(c, bool)
    return f"<td class='num'>{_e(_num(c))}</td>" if numeric else f"<td>{_e(_num(c))}</td>"


class _Raw:
    def __init__(self, markup: str, text: str, numeric: bool = False) -> None:
        self.html, self.text, self.numeric = markup, text, numeric

    def __str__(self) -> str:
        return self.text


def _coarse(basis: str) -> str:
    """measured, modelled or prior: the first word of a basis ("measured at tiny scale" is measured)."""
    return basis.split()[0]


def _badge(basis: str | None, detail: str = "") -> str:
    """The basis as a coloured badge, and its detail beside it ("CPU, 24 steps, 1.57M-3.94M params")."""
    b = basis or BASIS_MODELLED
    out = f"<span class='badge {_e(BADGE_CLASS.get(b, _coarse(b)))}'>{_e(BASIS_LABEL.get(b, b))}</span>"
    return out + (f"<span class='basis-detail'>({_e(detail)})</span> " if detail else "")


def _warning_badge(warnings: list[str]) -> str:
    """A visible warning badge and the warnings' text (empty when there are none)."""
    if not warnings:
        return ""
    return ("<div class='warnbox'><span class='badge warning'>warning</span>"
            + "".join(f"<span class='warntext'>{_e(w)}</span>" for w in warnings) + "</div>")


def _not_run(what: str) -> str:
    return f"<div class='notrun'><b>Not run.</b> {_e(what)}</div>"


def _section(sid: str, n: int, title: str, intro: str, body: str) -> str:
    return (f"<section id='{sid}'><h2><span class='step'>{n}</span>{_e(title)}</h2>"
            f"<p class='intro'>{intro}</p>{body}</section>")


# --- the headline ------------------------------------------------------------------------------------------

def key_figures(study: dict) -> dict:
    """The headline numbers: the chosen model against the best of the other kind, and what was measured."""
    dec = study.get("decision") or {}
    rec = dec.get("recommendation") or {}
    cands = {c["name"]: c for c in dec.get("candidates") or []}
    best = dec.get("best") or {}
    chosen_name = next((n for n in cands if n in str(rec.get("model", "")).split(" ")), None)
    chosen = cands.get(chosen_name) if chosen_name else None
    if chosen:
        other_kind = "dense" if chosen["kind"] == "moe" else "moe"
        other = cands.get(best.get(other_kind) or "")
    else:
        other = None
    wl = study.get("workload") or dec.get("workload") or {}
    out: dict[str, Any] = {"choice": rec.get("choice"), "model": rec.get("model")}
    if chosen:
        out.update(model_usd_per_mtok=chosen["usd_per_million_tokens"],
                   model_tokens_per_s_per_gpu=chosen["tokens_per_second_per_gpu"],
                   model_latency_ms=chosen["latency_ms"], model_latency_label=dec.get("latency_label", LATENCY_MEAN),
                   latency_target_ms=wl.get("latency_p99_ms"),
                   model_memory_gb=chosen["memory_gb"], model_fits=chosen.get("fits", True),
                   model_gpus_per_replica=chosen.get("gpus_per_replica"), memory_budget_gb=wl.get("memory_budget_gb"),
                   model_max_batch_p99=chosen.get("max_batch_p99"), batch=wl.get("batch"))
    if other:
        out.update(alternative=other["name"], alternative_usd_per_mtok=other["usd_per_million_tokens"],
                   alternative_tokens_per_s_per_gpu=other["tokens_per_second_per_gpu"])
    flip = dec.get("throughput_flip")
    out["throughput_flip_batch"] = flip["batch"] if flip else None
    bench = study.get("bench") or {}
    tr = study.get("training") or {}
    out["measured_decode_median_abs_rel_error"] = _g(bench, "summary", "decode", "median_abs_rel_error")
    out["measured_flip_batch"] = _g(bench, "flip", "measured_batch")
    out["predicted_flip_batch"] = _g(bench, "flip", "predicted_batch")
    out["measurement_warnings"] = list(bench.get("warnings") or [])
    if bench.get("rows"):
        out["measured_basis"], out["measured_basis_detail"] = bench_basis(bench)
    elif tr.get("rows"):
        out["measured_basis"], out["measured_basis_detail"] = training_basis(tr)
    tr = study.get("training") or {}
    rows = {r.get("model"): r for r in tr.get("rows") or []}
    pairs = tr.get("pairs") or {}
    for kind in ("dense", "moe"):
        r = rows.get(pairs.get(kind))
        if r:
            out[f"measured_{kind}_final_val"] = _g(r, "final_val", "mean")
            out[f"measured_{kind}_flops_to_target"] = _g(r, "to_target", "flops")
    out.update(served_figures(study.get("serving") if "serving" in study else None))
    out.update(scaling_figures(study.get("scaling")))
    out.update(mitigation_figures(study.get("mitigations")))
    for name in SECTION_MODULES:
        try:
            out.update(_section_module(name).figures(study))
        except Exception:  # noqa: BLE001 - a broken part must not take the summary down; its section says why
            continue
    return out


# Sections with a module of their own (moelab.report.<name>: section(study, page) -> HTML, figures(study) -> the
# key figures for summary.json), imported when the report is written.
SECTION_MODULES = ("task_type_section", "hybrid_section", "laws_section", "claims_section")


def _section_module(name: str):
    import importlib

    return importlib.import_module(f"moelab.report.{name}")


def _external(name: str) -> Callable[[dict, _Page], str]:
    return lambda study, page: _section_module(name).section(study, page)


def mitigation_figures(mitigations: dict | None) -> dict:
    """The mitigations headline for summary.json, per measured variant (keyed by its name): memory held over the
    base MoE, mean loss delta, decode p50 speed over the base and the prediction's error; upcycling's tokens to the
    target per arm and its verdict."""
    out: dict[str, Any] = {}
    for v in (mitigations or {}).get("variants") or []:
        if not isinstance(v, dict) or not v.get("transform"):
            continue
        key = "mitigation_" + "_".join("".join(c if c.isalnum() else " " for c in v.get("name", "")).split())
        dec = v.get("decode") or {}
        out.update({f"{key}_memory_share": v.get("memory_share"), f"{key}_loss_delta": v.get("loss_delta_mean"),
                    f"{key}_decode_speed": v.get("speed_ratio"), f"{key}_decode_rel_error": dec.get("rel_error")})
    up = (mitigations or {}).get("upcycling") or {}
    for arm, row in (up.get("arms") or {}).items():
        hit = row.get("to_target") if isinstance(row, dict) else None
        out[f"mitigation_upcycling_{arm}_tokens_to_target"] = hit.get("tokens_total") if hit else None
    out["mitigation_upcycling_verdict"] = up.get("verdict")
    return out


def scaling_figures(scaling: dict | None) -> dict:
    """The multi-process headline for summary.json: speedup at the widest run per kind, measured and predicted,
    and the MoE's all-to-all share beside the seeds' ~32%."""
    rows = [r for r in (scaling or {}).get("rows") or [] if isinstance(r, dict) and r.get("speedup") is not None]
    out: dict[str, Any] = {}
    for kind in ("dense", "moe"):
        mine = [r for r in rows if r.get("kind") == kind]
        widest = max(mine, key=lambda r: r["ranks"]) if mine else {}
        out[f"scaling_{kind}_processes"] = widest.get("ranks")
        out[f"scaling_{kind}_speedup"] = widest.get("speedup")
        out[f"scaling_{kind}_predicted_speedup"] = (widest.get("predicted") or {}).get("speedup")
    share = (scaling or {}).get("alltoall_share") or {}
    out["scaling_moe_alltoall_share"] = share.get("measured")
    out["scaling_moe_alltoall_share_predicted"] = share.get("predicted")
    return out


def _tile(value: str, label: str, basis: str, detail: str = "", warnings: list[str] | None = None) -> str:
    warn = " warned" if warnings else ""
    return (f"<div class='tile{warn}'><div class='value'>{value}</div><div class='label'>{label}</div>"
            f"{_badge(basis, detail)}{_warning_badge(warnings or [])}</div>")



def _headline(study: dict, kf: dict) -> str:
    rec = _g(study, "decision", "recommendation") or {}
    if not rec:
        return "<div class='headline none'><h1>No decision</h1>" + _not_run("The decision step did not run.") + \
               "</div>"
    choice = rec.get("choice", "")
    kind = "moe" if choice == "moe" else "dense" if choice == "dense" else "hybrid"
    tiles = []
    if kf.get("model_usd_per_mtok") is not None:
        alt = (f"<br><small>vs ${kf['alternative_usd_per_mtok']:.2f} for {_e(kf['alternative'])}</small>"
               if kf.get("alternative") else "")
        tiles.append(_tile(f"${kf['model_usd_per_mtok']:.2f}", f"per million output tokens{alt}", BASIS_MODELLED))
        alt = (f"<br><small>vs {kf['alternative_tokens_per_s_per_gpu']:.0f} for {_e(kf['alternative'])}</small>"
               if kf.get("alternative") else "")
        tiles.append(_tile(f"{kf['model_tokens_per_s_per_gpu']:.0f}",
                           f"tokens/s per GPU at batch {kf['batch']}{alt}", BASIS_MODELLED))
        label = _e(kf.get("model_latency_label") or LATENCY_MEAN)
        tiles.append(_tile(f"{kf['model_latency_ms']:.1f} ms", f"{label}<br><small>vs a p99 target of "
                           f"{_num(kf['latency_target_ms'])} ms; within it up to batch {kf['model_max_batch_p99']}"
                           "</small>", BASIS_MODELLED))
        fit = "" if kf.get("model_fits", True) else " <b class='nofit'>DOES NOT FIT</b>"
        gpus = f" of {kf['model_gpus_per_replica']} GPU(s)" if kf.get("model_gpus_per_replica") else ""
        tiles.append(_tile(f"{kf['model_memory_gb']:.0f} GB", f"per replica{gpus}{fit}<br><small>budget "
                           f"{_num(kf['memory_budget_gb'])} GB</small>", BASIS_MODELLED))
    basis, detail = kf.get("measured_basis", BASIS_TINY), kf.get("measured_basis_detail", "")
    warnings = kf.get("measurement_warnings") or []
    if kf.get("measured_decode_median_abs_rel_error") is not None:
        tiles.append(_tile(f"{kf['measured_decode_median_abs_rel_error']:.0%}",
                           "median decode prediction error<br><small>engine vs stopwatch, this machine</small>",
                           basis, detail, warnings))
    elif kf.get("measured_moe_final_val") is not None:
        tiles.append(_tile(f"{kf['measured_moe_final_val']:.2f}", "MoE validation loss (tiny, here)", basis, detail,
                           warnings))
    elif warnings:
        tiles.append(_tile("!", "measurement warning", basis, detail, warnings))
    return (f"<div class='headline {kind}'><div class='eyebrow'>Recommendation</div>"
            f"<h1>{_e(choice.upper() if choice in ('dense', 'moe') else choice)} "
            f"<span class='model'>{_e(rec.get('model', ''))}</span></h1>"
            f"<p class='reason'>{_e(rec.get('reason', ''))}</p><div class='tiles'>{''.join(tiles)}</div></div>")


# --- sections ----------------------------------------------------------------------------------------------

def _objective(study: dict, page: _Page) -> str:
    wl = study.get("workload") or {}
    if not wl:
        return _not_run("No workload was recorded.")
    rows = [["p99 latency target per output token", f"{_num(wl.get('latency_p99_ms'))} ms"],
            ["throughput target", f"{_num(wl.get('throughput_tokens_per_s'))} tokens/s" if
             wl.get("throughput_tokens_per_s") is not None else "none"],
            ["quality floor (dense-equivalent)", f"{_num(wl.get('quality_floor_b'))}B parameters"],
            ["training", f"{wl.get('training')} on {_num(float(wl.get('train_tokens') or 0))} tokens"],
            ["candidates", ", ".join(wl.get("candidates") or [])]]
    return page.table("objective", ["objective", "value"], rows, BASIS_PRIOR, "What the deployment must achieve")


def _resources(study: dict, page: _Page) -> str:
    wl = study.get("workload") or {}
    out = []
    hw = None
    try:
        from moelab.spec.hardware import load_hardware

        hw = load_hardware(wl["hardware"]).to_dict() if wl.get("hardware") else None
    except Exception:  # noqa: BLE001 - a report renders whatever it can
        hw = None
    cal = study.get("calibration") or {}
    keys = [("peak bf16 TFLOPS", lambda h: _g(h, "peak_tflops", "bf16")),
            ("peak fp32 TFLOPS", lambda h: _g(h, "peak_tflops", "fp32")),
            ("memory (GB)", lambda h: h.get("memory_gb")),
            ("memory bandwidth (GB/s)", lambda h: h.get("memory_bandwidth_gbps")),
            ("layer overhead (µs)", lambda h: h.get("layer_overhead_us")),
            ("MoE layer overhead (µs)", lambda h: h.get("moe_layer_overhead_us")),
            ("$/hour", lambda h: h.get("usd_per_hour"))]
    if hw or cal:
        rows = [[k, f(hw) if hw else None, f(cal) if cal else None] for k, f in keys]
        rows.insert(0, ["GPUs × memory budget", f"{wl.get('gpus')} × {_num(_g(hw or {}, 'memory_gb'))} GB, budget "
                        f"{_num(wl.get('memory_budget_gb'))} GB", "–"])
        out.append(page.table("hardware", ["", f"{wl.get('hardware', '?')} (datasheet, deployment target)",
                                           "this machine (calibrated)" if cal else "this machine (not calibrated)"],
                              rows, DATASHEET_MEASURED, "The deployment GPU beside the machine the prototypes ran on"))
    if not cal:
        out.append(_not_run("Calibration of this machine did not run: predictions for it use datasheet defaults."))
    machine = study.get("machine") or {}
    if machine:
        out.append(f"<p class='note'>Prototypes ran on {_e(machine.get('processor') or '?')}, "
                   f"{_e(machine.get('cores', '?'))} cores, torch {_e(machine.get('torch', '?'))}, Python "
                   f"{_e(machine.get('python', '?'))} ({_e(machine.get('platform', ''))}).</p>")
    return "".join(out) or _not_run("No hardware recorded.")


def _workload(study: dict, page: _Page) -> str:
    wl = study.get("workload") or {}
    if not wl:
        return _not_run("No workload was recorded.")
    mix = wl.get("task_mix") or {}
    bars = "".join(f"<div class='mixrow'><span>{_e(k)}</span><div class='bar'><div style='width:{v * 100:.1f}%'>"
                   f"</div></div><b>{v:.0%}</b></div>" for k, v in mix.items())
    rows = [["typical batch", wl.get("batch")], ["batch sweep", ", ".join(map(str, wl.get("batches") or []))],
            ["prompt tokens", wl.get("prompt")], ["generated tokens", wl.get("gen")], ["weight dtype", wl.get("dtype")],
            ["hardware", f"{wl.get('gpus')} × {wl.get('hardware')}"]]
    table = page.table("workload", ["workload", "value"], rows, BASIS_PRIOR, wl.get("name", ""))
    return (f"<div class='cols'><div>{table}"
            f"</div><div class='mix'><h3>Task mix</h3>{bars}<p class='note'>The seeds: MoE excels at knowledge-heavy "
            "and multilingual work, dense at reasoning-heavy work and fine-tunes more stably.</p></div></div>")


def _scale(study: dict, page: _Page) -> str:
    fr = study.get("frontier") or {}
    est = fr.get("estimates") or {}
    pairs = fr.get("pairs") or []
    if not est and not pairs:
        return _not_run("The frontier-scale economics were not modelled in this run.")
    out = [page.figure("params-memory", plots.params_memory(est),
                       "Parameters by component and serving memory at the workload's batch: MoE models carry "
                       "most of their weight in routed experts a token never touches, yet all of it must be resident.",
                       BASIS_MODELLED, "No frontier estimates.")]
    out.append(page.figure("crossover", plots.crossover(pairs, study.get("bench")),
                           "Modelled decode throughput per GPU against batch, each model on the fewest GPUs that hold "
                           "it at that batch (so a model's GPU count can step up along its line): where the lines "
                           "cross, the cheaper architecture changes (dotted: flip; a flip marked 'GPUs change' falls "
                           "where a GPU count steps, and may be an artefact of that step). The last panel is the same "
                           "question measured at tiny scale on this machine.", BASIS_MODELLED,
                           "No frontier pairs."))
    if est:
        rows = []
        for name, e in est.items():
            p, m, d = e["params"], e["memory"], e["decode"]
            per_gpu = m.get("memory_per_gpu_bytes")
            per_gpu = None if per_gpu is None else per_gpu / 1e9 if m.get("fits", True) else \
                f"{per_gpu / 1e9:.1f} DOES NOT FIT"
            rows.append([name, p["total"] / 1e9, p["active"] / 1e9, m["weights_bytes"] / 1e9,
                         m["kv_cache_bytes"] / 1e9, m["min_gpus"], e["parallel"]["plan"], e["parallel"]["gpus"],
                         per_gpu,
                         d["step_seconds"] * 1e3, d["tokens_per_second_per_gpu"],
                         _g(e, "cost", "usd_per_million_tokens"),
                         _g(e, "dense_equivalent", "heuristic", default=0) / 1e9])
        out.append(page.table("frontier", ["model", "total (B)", "active (B)", "weights (GB)", "KV (GB)", "min GPUs",
                                           "plan", "GPUs", "memory/GPU (GB)", "decode step (ms)", "tok/s/GPU", "$/Mtok",
                                           "dense-equivalent (B)"], rows, BASIS_MODELLED,
                              f"Frontier models on {fr.get('hardware', '?')}"))
    if pairs:
        rows = []
        for pr in pairs:
            flips = "; ".join(f"{f['to']} from batch {f['batch']}" + (f" {f['note']}" if f.get("note") else "")
                              for f in pr.get("flips") or []) or "none"
            first, last = pr["rows"][0], pr["rows"][-1]
            win = {"a": pr["a"], "b": pr["b"]}
            rows.append([pr["a"], pr["b"], win[first["winner"]], f"{first['batch']}", win[last["winner"]],
                         f"{last['batch']}", flips])
        out.append(page.table("pairs", ["A", "B", "wins at smallest batch", "batch", "wins at largest batch",
                                        "batch", "flips"], rows, BASIS_MODELLED,
                              "Who wins modelled decode tokens/s per GPU, and where it flips (each model on the fewest "
                              "GPUs that hold it at each batch)"))
    return "".join(out)


def _serving_frontier(study: dict, page: _Page) -> str:
    """The frontier pairs' interactivity-throughput frontiers: one plot (dense and MoE together) and the points."""
    sf = (study.get("frontier") or {}).get("serving") or {}
    models = sf.get("models") or {}
    if not models:
        return _not_run("The serving frontiers were not modelled in this run.")
    where = (f"{sf.get('gpus')} × {sf.get('hardware')}, {sf.get('input')} prompt + {sf.get('output')} output tokens, "
             f"{sf.get('dtype')}")
    series = [{"model": name, **m} for name, m in models.items()]
    out = [page.figure("serving-frontier", plots.frontier(series, f"Modelled means on {where}"),
                       f"Interactivity against throughput on {where}: each line is a model's Pareto frontier over "
                       "every plan (tp, ep, pp, replicas) on these GPUs and concurrencies from 1 to its KV limit, "
                       "only points that fit (dashed: dense, solid: MoE). Up and right is better: more output tokens/s "
                       "per GPU (cost) at more tokens/s per user (speed). Modelled means from the serving model "
                       "(continuous batching), not measurements.", BASIS_MODELLED, "No model fits these GPUs.")]
    missing = [n for n, m in models.items() if not m.get("points")]
    if missing:
        out.append(f"<p class='note'>No plan on {_e(where)} holds {_e(', '.join(missing))}: "
                   "no frontier is drawn for it.</p>")
    def peak(points: list[dict], key: str) -> Any:
        return max((p[key] for p in points), default=None)

    rows = []
    for dense, moe in sf.get("pairs") or []:
        d, m = (models.get(dense) or {}).get("points") or [], (models.get(moe) or {}).get("points") or []
        rows.append([dense, moe, peak(d, "tokens_per_second_per_user"), peak(m, "tokens_per_second_per_user"),
                     peak(d, "tokens_per_second_per_gpu"), peak(m, "tokens_per_second_per_gpu")])
    if rows:
        out.append(page.table("serving_pairs", ["dense", "MoE", "dense best tok/s/user", "MoE best tok/s/user",
                                                "dense best tok/s/GPU", "MoE best tok/s/GPU"], rows, BASIS_MODELLED,
                              f"The frontier pairs' ends, modelled on {where} (– : no plan fits)"))
    points = [[name, m["kind"], p["plan"], p["concurrency"], p["tokens_per_second_per_user"],
               p["tokens_per_second_per_gpu"], p["ttft_ms"], p["tpot_ms"]]
              for name, m in models.items() for p in m.get("points") or []]
    if points:
        out.append(page.table("serving_frontier", ["model", "kind", "plan", "concurrency", "tok/s/user",
                                                   "tok/s/GPU", "TTFT (ms)", "TPOT (ms)"], points, BASIS_MODELLED,
                              f"Every frontier point, modelled means on {where}"))
    return "".join(out)


def _prototype(study: dict, page: _Page) -> str:
    tr = study.get("training") or {}
    if not tr:
        return _not_run("Training of the prototypes did not run.")
    target = tr.get("target_loss")
    basis, detail = training_basis(tr)
    out = [page.figure("training", plots.training(tr.get("curves"), target),
                       "Training loss of matched models (same data order, budget and schedule) against tokens, "
                       "training FLOPs and wall-clock: an iso-active MoE costs the same FLOPs per token as the "
                       "dense model but more seconds on a CPU; dots are validation losses.", basis,
                       "No loss curves were recorded.", detail)]
    out.append(page.figure("expert-load", plots.expert_load(tr.get("expert_load")),
                           "Where each domain's tokens go: share of token-slots per expert and layer at the last "
                           "evaluation. Dark cells are experts a domain relies on; a flat row is balanced routing.",
                           basis, "No expert load was recorded (no MoE model trained).", detail))
    rows = []
    domains = sorted({k for r in tr.get("rows") or [] for k in (r.get("final_val") or {}) if k not in ("mean",
                                                                                                       "dense")})
    for r in tr.get("rows") or []:
        hit = r.get("to_target") or {}
        val = r.get("final_val") or {}
        rows.append([r.get("model"), r.get("params_total"), r.get("params_active"), hit.get("tokens", "not reached"),
                     hit.get("flops"), training_seconds(hit) if hit else None, r.get("tokens_per_second"),
                     val.get("mean"),
                     *(val.get(d) for d in domains)])
    if rows:
        out.append(page.table("training", ["model", "total params", "active params", "tokens to target",
                                           "FLOPs to target", "training seconds to target", "tokens/s",
                                           "final val loss", *(f"val {d}" for d in domains)], rows, basis,
                              f"Matched training to validation loss {_num(target)} (tiny models, this machine)",
                              detail))
    return "".join(out)


def _benchmark(study: dict, page: _Page) -> str:
    bench = study.get("bench") or {}
    if not bench.get("rows"):
        return _not_run("The benchmark did not run: no measured latency or throughput in this report.")
    basis, detail = bench_basis(bench)
    out = [_warning_badge(list(bench.get("warnings") or []))]
    out.append(page.figure("bench", plots.bench_curves(bench),
                           "Latency (measured median step) and throughput against batch on this machine: solid lines "
                           "measured, dashed lines the engine's prediction for the same model and calibrated "
                           "hardware.", basis, "No benchmark rows.", detail))
    out.append(page.figure("prediction-error", plots.prediction_error(bench),
                           "Prediction error of every benchmarked point (predicted/measured − 1): bars near zero mean "
                           "the engine reproduces these models on this machine; the frontier figures above come from "
                           "the same engine on datasheet GPUs, which this check does not reach.", basis,
                           "No prediction errors.", detail))
    rows = [[r.get("model"), r.get("phase"), r.get("batch"), (r.get("measured_s") or 0) * 1e3,
             (r.get("predicted_s") or 0) * 1e3, r.get("rel_error"), (r.get("p50_s") or 0) * 1e3,
             (r.get("p99_s") or 0) * 1e3, r.get("tokens_per_second"), r.get("predicted_tokens_per_second")]
            for r in bench["rows"]]
    page.csvs["errors"] = (["model", "phase", "batch", "measured_s", "predicted_s", "rel_error"],
                           [[r.get("model"), r.get("phase"), r.get("batch"), r.get("measured_s"), r.get("predicted_s"),
                             r.get("rel_error")] for r in bench["rows"]])
    s = bench.get("summary") or {}
    flip = bench.get("flip") or {}
    summary = " ".join(f"{p}: median |error| {_num(_g(s, p, 'median_abs_rel_error'))} over {_g(s, p, 'n')} points."
                       for p in ("prefill", "decode") if p in s)
    out.append(f"<p class='note'>{_e(summary)} Throughput flip: measured at batch {_e(flip.get('measured_batch'))}, "
               f"predicted at batch {_e(flip.get('predicted_batch'))}. Device {_e(bench.get('device', '?'))}, dtype "
               f"{_e(bench.get('dtype', '?'))}.</p>")
    table = page.table("bench", ["model", "phase", "batch", "measured (ms)", "predicted (ms)", "rel. error",
                                 "measured p50 (ms)", "measured p99 (ms)", "tokens/s", "predicted tokens/s"], rows,
                       basis, "Every benchmarked point, measured (median of the timed rounds) beside predicted (a "
                       "modelled mean)", detail)
    out.append(f"<details><summary>All {len(rows)} benchmarked points (bench.csv)</summary>{table}</details>")
    return "".join(out)


SERVED_LATENCY_AT = 1  # the seeds' latency table: one request in flight
SERVED_THROUGHPUT_AT = 32  # the seeds' throughput table: the study's highest level


def _pct(x: Any) -> Any:
    """A relative error shown as a signed percentage; its CSV cell keeps the exact number."""
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
        return None
    return _Raw(_e(f"{x:+.0%}"), repr(float(x)), numeric=True)


def _served_levels(rows: list[dict]) -> tuple[int | None, int | None]:
    """The concurrency of the latency table (1, else the lowest measured) and of the throughput table (32, else
    the highest)."""
    levels = sorted({r["concurrency"] for r in rows if isinstance(r.get("concurrency"), int)})
    if not levels:
        return None, None
    low = SERVED_LATENCY_AT if SERVED_LATENCY_AT in levels else levels[0]
    high = SERVED_THROUGHPUT_AT if SERVED_THROUGHPUT_AT in levels else levels[-1]
    return low, high


def _served_at(rows: list[dict], kind: str, concurrency: int | None) -> dict | None:
    return next((r for r in rows if r.get("kind") == kind and r.get("concurrency") == concurrency), None)


def _ratio(moe: Any, dense: Any) -> float | None:
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (moe, dense))
    return moe / dense if ok and dense else None


def served_figures(serving: dict | None) -> dict:
    """The served headline numbers for summary.json: per kind the measured TPOT p50 at the latency level and
    output tokens/s at the throughput level, and MoE / dense for both (None where not measured)."""
    sv = serving or {}
    rows = [r for r in sv.get("rows") or [] if not sv.get("skipped")]
    low, high = _served_levels(rows)
    out: dict[str, Any] = {"served_skipped": sv.get("skipped") if serving else "no serving stage in this study",
                           "served_latency_concurrency": low, "served_throughput_concurrency": high}
    for kind in ("dense", "moe"):
        out[f"served_{kind}_tpot_ms_p50"] = _g(_served_at(rows, kind, low), "tpot_ms_p50")
        out[f"served_{kind}_output_tokens_per_second"] = _g(_served_at(rows, kind, high), "output_tokens_per_second")
    out["served_moe_over_dense_tpot_p50"] = _ratio(out["served_moe_tpot_ms_p50"], out["served_dense_tpot_ms_p50"])
    out["served_moe_over_dense_output_tokens_per_second"] = _ratio(out["served_moe_output_tokens_per_second"],
                                                                   out["served_dense_output_tokens_per_second"])
    greedy = [s.get("greedy") for s in sv.get("servers") or [] if s.get("greedy")]
    out["served_greedy_ok"] = all(g.get("ok") for g in greedy) if greedy and rows else None
    return out


def served_basis(serving: dict, training: dict | None) -> tuple[str, str]:
    """Measured at tiny scale (or measured, for models past moelab's tiny bound) with vLLM on this machine: the
    detail names vLLM's version, its device and the served models' parameters (from the training rows)."""
    servers = serving.get("servers") or []
    served = {r.get("model") for r in serving.get("rows") or []}
    params = [r["params_total"] for r in (training or {}).get("rows") or []
              if r.get("model") in served and r.get("params_total")]
    basis = BASIS_TINY if not params or max(params) < TINY_PARAMS else BASIS_MEASURED
    versions = sorted({str(s.get("vllm")) for s in servers if s.get("vllm")})
    device = next((s.get("device") for s in servers if s.get("device")), "cpu")
    return basis, f"vLLM {'/'.join(versions) or '?'}, " + tiny_detail(device, params)


def _scaling(study: dict, page: _Page) -> str:
    """The seeds' multi-GPU scaling table, measured with torchrun processes here, beside the engine's
    prediction and the seeds' figures; and the measured all-to-all share beside the seeds' ~32%."""
    if "scaling" not in study:
        return _not_run("The multi-process stage did not run: this study predates it (no scaling in study.json).")
    sc = study.get("scaling") or {}
    rows = [r for r in sc.get("rows") or [] if isinstance(r, dict)]
    out = [_warning_badge([f"failed: {f}" for f in sc.get("failures") or []])]
    if not rows:
        return "".join(out) + _not_run("No multi-process run finished: no measured scaling in this report.")
    detail = (f"{sc.get('backend')}; {sc.get('steps')} steps, {sc.get('batch_per_rank')} sequences of "
              f"{sc.get('seq_len')} tokens per process, one thread per process, {sc.get('cores')} cores; median "
              "step after two warm-up steps")
    out.append(page.figure("scaling", plots.scaling(rows, {int(k): v for k, v in (sc.get("seeds_speedup") or {})
                                                            .items()}),
                           "Training tokens/s with N processes over one process: measured (solid), the engine's "
                           "prediction for the same plan on this machine's calibration (dashed), the seeds' 8-GPU "
                           "table (dotted; dense 7B and MoE 56B on GPUs, not this machine). Processes beyond the "
                           "cores share them: the ideal here is min(N, cores).", BASIS_TINY,
                           "No scaling rows.", detail))
    table = []
    for r in rows:
        p = r.get("predicted") or {}
        table.append([r.get("model"), r.get("kind"), r.get("ranks"), r.get("plan"), r.get("tokens_per_step"),
                      r.get("tokens_per_second"), p.get("tokens_per_second"), r.get("speedup"), p.get("speedup"),
                      r.get("seeds_speedup"), r.get("efficiency"), r.get("ideal_speedup_here"),
                      _pct_share(r.get("alltoall_share")), _pct_share(p.get("alltoall_share")),
                      r.get("alltoall_seconds"), r.get("allreduce_seconds"), r.get("compute_seconds")])
    out.append(page.table("scaling", [
        "model", "kind", "processes", "plan", "tokens per step", "measured tok/s", "predicted tok/s",
        "measured speedup", "predicted speedup", "seeds' GPU speedup", "measured efficiency", "ideal here",
        "measured all-to-all share", "predicted all-to-all share", "all-to-all s", "all-reduce s", "compute s"],
        table, BASIS_TINY, "Training scaling: dense data-parallel, MoE expert-parallel (--ep N)", detail))
    share = sc.get("alltoall_share")
    if share:
        out.append(f"<p>All-to-all share of a MoE training step on {share['ranks']} processes: measured "
                   f"{_pct_share(share.get('measured'))}, predicted {_pct_share(share.get('predicted'))}; the seeds "
                   f"say ~{_pct_share(share.get('seeds'))} on multi-GPU training. Here the exchange is between CPU "
                   "processes through shared memory, and a collective's time includes waiting for the slower "
                   "rank.</p>")
    return "".join(out)


def _mitigations(study: dict, page: _Page) -> str:
    """The seeds' mitigations on the study's trained MoE, measured here (memory, loss delta per domain, decode
    p50/p99 beside the engine), the upcycling comparison, and the engine's frontier-model version."""
    if "mitigations" not in study:
        return _not_run("The mitigations stage did not run: this study predates it (no mitigations in study.json).")
    mi = study.get("mitigations") or {}
    out = [_warning_badge([f"failed: {f}" for f in mi.get("failures") or []] + list(mi.get("warnings") or []))]
    variants = [v for v in mi.get("variants") or [] if isinstance(v, dict)]
    bench = mi.get("bench") or {}
    detail = (f"{bench.get('device', 'cpu')}, {bench.get('dtype', 'fp32')}; decode at batch {bench.get('batch')} "
              f"after a {bench.get('prompt')}-token prompt, {bench.get('gen')} steps x {bench.get('repeats')} rounds; "
              f"loss on {mi.get('eval_tokens')} validation tokens per domain")
    if mi.get("shrunk"):
        detail += f"; {mi['shrunk']}"
    if variants:
        out.append(page.figure("mitigations", plots.mitigations(variants),
                               "Left: the weights each variant holds in memory against its validation loss over the "
                               "base MoE (0 = unchanged; above is worse). Right: its decode step, measured p50 (bar) "
                               "and p99, beside the engine's prediction on this machine's calibration.", BASIS_TINY,
                               "No variant was measured.", detail))
        domains = sorted({d for v in variants for d in (v.get("loss_delta") or {}) if d != "mean"})
        rows = []
        for v in variants:
            dec = v.get("decode") or {}
            delta = v.get("loss_delta") or {}
            rows.append([v.get("name"), v.get("transform") or "-", v.get("detail"), v.get("weight_bytes"),
                         _pct_share(v.get("memory_share")), v.get("loss_delta_mean"),
                         *(delta.get(d) for d in domains), v.get("loss_delta_rare"), _ms(dec.get("p50_s")),
                         _ms(dec.get("p99_s")), dec.get("samples"), _ms(dec.get("predicted_s")),
                         _pct(dec.get("rel_error")),
                         v.get("speed_ratio"), v.get("note") or ""])
        out.append(page.table("mitigations", [
            "variant", "transform", "what", "weight bytes", "memory vs base", "loss delta (mean)",
            *(f"delta {d}" for d in domains), "delta rare domains", "decode p50 ms", "decode p99 ms",
            "decode steps timed (p99 of so few is near the max)", "predicted ms (mean)", "error",
            "decode speed vs base (same process)", "note"], rows, BASIS_TINY,
            "Mitigations of the trained MoE, measured here", detail))
    else:
        out.append(_not_run("No mitigation variant was measured."))
    up = mi.get("upcycling") or {}
    arms = {k: a for k, a in (up.get("arms") or {}).items() if isinstance(a, dict)}
    if up.get("skipped"):
        out.append(_not_run(f"Upcycling: {up['skipped']}"))
    elif arms:
        domains = sorted({d for a in arms.values() for d in (a.get("final_val") or {}) if d != "mean"})
        rows = []
        for name, a in arms.items():
            hit, val = a.get("to_target") or {}, a.get("final_val") or {}
            start = a.get("start_val")
            rows.append([name, a.get("model"), a.get("steps"), start.get("mean") if isinstance(start, dict) else start,
                         val.get("mean"),
                         *(val.get(d) for d in domains), hit.get("tokens_total") if hit else "not reached",
                         hit.get("flops_total") if hit else None, hit.get("wall_seconds_total") if hit else None,
                         a.get("tokens_total"), a.get("wall_seconds_total")])
        budget = up.get("budget") or {}
        out.append(page.table("upcycling", [
            "arm", "model", "steps trained", "start val (mean)", "final val (mean)",
            *(f"final {d}" for d in domains), "tokens to target (whole budget)", "FLOPs to target",
            "wall s to target", "tokens (whole budget)", "wall s (whole budget)"], rows, BASIS_TINY,
            f"Upcycling vs continued dense vs MoE from scratch; target: {up.get('target_rule', '?')}",
            f"{up.get('mode')} {up.get('experts')}x{up.get('top_k')}; {budget.get('total_steps')} steps of "
            f"{budget.get('tokens_per_step')} tokens in all per arm"))
        if up.get("verdict"):
            out.append(f"<p>{_e(up['verdict'])}</p>")
    frontier = [r for r in mi.get("frontier") or [] if isinstance(r, dict)]
    if frontier:
        rows = [[r.get("scenario"), r.get("model"), r.get("variant"), r.get("hardware"), r.get("gpus"), r.get("plan"),
                 r.get("batch"), _gb(r.get("weights_bytes")), _gb(r.get("memory_per_gpu_bytes")),
                 _gb(r.get("usable_per_gpu_bytes")), "yes" if r.get("fits") else "no",
                 _ms(r.get("decode_step_seconds")) if r.get("fits") else "does not fit",
                 r.get("tokens_per_second") if r.get("fits") else None, r.get("hit_rate"), r.get("miss_ms"),
                 r.get("seeds_swap_ms"), r.get("note")] for r in frontier]
        out.append(page.table("mitigations_frontier", [
            "scenario", "model", "variant", "hardware", "GPUs", "plan", "batch", "weights GB", "memory per GPU GB",
            "usable per GPU GB", "fits", "decode step ms (mean)", "tokens/s", "hit rate", "ms per miss",
            "seeds' ms per swap", "note"], rows, BASIS_MODELLED,
            "The same mitigations priced by the engine for frontier models on GPUs (modelled means)"))
    return "".join(out)


def _ms(x: Any) -> Any:
    return x * 1e3 if isinstance(x, (int, float)) else None


def _gb(x: Any) -> Any:
    return x / 1e9 if isinstance(x, (int, float)) else None


def _pct_share(x: Any) -> str:
    return "–" if not isinstance(x, (int, float)) else f"{x:.0%}"


def _served(study: dict, page: _Page) -> str:
    """The trained dense and MoE models served with vLLM on this machine: the seeds' latency table (concurrency
    1) and throughput table (concurrency 32), MoE / dense, TTFT and TPOT against concurrency, the greedy check."""
    if "serving" not in study:
        return _not_run("The vLLM stage did not run: this study predates it (no serving in study.json).")
    sv = study.get("serving") or {}
    if sv.get("skipped"):
        return _not_run(f"The vLLM stage did not run: {sv['skipped']}")
    rows = [r for r in sv.get("rows") or [] if isinstance(r, dict)]
    problems = [f"failed: {f}" for f in sv.get("failures") or []] + list(sv.get("warnings") or [])
    problems += [f"{r.get('model')} at concurrency {r.get('concurrency')}: {r.get('failed')} of {r.get('requests')} "
                 f"requests failed ({r.get('first_error') or 'no error text'})" for r in rows if r.get("failed")]
    out = [_warning_badge(problems)]
    if not rows:
        return "".join(out) + _not_run("No model was served: no measured serving latency in this report.")
    basis, detail = served_basis(sv, study.get("training"))
    low, high = _served_levels(rows)
    pred = rows[0].get("prediction") or {}
    where = (f"{sv.get('input', rows[0].get('input_tokens'))} prompt + {sv.get('output', rows[0].get('output_tokens'))}"
             f" output tokens, {sv.get('requests_per_level', rows[0].get('requests'))} requests per level")
    engine = (f"the engine's modelled means on {pred.get('hardware', '?')} ({pred.get('plan', '?')}, "
              f"{pred.get('dtype', '?')})")
    out.append(page.figure("served", plots.served(rows),
                           f"TTFT and TPOT against concurrency, served by vLLM on this machine ({where}): solid lines "
                           "with markers are the measured p50, the shaded band reaches the measured p99, dashed lines "
                           f"are {engine} for the same level. A modelled mean is not a percentile.",
                           BASIS_MODELLED_TINY, "No served rows.", detail))
    models = list(dict.fromkeys(r.get("model") for r in rows))
    by = {(r.get("model"), r.get("concurrency")): r for r in rows}
    lat = []
    for m in models:
        r = by.get((m, low))
        if r:
            lat.append([m, r.get("kind"), r.get("ttft_ms_p50"), r.get("ttft_ms_p95"), r.get("ttft_ms_p99"),
                        r.get("tpot_ms_p50"), r.get("tpot_ms_p95"), r.get("tpot_ms_p99"), r.get("e2e_ms_p50"),
                        r.get("e2e_ms_p99"), r.get("predicted_ttft_ms"), _pct(r.get("rel_error_ttft_ms")),
                        r.get("predicted_tpot_ms"), _pct(r.get("rel_error_tpot_ms"))])
    low_note = "" if low == SERVED_LATENCY_AT else f" (no level {SERVED_LATENCY_AT} was run: the lowest, {low})"
    out.append(page.table("served_latency", [
        "model", "kind", "measured TTFT p50 (ms)", "measured TTFT p95 (ms)", "measured TTFT p99 (ms)",
        "measured TPOT p50 (ms)", "measured TPOT p95 (ms)", "measured TPOT p99 (ms)", "measured E2E p50 (ms)",
        "measured E2E p99 (ms)", "predicted mean TTFT (ms)", "TTFT error", "predicted mean TPOT (ms)",
        "TPOT error"], lat, basis,
        f"Latency at concurrency {low}{low_note}, served by vLLM on this machine: measured percentiles, and "
        f"{engine}; error = predicted mean / measured mean − 1 (the measured means are in served.csv)", detail))
    thr = []
    for m in models:
        r = by.get((m, high))
        if r:
            thr.append([m, r.get("kind"), f"{r.get('completed')}/{r.get('requests')}",
                        r.get("output_tokens_per_second"), r.get("requests_per_second"), r.get("ttft_ms_p50"),
                        r.get("ttft_ms_p99"), r.get("tpot_ms_p50"), r.get("tpot_ms_p99"),
                        r.get("predicted_output_tokens_per_second"),
                        _pct(r.get("rel_error_output_tokens_per_second"))])
    high_note = "" if high == SERVED_THROUGHPUT_AT else (
        f" (no level {SERVED_THROUGHPUT_AT} was run: the highest, {high})")
    out.append(page.table("served_throughput", [
        "model", "kind", "completed", "measured output tok/s", "measured requests/s", "measured TTFT p50 (ms)",
        "measured TTFT p99 (ms)", "measured TPOT p50 (ms)", "measured TPOT p99 (ms)",
        "predicted mean output tok/s", "output tok/s error"], thr, basis,
        f"Throughput at concurrency {high}{high_note}, served by vLLM on this machine, and {engine}; error = "
        "predicted / measured − 1 (requests/s in served.csv)", detail))
    d_low, m_low = _served_at(rows, "dense", low), _served_at(rows, "moe", low)
    d_high, m_high = _served_at(rows, "dense", high), _served_at(rows, "moe", high)
    if (d_low or d_high) and (m_low or m_high):
        cmp_rows = []
        for label, d, m, key in ((f"measured TPOT p50 at concurrency {low} (ms)", d_low, m_low, "tpot_ms_p50"),
                                 (f"measured TTFT p50 at concurrency {low} (ms)", d_low, m_low, "ttft_ms_p50"),
                                 (f"measured output tok/s at concurrency {high}", d_high, m_high,
                                  "output_tokens_per_second"),
                                 (f"predicted mean TPOT at concurrency {low} (ms)", d_low, m_low, "predicted_tpot_ms"),
                                 (f"predicted mean output tok/s at concurrency {high}", d_high, m_high,
                                  "predicted_output_tokens_per_second")):
            dv, mv = _g(d, key), _g(m, key)
            cmp_rows.append([label, dv, mv, _ratio(mv, dv)])
        names = f"{_g(m_low or m_high, 'model')} (MoE) / {_g(d_low or d_high, 'model')} (dense)"
        out.append(page.table("served_moe_vs_dense", ["quantity", "dense", "MoE", "MoE / dense"], cmp_rows, basis,
                              f"{names}, served by vLLM here: measured ratios, then the engine's", detail))
        tpot_r, tok_r = cmp_rows[0][3], cmp_rows[2][3]
        if tpot_r is not None and tok_r is not None:
            out.append(f"<p class='note'>Served by vLLM on this machine, the MoE model's measured TPOT p50 is "
                       f"{_e(f'{tpot_r:.2f}')}× the dense model's at concurrency {_e(low)}, and its measured output "
                       f"throughput {_e(f'{tok_r:.2f}')}× at concurrency {_e(high)}.</p>")
    items = []
    for s in sv.get("servers") or []:
        g = s.get("greedy")
        env = (f"vLLM {s.get('vllm', '?')} on {s.get('device', '?')}, torch {s.get('torch', '?')}, "
               f"{s.get('dtype', '?')}; ready after {_num(s.get('ready_after_s'))} s")
        badge = ""
        if not g:
            check = "greedy ids not compared with moelab's"
        else:
            mism = g.get("mismatches") or []
            check = (f"vLLM's greedy token ids equal moelab's on {g.get('matched')}/{g.get('prompts')} prompts "
                     f"({g.get('near_ties')} parted at a near-tie below {_num(g.get('near_tie_logits'))} logits, "
                     f"{len(mism)} mismatched; {g.get('tokens_compared')} tokens compared, smallest top-2 margin "
                     f"{_num(g.get('min_margin_seen'))})")
            if not g.get("ok"):
                badge = "<span class='badge warning'>greedy check failed</span>"
                first = mism[0] if mism else {}
                if first:
                    check += (f"; the first mismatch at prompt {first.get('prompt')}, step {first.get('step')}: "
                              f"moelab {first.get('moelab')}, vLLM {first.get('served')}")
        items.append(f"<li>{badge}<b>{_e(s.get('model', '?'))}</b>: {_e(env)}. {_e(check)}.</li>")
    if items:
        out.append(f"<div class='servers'><h3>The servers, and does vLLM compute what moelab computes?</h3>"
                   f"<ul>{''.join(items)}</ul></div>")
    notes = list(sv.get("notes") or [])
    if sv.get("rel_error_definition"):
        notes.append(f"Errors: {sv['rel_error_definition']}.")
    out.extend(f"<p class='note'>{_e(n)}</p>" for n in notes)
    every = [[r.get("model"), r.get("kind"), r.get("concurrency"), r.get("requests"), r.get("completed"),
              r.get("failed"), r.get("ttft_ms_p50"), r.get("ttft_ms_p95"), r.get("ttft_ms_p99"), r.get("ttft_ms_mean"),
              r.get("predicted_ttft_ms"), r.get("rel_error_ttft_ms"), r.get("tpot_ms_p50"), r.get("tpot_ms_p95"),
              r.get("tpot_ms_p99"), r.get("tpot_ms_mean"), r.get("predicted_tpot_ms"), r.get("rel_error_tpot_ms"),
              r.get("itl_ms_p50"), r.get("itl_ms_p99"), r.get("e2e_ms_p50"), r.get("e2e_ms_p99"),
              r.get("requests_per_second"), r.get("predicted_requests_per_second"), r.get("output_tokens_per_second"),
              r.get("predicted_output_tokens_per_second"), r.get("rel_error_output_tokens_per_second"),
              r.get("duration_s")] for r in sorted(rows, key=lambda r: (models.index(r.get("model")),
                                                                         r.get("concurrency") or 0))]
    table = page.table("served", [
        "model", "kind", "concurrency", "requests", "completed", "failed", "measured TTFT p50 (ms)",
        "measured TTFT p95 (ms)", "measured TTFT p99 (ms)", "measured TTFT mean (ms)", "predicted mean TTFT (ms)",
        "TTFT rel. error", "measured TPOT p50 (ms)", "measured TPOT p95 (ms)", "measured TPOT p99 (ms)",
        "measured TPOT mean (ms)", "predicted mean TPOT (ms)", "TPOT rel. error", "measured ITL p50 (ms)",
        "measured ITL p99 (ms)", "measured E2E p50 (ms)", "measured E2E p99 (ms)", "measured requests/s",
        "predicted mean requests/s", "measured output tok/s", "predicted mean output tok/s",
        "output tok/s rel. error", "duration (s)"], every, basis,
        f"Every served level, measured by vLLM's benchmark definitions beside {engine}", detail)
    out.append(f"<details><summary>All {len(every)} served levels (served.csv)</summary>{table}</details>")
    return "".join(out)


def _decision(study: dict, page: _Page) -> str:
    dec = study.get("decision") or {}
    if not dec:
        return _not_run("The decision step did not run.")
    wl = study.get("workload") or dec.get("workload") or {}
    cands = dec.get("candidates") or []
    latency_label = dec.get("latency_label", LATENCY_MEAN)
    out = [page.figure("candidates", plots.candidates(cands, wl.get("latency_p99_ms"), latency_label),
                       f"Every candidate's cost per token and {latency_label} at the typical batch, against the p99 "
                       "target; hatched bars fail a hard constraint (memory, latency, throughput or quality floor).",
                       BASIS_MODELLED, "No candidates.")]
    if cands:
        rows = [[c["name"], c["kind"], c["params_total"] / 1e9, c["params_active"] / 1e9, c["dense_equivalent_b"],
                 c["memory_gb"] if c.get("fits", True) else f"{c['memory_gb']:.0f} DOES NOT FIT",
                 f"{c['gpus_per_replica']} × {c['replicas']}", c["latency_ms"],
                 c["tokens_per_second_per_gpu"], c["tokens_per_second"], c["usd_per_million_tokens"],
                 c.get("max_batch_p99"), ", ".join(c["violations"]) or "feasible"] for c in cands]
        out.append(page.table("candidates", ["model", "kind", "total (B)", "active (B)", "dense-eq. (B)",
                                             "memory per replica (GB)", "GPUs × replicas",
                                             f"{latency_label} (ms)", "tok/s/GPU", "fleet tok/s", "$/Mtok",
                                             "max batch within p99 target", "constraints"], rows,
                              BASIS_MODELLED, f"Candidates on the workload ({dec.get('latency_basis', '')})"))
    factors = dec.get("factors") or []
    if factors:
        rows = [[f["factor"].replace("_", " "), _Raw(f"<span class='fav {_e(f['favours'])}'>{_e(f['favours'])}</span>",
                                                     f["favours"]),
                 _Raw(_badge(f["basis"], f.get("basis_detail", "")), basis_text(f)), f["why"]] for f in factors]
        out.append(page.table("factors", ["factor", "favours", "basis", "the numbers behind it"], rows, None,
                              f"The seeds' factor table: {_g(dec, 'best', 'dense')} (dense) vs "
                              f"{_g(dec, 'best', 'moe')} (MoE); vote {dec.get('vote', 0):+d}"))
        page.csvs["factors"] = (["factor", "favours", "basis", "basis_detail", "why", "numbers"],
                                [[f["factor"], f["favours"], f["basis"], f.get("basis_detail", ""), f["why"],
                                  json.dumps(f["numbers"])] for f in factors])
    out.append(_hybrid_fleet(dec.get("hybrid"), page))
    flips = dec.get("flip_details") or [{"text": t} for t in dec.get("flips") or []]
    if flips:
        items = "".join(f"<li>{_e(f['text'])}</li>" for f in flips)
        out.append(f"<div class='flips'><h3>What would flip it</h3><ul>{items}</ul></div>")
        page.csvs["flips"] = (["input", "direction", "threshold", "from", "to", "text"],
                              [[f.get("input"), f.get("direction"), f.get("threshold"), f.get("from"), f.get("to"),
                                f.get("text")] for f in flips])
    return "".join(out)


def _hybrid_fleet(fleet: dict | None, page: _Page) -> str:
    """A hybrid recommendation's fleet (decide.candidates.fleet): both models' GPUs and memory together, $/Mtok and
    latency at the measured escalation rate, beside the measured tiny-scale curve's points it took that rate from."""
    if not isinstance(fleet, dict):
        return ""
    rows = [["fleet (engine)", f"{fleet.get('dense')} + {fleet.get('moe')}", fleet.get("policy"),
             f"{fleet.get('gpus')} of {fleet.get('gpus_available')}",
             f"{_num(fleet.get('memory_gb'))} of {_num(fleet.get('memory_budget_gb'))}",
             "yes" if fleet.get("fits") else "no", fleet.get("escalation_rate"), fleet.get("usd_per_million_tokens"),
             fleet.get("latency_ms_mean"), fleet.get("latency_ms_worst"), fleet.get("latency_ms_tail"),
             fleet.get("breakeven_escalation_rate"), fleet.get("formula")]]
    measured = fleet.get("measured") or {}
    for key in ("dense", "moe", "cascade", "route"):
        point = measured.get(key)
        if isinstance(point, dict):
            rows.append([f"measured: {key}", point.get("name") or key, point.get("policy") or key, None, None, None,
                         point.get("escalation_rate"), None, _ms(point.get("latency_s_mean")), None, None, None,
                         f"accuracy {_num(point.get('accuracy'))} [{_num(point.get('ci_low'))}, "
                         f"{_num(point.get('ci_high'))}] of {point.get('n')}; "
                         f"{_num(point.get('flops_per_query'))} FLOPs/query"])
    detail = (f"escalation rate from {fleet.get('escalation_source')}; measured on {measured.get('engine')} over "
              f"{measured.get('items')} items" if fleet.get("escalation_source") else "no measured curve")
    return page.table("hybrid_fleet", [
        "row", "models", "policy", "GPUs", "memory GB", "fits", "escalation rate", "$/Mtok", "mean latency ms",
        "slowest query ms (mean steps)", f"slowest query ms ({fleet.get('latency_ms_tail_label') or 'tail'})",
        "cascade break-even rate", "formula / measured"], rows, fleet.get("basis"),
        "The hybrid's fleet (one replica of each model), modelled at the measured escalation rate", detail)


CSS = """
:root{--ink:#111827;--muted:#4b5563;--line:#e5e7eb;--dense:#1f5fa8;--moe:#c2410c;--hybrid:#7c3aed;--bg:#f8fafc}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"DejaVu Sans",sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 28px 60px}
header.top{display:flex;justify-content:space-between;align-items:baseline;gap:16px;flex-wrap:wrap;color:var(--muted);
font-size:13px;margin-bottom:14px}
header.top b{color:var(--ink);font-size:16px;letter-spacing:.02em}
.headline{background:#fff;border:1px solid var(--line);border-left:8px solid var(--hybrid);border-radius:12px;
padding:22px 26px;box-shadow:0 1px 3px rgba(0,0,0,.05)}
.headline.moe{border-left-color:var(--moe)}.headline.dense{border-left-color:var(--dense)}
.eyebrow{text-transform:uppercase;font-size:12px;letter-spacing:.12em;color:var(--muted)}
.headline h1{margin:2px 0 6px;font-size:34px;line-height:1.15}
.headline.moe h1{color:var(--moe)}.headline.dense h1{color:var(--dense)}.headline.hybrid h1{color:var(--hybrid)}
.headline h1 .model{color:var(--ink);font-weight:600;font-size:26px;margin-left:8px}
.reason{max-width:920px;color:#1f2937;margin:6px 0 16px}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:12px;align-items:start}
.tile{background:var(--bg);border:1px solid var(--line);border-radius:10px;padding:12px 14px;position:relative}
.tile .value{font-size:26px;font-weight:700}.tile .label{font-size:13px;color:var(--muted)}
.tile .badge{margin-top:8px}
nav.toc{margin:18px 0 6px;display:flex;flex-wrap:wrap;gap:8px}
nav.toc a{font-size:13px;color:var(--ink);text-decoration:none;background:#fff;border:1px solid var(--line);
border-radius:999px;padding:4px 12px}
section{background:#fff;border:1px solid var(--line);border-radius:12px;padding:18px 24px;margin-top:18px}
h2{margin:0 0 4px;font-size:21px}
h2 .step{display:inline-block;width:28px;height:28px;line-height:28px;border-radius:50%;background:var(--ink);
color:#fff;text-align:center;font-size:14px;margin-right:10px;vertical-align:2px}
h3{font-size:15px;margin:6px 0 8px}
.intro{color:var(--muted);margin:0 0 12px;max-width:960px}
figure.plot{margin:14px 0 18px;padding:10px;border:1px solid var(--line);border-radius:10px;background:#fff}
figure.plot svg{display:block;margin:0 auto;height:auto}
figcaption{font-size:13px;color:#374151;margin-top:6px}
.badge{display:inline-block;font-size:11px;font-weight:600;border-radius:4px;padding:1px 6px;margin-right:6px;
text-transform:uppercase;letter-spacing:.04em;vertical-align:1px}
.badge.measured{background:#dcfce7;color:#166534}.badge.modelled{background:#dbeafe;color:#1e40af}
.badge.prior{background:#f3f4f6;color:#374151}.badge.mixed{background:#fef9c3;color:#854d0e}
.badge.tiny{background:#ecfccb;color:#3f6212}.badge.warning{background:#dc2626;color:#fff}
.basis-detail{font-size:11px;color:var(--muted);margin-right:6px}
.warnbox{margin-top:6px;padding:6px 8px;border:1px solid #fca5a5;background:#fef2f2;border-radius:6px;font-size:12px;
color:#991b1b}.warnbox .warntext{display:block;margin-top:3px}
.tile.warned{border-color:#f87171}.nofit{color:#b91c1c}
.tablewrap{overflow-x:auto;margin:10px 0 16px}
table{border-collapse:collapse;width:100%;font-size:13px}
caption{text-align:left;font-weight:600;padding:4px 0 6px;color:#1f2937}
caption .csv{font-weight:400;color:#9ca3af;font-size:11px;margin-left:6px}
th,td{padding:5px 9px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{text-align:left}td:first-child{white-space:nowrap}
th{background:#f9fafb;font-weight:600;color:#374151}
tbody tr:nth-child(even){background:#fcfcfd}
#table-factors td:last-child,#table-objective td:last-child{text-align:left}
#table-served_latency,#table-served_throughput{font-size:12px}
#table-served_latency :is(th,td),#table-served_throughput :is(th,td){padding:4px 6px}
.fav{font-weight:700;text-transform:uppercase;font-size:12px}.fav.moe{color:var(--moe)}.fav.dense{color:var(--dense)}
.fav.neutral{color:var(--muted)}
.notrun{border:1px dashed #cbd5e1;border-radius:10px;padding:14px;color:var(--muted);background:#f8fafc;margin:10px 0}
.note{font-size:13px;color:var(--muted)}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:24px}
.mixrow{display:grid;grid-template-columns:110px 1fr 44px;gap:8px;align-items:center;font-size:13px;margin:5px 0}
.mixrow .bar{background:#f1f5f9;border-radius:4px;height:14px}
.mixrow .bar div{background:linear-gradient(90deg,#c2410c,#f97316);height:14px;border-radius:4px}
.flips{background:#faf5ff;border:1px solid #e9d5ff;border-radius:10px;padding:10px 18px;margin-top:8px}
.flips li{margin:3px 0}
details{margin:8px 0 14px}summary{cursor:pointer;font-weight:600;font-size:14px;color:#1f2937}
footer{margin-top:24px;font-size:12px;color:var(--muted)}
@media (max-width:800px){.cols{grid-template-columns:1fr}}
"""


def _write_csv(path: Path, headers: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(headers)
        for r in rows:
            w.writerow(["" if c is None else str(c) if isinstance(c, _Raw) else c for c in r])


def render(study: dict) -> tuple[str, _Page]:
    """The report page's HTML and the tables it holds."""
    page = _Page()
    kf = key_figures(study)
    sections = [
        ("objective", "Objective", "What must the deployment achieve? Hard constraints first: latency, throughput, "
         "quality; then cost.", _objective),
        ("resources", "Resources", "What hardware is there: the deployment GPUs as the datasheet states them, and this "
         "machine as calibration measured it.", _resources),
        ("workload", "Workload", "What the traffic looks like: batch, context and the mix of tasks.", _workload),
        ("scale", "Scale: frontier economics", "The pairs the seeds discuss, modelled on the deployment GPU: "
         "parameters, memory, and who serves a token cheaper at each batch.", _scale),
        ("serving", "Serving frontier: interactivity vs throughput", "Each frontier pair served at every "
         "concurrency on every plan for the deployment's GPUs: tokens/s per user against tokens/s per GPU, the "
         "picture serving teams decide from (modelled, not measured).", _serving_frontier),
        ("prototype", "Prototype: training", "Both kinds built and trained here at tiny scale on the same data, "
         "budget and schedule: what the FLOP advantage and the routing look like for real.", _prototype),
        ("task_type", "Task type: knowledge and reasoning, measured", "What the seeds say decides between the "
         "kinds by task: exact-match accuracy on held-out facts questions and on a ladder of arithmetic problems, "
         "for the iso-active and the iso-total pair, with intervals and item counts.", _external("task_type_section")),
        ("benchmark", "Benchmark: measured vs predicted", "The engine held against a stopwatch on this machine: "
         "every prediction beside its measurement, with its error.", _benchmark),
        ("served", "Served with vLLM: measured latency and throughput", "The trained dense and MoE prototypes "
         "served by a real engine (vLLM, on this machine's CPU) at each concurrency, timed as vLLM's own benchmark "
         "defines TTFT, TPOT and end-to-end latency: the seeds' latency and throughput tables, measured, beside the "
         "engine's modelled means.", _served),
        ("hybrid", "Hybrid serving: routed and cascaded, measured", "The dense and MoE prototypes served "
         "together: a router that picks one model per query before generating, and a cascade where the MoE takes "
         "what the dense model answers with low confidence; accuracy against measured latency and FLOPs per query "
         "at each threshold.", _external("hybrid_section")),
        ("scaling", "Scaling across processes: the multi-GPU table, measured", "Both kinds trained again in 1, 2 "
         "and 4 torchrun processes (the MoE expert-parallel, its tokens exchanged by all-to-all every MoE layer): "
         "speedup, efficiency and the all-to-all share, beside the engine's prediction and the seeds' GPU "
         "table.", _scaling),
        ("mitigations", "Mitigations: pruning, quantization, offloading, upcycling", "The seeds' ways to make a "
         "MoE affordable, done for real to the trained MoE and measured here: memory held, the loss they cost per "
         "domain (rare domains apart) and the decode step; upcycling the dense model against training on; and the "
         "engine's price of each for frontier models on GPUs.", _mitigations),
        ("laws", "Scaling laws: loss against compute, fitted", "A sweep of model sizes of both kinds on one data "
         "order and token budget, the power laws the seeds state fitted to it, and the largest size predicted from "
         "the others.", _external("laws_section")),
        ("claims", "The seeds' claims, checked", "Every checkable number in the two analyses this study follows, "
         "beside what moelab computes or measures for the same setting, and a verdict.", _external("claims_section")),
        ("decision", "Decision", "Hard constraints, cost per token at the workload's batch, then the seeds' soft "
         "factors; and the concrete thresholds that would change the answer.", _decision),
    ]
    body = []
    for n, (sid, title, intro, fn) in enumerate(sections, 1):
        try:
            content = fn(study, page)
        except Exception as e:  # noqa: BLE001 - one broken part must not take the report down
            content = _not_run(f"This part could not be rendered ({type(e).__name__}: {e}).")
        body.append(_section(sid, n, title, _e(intro), content))
    toc = "".join(f"<a href='#{sid}'>{n}. {_e(title)}</a>" for n, (sid, title, *_r) in enumerate(sections, 1))
    wl = study.get("workload") or {}
    meta = (f"{_e(study.get('created', ''))} · {'quick run · ' if study.get('quick') else ''}"
            f"study took {_num(study.get('wall_seconds'))} s")
    choice = _e(_g(study, "decision", "recommendation", "choice", default="report"))
    name = _e(wl.get("name", "this workload"))
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>moelab study: {choice} for {name}</title><style>{CSS}</style></head>
<body><main>
<header class="top"><span><b>moelab study</b> · dense or Mixture-of-Experts for <i>{name}</i></span>
<span>{meta}</span></header>
{_headline(study, kf)}
<nav class="toc">{toc}</nav>
{''.join(body)}
<footer>Badges: <span class='badge tiny'>measured at tiny scale</span> on this machine, on models thousands of times
smaller than the candidates (device, steps and parameters beside the badge) ·
<span class='badge measured'>measured</span> at the candidates' own scale ·
<span class='badge modelled'>modelled</span> by moelab's cost engine (frontier scale; step times are means) ·
<span class='badge mixed'>modelled + measured at tiny scale</span> a modelled figure checked against such a
measurement ·
<span class='badge prior'>prior</span> the seeds' guidance or the workload's own statement. Every table is beside this
file as CSV; the key figures are in summary.json.</footer>
</main></body></html>
"""
    return doc, page


def write_report(study: dict, out_dir: Path) -> Path:
    """Write out_dir/report.html, out_dir/summary.json and one CSV per table; returns the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc, page = render(study)
    files = ["report.html", "summary.json"]
    for name, (headers, rows) in page.csvs.items():
        _write_csv(out_dir / f"{name}.csv", headers, rows)
        files.append(f"{name}.csv")
    report = out_dir / "report.html"
    report.write_text(doc, encoding="utf-8")
    dec = study.get("decision") or {}
    summary = {"version": 1, "created": study.get("created"), "quick": study.get("quick"),
               "recommendation": dec.get("recommendation"), "key_figures": key_figures(study),
               "flips": dec.get("flips") or [], "factors": [{k: f[k] for k in ("factor", "favours", "basis")}
                                                            for f in dec.get("factors") or []],
               "claims": study.get("claims") or [], "figures": page.figures, "files": files}
    (out_dir / "summary.json").write_text(jsonout.dumps(summary, indent=2, default=str) + "\n")
    return report
