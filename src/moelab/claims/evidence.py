"""What a study measured, read for the claims table: each figure checked for its type on the way out, so a
missing stage or a garbled value is one `NoEvidence` reason, never a wrong number.

Keys read (study.json of `moelab study`): training (rows, pairs, plan), serving (rows with kind, concurrency,
tpot_ms_p50/p95/p99, output_tokens_per_second), scaling (rows, alltoall_share), mitigations (variants,
upcycling.arms), task_type (models, pairs; read by moelab.decide.evidence.read_task_type), hybrid (queries,
thresholds), laws (fits).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from moelab.claims.rules import Check
from moelab.errors import MoelabError

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

    def task_cells(self, pair: str, item_set: str) -> tuple[dict, dict, str, str]:
        """(dense cell, MoE cell, dense name, MoE name) of a task_type pair on one probe set, read by decide's
        typed reader (moelab.decide.evidence.read_task_type: every probability in [0, 1], the accuracy inside its
        interval, an integer n, the floor), as score cells {"accuracy", "ci_low", "ci_high", "n", "chance"}."""
        from moelab.decide.evidence import read_task_type

        try:
            task = read_task_type(self.stage("task_type"))
        except MoelabError as e:
            raise NoEvidence(f"the study's task_type figures are refused: {e}"[:300]) from None
        comparison = task.get(pair, item_set) if task is not None else None
        if comparison is None:
            raise NoEvidence(f"the study's task_type stage has no {pair} pair scored on {item_set}")
        cells = [asdict(a) for a in (comparison.dense_score, comparison.moe_score)]
        return cells[0], cells[1], comparison.dense, comparison.moe

    def cascade_queries(self) -> tuple[list[tuple[bool, float, bool]], list[float]]:
        """The hybrid stage's per-query answers, (dense correct, dense confidence, MoE correct) per scored query
        (study["hybrid"]["queries"], moelab.hybrid.table.Query), and its cascade thresholds, each checked: a
        boolean verdict, a confidence and a threshold in [0, 1]."""
        hy = self.stage("hybrid")
        queries = hy.get("queries")
        if not isinstance(queries, list) or not queries:
            raise NoEvidence("the study's hybrid stage stored no per-query answers (it predates them)")
        out = []
        for i, q in enumerate(queries):
            d = q.get("dense") if isinstance(q, dict) else None
            m = q.get("moe") if isinstance(q, dict) else None
            if not (isinstance(d, dict) and isinstance(m, dict) and isinstance(d.get("correct"), bool)
                    and isinstance(m.get("correct"), bool)):
                raise NoEvidence(f"the study's hybrid query {i} lacks both models' exact-match verdicts")
            out.append((d["correct"], probability(d.get("confidence"), f"hybrid query {i}'s dense confidence"),
                        m["correct"]))
        thresholds = hy.get("thresholds")
        if not isinstance(thresholds, list) or not thresholds:
            raise NoEvidence("the study's hybrid stage has no cascade thresholds")
        return out, sorted({probability(t, "hybrid threshold") for t in thresholds})


def probability(value: Any, what: str) -> float:
    """A finite number in [0, 1], else NoEvidence naming `what` and the value."""
    x = number(value, what)
    if not 0.0 <= x <= 1.0:
        raise NoEvidence(f"the study's {what} is {x:g}, outside [0, 1]")
    return x


def accuracy_gap(ev: Evidence, pair: str, item_set: str, moe_minus_dense: bool) -> Check:
    """The accuracy gap of a task_type pair on one probe set, in points (MoE - dense, or dense - MoE), with
    Newcombe's 95% interval of the gap (moelab.eval.score.difference, the test decide and the report apply); no
    verdict when both models sit at the set's floor (moelab.eval.score.at_floor: chance, the best constant answer,
    inside their intervals): accuracy there is not evidence of learning."""
    from moelab.eval.score import at_floor, difference

    dense, moe, dn, mn = ev.task_cells(pair, item_set)
    diff = difference(moe, dense)
    sign = 1 if moe_minus_dense else -1
    gap = sign * 100 * diff["difference"]
    ci = tuple(sorted((sign * 100 * diff["ci_low"], sign * 100 * diff["ci_high"])))
    floor = at_floor(dense) and at_floor(moe)
    why = (f"{item_set} exact-match accuracy: {dn} {100 * dense['accuracy']:.1f}% (n {dense['n']}), {mn} "
           f"{100 * moe['accuracy']:.1f}% (n {moe['n']}), chance {100 * max(dense['chance'], moe['chance']):.1f}%; "
           f"Newcombe 95% interval of the gap [{ci[0]:+.1f}, {ci[1]:+.1f}] points")
    if floor:
        why += "; both models at the floor (chance inside their intervals): no verdict"
    return Check(gap, why, cis=(ci,), no_verdict="floor" if floor else None)


def combine(a: Check, b: Check) -> tuple[float, float]:
    """The 95% interval of a.value - b.value from each one's own interval (the MOVER combination, G. Y. Zou and
    A. Donner, Stat. Methods Med. Res. 17 (2008) 469-485, as Newcombe's method 10 does for two proportions)."""
    (alo, ahi), (blo, bhi) = a.cis[0], b.cis[0]
    d = a.value - b.value
    return (d - math.sqrt((a.value - alo) ** 2 + (bhi - b.value) ** 2),
            d + math.sqrt((ahi - a.value) ** 2 + (b.value - blo) ** 2))
