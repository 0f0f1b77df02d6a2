"""The seeds' claims checked: every checkable numeric claim of the two seed analyses (../shared/seeds/000_*.txt,
001_*.txt) with the seed's words, moelab's figure for the same setting (computed by the engine, or measured by a
study), the setting assumed, and a verdict (confirmed, contradicted, not_reproducible, out_of_scope) under a
stated tolerance rule (moelab.claims.rules)."""

from __future__ import annotations

import importlib

from moelab.claims.evidence import Evidence
from moelab.claims.registry import REGISTRY, ROW_KEYS, run
from moelab.claims.rules import VERDICTS

# The study.json keys the claims read (one of them makes a file a study for `moelab claims --evidence`).
STUDY_PARTS = ("training", "bench", "serving", "scaling", "mitigations", "task_type", "hybrid", "laws")

# The modules that register the claims, in the seeds' order (the table keeps it within each seed).
MODULES = ("seed000", "seed001_inference", "seed001_training", "seed001_quality")
for _name in MODULES:
    importlib.import_module(f"moelab.claims.{_name}")


def claims_table(study: dict | None) -> list[dict]:
    """Every registered claim as a row (keys registry.ROW_KEYS: id, seed, quote, setting, moelab_value, verdict,
    why, and the seed's figure, unit, rule and basis), seed 000's first, each seed in MODULES' order; measured
    figures from `study` (a study.json dict, or None: engine figures only)."""
    ev = Evidence(study)
    return [run(c, ev) for c in sorted(REGISTRY.values(), key=lambda c: c.seed)]


def verdict_counts(rows: list[dict]) -> dict[str, int]:
    """How many rows have each verdict (every verdict present, zero or not)."""
    return {v: sum(1 for r in rows if r.get("verdict") == v) for v in VERDICTS}


__all__ = ["ROW_KEYS", "STUDY_PARTS", "VERDICTS", "claims_table", "verdict_counts"]
