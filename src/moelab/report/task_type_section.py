"""The report's task-type section: probe accuracy by model, set and level (Wilson 95% interval, n, chance), the
iso-active and iso-total pairs' differences, the floor warning, and a figure; `figures` gives summary.json's
key figures. Reads study["task_type"] (moelab.study.task_type)."""

from __future__ import annotations

from typing import Any

HELD_OUT_NOTE = ("Every question is held out from training except reasoning levels 1 and 2: their 10 one-digit "
                 "successors and 90 one-digit sums are all in the study corpus, so they measure what the budget "
                 "taught, not generalisation. Knowledge questions ask attributes of people whose biographies the "
                 "corpus holds but whose Q/A line for that attribute it never holds; levels 3-5 are questions the "
                 "study corpus leaves out.")


def _level_name(level: str) -> str:
    from moelab.data.math_problems import LEVEL_NAMES

    return f"L{level} {LEVEL_NAMES[level]}" if level in LEVEL_NAMES else level


def _pairs(tt: dict) -> list[tuple[str, str, str]]:
    return [(name, *pair) for name, pair in (tt.get("pairs") or {}).items()
            if isinstance(pair, list) and len(pair) == 2]


def pair_differences(tt: dict) -> list[dict]:
    """For each named pair (a, b) and each set (and reasoning level 1): accuracy a - b with Newcombe's interval."""
    from moelab.eval.score import at_floor, difference

    models = tt.get("models") or {}
    out = []
    for pair, a, b in _pairs(tt):
        sa, sb = (models.get(a) or {}).get("scores"), (models.get(b) or {}).get("scores")
        if not sa or not sb:
            continue
        for item_set, level in (("knowledge", None), ("reasoning", None), ("reasoning", "1")):
            ca, cb = sa.get(item_set), sb.get(item_set)
            if ca and cb and level is not None:
                ca, cb = ca.get("levels", {}).get(level), cb.get("levels", {}).get(level)
            if not ca or not cb:
                continue
            d = difference(ca, cb)
            floor = at_floor(ca) and at_floor(cb)
            evidence = not floor and (d["ci_low"] > 0 or d["ci_high"] < 0)
            out.append({"pair": pair, "a": a, "b": b, "set": item_set, "level": level or "all",
                        "accuracy_a": ca["accuracy"], "accuracy_b": cb["accuracy"], **d, "floor": floor,
                        "evidence": evidence})
    return out


def _plot(tt: dict) -> str | None:
    from moelab.report import plots

    models = {n: m for n, m in (tt.get("models") or {}).items() if m.get("scores")}
    if not models:
        return None
    from moelab.data.math_problems import LEVELS

    strata = [("knowledge", None), *(("reasoning", lv) for lv in LEVELS)]
    labels = ["knowledge", *(f"L{lv}" for lv in LEVELS)]
    names = list(models)
    colours = plots._colours(names, lambda n: models[n].get("kind") == "moe")
    fig, axes = plots._figure(1, width=7.2, height=3.0, layout="constrained")
    ax = axes[0][0]
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for i, (item_set, level) in enumerate(strata):
            cell = models[name]["scores"].get(item_set)
            if cell and level is not None:
                cell = cell.get("levels", {}).get(level)
            if not cell:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(cell["accuracy"] * 100)
            lo.append(max(0.0, cell["accuracy"] - cell["ci_low"]) * 100)  # Wilson's bound at k = 0 or n is
            hi.append(max(0.0, cell["ci_high"] - cell["accuracy"]) * 100)  # the estimate, up to rounding
        ax.bar(xs, ys, width * 0.9, color=colours[name], label=name, yerr=[lo, hi], capsize=2,
               error_kw={"elinewidth": 0.7})
    first = next(iter(models.values()))["scores"]
    for i, (item_set, level) in enumerate(strata):
        cell = first.get(item_set)
        if cell and level is not None:
            cell = cell.get("levels", {}).get(level)
        if cell:
            ax.hlines(cell["chance"] * 100, i - 0.45, i + 0.45, colors="#111827", linestyles="dashed", lw=0.9,
                      label="chance (best constant answer)" if i == 0 else None)
    ax.set_xticks(range(len(strata)), labels, fontsize=8)
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Probe accuracy with Wilson 95% intervals")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return plots._svg(fig, "task_type")


def section(study: dict, page) -> str:
    from moelab.report.html import BASIS_TINY, _e, _not_run, _warning_badge

    if "task_type" not in study:
        return _not_run("The task-type stage did not run: this study predates it (no task_type in study.json).")
    tt = study.get("task_type") or {}
    if tt.get("skipped"):
        return _not_run(f"Task-type probes: {tt['skipped']}")
    out = [_warning_badge(list(tt.get("floor_warnings") or []) + [f"failed: {f}" for f in tt.get("failures") or []])]
    models = {n: m for n, m in (tt.get("models") or {}).items() if isinstance(m, dict) and m.get("scores")}
    if not models:
        out.append(_not_run("No study model was probed."))
        return "".join(out)
    items = tt.get("items") or {}
    detail = (f"greedy answers, exact match; {items.get('knowledge')} knowledge and {items.get('reasoning')} "
              f"reasoning questions ({tt.get('per_level')} per level); {tt.get('ci', 'Wilson 95%')} intervals")
    out.append(page.figure("task_type", _plot(tt), "Exact-match accuracy of each study model on the knowledge set "
                           "and on each reasoning level (L1 one-digit successors, L2 one-digit sums, L3 two-digit "
                           "sums and differences, L4 single operations, L5 multi-step), with Wilson 95% intervals; "
                           "the dashed line is the best constant answer's accuracy (the floor).", BASIS_TINY,
                           "No probe score to plot.", detail))
    rows: list[list[Any]] = []
    for name, m in models.items():
        for item_set, cell in m["scores"].items():
            for level, c in [("all", cell), *cell.get("levels", {}).items()]:
                shown = _level_name(level) if item_set == "reasoning" else level
                rows.append([name, m.get("kind"), m.get("params_active"), m.get("params_total"), item_set, shown,
                             c["n"], c["correct"], c["accuracy"], c["ci_low"], c["ci_high"], c["chance"]])
    out.append(page.table("task_type", ["model", "kind", "active params", "total params", "set", "level", "n",
                                        "correct", "accuracy", "95% CI low", "95% CI high", "chance"], rows,
                          BASIS_TINY, "Probe accuracy by model, set and level", detail))
    diffs = pair_differences(tt)
    if diffs:
        drows = [[d["pair"].replace("_", "-"), f"{d['a']} - {d['b']}", d["set"],
                  _level_name(d["level"]), d["n"], d["accuracy_a"], d["accuracy_b"], d["difference"],
                  d["ci_low"], d["ci_high"],
                  "both at the floor" if d["floor"] else "yes" if d["evidence"] else "no (interval holds 0)"]
                 for d in diffs]
        out.append(page.table("task_type_pairs", ["pair", "difference", "set", "level", "n", "accuracy a",
                                                  "accuracy b", "a - b", "95% CI low", "95% CI high",
                                                  "a difference?"], drows, BASIS_TINY,
                              "The seeds' pairs: iso-active (same active parameters) and iso-total (same total)",
                              "Newcombe's hybrid Wilson interval of a difference (conservative: same items)"))
    notes = [f"{name}: {note}" for name, m in models.items() for note in m.get("notes") or []]
    out.append(f"<p>{_e(HELD_OUT_NOTE)}</p>")
    if notes:
        out.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    return "".join(out)


def figures(study: dict) -> dict:
    """summary.json's task-type figures: per model and set the accuracy, interval and n; reasoning level 1's
    accuracy; each pair's difference per set; the floor warnings."""
    tt = study.get("task_type") or {}
    out: dict[str, Any] = {}
    for name, m in (tt.get("models") or {}).items():
        scores = (m or {}).get("scores") or {}
        key = "task_type_" + name.replace("-", "_")
        for item_set, cell in scores.items():
            out.update({f"{key}_{item_set}_accuracy": cell.get("accuracy"), f"{key}_{item_set}_ci_low":
                        cell.get("ci_low"), f"{key}_{item_set}_ci_high": cell.get("ci_high"),
                        f"{key}_{item_set}_n": cell.get("n"), f"{key}_{item_set}_chance": cell.get("chance")})
        level1 = ((scores.get("reasoning") or {}).get("levels") or {}).get("1")
        if level1:
            out[f"{key}_reasoning_level1_accuracy"] = level1.get("accuracy")
    for d in pair_differences(tt) if tt.get("models") else []:
        suffix = d["set"] if d["level"] == "all" else f"{d['set']}_level{d['level']}"
        out[f"task_type_{d['pair']}_{suffix}_difference"] = d["difference"]
        out[f"task_type_{d['pair']}_{suffix}_ci"] = [d["ci_low"], d["ci_high"]]
    out["task_type_floor_warnings"] = list(tt.get("floor_warnings") or [])
    out["task_type_basis"] = tt.get("basis")
    return out
