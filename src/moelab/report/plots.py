"""The report's figures: matplotlib (Agg) rendered to inline SVG text, fonts as paths, no external resource.

Every function takes parts of the study dict and returns SVG markup, or None when it has nothing to draw.
"""

from __future__ import annotations

import io
import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from moelab.train.clocks import training_seconds  # noqa: E402

DENSE = ["#1f5fa8", "#4a90d9", "#86b6ea", "#0b3d73"]
MOE = ["#c2410c", "#9333ea", "#db2777", "#d97706", "#7c2d12"]
GREY = "#6b7280"
STYLE = {
    "font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold",
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#e5e7eb",
    "grid.linewidth": 0.6, "axes.edgecolor": "#9ca3af", "axes.labelcolor": "#374151", "xtick.color": "#4b5563",
    "ytick.color": "#4b5563", "legend.frameon": False, "legend.fontsize": 8, "svg.fonttype": "path",
    "figure.dpi": 100,
}
LOAD_CMAP = LinearSegmentedColormap.from_list("load", ["#f8fafc", "#fdba74", "#c2410c", "#431407"])


def _svg(fig, name: str) -> str:
    """The figure as an inline <svg> that scales to its container (ids salted per figure: no clashes)."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"moelab-{name}"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "moelab"})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'<svg([^>]*?) width="([\d.]+)pt" height="([\d.]+)pt"',
                  lambda m: f'<svg{m.group(1)} width="100%" style="max-width:{float(m.group(2)) * 4 / 3:.0f}px" '
                            f'role="img" aria-label="{name}"', text, count=1)
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    # group ids (figure_1, axes_1, ...) repeat across figures and nothing refers to them
    return re.sub(r'(<g\b[^>]*?)\s+id="[^"]*"', r"\1", text)


def _figure(ncols: int, nrows: int = 1, width: float = 3.6, height: float = 2.8, layout: str | None = None):
    with matplotlib.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, layout=layout)
    return fig, axes


def _moe_in(rows: list[dict]) -> set[str]:
    """The models bench rows say are MoE (they record each model's expert count)."""
    return {r["model"] for r in rows if r.get("experts")}


def _trained_moe(name: str) -> bool:
    """Whether a training run's model is MoE: moelab's training presets know; other runs by their name."""
    from moelab.train.presets import TRAIN_PRESETS

    preset = TRAIN_PRESETS.get(name)
    return preset().is_moe if preset is not None else "moe" in name.lower()


def _colours(names: list[str], is_moe) -> dict[str, str]:
    out, d, m = {}, 0, 0
    for n in names:
        if is_moe(n):
            out[n], m = MOE[m % len(MOE)], m + 1
        else:
            out[n], d = DENSE[d % len(DENSE)], d + 1
    return out


def _plain(v: float, _pos=None) -> str:
    if v >= 1e12:
        return f"{v / 1e12:g}T"
    if v >= 1e9:
        return f"{v / 1e9:g}G"
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _loglog(ax, ylog: bool = True) -> None:
    """Base-2 batch axis and log y axis, both labelled with plain numbers (1, 8, 64; 300, 3k)."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(_plain))
    if ylog:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(_plain))
        low, high = ax.get_ylim()
        # under a decade there may be no major tick at all: label the minor ones (2, 3, ..., 9 x 10^k)
        ax.yaxis.set_minor_formatter(FuncFormatter(_plain) if high < 10 * low else NullFormatter())


# --- frontier ----------------------------------------------------------------------------------------------

PARAM_PARTS = (("attention", "attention", "#64748b"), ("dense_ffn", "dense FFN", "#1f5fa8"),
               ("routed_active", "routed experts (active)", "#c2410c"),
               ("routed_inactive", "routed experts (idle per token)", "#fdba74"),
               ("shared_experts", "shared experts", "#9333ea"), ("embeddings", "embeddings + lm_head", "#94a3b8"),
               ("other", "routers + norms", "#111827"))
MEM_PARTS = (("weights_bytes", "weights", "#1f5fa8"), ("kv_cache_bytes", "KV cache", "#16a34a"),
             ("activation_bytes", "prefill activations", "#facc15"), ("overhead_bytes", "runtime overhead", "#9ca3af"))


def params_memory(estimates: dict) -> str | None:
    """Stacked parameters by component (billions) and serving memory (GB) per frontier model."""
    if not estimates:
        return None
    names = list(estimates)
    fig, axes = _figure(2, width=5.2, height=0.45 * len(names) + 1.2)
    ax = axes[0][0]
    left = [0.0] * len(names)
    for key, label, colour in PARAM_PARTS:
        vals = []
        for n in names:
            p = estimates[n]["params"]
            vals.append({"routed_inactive": p["routed_experts"] - p["routed_active"],
                         "embeddings": p["embedding"] + p["lm_head"], "other": p["routers"] + p["norms"]}.get(
                key, p.get(key, 0)) / 1e9)
        if any(vals):
            ax.barh(names, vals, left=left, color=colour, label=label, height=0.62)
            left = [a + b for a, b in zip(left, vals, strict=True)]
    for i, n in enumerate(names):
        p = estimates[n]["params"]
        ax.text(left[i], i, f"  {p['total'] / 1e9:.0f}B ({p['active'] / 1e9:.0f}B active)", va="center", fontsize=7.5,
                color="#374151")
    ax.set_xlim(0, max(left) * 1.45)
    ax.invert_yaxis()
    ax.set_xlabel("parameters (billions)")
    ax.set_title("Parameters by component")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=7)
    ax = axes[0][1]
    left = [0.0] * len(names)
    for key, label, colour in MEM_PARTS:
        vals = [estimates[n]["memory"].get(key, 0) / 1e9 for n in names]
        ax.barh(names, vals, left=left, color=colour, label=label, height=0.62)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    for i, n in enumerate(names):
        m = estimates[n]["memory"]
        ax.text(left[i], i, f"  {m['total_bytes'] / 1e9:.0f} GB, {m['min_gpus']} GPU", va="center", fontsize=7.5,
                color="#374151")
    batch = next(iter(estimates.values()))["workload"]["batch"]
    ax.set_xlim(0, max(left) * 1.35)
    ax.invert_yaxis()
    ax.set_yticklabels([])
    ax.set_xlabel("GB")
    ax.set_title(f"Serving memory at batch {batch}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=7)
    return _svg(fig, "params-memory")


def crossover(pairs: list[dict], bench: dict | None) -> str | None:
    """Decode tokens/s per GPU against batch for each frontier pair (flip marked), plus the measured pair."""
    measured = _measured_decode(bench)
    measured_moe = _moe_in((bench or {}).get("rows") or [])
    panels = len(pairs or []) + (1 if measured else 0)
    if not panels:
        return None
    ncols = min(3, panels)
    nrows = math.ceil(panels / ncols)
    fig, axes = _figure(ncols, nrows, width=3.7, height=2.9)
    flat = [a for row in axes for a in row]
    for ax, pair in zip(flat, pairs or [], strict=False):
        batches = [r["batch"] for r in pair["rows"]]
        moe = pair.get("moe", {})  # which side is MoE, as the spec says (older results: neither)
        for side, colour in (("a", MOE[0] if moe.get("a") else DENSE[0]), ("b", MOE[0] if moe.get("b") else DENSE[0])):
            ax.plot(batches, [r[side]["tokens_per_second_per_gpu"] for r in pair["rows"]], "-o", ms=2.5,
                    color=colour, label=pair[side])
        _loglog(ax)
        for flip in pair.get("flips", []):
            ax.axvline(flip["batch"], color=GREY, ls=":", lw=1)
            changed = " (GPUs change)" if flip.get("gpus_changed") else ""
            ax.annotate(f"flip @ {flip['batch']}{changed}", (flip["batch"], ax.get_ylim()[0]), xytext=(-3, 4),
                        textcoords="offset points", ha="right", fontsize=7, color="#374151")
        ax.set_title(f"{pair['a']} vs {pair['b']}", fontsize=8.5)
        ax.set_xlabel("decode batch")
        ax.set_ylabel("tokens/s per GPU (modelled)")
        ax.legend(loc="upper left", fontsize=7)
        ax.set_ylim(top=ax.get_ylim()[1] * 3)
    if measured:
        ax = flat[len(pairs or [])]
        colours = _colours(list(measured), measured_moe.__contains__)
        for model, pts in measured.items():
            pts.sort()
            ax.plot([b for b, _, _ in pts], [t for _, t, _ in pts], "-o", ms=3, color=colours[model], label=model)
        _loglog(ax)
        flip = (bench or {}).get("flip") or {}
        if flip.get("measured_batch"):
            ax.axvline(flip["measured_batch"], color="#111827", ls="--", lw=1)
            ax.annotate(f"measured flip @ {flip['measured_batch']}", (flip["measured_batch"], ax.get_ylim()[0]),
                        xytext=(3, 4), textcoords="offset points", fontsize=7)
            ax.set_ylim(top=ax.get_ylim()[1] * 2.5)
        if flip.get("predicted_batch"):
            ax.axvline(flip["predicted_batch"], color=GREY, ls=":", lw=1)
            ax.annotate(f"predicted @ {flip['predicted_batch']}", (flip["predicted_batch"], ax.get_ylim()[0]),
                        xytext=(-3, 14), textcoords="offset points", ha="right", fontsize=7, color=GREY)
        ax.set_title(f"measured at tiny scale on {(bench or {}).get('device', 'this machine')}", fontsize=8.5)
        ax.set_xlabel("decode batch")
        ax.set_ylabel("tokens/s (measured)")
        ax.legend(loc="upper left", fontsize=7)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.tight_layout()
    return _svg(fig, "crossover")


def _measured_decode(bench: dict | None) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in (bench or {}).get("rows") or []:
        if r.get("phase") == "decode" and r.get("tokens_per_second"):
            out.setdefault(r["model"], []).append((r["batch"], r["tokens_per_second"],
                                                   r.get("predicted_tokens_per_second")))
    return out


# --- measured ----------------------------------------------------------------------------------------------

def _legend_below(fig, ax, columns: int, height: float) -> None:
    """One legend for the whole figure (the lines of `ax`), centred below the panels in `height` of the figure."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(columns, len(labels)), fontsize=7.5,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, height, 1, 1))


def bench_curves(bench: dict | None) -> str | None:
    """Decode step latency, decode throughput and prefill throughput against batch: measured and predicted."""
    rows = (bench or {}).get("rows") or []
    if not rows:
        return None
    models = list(dict.fromkeys(r["model"] for r in rows))
    colours = _colours(models, _moe_in(rows).__contains__)
    fig, axes = _figure(3, width=3.7, height=2.9)
    panels = (("decode", lambda r: r["measured_s"] * 1e3, lambda r: r["predicted_s"] * 1e3, "decode step (ms)",
               "Decode latency"),
              ("decode", lambda r: r["tokens_per_second"], lambda r: _pred_tps(r), "tokens/s", "Decode throughput"),
              ("prefill", lambda r: r["tokens_per_second"], lambda r: _pred_tps(r), "tokens/s", "Prefill throughput"))
    for ax, (phase, meas, pred, ylabel, title) in zip(axes[0], panels, strict=True):
        for model in models:
            pts = sorted((r for r in rows if r["model"] == model and r["phase"] == phase), key=lambda r: r["batch"])
            if not pts:
                continue
            b = [r["batch"] for r in pts]
            ax.plot(b, [meas(r) for r in pts], "-o", ms=3, color=colours[model], label=f"{model} measured")
            pv = [pred(r) for r in pts]
            if all(v is not None for v in pv):
                ax.plot(b, pv, "--", lw=1.2, color=colours[model], alpha=0.8, label=f"{model} predicted")
        _loglog(ax)
        ax.set_xlabel("batch")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    _legend_below(fig, axes[0][0], columns=6, height=0.1)
    return _svg(fig, "bench")


def _pred_tps(r: dict) -> float | None:
    if r.get("predicted_tokens_per_second"):
        return r["predicted_tokens_per_second"]
    if r.get("predicted_s") and r.get("measured_s") and r.get("tokens_per_second"):
        return r["tokens_per_second"] * r["measured_s"] / r["predicted_s"]
    return None


def prediction_error(bench: dict | None) -> str | None:
    """Relative error of each prediction (predicted / measured - 1) by batch, one bar per model, per phase."""
    rows = [r for r in (bench or {}).get("rows") or [] if r.get("rel_error") is not None]
    if not rows:
        return None
    phases = [p for p in ("prefill", "decode") if any(r["phase"] == p for r in rows)]
    models = list(dict.fromkeys(r["model"] for r in rows))
    colours = _colours(models, _moe_in(rows).__contains__)
    fig, axes = _figure(len(phases), width=4.8, height=2.7)
    summary = (bench or {}).get("summary") or {}
    for ax, phase in zip(axes[0], phases, strict=True):
        batches = sorted({r["batch"] for r in rows if r["phase"] == phase})
        width = 0.8 / len(models)
        for i, model in enumerate(models):
            by_batch = {r["batch"]: r["rel_error"] for r in rows if r["phase"] == phase and r["model"] == model}
            xs = [j + (i - (len(models) - 1) / 2) * width for j, b in enumerate(batches) if b in by_batch]
            ax.bar(xs, [by_batch[b] * 100 for b in batches if b in by_batch], width=width, color=colours[model],
                   label=model)
        ax.axhline(0, color="#111827", lw=0.8)
        ax.set_xticks(range(len(batches)), [str(b) for b in batches])
        ax.set_xlabel("batch")
        ax.set_ylabel("predicted vs measured (%)")
        med = (summary.get(phase) or {}).get("median_abs_rel_error")
        ax.set_title(f"{phase}" + (f": median |error| {med:.0%}" if med is not None else ""))
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _svg(fig, "prediction-error")


def _moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over `window` points (shorter at the start): per-step losses jump with each batch's domain."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def training(curves: dict | None, target: float | None = None) -> str | None:
    """Training loss against tokens, FLOPs and seconds of training steps (validation loss as markers)."""
    if not curves or not any(curves.values()):
        return None
    colours = _colours(list(curves), _trained_moe)
    fig, axes = _figure(3, width=3.7, height=2.9)
    axes_x = ((lambda p: p["tokens"], "tokens"), (lambda p: p["flops"], "training FLOPs"),
              (training_seconds, "training seconds (steps only)"))
    for ax, (x_of, label) in zip(axes[0], axes_x, strict=True):
        for model, pts in curves.items():
            if not pts:
                continue
            xs, losses = [x_of(p) for p in pts], [p["loss"] for p in pts]
            ax.plot(xs, losses, "-", lw=0.5, alpha=0.25, color=colours[model])
            ax.plot(xs, _moving_average(losses, max(1, len(losses) // 25)), "-", lw=1.2, color=colours[model],
                    label=f"{model} train (moving average)")
            val = [p for p in pts if p.get("val_mean") is not None]
            ax.plot([x_of(p) for p in val], [p["val_mean"] for p in val], "o--", ms=4, lw=0.9, color=colours[model],
                    markeredgecolor="white", label=f"{model} validation")
        ax.xaxis.set_major_formatter(FuncFormatter(_plain))
        if target is not None:
            ax.axhline(target, color=GREY, ls=":", lw=1)
            ax.annotate(f"target {target:.3f}", (ax.get_xlim()[0], target), xytext=(2, 2), textcoords="offset points",
                        fontsize=7, color=GREY)
        ax.set_xlabel(label)
        ax.set_ylabel("loss (nats/token)")
        ax.set_title(f"Loss vs {label}")
    _legend_below(fig, axes[0][0], columns=6, height=0.1)
    return _svg(fig, "training")


def expert_load(loads: dict | None) -> str | None:
    """Share of token-slots per expert, per MoE layer (rows) and per domain (panels), for each MoE model."""
    loads = {m: d for m, d in (loads or {}).items() if d}
    if not loads:
        return None
    domains = sorted({d for per in loads.values() for d in per})
    fig, axes = _figure(len(domains), len(loads), width=4.2, height=2.1, layout="constrained")
    image = None
    for i, (model, per_domain) in enumerate(loads.items()):
        for j, domain in enumerate(domains):
            ax = axes[i][j]
            ax.grid(False)
            grid = per_domain.get(domain)
            if not grid:
                ax.set_visible(False)
                continue
            n_exp = len(grid[0])
            image = ax.imshow(grid, aspect="auto", cmap=LOAD_CMAP, vmin=0, vmax=max(0.5, 3.0 / n_exp))
            ax.set_title(f"{model} · {domain}", fontsize=8.5)
            ax.set_yticks(range(len(grid)), [f"L{k}" for k in range(len(grid))])
            step = 1 if n_exp <= 10 else 5
            ax.set_xticks(range(0, n_exp, step))
            ax.set_xlabel("expert")
    if image is not None:
        cbar = fig.colorbar(image, ax=[a for row in axes for a in row], shrink=0.8)
        cbar.set_label("share of token-slots")
    return _svg(fig, "expert-load")


def candidates(cands: list[dict] | None, latency_target: float | None = None,
               latency_label: str = "modelled mean per-token latency") -> str | None:
    """$/Mtok and per-token latency (`latency_label`: a modelled mean unless a measured tail scaled it) of every
    candidate against the p99 target; infeasible ones hatched."""
    if not cands:
        return None
    names = [c["name"] for c in cands]
    fig, axes = _figure(2, width=4.6, height=0.42 * len(cands) + 1.4)
    for ax, key, label in ((axes[0][0], "usd_per_million_tokens", "$ per million output tokens"),
                           (axes[0][1], "latency_ms", f"{latency_label} (ms)")):
        for i, c in enumerate(cands):
            colour = MOE[0] if c["kind"] == "moe" else DENSE[0]
            ax.barh(i, c[key], color=colour if c["feasible"] else "white", edgecolor=colour,
                    hatch=None if c["feasible"] else "///", height=0.6)
            note = "" if c["feasible"] else f"  fails: {', '.join(c['violations'])}"
            ax.text(c[key], i, f" {c[key]:.2f}{note if key == 'usd_per_million_tokens' else ''}", va="center",
                    fontsize=7.5, color="#374151")
        ax.set_yticks(range(len(names)), names if key == "usd_per_million_tokens" else [""] * len(names))
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.set_xlim(0, max(c[key] for c in cands) * 1.6)
        if key == "latency_ms" and latency_target:
            ax.axvline(latency_target, color="#dc2626", ls="--", lw=1)
            ax.annotate(f"p99 target {latency_target:g} ms", (latency_target, -0.5), xytext=(3, 0),
                        textcoords="offset points", fontsize=7, color="#dc2626", va="bottom")
    axes[0][0].set_title("Cost per token (solid: feasible)")
    axes[0][1].set_title("Modelled latency against the p99 target")
    fig.tight_layout()
    return _svg(fig, "candidates")


# --- serving frontier --------------------------------------------------------------------------------------

def _frontier_figure(series: list[dict], title: str):
    """Output tokens/s per GPU against tokens/s per user, one line per model's Pareto frontier (dense blue, MoE
    orange); `series`: [{"model", "kind": "dense" | "moe", "points": [FrontierPoint dicts]}]."""
    drawn = [s for s in series if s.get("points")]
    if not drawn:
        return None
    fig, axes = _figure(1, width=6.2, height=4.0)
    ax = axes[0][0]
    colours = _colours([s["model"] for s in drawn], {s["model"] for s in drawn if s["kind"] == "moe"}.__contains__)
    for s in drawn:
        pts = sorted(s["points"], key=lambda p: p["tokens_per_second_per_user"])
        x = [p["tokens_per_second_per_user"] for p in pts]
        y = [p["tokens_per_second_per_gpu"] for p in pts]
        ax.plot(x, y, marker="o", ms=3, lw=1.4, color=colours[s["model"]], label=f"{s['model']} ({s['kind']})",
                ls="-" if s["kind"] == "moe" else "--")
        for p in (pts[0], pts[-1]):  # the concurrency and plan at each end
            ax.annotate(f"C={p['concurrency']} {p['plan']}", (p["tokens_per_second_per_user"],
                                                              p["tokens_per_second_per_gpu"]),
                        xytext=(4, 3), textcoords="offset points", fontsize=6.5, color=colours[s["model"]])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.set_xlabel("output tokens/s per user (modelled mean, 1 / TPOT)")
    ax.set_ylabel("output tokens/s per GPU (modelled mean)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower left", fontsize=7.5)
    fig.tight_layout()
    return fig


def frontier(series: list[dict], title: str) -> str | None:
    """The interactivity-throughput frontiers as inline SVG (None when no model has a point)."""
    fig = _frontier_figure(series, title)
    return None if fig is None else _svg(fig, "serving-frontier")


def frontier_png(series: list[dict], title: str, path) -> bool:
    """Write the frontiers as a PNG to exactly `path` (no other file); False when no model has a point."""
    fig = _frontier_figure(series, title)
    if fig is None:
        return False
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=150, bbox_inches="tight", metadata={"Software": "moelab"})
    finally:
        plt.close(fig)
    from moelab.outfile import write_atomically

    write_atomically(path, buffer.getvalue())
    return True


# --- served with vLLM --------------------------------------------------------------------------------------

def served(rows: list[dict] | None) -> str | None:
    """TTFT and TPOT against concurrency for each served model (study["serving"]["rows"]): the measured p50 as a
    solid line with markers, the band up to the measured p99, and the engine's modelled mean dashed."""
    rows = [r for r in rows or [] if r.get("concurrency") and r.get("ttft_ms_p50") is not None]
    if not rows:
        return None
    models = list(dict.fromkeys(r["model"] for r in rows))
    colours = _colours(models, {r["model"] for r in rows if r.get("kind") == "moe"}.__contains__)
    fig, axes = _figure(2, width=3.9, height=2.9)
    for ax, metric, title in ((axes[0][0], "ttft", "Time to first token"),
                              (axes[0][1], "tpot", "Time per output token")):
        for model in models:
            pts = sorted((r for r in rows if r["model"] == model and r.get(f"{metric}_ms_p50") is not None),
                         key=lambda r: r["concurrency"])
            if not pts:
                continue
            c = [r["concurrency"] for r in pts]
            colour = colours[model]
            p50 = [r[f"{metric}_ms_p50"] for r in pts]
            ax.plot(c, p50, "-o", ms=3.5, lw=1.5, color=colour, label=f"{model} measured p50")
            p99 = [r.get(f"{metric}_ms_p99") for r in pts]
            if all(v is not None for v in p99):
                ax.fill_between(c, p50, p99, color=colour, alpha=0.15, lw=0, label=f"{model} measured p50–p99")
            pred = [r.get(f"predicted_{metric}_ms") for r in pts]
            if all(v is not None for v in pred):
                ax.plot(c, pred, "--", lw=1.2, color=colour, alpha=0.85, label=f"{model} predicted mean")
        _loglog(ax)
        levels = sorted({r["concurrency"] for r in rows})
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel(f"{metric.upper()} (ms)")
        ax.set_title(title)
    _legend_below(fig, axes[0][0], columns=3, height=0.13)
    return _svg(fig, "served")


def scaling(rows: list[dict] | None, seeds: dict | None = None) -> str | None:
    """Speedup over one process against processes (study["scaling"]["rows"]): measured solid with markers, the
    engine's prediction dashed, the seeds' multi-GPU table dotted, and the ideal here (min(processes, cores))."""
    rows = [r for r in rows or [] if r.get("speedup") is not None]
    if not rows:
        return None
    fig, axes = _figure(1, width=4.6, height=3.0)
    ax = axes[0][0]
    colours = {"dense": "#4C72B0", "moe": "#DD8452"}
    for index, kind in enumerate(("dense", "moe")):
        pts = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["ranks"])
        if not pts:
            continue
        ranks = [r["ranks"] for r in pts]
        ax.plot(ranks, [r["speedup"] for r in pts], "-o", ms=4, lw=1.6, color=colours[kind],
                label=f"{kind} measured")
        pred = [(r.get("predicted") or {}).get("speedup") for r in pts]
        if all(v is not None for v in pred):
            ax.plot(ranks, pred, "--", lw=1.2, color=colours[kind], label=f"{kind} predicted")
        seed = [(seeds or {}).get(n, (None, None))[index] if n in (seeds or {}) else None for n in ranks]
        if all(v is not None for v in seed):
            ax.plot(ranks, seed, ":", lw=1.2, color=colours[kind], label=f"{kind}, seeds' GPU table")
    ideal = {r["ranks"]: r["ideal_speedup_here"] for r in rows}
    ranks = sorted(ideal)
    ax.plot(ranks, [ideal[n] for n in ranks], color="#999999", lw=0.8, label="ideal here (cores)")
    ax.set_xticks(ranks, [str(n) for n in ranks])
    ax.set_xlabel("processes (GPUs in the seeds' table)")
    ax.set_ylabel("speedup over one")
    ax.set_title("Training throughput scaling")
    _legend_below(fig, ax, columns=3, height=0.2)
    return _svg(fig, "scaling")


MITIGATION_COLOURS = {None: "#111827", "prune": "#1f5fa8", "quantize": "#c2410c", "offload": "#16a34a",
                      "upcycle": "#9333ea"}


def mitigations(variants: list[dict] | None) -> str | None:
    """The mitigations measured here (study["mitigations"]["variants"]): weight memory against the loss delta
    over the base MoE (left), and decode p50 per variant with the engine's prediction (right)."""
    variants = [v for v in variants or [] if v.get("weight_bytes")]
    if not variants:
        return None
    fig, axes = _figure(2, width=4.2, height=3.0, layout="constrained")
    ax = axes[0][0]
    for v in variants:
        colour = MITIGATION_COLOURS.get(v.get("transform"), GREY)
        delta = v.get("loss_delta_mean")
        if delta is None:
            continue
        ax.scatter([v["weight_bytes"] / 1e6], [delta], s=28, color=colour, zorder=3)
        ax.annotate(v["name"], (v["weight_bytes"] / 1e6, delta), textcoords="offset points", xytext=(4, 3),
                    fontsize=7, color=colour)
    ax.axhline(0.0, color=GREY, lw=0.8)
    ax.set_xlabel("weights held in memory (MB)")
    ax.set_ylabel("validation loss - base (nats)")
    ax.set_title("Memory against quality")
    ax = axes[0][1]
    timed = [v for v in variants if (v.get("decode") or {}).get("p50_s")]
    names = [v["name"] for v in timed]
    ax.bar(range(len(timed)), [v["decode"]["p50_s"] * 1e3 for v in timed],
           color=[MITIGATION_COLOURS.get(v.get("transform"), GREY) for v in timed], alpha=0.8, label="measured p50")
    p99 = [(i, v["decode"].get("p99_s")) for i, v in enumerate(timed) if v["decode"].get("p99_s")]
    if p99:
        ax.scatter([i for i, _ in p99], [s * 1e3 for _, s in p99], marker="_", s=120, color="#111827",
                   label="measured p99", zorder=3)
    pred = [(i, v["decode"].get("predicted_s")) for i, v in enumerate(timed) if v["decode"].get("predicted_s")]
    if pred:
        ax.scatter([i for i, _ in pred], [s * 1e3 for _, s in pred], marker="D", s=16, color="#f59e0b",
                   label="predicted", zorder=4)
    ax.set_xticks(range(len(timed)), names, rotation=30, ha="right")
    ax.set_ylabel("decode step (ms)")
    batch = timed[0]["decode"].get("batch") if timed else None
    ax.set_title(f"Decode step at batch {batch}" if batch else "Decode step")
    ax.legend(loc="upper left")
    return _svg(fig, "mitigations")
