"""Reading a study's measured figures for the decision, each part of study.json into a frozen dataclass:
training (the dense/MoE pair's validation losses and cost to the target loss), bench (decode tails, the
engine's prediction error, the measured throughput flip), task_type (exact-match accuracy of the probe sets per
model, with Wilson intervals, for the iso-active and iso-total pairs) and hybrid (the measured cost-quality curve
of dense alone, MoE alone and the best cascade and route).

A part that is absent, empty or skipped is None: not measured. A part that is there but malformed is one
MoelabError line naming the key (`evidence training.rows[1].to_target.flops: expected a number, got a string`),
never a traceback: a study.json given to `moelab decide --evidence` is a user's file. A number that is not
finite counts as not measured (the study writes undefined quantities as null).

Every measurement carries a basis from BASES (the report's badges use the same vocabulary):
"measured" (at the scale of the candidates), "measured at tiny scale" (moelab study's tiny models on this machine:
a measurement, but of models thousands of times smaller than the candidates), "modelled" (the engine),
"modelled + measured at tiny scale" (a modelled figure checked against such a measurement) or "prior" (the
seeds' guidance); tiny-scale rows also carry a detail such as "CPU, 24 steps, 1.57M-3.94M params".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from moelab import format as fmt
from moelab.basis import (  # noqa: F401 - re-exported: decide's users read the bases from here
    BASES,
    BASIS_MEASURED,
    BASIS_MODELLED,
    BASIS_MODELLED_TINY,
    BASIS_PRIOR,
    BASIS_TINY,
)
from moelab.errors import MoelabError

TINY_PARAMS = 1e9  # models measured below this many parameters are "tiny" next to the frontier candidates
LATENCY_MEAN = "modelled mean per-token latency"
LATENCY_SCALED = "modelled mean x measured p99/p50"
EVIDENCE_PARTS = ("training", "bench", "task_type", "hybrid")  # the parts of study.json the decision reads
DOMAIN_TASK = {"math": "reasoning", "prose": "knowledge", "code": "code", "json": "code"}  # corpus domain -> task


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return fmt.count(lo) if lo == hi else f"{fmt.count(lo)}-{fmt.count(hi)}"


def tiny_detail(device: str | None, params: list[float], steps: int | None = None) -> str:
    """Where a measurement at tiny scale comes from, e.g. "CPU, 24 steps, 1.57M-3.94M params"."""
    parts = [(device or "cpu").upper() if (device or "cpu") in ("cpu", "cuda") else str(device)]
    if steps:
        parts.append(f"{steps} steps")
    if params:
        parts.append(f"{_span(params)} params")
    return ", ".join(parts)


def scale_basis(params: list[float]) -> str:
    """BASIS_TINY for models under TINY_PARAMS (or of unknown size), else BASIS_MEASURED."""
    return BASIS_TINY if not params or max(params) < TINY_PARAMS else BASIS_MEASURED


def training_basis(training: dict | None) -> tuple[str, str]:
    """The basis of measurements from a training comparison, and its detail (device, steps, parameters)."""
    tr = training or {}
    params = [r["params_total"] for r in tr.get("rows") or [] if r.get("params_total")]
    cfg = tr.get("config") or {}
    return scale_basis(params), tiny_detail(cfg.get("device", "cpu"), params, cfg.get("steps"))


def bench_basis(bench: dict | None) -> tuple[str, str]:
    """The basis of a bench's measurements, and its detail (device, parameters, warnings)."""
    b = bench or {}
    params = [m["params_total"] for m in b.get("models") or [] if m.get("params_total")]
    return scale_basis(params), tiny_detail(b.get("device"), params)


# --- typed access to a user's JSON ------------------------------------------------------------------------

def _kind(x: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(x), "a number" if isinstance(x, int | float) else type(x).__name__)


def _refuse(where: str, what: str) -> MoelabError:
    return MoelabError(f"evidence {where}: {what}")


def _obj(x: Any, where: str) -> dict:
    if not isinstance(x, dict):
        raise _refuse(where, f"expected an object, got {_kind(x)}")
    return x


def _list(x: Any, where: str) -> list:
    if not isinstance(x, list | tuple):
        raise _refuse(where, f"expected a list, got {_kind(x)}")
    return list(x)


def _obj_at(d: dict, key: str, where: str) -> dict:
    """d[key] as an object; absent or null: empty."""
    return {} if d.get(key) is None else _obj(d[key], where)


def _list_at(d: dict, key: str, where: str) -> list:
    """d[key] as a list; absent or null: empty."""
    return [] if d.get(key) is None else _list(d[key], where)


def _num(x: Any, where: str, lo: float = -math.inf, hi: float = math.inf) -> float | None:
    """A finite number in [lo, hi], or None for null / a non-finite float (not measured)."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise _refuse(where, f"expected a number, got {_kind(x)}")
    if not math.isfinite(x):
        return None
    if not lo <= x <= hi:
        raise _refuse(where, f"{x:g} is outside [{lo:g}, {hi:g}]")
    return x


def _str(x: Any, where: str) -> str | None:
    if x is None:
        return None
    if not isinstance(x, str):
        raise _refuse(where, f"expected a string, got {_kind(x)}")
    return x


def _part(evidence: dict, key: str) -> dict | None:
    """One part of the evidence: None when absent, empty or skipped by its stage (a true "skipped": the hybrid
    stage writes "skipped": None when it ran)."""
    part = evidence.get(key)
    if part is None:
        return None
    part = _obj(part, key)
    return None if not part or part.get("skipped") else part


# --- training ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainedModel:
    """One model of the training comparison: final validation loss per domain (and "mean"), and its record at
    the target loss (tokens, flops, train_seconds / wall_seconds; None: never reached)."""

    name: str
    final_val: dict[str, float]
    to_target: dict | None


@dataclass(frozen=True)
class TrainingEvidence:
    dense: TrainedModel
    moe: TrainedModel
    target_loss: float | None
    basis: str
    detail: str


def _trained(row: dict, where: str) -> TrainedModel:
    name = _str(row.get("model"), f"{where}.model")
    val = _obj_at(row, "final_val", f"{where}.final_val")
    final_val = {d: v for d, x in val.items() if (v := _num(x, f"{where}.final_val.{d}")) is not None}
    hit = row.get("to_target")
    if hit is not None:
        hit = _obj(hit, f"{where}.to_target")
        got = {k: _num(hit.get(k), f"{where}.to_target.{k}", 0) for k in ("tokens", "flops", "train_seconds",
                                                                          "wall_seconds")}
        if not got["flops"] or got["tokens"] is None or (got["train_seconds"] is None and got["wall_seconds"] is None):
            raise _refuse(f"{where}.to_target", "needs tokens, flops > 0 and train_seconds or wall_seconds")
    return TrainedModel(name, final_val, hit)


def read_training(training: dict | None) -> TrainingEvidence | None:
    """The pair named by training.pairs (dense, moe) when both have rows; None otherwise."""
    if not training:
        return None
    pairs = _obj_at(training, "pairs", "training.pairs")
    rows = {}
    for i, row in enumerate(_list_at(training, "rows", "training.rows")):
        row = _obj(row, f"training.rows[{i}]")
        if "model" in row:
            rows[_str(row["model"], f"training.rows[{i}].model")] = (row, f"training.rows[{i}]")
        _num(row.get("params_total"), f"training.rows[{i}].params_total", 0)
    dense = rows.get(_str(pairs.get("dense"), "training.pairs.dense") or "")
    moe = rows.get(_str(pairs.get("moe"), "training.pairs.moe") or "")
    if not dense or not moe:
        return None
    _obj_at(training, "config", "training.config")
    pair = _trained(*dense), _trained(*moe)
    target = _num(training.get("target_loss"), "training.target_loss")
    if target is None and (pair[0].to_target or pair[1].to_target):
        raise _refuse("training.target_loss", "missing, but a model's to_target says it reached it")
    return TrainingEvidence(*pair, target, *training_basis(training))


# --- bench ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchEvidence:
    """What the bench measured: p99/p50 of each decode row, where it ran (the hardware spec's name), the median
    |relative error| of the engine's decode predictions, the measured and predicted throughput flip (batch and
    winner by batch) and the measurement warnings."""

    tails: tuple[float, ...]
    hardware: str | None
    device: str
    decode_error: float | None
    measured_flip_batch: int | None
    predicted_flip_batch: int | None
    winners: dict[str, dict[str, str]]  # "measured"/"predicted" -> {batch: model}
    warnings: tuple[str, ...]
    basis: str
    detail: str


def read_bench(bench: dict | None) -> BenchEvidence | None:
    """None when the bench measured no rows."""
    if not bench or not bench.get("rows"):
        return None
    tails = []
    for i, row in enumerate(_list(bench["rows"], "bench.rows")):
        row = _obj(row, f"bench.rows[{i}]")
        p99 = _num(row.get("p99_s"), f"bench.rows[{i}].p99_s", 0)
        p50 = _num(row.get("p50_s"), f"bench.rows[{i}].p50_s", 0)
        if row.get("phase") == "decode" and p99 and p50:
            tails.append(p99 / p50)
    for i, m in enumerate(_list_at(bench, "models", "bench.models")):
        _num(_obj(m, f"bench.models[{i}]").get("params_total"), f"bench.models[{i}].params_total", 0)
    decode = _obj_at(_obj_at(bench, "summary", "bench.summary"), "decode", "bench.summary.decode")
    flip = _obj_at(bench, "flip", "bench.flip")
    batches = {k: _num(flip.get(f"{k}_batch"), f"bench.flip.{k}_batch", 0) for k in ("measured", "predicted")}
    winners = {}
    for k in ("measured", "predicted"):
        by = _obj_at(flip, f"{k}_winner_by_batch", f"bench.flip.{k}_winner_by_batch")
        winners[k] = {str(b): _str(m, f"bench.flip.{k}_winner_by_batch.{b}") or "" for b, m in by.items()}
    warnings = tuple(_str(w, f"bench.warnings[{i}]") or ""
                     for i, w in enumerate(_list_at(bench, "warnings", "bench.warnings")))
    hardware = bench.get("hardware")
    name = _str(_obj(hardware, "bench.hardware").get("name"), "bench.hardware.name") if hardware else None
    basis, detail = bench_basis(bench)
    return BenchEvidence(tuple(tails), name, _str(bench.get("device"), "bench.device") or "this machine",
                         _num(decode.get("median_abs_rel_error"), "bench.summary.decode.median_abs_rel_error", 0),
                         None if batches["measured"] is None else int(batches["measured"]),
                         None if batches["predicted"] is None else int(batches["predicted"]),
                         winners, warnings, basis, detail)


@dataclass(frozen=True)
class Tail:
    """The measured decode tail and whether it applies: `ratio` multiplies modelled step times (1.0 unless the
    bench ran on the workload's own hardware: a tail measured on the study's CPU says nothing about a GPU
    server's); `measured` is the median p99/p50 over `rows` decode rows (None: no tail measured)."""

    ratio: float
    measured: float | None
    rows: int
    where: str | None
    hardware: str

    @property
    def applied(self) -> bool:
        return self.measured is not None and self.where == self.hardware

    @property
    def label(self) -> str:
        return LATENCY_SCALED if self.applied else LATENCY_MEAN


def tail(bench: BenchEvidence | None, hardware: str) -> Tail:
    if not bench or not bench.tails:
        return Tail(1.0, None, 0, None, hardware)
    measured = max(1.0, statistics.median(bench.tails))
    applied = bench.hardware == hardware
    return Tail(measured if applied else 1.0, measured, len(bench.tails), bench.hardware, hardware)


# --- task type (study["task_type"], moelab.study.task_type) -----------------------------------------------

PROBE_SETS = ("knowledge", "reasoning")
ROUNDING = 1e-9  # a Wilson bound computed in floating point: wilson(30, 30) = (0.886..., 0.9999999999999999)
PAIRS = ("iso_active", "iso_total")


@dataclass(frozen=True)
class Accuracy:
    """One model's exact-match accuracy on one probe set: its Wilson interval, n, and the set's floor (`chance`:
    the accuracy of the best constant answer)."""

    accuracy: float
    ci_low: float
    ci_high: float
    n: int
    chance: float

    @property
    def cell(self) -> dict:
        """The score cell as moelab.eval.score writes and reads it."""
        return {"accuracy": self.accuracy, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n,
                "chance": self.chance}

    @property
    def at_floor(self) -> bool:
        """At chance or within its own interval of it: not evidence of learning (moelab.eval.score.at_floor, the
        test the task-type report and the claims apply)."""
        from moelab.eval.score import at_floor  # lazily: moelab.eval imports torch (moelab.data), ~3 s

        return at_floor(self.cell)


@dataclass(frozen=True)
class Comparison:
    """The dense and the MoE of one pair (iso_active: equal active parameters, so equal training FLOPs on the
    same tokens; iso_total: equal total parameters) on one probe set."""

    pair: str
    set: str
    dense: str
    moe: str
    dense_score: Accuracy
    moe_score: Accuracy

    @property
    def difference(self) -> tuple[float, float, float]:
        """MoE minus dense accuracy with Newcombe's hybrid Wilson 95% interval (R. G. Newcombe, Stat. Med. 17 (1998)
        873-890, method 10), from the two cells' own Wilson bounds: moelab.eval.score.difference, the test the
        report's task-type section applies. Conservative here: both models answer the same items."""
        from moelab.eval.score import difference  # lazily, as at_floor

        diff = difference(self.moe_score.cell, self.dense_score.cell)
        return diff["difference"], diff["ci_low"], diff["ci_high"]

    @property
    def verdict(self) -> str:
        """"floor" when both sit at the floor; else "moe" or "dense" when the difference's interval excludes 0;
        "inside_ci" when it does not (the difference is not evidence)."""
        if self.dense_score.at_floor and self.moe_score.at_floor:
            return "floor"
        _, lo, hi = self.difference
        return "moe" if lo > 0 else "dense" if hi < 0 else "inside_ci"

    def to_dict(self) -> dict:
        d, m = self.dense_score, self.moe_score
        gap, lo, hi = self.difference
        return {"pair": self.pair, "set": self.set, "dense": self.dense, "moe": self.moe,
                "dense_accuracy": d.accuracy, "dense_ci": [d.ci_low, d.ci_high], "dense_n": d.n,
                "moe_accuracy": m.accuracy, "moe_ci": [m.ci_low, m.ci_high], "moe_n": m.n,
                "chance": max(d.chance, m.chance), "difference": gap, "difference_ci": [lo, hi],
                "verdict": self.verdict}


@dataclass(frozen=True)
class TaskTypeEvidence:
    comparisons: tuple[Comparison, ...]  # every pair x probe set measured
    items: dict[str, int]  # probe set -> items scored
    ci: str
    floor_warnings: tuple[str, ...]
    basis: str
    detail: str

    def get(self, pair: str, item_set: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.pair == pair and c.set == item_set), None)


def read_interval(cell: dict, where: str) -> tuple[float, float, float]:
    """(accuracy, ci_low, ci_high) of a scored cell, each in [0, 1] and 0 <= ci_low <= accuracy <= ci_high <= 1
    (up to ROUNDING); one MoelabError line otherwise. The one reader of a measured proportion with its interval
    (task_type cells and hybrid points)."""
    got = {k: _num(cell.get(k), f"{where}.{k}", 0, 1) for k in ("accuracy", "ci_low", "ci_high")}
    if None in got.values():
        raise _refuse(where, "needs accuracy, ci_low and ci_high in [0, 1]")
    acc, lo, hi = got["accuracy"], got["ci_low"], got["ci_high"]
    if not lo - ROUNDING <= acc <= hi + ROUNDING:
        raise _refuse(where, f"accuracy {acc:g} is outside its interval [{lo:g}, {hi:g}]")
    return acc, lo, hi


def _accuracy(cell: Any, where: str) -> Accuracy:
    cell = _obj(cell, where)
    acc, lo, hi = read_interval(cell, where)
    chance = _num(cell.get("chance"), f"{where}.chance", 0, 1)
    n = _num(cell.get("n"), f"{where}.n", 0)
    if chance is None or n is None or n != int(n):
        raise _refuse(where, "needs chance in [0, 1] and an integer n")
    return Accuracy(acc, lo, hi, int(n), chance)


def read_task_type(task: dict | None) -> TaskTypeEvidence | None:
    """The pairs' accuracies per probe set; None when no pair has both models scored."""
    if not task:
        return None
    models = _obj_at(task, "models", "task_type.models")
    pairs = _obj_at(task, "pairs", "task_type.pairs")
    params, comparisons = [], []
    for pair in PAIRS:
        names = pairs.get(pair)
        if names is None:
            continue
        names = _list(names, f"task_type.pairs.{pair}")
        if len(names) != 2 or not all(isinstance(x, str) for x in names):
            raise _refuse(f"task_type.pairs.{pair}", "expected [dense, moe], two model names")
        if not all(x in models for x in names):
            continue  # a model of the pair was not scored
        scores = []
        for name, kind in zip(names, ("dense", "moe"), strict=True):
            where = f"task_type.models.{name}"
            model = _obj(models[name], where)
            if model.get("kind", kind) != kind:
                raise _refuse(f"{where}.kind", f"task_type.pairs.{pair} names it as the {kind} model, but it is "
                                               f"{model.get('kind')!r}")
            params.append(_num(model.get("params_total"), f"{where}.params_total", 0))
            scores.append(_obj_at(model, "scores", f"{where}.scores"))
        for item_set in PROBE_SETS:
            if item_set in scores[0] and item_set in scores[1]:
                comparisons.append(Comparison(pair, item_set, names[0], names[1],
                                              _accuracy(scores[0][item_set], f"task_type.models.{names[0]}.scores."
                                                        f"{item_set}"),
                                              _accuracy(scores[1][item_set], f"task_type.models.{names[1]}.scores."
                                                        f"{item_set}")))
    if not comparisons:
        return None
    items = {k: int(v) for k, x in _obj_at(task, "items", "task_type.items").items()
             if (v := _num(x, f"task_type.items.{k}", 0)) is not None}
    warnings = tuple(_str(w, f"task_type.floor_warnings[{i}]") or ""
                     for i, w in enumerate(_list_at(task, "floor_warnings", "task_type.floor_warnings")))
    ci = _str(task.get("ci"), "task_type.ci") or "95% interval"
    sized = [p for p in params if p]
    n = ", ".join(f"{items[k]} {k}" for k in PROBE_SETS if k in items)
    detail = ", ".join(x for x in ("exact-match accuracy", ci, f"{n} items" if n else "",
                                   f"{_span(sized)} params" if sized else "") if x)
    return TaskTypeEvidence(tuple(comparisons), items, ci, warnings, scale_basis(sized), detail)


# --- hybrid (study["hybrid"], moelab.hybrid.run) ---------------------------------------------------------

@dataclass(frozen=True)
class HybridPoint:
    """One point of the measured curve: a policy (dense, moe, cascade, route) at a threshold, its accuracy with
    interval and n, measured latency per query, FLOPs per query, and the share of queries the MoE answers."""

    policy: str
    threshold: float | None
    accuracy: float
    ci_low: float
    ci_high: float
    n: int | None
    latency_s_mean: float | None
    flops_per_query: float | None
    escalation_rate: float
    pareto: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class HybridEvidence:
    dense_name: str
    moe_name: str
    dense: HybridPoint  # dense alone
    moe: HybridPoint  # MoE alone
    best: dict[str, HybridPoint]  # "cascade", "route": the best measured point of each
    engine: str
    items: int | None
    basis: str


def _point(p: Any, where: str, policy: str | None = None, escalation: float | None = None) -> HybridPoint:
    p = _obj(p, where)
    acc, lo, hi = read_interval(p, where)
    rate = _num(p.get("escalation_rate"), f"{where}.escalation_rate", 0, 1)
    rate = escalation if rate is None else rate
    if rate is None:
        raise _refuse(f"{where}.escalation_rate", "missing (the share of queries the MoE answers)")
    n = _num(p.get("n"), f"{where}.n", 0)
    pareto = p.get("pareto")
    if pareto is not None and not isinstance(pareto, bool):
        raise _refuse(f"{where}.pareto", f"expected a boolean, got {_kind(pareto)}")
    return HybridPoint(policy or _str(p.get("policy"), f"{where}.policy") or "?", _num(p.get("threshold"),
                       f"{where}.threshold", 0, 1), acc, lo, hi,
                       None if n is None else int(n), _num(p.get("latency_s_mean"), f"{where}.latency_s_mean", 0),
                       _num(p.get("flops_per_query"), f"{where}.flops_per_query", 0), rate, pareto)


def read_hybrid(hybrid: dict | None) -> HybridEvidence | None:
    """Dense alone, MoE alone and the best cascade and route points; None without both models."""
    if not hybrid:
        return None
    models = _obj_at(hybrid, "models", "hybrid.models")
    if "dense" not in models or "moe" not in models:
        return None
    dense = _point(models["dense"], "hybrid.models.dense", "dense", 0.0)
    moe = _point(models["moe"], "hybrid.models.moe", "moe", 1.0)
    best = {k: _point(p, f"hybrid.best.{k}", k) for k, p in _obj_at(hybrid, "best", "hybrid.best").items()
            if k in ("cascade", "route") and p is not None}
    items = _num(hybrid.get("items"), "hybrid.items", 0)
    return HybridEvidence(_str(models["dense"].get("name"), "hybrid.models.dense.name") or "dense",
                          _str(models["moe"].get("name"), "hybrid.models.moe.name") or "moe",
                          dense, moe, best, _str(hybrid.get("engine"), "hybrid.engine") or "moelab",
                          None if items is None else int(items),
                          _str(hybrid.get("basis"), "hybrid.basis") or BASIS_TINY)


# --- all of it --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evidence:
    """The measured parts of a study that the decision reads; None where a part was not measured."""

    training: TrainingEvidence | None = None
    bench: BenchEvidence | None = None
    task_type: TaskTypeEvidence | None = None
    hybrid: HybridEvidence | None = None

    @classmethod
    def read(cls, evidence: dict | None) -> Evidence:
        """From `{"training": ..., "bench": ..., "task_type": ..., "hybrid": ...}` (study.json's parts)."""
        if evidence is None:
            return cls()
        evidence = _obj(evidence, "(top level)")
        return cls(training=read_training(_part(evidence, "training")), bench=read_bench(_part(evidence, "bench")),
                   task_type=read_task_type(_part(evidence, "task_type")),
                   hybrid=read_hybrid(_part(evidence, "hybrid")))

    def found(self) -> dict[str, bool]:
        """Which parts were measured (the result's "evidence")."""
        return {k: getattr(self, k) is not None for k in EVIDENCE_PARTS}


STUDY_FILE = "study.json"
STUDY_MAX_BYTES = 64 * 2**20  # runs/study/study.json was 0.53 MB before issue 16's stages; hybrid.json adds ~0.1 MB


def load_study(where: str | Path, parts: tuple[str, ...] = EVIDENCE_PARTS) -> dict:
    """The whole study dict of a `moelab study` folder (its study.json) or of a study.json file given directly,
    read through moelab.userfile (STUDY_MAX_BYTES, strict JSON) and with decide's parts (EVIDENCE_PARTS) checked
    by Evidence.read, so that a bad file is refused in one line naming it before any modelling. `parts`: the keys
    of which at least one must be there for the file to count as a study (`moelab claims` passes its own).
    The one study.json reader of `moelab decide --evidence` and `moelab claims --evidence`."""
    from moelab.userfile import load_user_file

    path = Path(where)
    try:
        is_dir = path.is_dir()
    except (ValueError, OSError):  # a NUL byte in the name (Python >= 3.12 raises), a name too long
        raise MoelabError(f"--evidence {str(where)!r}: not a valid path") from None
    if is_dir:
        path = path / STUDY_FILE
        if not path.exists():
            raise MoelabError(f"--evidence {where}: no {STUDY_FILE} there (`moelab study --out {where}` writes one)")
    elif path.suffix.lower() != ".json":  # a missing .json is refused by load_user_file ("not found")
        raise MoelabError(f"--evidence {str(where)!r}: not a folder or a .json file (give the --out folder of "
                          f"`moelab study`, or its {STUDY_FILE})")
    study = load_user_file(path, "study file", STUDY_MAX_BYTES)
    if not isinstance(study, dict) or not any(study.get(k) for k in parts):
        raise MoelabError(f"{path}: not a moelab study (none of {', '.join(parts)})")
    try:
        Evidence.read({k: study.get(k) for k in EVIDENCE_PARTS})
    except MoelabError as e:
        raise MoelabError(f"{path}: {e}") from None
    return study
