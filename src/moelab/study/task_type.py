"""The study's task-type stage: exact-match accuracy of the trained models on the knowledge and reasoning probes.

Every study model (out/runs/<preset>, trained on the "study" corpus: the default domains plus the facts domain and
the math ladder) answers the same held-out questions (moelab.eval.probes) greedily, one at a time; the scores are
Wilson 95% intervals with their item counts and the best constant answer's accuracy (the floor). The pairs the
seeds' claims need are named: iso-active (tiny-dense vs tiny-moe) and iso-total (tiny-dense-wide vs tiny-moe).
A missing or unreadable run is recorded in "failures", never fatal. floor_warnings say where no model rose above
its floor (a whole set, or reasoning level 1): such a cell is no evidence either way.

Time (measured here on the shared 2-core CPU, one decode thread, 259 questions per model at PER_LEVEL): 8 s for
tiny-dense and 11 s for tiny-moe, so about 45 s for the four models (tiny-dense-wide is the slowest); --quick
(QUICK_PER_LEVEL, 60 questions per model) 3.4 s for those two, under 10 s for four.

Measured after the study's budget (300 steps of 16 x 128 tokens, lr 3e-3, corpus "study", seed 0): reasoning
level 1 (the ten one-digit successors) tiny-dense 6/10 (Wilson 31-83%), tiny-moe 10/10 (72-100%), chance 10%;
level 2 (one-digit sums) 24% and 30% of 50 (chance 14%); levels 3-5 at the floor; knowledge 4/49 for both
(3-19%, chance 6%): at the floor, with the same constant answer per attribute from both models.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from moelab.basis import BASIS_TINY as BASIS
from moelab.errors import MoelabError
from moelab.study.plan import PAIRS as STUDY

MODELS = (STUDY["dense"], STUDY["moe"], STUDY["moe_fine"], STUDY["dense_wide"])
PAIRS = {"iso_active": [STUDY["dense"], STUDY["moe"]], "iso_total": [STUDY["dense_wide"], STUDY["moe"]]}
PER_LEVEL = 50  # knowledge: all the held-out pairs (7-14 per attribute, 49); reasoning: 50 per level (10 at L1)
QUICK_PER_LEVEL = 6
EXPECTED_SECONDS = {"default": 45.0, "quick": 10.0}


def floor_warnings(models: dict[str, dict]) -> list[str]:
    """Where every scored model sits at its floor (accuracy at chance, or chance inside its interval): each set,
    and reasoning level 1 (the level the study's budget should teach)."""
    from moelab.eval.score import at_floor

    scored = {name: m["scores"] for name, m in models.items() if m.get("scores")}
    if not scored:
        return ["no study model was probed: there is no task-type evidence"]
    out = []
    for item_set in ("knowledge", "reasoning"):
        cells = {name: s[item_set] for name, s in scored.items() if item_set in s}
        if cells and all(at_floor(c) for c in cells.values()):
            best = max(cells.values(), key=lambda c: c["accuracy"])
            out.append(f"every model sits at the floor on the {item_set} set (best {best['accuracy']:.0%} of "
                       f"{best['n']}, chance {best['chance']:.0%}): these accuracies are no evidence for either kind")
    level1 = {name: s["reasoning"]["levels"]["1"] for name, s in scored.items()
              if "1" in (s.get("reasoning") or {}).get("levels", {})}
    if level1 and all(at_floor(c) for c in level1.values()):
        out.append("every model sits at the floor on reasoning level 1 (one-digit successors): the budget taught "
                   "none of them the easiest level")
    return out


def task_type_stage(out: Path, plan, log: Callable[[str], None]) -> dict:
    """study["task_type"]: the probes' scores per study model (see the module docstring for the keys)."""
    from moelab.eval.probes import probe_items
    from moelab.eval.run import probe_run
    from moelab.mitigate.runs import read_run

    began = time.perf_counter()
    per_level = QUICK_PER_LEVEL if plan.quick else PER_LEVEL
    items = probe_items(per_level)
    counts = {s: sum(i.set == s for i in items) for s in ("knowledge", "reasoning")}
    models: dict[str, dict] = {}
    failures: list[str] = []
    for name in MODELS:
        folder = Path(out) / "runs" / name
        try:
            source = read_run(folder)
            log(f"task type: {name}: {len(items)} questions")
            r = probe_run(source, items)
        except MoelabError as e:
            failures.append(f"{name}: {e}")
            log(f"task type: {name} skipped: {e}")
            continue
        models[name] = {"kind": r["kind"], "params_total": r["params_total"], "params_active": r["params_active"],
                        "scores": r["scores"], "notes": r["notes"], "seconds": r["seconds"]}
        k, g = r["scores"]["knowledge"], r["scores"]["reasoning"]
        log(f"task type: {name}: knowledge {k['accuracy']:.0%} (chance {k['chance']:.0%}), reasoning "
            f"{g['accuracy']:.0%}, level 1 {g['levels']['1']['accuracy']:.0%} ({r['seconds']:.0f} s)")
    result = {"basis": BASIS, "ci": "Wilson 95%", "per_level": per_level, "items": counts, "models": models,
              "pairs": {k: list(v) for k, v in PAIRS.items()}, "floor_warnings": floor_warnings(models),
              "seconds": time.perf_counter() - began}
    if failures:
        result["failures"] = failures
    return result
