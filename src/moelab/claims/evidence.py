"""What a study measured, read for the claims table: each figure checked for its type on the way out, so a
missing stage or a garbled value is one `NoEvidence` reason, never a wrong number.

Keys read (study.json of `moelab study`): training (rows, pairs, plan), serving (rows with kind, concurrency,
tpot_ms_p50/p95/p99, output_tokens_per_second), scaling (rows, alltoall_share), mitigations (variants,
upcycling.arms), task_type (models, pairs), hybrid (models, best), laws (fits).
"""

from __future__ import annotations

import math
from typing import Any

from moelab.claims.rules import Check

# ~2 standard errors of a mean token loss on the study's validation tokens: 4 domains x 8192 tokens with a
# per-token standard deviation of about 2 nats gives 2 / sqrt(32768) ~ 0.011 nats.
LOSS_NOISE = 0.02
# A timing difference on the study's shared 2-core VM that is no difference: its speed drifts between timed runs
# (README: a calibration predicted a bench within 10%, and two minutes later 2x too fast; the study records the
# drift it saw beside each bench).
TIME_NOISE = 0.10
NO_STUDY = "no study given: run `moelab study --out DIR`, then `moelab claims --evidence DIR`"


class NoEvidence(Exception):
    """The study lacks the figure a measured claim needs (the message says which, in one line)."""


def number(value: Any, what: str) -> float:
    """A finite number, else NoEvidence naming `what`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise NoEvidence(f"the study has no {what}")
    return float(value)


def mapping(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise NoEvidence(f"the study has no {what}")
    return value


class Evidence:
    """The study dict (or None: no study given)."""

    def __init__(self, study: dict | None) -> None:
        self.study = study if isinstance(study, dict) else None

    def stage(self, key: str) -> dict:
        """A stage's result; NoEvidence when there is no study, no such stage, or the stage was skipped."""
        if self.study is None:
            raise NoEvidence(NO_STUDY)
        value = self.study.get(key)
        if not isinstance(value, dict):
            raise NoEvidence(f"the study has no {key} stage (it predates it, or the stage did not run)")
        if value.get("skipped"):
            raise NoEvidence(f"the study's {key} stage was skipped: {value['skipped']}"[:300])
        return value

    # --- training ------------------------------------------------------------------------------------------

    def training_pair(self) -> tuple[dict, dict]:
        """The trained dense and MoE rows of the study's iso-active pair (training.pairs.dense / .moe)."""
        tr = self.stage("training")
        pairs = mapping(tr.get("pairs"), "training pairs")
        rows = {r.get("model"): r for r in tr.get("rows") or [] if isinstance(r, dict)}
        dense, moe = rows.get(pairs.get("dense")), rows.get(pairs.get("moe"))
        if not isinstance(dense, dict) or not isinstance(moe, dict):
            raise NoEvidence("the study's training rows lack its dense/MoE pair")
        return dense, moe

    def to_target(self, row: dict, key: str) -> float:
        hit = row.get("to_target")
        if not isinstance(hit, dict):
            raise NoEvidence(f"{row.get('model')} did not reach the study's target loss")
        return number(hit.get(key), f"{key} to target for {row.get('model')}")

    # --- serving -------------------------------------------------------------------------------------------

    def served(self, kind: str, concurrency: int | None = None, highest: bool = False) -> dict:
        """The measured serving row of `kind` at `concurrency` (or the highest concurrency measured)."""
        rows = [r for r in self.stage("serving").get("rows") or []
                if isinstance(r, dict) and r.get("kind") == kind and isinstance(r.get("concurrency"), int)]
        if highest and rows:
            return max(rows, key=lambda r: r["concurrency"])
        for r in rows:
            if r["concurrency"] == concurrency:
                return r
        raise NoEvidence(f"the study served no {kind} model at concurrency {concurrency}")

    # --- task type and hybrid --------------------------------------------------------------------------------

    def task_scores(self, pair: str, item_set: str) -> tuple[dict, dict, str, str]:
        """(dense score, MoE score, dense name, MoE name) of a task_type pair on one probe set; each score has
        accuracy, ci_low, ci_high and n (accuracy in [0, 1])."""
        tt = self.stage("task_type")
        names = tt.get("pairs", {}).get(pair) if isinstance(tt.get("pairs"), dict) else None
        if not isinstance(names, list) or len(names) != 2:
            raise NoEvidence(f"the study's task_type stage has no {pair} pair")
        models = mapping(tt.get("models"), "task_type models")
        scores = []
        for name in names:
            s = mapping(mapping(mapping(models.get(name), f"task_type scores of {name}").get("scores"),
                                f"task_type scores of {name}").get(item_set), f"{item_set} score of {name}")
            for key in ("accuracy", "ci_low", "ci_high"):
                number(s.get(key), f"{item_set} {key} of {name}")
            scores.append(s)
        return scores[0], scores[1], names[0], names[1]


def half_width(score: dict) -> float:
    """Half the width of a score's 95% interval (accuracy units)."""
    return (float(score["ci_high"]) - float(score["ci_low"])) / 2.0


def difference_noise(*scores: dict) -> float:
    """The 95% half-width of a sum or difference of independent accuracies: the half-widths in quadrature."""
    return math.sqrt(sum(half_width(s) ** 2 for s in scores))


def accuracy_gap(ev: Evidence, pair: str, item_set: str, moe_minus_dense: bool) -> Check:
    """The accuracy gap of a task_type pair on one probe set, in points (MoE - dense, or dense - MoE), with the
    95% noise of the gap."""
    dense, moe, dn, mn = ev.task_scores(pair, item_set)
    gap = 100 * (float(moe["accuracy"]) - float(dense["accuracy"]))
    noise = 100 * difference_noise(dense, moe)
    return Check(gap if moe_minus_dense else -gap,
                 f"{item_set} exact-match accuracy: {dn} {100 * dense['accuracy']:.1f}% (n {dense.get('n')}), {mn} "
                 f"{100 * moe['accuracy']:.1f}% (n {moe.get('n')}); 95% noise of the gap ±{noise:.1f} points",
                 noise=noise)
