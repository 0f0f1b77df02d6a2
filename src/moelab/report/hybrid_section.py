"""The report's hybrid section: the measured cost-quality curve of routing and cascading between the study's dense
and MoE models (accuracy with Wilson 95% intervals against measured latency per query and against FLOPs per query:
dense alone, MoE alone, the cascade and the route at each threshold), a table of every point, the best points;
`figures` gives summary.json's key figures. Reads study["hybrid"] (moelab.study.hybrid)."""

from __future__ import annotations

from typing import Any

STYLE = {  # (colour, marker, label) per policy; route points by their router
    "dense": ("#1f5fa8", "s", "dense alone"), "moe": ("#c2410c", "D", "MoE alone"),
    "cascade": ("#16a34a", "o", "cascade (dense, then MoE below the confidence threshold)"),
    "classifier": ("#9333ea", "^", "route (classifier: MoE when P(MoE needed) >= threshold)"),
    "domain": ("#111827", "*", "route by domain (facts to MoE, math to dense)"),
}


def _key(p: dict) -> str:
    return (p.get("router") or "classifier") if p.get("policy") == "route" else p["policy"]


def _plot(points: list[dict]) -> str | None:
    from moelab.report import plots

    points = [p for p in points if isinstance(p, dict) and p.get("latency_s_mean") is not None]
    if not points:
        return None
    fig, axes = plots._figure(2, width=4.2, height=3.2, layout="constrained")
    for ax, field, scale, label in ((axes[0][0], "latency_s_mean", 1e3, "measured latency per query (ms)"),
                                    (axes[0][1], "flops_per_query", 1e-6, "FLOPs per query (millions)")):
        flag = "pareto" if field == "latency_s_mean" else "pareto_flops"
        for key in STYLE:
            mine = [p for p in points if _key(p) == key]
            if key in ("cascade", "classifier"):
                mine.sort(key=lambda p: p.get("threshold") or 0.0)
            if not mine:
                continue
            colour, marker, name = STYLE[key]
            xs = [p[field] * scale for p in mine]
            ys = [p["accuracy"] * 100 for p in mine]
            err = [[(p["accuracy"] - p["ci_low"]) * 100 for p in mine], [(p["ci_high"] - p["accuracy"]) * 100
                                                                        for p in mine]]
            ax.errorbar(xs, ys, yerr=err, color=colour, marker=marker, ms=8 if marker == "*" else 5, lw=0.9,
                        ls="-" if len(mine) > 1 else "none", elinewidth=0.6, capsize=2, alpha=0.9,
                        label=name if field == "latency_s_mean" else None, zorder=3)
            front = [(x, y) for x, y, p in zip(xs, ys, mine, strict=True) if p.get(flag)]
            if front:
                ax.scatter(*zip(*front, strict=True), s=90, facecolors="none", edgecolors="#f59e0b", lw=1.2,
                           zorder=4, label="Pareto-optimal" if field == "latency_s_mean" and key == "dense" else None)
        ax.set_xlabel(label)
        ax.set_ylabel("exact-match accuracy (%)")
        ax.set_title("Accuracy against " + ("latency" if field == "latency_s_mean" else "FLOPs"))
    handles, labels = axes[0][0].get_legend_handles_labels()
    if not any(lb == "Pareto-optimal" for lb in labels):
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], marker="o", ls="none", mfc="none", mec="#f59e0b", ms=9))
        labels.append("Pareto-optimal")
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=7)
    return plots._svg(fig, "hybrid")


def _pct(x: Any) -> str:
    return "–" if not isinstance(x, (int, float)) else f"{x:.0%}"


def _label(p: dict) -> str:
    if p.get("policy") == "route":
        return "route (domain)" if p.get("router") == "domain" else "route (classifier)"
    return {"dense": "dense alone", "moe": "MoE alone"}.get(p.get("policy"), p.get("policy") or "?")


def _point_text(name: str, p: dict | None) -> str:
    if not p:
        return f"{name}: none"
    t = "" if p.get("threshold") is None else f" at {p['threshold']:g}"
    return (f"{name}{t}: {p['accuracy']:.1%} [{p['ci_low']:.1%}, {p['ci_high']:.1%}] of {p['n']}, "
            f"{p['latency_s_mean'] * 1e3:.1f} ms and {p['flops_per_query'] / 1e6:.2f} MFLOPs per query, "
            f"{_pct(p.get('escalation_rate'))} to the MoE")


def section(study: dict, page) -> str:
    from moelab.report.html import BASIS_TINY, _e, _not_run, _warning_badge

    if "hybrid" not in study:
        return _not_run("The hybrid stage did not run: this study predates it (no hybrid in study.json).")
    hy = study.get("hybrid") or {}
    if hy.get("skipped"):
        return _not_run(f"Hybrid serving: {hy['skipped']}")
    out = [_warning_badge([f"failed: {f}" for f in hy.get("failures") or []])]
    points = [p for p in hy.get("points") or [] if isinstance(p, dict)]
    if not points:
        out.append(_not_run("No hybrid point was measured."))
        return "".join(out)
    models = hy.get("models") or {}
    detail = (f"{hy.get('engine')}; {hy.get('items')} probe queries ({hy.get('per_level')} per level), each answered "
              f"once by each model; points composed from per-query measurements; {hy.get('ci', 'Wilson 95%')}")
    out.append(page.figure("hybrid", _plot(points), "Exact-match accuracy (Wilson 95% interval) of each policy "
                           "against its measured latency per query (left) and its FLOPs per query (right): dense "
                           "alone, MoE alone, the cascade and the classifier route at each threshold, and the route by "
                           "domain; a ring marks a Pareto-optimal point (nothing else is as accurate and cheaper). "
                           "Every point is composed from the same per-query measurements: a cascade's escalated "
                           "query costs both attempts.", BASIS_TINY, "No hybrid point to plot.", detail))
    rows = [[_label(p), p.get("threshold"), p.get("n"), p.get("correct"), p.get("accuracy"), p.get("ci_low"),
             p.get("ci_high"), (p.get("latency_s_mean") or 0) * 1e3, p.get("flops_per_query"),
             _pct(p.get("escalation_rate")), "yes" if p.get("pareto") else "", "yes" if p.get("pareto_flops") else ""]
            for p in points]
    out.append(page.table("hybrid", ["policy", "threshold", "n", "correct", "accuracy", "95% CI low",
                                     "95% CI high", "ms per query (mean)", "FLOPs per query", "to the MoE",
                                     "Pareto (latency)", "Pareto (FLOPs)"], rows, BASIS_TINY,
                          "Hybrid policies on the probe sets, composed from per-query measurements", detail))
    best = hy.get("best") or {}
    lines = [_point_text("dense alone", _find(points, "dense")), _point_text("MoE alone", _find(points, "moe")),
             _point_text("best cascade", best.get("cascade")), _point_text("best route", best.get("route"))]
    out.append("<ul>" + "".join(f"<li>{_e(t)}</li>" for t in lines) + "</ul>")
    r = hy.get("router") or {}
    notes = [f"Engine: {hy.get('engine_note', hy.get('engine'))}.",
             f"Confidence: {(hy.get('cascade') or {}).get('confidence', 'exp(mean token log-probability)')}.",
             f"Router: {r.get('kind', '?')}; {r.get('trained_on', '')}; {r.get('positives', '?')} of "
             f"{r.get('n', '?')} items answered right by the MoE only; {r.get('threshold_means', '')}."]
    if r.get("constant"):
        notes.append("Every router training label was alike: the classifier is a constant, so its route sends all "
                     "queries to one model on each side of that constant.")
    if models:
        d, m = models.get("dense") or {}, models.get("moe") or {}
        notes.append(f"Models: {d.get('name')} ({d.get('params_active')} active parameters) and {m.get('name')} "
                     f"({m.get('params_active')} active of {m.get('params_total')}).")
    out.append("".join(f"<p>{_e(n)}</p>" for n in notes))
    return "".join(out)


def _find(points: list[dict], policy: str) -> dict | None:
    return next((p for p in points if p.get("policy") == policy), None)


def figures(study: dict) -> dict:
    """summary.json's hybrid figures: the engine and item count; dense, MoE, the best cascade and best route's
    accuracy (with interval), mean latency, FLOPs per query and escalation rate; their thresholds."""
    hy = study.get("hybrid") or {}
    if hy.get("skipped") or not hy.get("points"):
        return {"hybrid_skipped": hy.get("skipped")} if hy else {}
    points = [p for p in hy["points"] if isinstance(p, dict)]
    best = hy.get("best") or {}
    out: dict[str, Any] = {"hybrid_engine": hy.get("engine"), "hybrid_items": hy.get("items"),
                           "hybrid_basis": hy.get("basis")}
    for name, p in (("dense", _find(points, "dense")), ("moe", _find(points, "moe")),
                    ("best_cascade", best.get("cascade")), ("best_route", best.get("route"))):
        if not p:
            continue
        key = f"hybrid_{name}"
        out.update({f"{key}_accuracy": p.get("accuracy"), f"{key}_ci": [p.get("ci_low"), p.get("ci_high")],
                    f"{key}_latency_ms": (p.get("latency_s_mean") or 0) * 1e3,
                    f"{key}_flops_per_query": p.get("flops_per_query"),
                    f"{key}_escalation_rate": p.get("escalation_rate")})
        if name.startswith("best"):
            out[f"{key}_threshold"] = p.get("threshold")
    return out
