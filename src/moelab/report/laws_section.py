"""The report's scaling-law section: loss against compute with the fitted laws and the held-out largest point, the
fitted exponents with their intervals beside the seeds' alpha and beta, and what one token budget implies.

`section(study, page)` renders study["laws"] (moelab.study.laws); `figures(study)` gives summary.json's numbers.
The seeds' exponents come from moelab.laws.fits.SEEDS (their one source), held against the pure power-law fit.
"""

from __future__ import annotations

import math
from typing import Any

NOTE = ("Every run trained on the same tokens in the same order (one budget D), so compute C = 6 N D varies "
        "through the model's size N alone: each exponent here is one of loss in N at this small, fixed D, not of a "
        "compute-optimal frontier (where D grows with C). The seeds' laws are pure power laws (no irreducible loss E): "
        "their alpha ({alpha:g}) and beta ({beta:g}) are compared with this sweep's pure power-law fit, never with the "
        "E + A*C^-alpha exponent, which is steeper whenever E > 0. An E + A*C^-alpha interval that reaches the search "
        "range [{lo:g}, {hi:g}] is uninformative (the points do not bound the exponent), and A = 0 is no power law at "
        "all. The seeds' dense {alpha:g} is Kaplan et al. 2020's alpha_N (loss in non-embedding parameters, models "
        "trained to convergence), which is why an N exponent is the fair comparison.")
KINDS = {"dense": ("dense", "#1f5fa8"), "moe": ("MoE, 8 experts top-2", "#c2410c"),
         "moe_experts": ("MoE over the expert axis", "#9333ea")}


def _fits(study: dict) -> dict:
    laws = study.get("laws") if isinstance(study.get("laws"), dict) else {}
    fits = laws.get("fits") if isinstance(laws.get("fits"), dict) else {}
    return {k: f for k, f in fits.items() if k in KINDS and isinstance(f, dict) and f.get("exponent_name")}


def _num(x: float) -> str:
    return f"{x + 0.0:.3g}"  # + 0.0: never "-0"


def _interval(ci: Any, open_: Any = None) -> str:
    if not isinstance(ci, list | tuple) or len(ci) != 2 or not all(isinstance(x, int | float) for x in ci):
        return "–"
    text = f"[{_num(ci[0])}, {_num(ci[1])}]"
    return text + " (reaches the search range: uninformative)" if open_ else text


def _exponent(f: dict, key: str) -> Any:
    """The E + A*x^-exponent fit's exponent, or why there is none (A = 0: the best law is flat)."""
    if "A=0" in (f.get("at_bound") or []):
        return "no power law (A = 0)"
    return f.get(key)


def figures(study: dict) -> dict:
    """summary.json's scaling-law numbers: each fit's exponent, its interval, the pure power law's exponent and
    the held-out point's relative error; the seeds' exponents beside them."""
    from moelab.laws.fits import SEEDS

    out: dict[str, Any] = {"laws_seeds_alpha": SEEDS["alpha"], "laws_seeds_beta": SEEDS["beta"]}
    laws = study.get("laws") if isinstance(study.get("laws"), dict) else {}
    out["laws_token_budget"] = laws.get("token_budget")
    for name, f in _fits(study).items():
        key = f["exponent_name"]
        pure, hold = f.get("pure") or {}, f.get("holdout") or {}
        out[f"laws_{name}_{key}"] = f.get(key)
        out[f"laws_{name}_{key}_ci"] = f.get(f"{key}_ci")
        out[f"laws_{name}_{key}_pure"] = pure.get(key)
        out[f"laws_{name}_{key}_pure_ci"] = pure.get(f"{key}_ci")
        out[f"laws_{name}_holdout_rel_error"] = hold.get("rel_error")
    only = (_fits(study).get("moe_experts") or {}).get("expert_axis_only")
    out["laws_expert_axis_only_beta"] = only.get("beta") if isinstance(only, dict) else None
    return out


def plot(fits: dict) -> str | None:
    """Loss against C (dense, MoE) and against C*E (the expert axis), log-log: the points fitted (filled), the
    held-out largest (open, ringed), the fitted E + A*x^-exponent (solid) and the pure power law (dotted)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from moelab.report.plots import _figure, _plain, _svg

    def drawable(name: str) -> bool:
        return name in fits and any(isinstance(d, dict) and d.get("x") and d.get("final_val")
                                    for d in fits[name].get("data") or [])

    panels = [[k for k in ("dense", "moe") if drawable(k)], [k for k in ("moe_experts",) if drawable(k)]]
    panels = [p for p in panels if p]
    if not panels:
        return None
    fig, axes = _figure(len(panels), width=4.2, height=3.2)
    for ax, names in zip(axes[0], panels, strict=True):
        for name in names:
            f, (label, colour) = fits[name], KINDS[name]
            key = f["exponent_name"]
            data = [d for d in f.get("data") or [] if isinstance(d, dict) and d.get("x") and d.get("final_val")]
            if not data:
                continue
            fitted = [d for d in data if not d.get("held_out") and d.get("axis", "size") == "size"]
            axis = [d for d in data if not d.get("held_out") and d.get("axis") == "experts"]
            held = [d for d in data if d.get("held_out")]
            ax.plot([d["x"] for d in fitted], [d["final_val"] for d in fitted], "o", color=colour, ms=5,
                    label=f"{label}: fitted points" + (" (8 experts, by size)" if axis else ""))
            if axis:
                counts = ", ".join(str(n) for n in sorted({d.get("experts") for d in axis}))
                ax.plot([d["x"] for d in axis], [d["final_val"] for d in axis], "s", color=colour, ms=5,
                        label=f"fitted points: {counts} experts at one size")
            if held:
                ax.plot([d["x"] for d in held], [d["final_val"] for d in held], "o", mfc="white", mec=colour, ms=8,
                        mew=1.6, label=f"{label}: held out (largest)")
            xs = [d["x"] for d in data]
            grid = [min(xs) * (max(xs) / min(xs)) ** (i / 60) for i in range(61)]
            if all(isinstance(f.get(k), int | float) for k in ("E", "A", key)):
                ax.plot(grid, [f["E"] + f["A"] * x ** -f[key] for x in grid], "-", color=colour, lw=1.4,
                        label=f"E + A·x^-{key}, " + ("A = 0: no power law" if "A=0" in (f.get("at_bound") or [])
                                                         else f"{key} = {f[key]:.3g}"))
            pure = f.get("pure") or {}
            if isinstance(pure.get("A"), int | float) and isinstance(pure.get(key), int | float):
                ax.plot(grid, [pure["A"] * x ** -pure[key] for x in grid], ":", color=colour, lw=1.2,
                        label=f"pure power law, {key} = {pure[key]:.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_plain))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _p: f"{v:.2f}"))
        ax.set_xlabel("compute C = 6 N D (FLOPs)" if names != ["moe_experts"] else "C × experts")
        ax.set_ylabel("final validation loss (nats)")
        ax.set_title("Loss against compute" if names != ["moe_experts"] else "MoE: the seeds' (C·E) axis")
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    return _svg(fig, "laws")


def section(study: dict, page) -> str:
    """The scaling-law section's body (the lead wraps it with its title)."""
    from moelab.basis import BASIS_TINY
    from moelab.laws.fit import ALPHA_MAX, ALPHA_MIN
    from moelab.laws.fits import SEEDS
    from moelab.report.html import _e, _not_run, _warning_badge

    if "laws" not in study:
        return _not_run("The scaling-law stage did not run: this study predates it (no laws in study.json).")
    laws = study.get("laws") if isinstance(study.get("laws"), dict) else {}
    if laws.get("skipped"):
        return _not_run(f"Scaling laws: {laws['skipped']}")
    fits = _fits(study)
    sweep = laws.get("sweep") if isinstance(laws.get("sweep"), dict) else {}
    cfg = sweep.get("config") if isinstance(sweep.get("config"), dict) else {}
    warnings = [f"no fit: {f}" for f in laws.get("failures") or []]
    for name, f in fits.items():
        if f.get("ci_open"):
            warnings.append(f"{name}: the E + A*C^-exponent interval reaches the search range "
                            f"({', '.join(map(str, f['ci_open']))}): uninformative, the points do not bound it")
        if f.get("at_bound"):
            flat = " (A = 0: no power law)" if "A=0" in f["at_bound"] else ""
            warnings.append(f"{name}: the best fit sits on a bound ({', '.join(map(str, f['at_bound']))}){flat}")
    out = [_warning_badge(warnings)]
    if not fits:
        return "".join(out) + _not_run("No scaling law was fitted.")
    detail = (f"CPU; {cfg.get('steps')} steps of {cfg.get('batch_size')} x {cfg.get('seq_len')} tokens per run "
              f"({laws.get('token_budget')} tokens), seed {cfg.get('seed')}; {sweep.get('lr_rule_text', '')}")
    out.append(page.figure("laws", plot(fits), "Final validation loss against compute, log-log: the points each law "
                           "was fitted on (filled), the largest size held out of the fit and predicted (open), the "
                           "fitted E + A·x^-exponent (solid) and the pure power law on the same points (dotted). "
                           "Right: every MoE run against compute times its expert count, the seeds' (C·E) form.",
                           BASIS_TINY, "No fitted law to draw.", detail))
    rows = []
    for name, f in fits.items():
        key = f["exponent_name"]
        pure, hold = f.get("pure") or {}, f.get("holdout") or {}
        rows.append([KINDS[name][0], f.get("form"), f.get("points"), f.get("E"), _exponent(f, key),
                     _interval(f.get(f"{key}_ci"), f.get("ci_open")), pure.get(key), _interval(pure.get(f"{key}_ci")),
                     f.get("seed"), hold.get("name", "none held out"), hold.get("predicted"),
                     _interval(hold.get("predicted_range")), hold.get("measured"),
                     f"{hold['rel_error']:+.2%}" if isinstance(hold.get("rel_error"), int | float) else "–"])
    out.append(page.table("laws_fits", [
        "fit", "form", "points fitted", "E", "exponent", "95% interval (profile)",
        "pure power law exponent (the seeds' form)", "its 95% interval", "seeds' exponent (pure power law)",
        "held-out run", "predicted loss",
        "predicted over the interval", "measured loss", "prediction error"], rows, BASIS_TINY,
        "Fitted exponents beside the seeds' alpha (dense) and beta (MoE over C·E): the seeds' pure power laws "
        "are compared with the pure power-law fit", detail))
    only = (fits.get("moe_experts") or {}).get("expert_axis_only")
    if isinstance(only, dict) and isinstance(only.get("beta"), int | float):
        pairs = ", ".join(f"{n} experts {v:.3f}" for n, v in zip(only.get("experts") or [], only.get("losses") or [],
                                                                 strict=False))
        text = (f"The expert axis alone (one size, {only.get('size')} non-embedding active parameters; compute "
                f"fixed): {pairs}. Loss against E in log-log has slope {-only['beta']:+.3g} (beta = "
                f"{only['beta']:.3g}, 95% interval {_interval(only.get('beta_ci'))}; a positive slope: loss rose with "
                "experts); the seeds' (C*E)^-beta form says beta here equals the exponent along compute at a fixed "
                "expert count.")
        out.append(f"<p>{_e(text)}</p>")
    runs = [r for r in sweep.get("rows") or [] if isinstance(r, dict)]
    if runs:
        out.append(page.table("laws_runs", [
            "run", "kind", "axis", "active (non-embedding)", "total", "experts", "layers x d_model", "peak lr",
            "tokens", "compute 6ND", "final validation loss", "status"],
            [[r.get("name"), r.get("kind"), r.get("axis"), r.get("params_active"), r.get("params_total"),
              r.get("experts") or "–", f"{r.get('layers')} x {r.get('d_model')}", r.get("lr"), r.get("tokens"),
              r.get("compute"), r.get("final_val"), r.get("status")] for r in runs], BASIS_TINY,
            "The sweep's runs (one token budget and data order)", detail))
    note = NOTE.format(alpha=SEEDS["alpha"], beta=SEEDS["beta"], lo=ALPHA_MIN, hi=ALPHA_MAX)
    out.append(f"<p>{_e(note)}</p>")
    if isinstance(laws.get("seconds"), int | float) and math.isfinite(laws["seconds"]):
        took = f"The stage took {laws['seconds']:.0f} s on this machine."
        out.append(f"<p>{_e(took)}</p>")
    return "".join(out)
