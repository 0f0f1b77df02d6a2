"""The sweep's laws: L(C) = E + A*C^-alpha per kind and L = E + A*(C*E_experts)^-beta over MoE's expert axis,
each fitted on all but its largest point and judged by how well it predicts that point.

The seeds (001, "Scaling Laws") state pure power laws: "Loss ~ C^(-alpha) ... alpha ~ 0.076" for dense and
"Loss ~ (C * E)^(-beta) ... beta ~ 0.084" for MoE. Each fit here reports both forms on the same points: with the
irreducible loss E (what the issue asks, and what bends a curve over a short range) and without it (the seeds'
form, a straight line in log-log: the exponent to hold against theirs). 0.076 is also Kaplan et al. 2020's
alpha_N, the exponent of loss in non-embedding parameters (arXiv:2001.08361, eq. 1.1); with one token budget C
is proportional to N here, so a C exponent of this sweep is an N exponent at a fixed, small D.
"""

from __future__ import annotations

import math
from pathlib import Path

from moelab.basis import BASIS_TINY
from moelab.errors import MoelabError
from moelab.laws.fit import ALPHA_MAX, ALPHA_MIN, PowerLawFit, fit_power_law, fit_pure_power_law, prediction_range
from moelab.laws.grid import KINDS, MAX_EXPERTS
from moelab.laws.sweep import SWEEP_FILE
from moelab.userfile import load_user_file
from moelab.validation import show_value

SEEDS = {"alpha": 0.076, "beta": 0.084}  # the one place moelab states the seeds' exponents (report, claims read it)
SEEDS_QUOTE = {"alpha": "Loss ~ C^(-α), where C = compute budget, α ≈ 0.076 (seeds 001, Scaling Laws, dense)",
               "beta": "Loss ~ (C * E)^(-β), where C = compute per token, E = num experts, β ≈ 0.084 (seeds 001, MoE)"}
MIN_POINTS = 3
PROFILE_NOTE = (f"an E + A*C^-alpha exponent's interval that reaches the search range [{ALPHA_MIN:g}, "
                f"{ALPHA_MAX:g}] is uninformative (the points do not bound it), and A = 0 is no power law at all "
                "(loss did not fall with compute): the fit's 'uninformative' list says which")
# What a sweep row may hold: a validation loss of a language model is a few nats (a uniform guess over a 2048-token
# vocabulary is ln 2048 = 7.6; 100 is far past any run), and 1e40 FLOPs is ~1e14 times the largest training run
# published; past these a hand-edited file is garbage, and the fit's exp/powers would overflow.
MAX_LOSS, MAX_COMPUTE = 100.0, 1e40
_ROW_NUMBERS = ("size", "params_active", "compute", "experts", "tokens")


def load_sweep(folder: str | Path) -> dict:
    """DIR/sweep.json, read through moelab.userfile (a regular file, a size cap, strict JSON) and checked row by
    row: every key the fit reads must be there with the right type (a hostile or hand-edited file is one line)."""
    path = Path(folder) / SWEEP_FILE
    if not Path(folder).is_dir():
        raise MoelabError(f"{folder}: not a folder (give the --out of moelab sweep)")
    if not path.is_file():
        raise MoelabError(f"{folder}: no {SWEEP_FILE} (run moelab sweep --out {folder} first)")
    sweep = load_user_file(path, SWEEP_FILE)
    if not isinstance(sweep, dict) or not isinstance(sweep.get("rows"), list):
        raise MoelabError(f"{path}: not a sweep (no list of rows)")
    for i, row in enumerate(sweep["rows"]):
        _check_row(row, f"{path}: row {i}")
    budget = sweep.get("token_budget")
    if budget is not None and not _positive(budget):
        raise MoelabError(f"{path}: token_budget must be a positive number, got {show_value(budget)}")
    return sweep


def _positive(x, limit: float = math.inf) -> bool:
    """A positive finite number up to `limit` (an integer too large for a float is not)."""
    if not isinstance(x, int | float) or isinstance(x, bool):
        return False
    try:
        value = float(x)
    except OverflowError:
        return False
    return math.isfinite(value) and 0 < value <= limit


def _check_row(row, where: str) -> None:
    if not isinstance(row, dict):
        raise MoelabError(f"{where}: not an object")
    if row.get("kind") not in KINDS:
        raise MoelabError(f"{where}: kind must be dense or moe, got {show_value(row.get('kind'))}")
    if not isinstance(row.get("name"), str):
        raise MoelabError(f"{where}: name must be text")
    for key in _ROW_NUMBERS:
        value = row.get(key)
        if key == "experts" and value == 0 and row["kind"] == "dense":
            continue
        if not _positive(value) or (key in ("size", "experts") and not isinstance(value, int)):
            what = "integer" if key in ("size", "experts") else "number"
            raise MoelabError(f"{where}: {key} must be a positive {what}, got {show_value(value)}")
    if not _positive(row["compute"], MAX_COMPUTE) or row["compute"] < 1:
        raise MoelabError(f"{where}: compute must be between 1 and {MAX_COMPUTE:g} FLOPs, got "
                          f"{show_value(row['compute'])}")
    if row["experts"] > MAX_EXPERTS:
        raise MoelabError(f"{where}: experts must be at most {MAX_EXPERTS}, got {show_value(row['experts'])}")
    value = row.get("final_val")
    if value is not None and not _positive(value, MAX_LOSS):
        raise MoelabError(f"{where}: final_val must be a positive number up to {MAX_LOSS:g} nats or null, got "
                          f"{show_value(value)}")
    if row.get("axis", "size") not in ("size", "experts"):
        raise MoelabError(f"{where}: axis must be size or experts, got {show_value(row.get('axis'))}")


def uninformative(f: PowerLawFit) -> list[str]:
    """Why the E + A*x^-alpha fit's exponent says nothing: [] when it is bounded by the points."""
    why = []
    if "A=0" in f.at_bound:
        why.append("no power law (A = 0): the best law is flat")
    if any(b in f.at_bound for b in ("alpha_min", "alpha_max")):
        why.append("the exponent sits on the search range's end")
    if f.alpha_ci is None:
        why.append("no interval (no residual degree of freedom)")
    elif f.ci_open:
        why.append(f"the interval reaches the search range [{ALPHA_MIN:g}, {ALPHA_MAX:g}] "
                   f"({', '.join(f.ci_open)})")
    return why


def _fit(rows: list[dict], x_of, label: str, exponent: str, form: str, x_text: str) -> dict:
    """Fit on all but the row of largest x (all of them when there are only MIN_POINTS), predict it, and fit the
    pure power law on the same points; rows sorted by x."""
    rows = sorted(rows, key=x_of)
    if len({x_of(r) for r in rows}) < MIN_POINTS:
        raise MoelabError(f"fit-laws: {label} has {len(rows)} scored run(s) at distinct compute; a fit needs at least "
                          f"{MIN_POINTS} (4 to hold the largest out): sweep more sizes")
    held = rows[-1] if len(rows) > MIN_POINTS else None
    fit_rows = rows[:-1] if held else rows
    xs, ys = [x_of(r) for r in fit_rows], [r["final_val"] for r in fit_rows]
    f = fit_power_law(xs, ys)
    everything = fit_power_law([x_of(r) for r in rows], [r["final_val"] for r in rows])
    pure = fit_pure_power_law(xs, ys)
    holdout = None
    if held:
        x = x_of(held)
        predicted = f.predict(x)
        holdout = {"name": held["name"], "size": held["size"], "x": x, "compute": held["compute"],
                   "predicted": predicted, "measured": held["final_val"],
                   "rel_error": (predicted - held["final_val"]) / held["final_val"],
                   "predicted_range": prediction_range(xs, ys, f, x)}
    return {"form": form, "x": x_text, "exponent_name": exponent, "E": f.E, "A": f.A, exponent: f.alpha,
            f"{exponent}_ci": list(f.alpha_ci) if f.alpha_ci else None, "ci_open": f.ci_open,
            "at_bound": f.at_bound, "uninformative": uninformative(f), "rss": f.rss, "points": len(fit_rows),
            "fit_rows": [r["name"] for r in fit_rows],
            "holdout": holdout,
            "holdout_note": None if held else f"only {len(rows)} points: fitted on all, none held out",
            "all_points": {"E": everything.E, "A": everything.A, exponent: everything.alpha,
                           f"{exponent}_ci": list(everything.alpha_ci) if everything.alpha_ci else None,
                           "ci_open": everything.ci_open, "points": len(rows)},
            "pure": {"form": form.replace("E + ", ""), "A": pure["A"], exponent: pure["alpha"],
                     f"{exponent}_ci": pure["alpha_ci"], "points": pure["n"]},
            "seed": SEEDS[exponent], "seed_quote": SEEDS_QUOTE[exponent],
            "data": [{"name": r["name"], "size": r["size"], "experts": r.get("experts", 0),
                      "axis": r.get("axis", "size"), "x": x_of(r),
                      "compute": r["compute"], "final_val": r["final_val"], "held_out": r is held} for r in rows]}


def _expert_axis(moe: list[dict]) -> dict | None:
    """The expert axis alone: at the one size with the most expert counts (at least 3), loss against the count E
    at fixed C in log-log. The seeds' (C*E)^-beta form says this slope equals the size axis' (C at fixed E)."""
    by_size: dict[int, dict[int, float]] = {}
    for r in moe:
        by_size.setdefault(r["size"], {})[r["experts"]] = r["final_val"]
    size, losses = max(by_size.items(), key=lambda kv: (len(kv[1]), kv[0]))
    if len(losses) < MIN_POINTS:
        return None
    counts = sorted(losses)
    pure = fit_pure_power_law(counts, [losses[n] for n in counts])
    return {"size": size, "experts": counts, "losses": [losses[n] for n in counts], "beta": pure["alpha"],
            "beta_ci": pure["alpha_ci"], "points": pure["n"], "form": "A*E^-beta at fixed C"}


def fit_sweep(sweep: dict) -> dict:
    """Every fit the sweep's rows allow (see the module docstring); a kind with fewer than MIN_POINTS scored runs on
    the size axis is a MoelabError."""
    rows = [r for r in sweep["rows"] if r.get("final_val") is not None]
    unscored = [r["name"] for r in sweep["rows"] if r.get("final_val") is None]
    if not rows:
        raise MoelabError("fit-laws: the sweep has no scored run (no final validation loss)")
    fits, notes = {}, []
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind and r.get("axis", "size") == "size"]
        if not mine and not any(r["kind"] == kind for r in sweep["rows"]):
            continue
        fits[kind] = _fit(mine, lambda r: r["compute"], kind, "alpha", "E + A*C^-alpha", "C = 6 N D")
    moe = [r for r in rows if r["kind"] == "moe"]
    if len({r["experts"] for r in moe}) >= 2:
        fits["moe_experts"] = _fit(moe, lambda r: r["compute"] * r["experts"], "moe over the expert axis", "beta",
                                   "E + A*(C*E)^-beta", "C*E: compute times routed experts")
        fits["moe_experts"]["expert_axis_only"] = _expert_axis(moe)
    elif moe:
        notes.append("no expert axis (one expert count): sweep with --experts 4,8,16 for the seeds' (C*E)^-beta form")
    if sweep.get("complete") is False:
        notes.append(f"the sweep is not complete ({len(sweep['rows'])} runs so far): rerun moelab sweep to finish it")
    if unscored:
        notes.append(f"left out, no validation score: {', '.join(unscored)}")
    budgets = {r["tokens"] for r in rows}
    if len(budgets) > 1:
        notes.append(f"runs of different token budgets ({sorted(budgets)}): C varies through D too")
    else:
        notes.append("one token budget for every run: C = 6 N D varies through N alone, so each exponent is one "
                     f"in N at this fixed D (Kaplan's alpha_N = {SEEDS['alpha']:g} is the seeds' dense figure)")
    notes.append(f"the seeds' exponents (alpha {SEEDS['alpha']:g}, beta {SEEDS['beta']:g}) are pure power laws: "
                 "compare them with the pure power-law fits; E + A*C^-alpha's exponent is steeper whenever E > 0")
    notes.append(PROFILE_NOTE)
    return {"basis": BASIS_TINY, "seeds": dict(SEEDS), "token_budget": sweep.get("token_budget"), "fits": fits,
            "notes": notes, "active": sweep.get("active")}
