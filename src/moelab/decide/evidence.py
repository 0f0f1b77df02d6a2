"""Reading a study's measured figures for the decision, each part of study.json into a frozen dataclass:
training (the dense/MoE pair's validation losses and cost to the target loss) and bench (decode tails, the
engine's prediction error, the measured throughput flip).

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
from dataclasses import dataclass
from typing import Any

from moelab import format as fmt
from moelab.errors import MoelabError

BASIS_MODELLED = "modelled"
BASIS_MEASURED = "measured"
BASIS_TINY = "measured at tiny scale"
BASIS_MODELLED_TINY = "modelled + measured at tiny scale"
BASIS_PRIOR = "prior"
BASES = (BASIS_MODELLED, BASIS_MEASURED, BASIS_TINY, BASIS_MODELLED_TINY, BASIS_PRIOR)
TINY_PARAMS = 1e9  # models measured below this many parameters are "tiny" next to the frontier candidates
LATENCY_MEAN = "modelled mean per-token latency"
LATENCY_SCALED = "modelled mean x measured p99/p50"
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
    """One part of the evidence: None when absent, empty or skipped by its stage."""
    part = evidence.get(key)
    if part is None:
        return None
    part = _obj(part, key)
    return None if not part or "skipped" in part else part


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
    val = _obj(row.get("final_val") or {}, f"{where}.final_val")
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
    pairs = _obj(training.get("pairs") or {}, "training.pairs")
    rows = {}
    for i, row in enumerate(_list(training.get("rows") or [], "training.rows")):
        row = _obj(row, f"training.rows[{i}]")
        if "model" in row:
            rows[_str(row["model"], f"training.rows[{i}].model")] = (row, f"training.rows[{i}]")
        _num(row.get("params_total"), f"training.rows[{i}].params_total", 0)
    dense = rows.get(_str(pairs.get("dense"), "training.pairs.dense") or "")
    moe = rows.get(_str(pairs.get("moe"), "training.pairs.moe") or "")
    if not dense or not moe:
        return None
    _obj(training.get("config") or {}, "training.config")
    basis, detail = training_basis(training)
    return TrainingEvidence(_trained(*dense), _trained(*moe), _num(training.get("target_loss"), "training.target_loss"),
                            basis, detail)


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
    for i, m in enumerate(_list(bench.get("models") or [], "bench.models")):
        _num(_obj(m, f"bench.models[{i}]").get("params_total"), f"bench.models[{i}].params_total", 0)
    decode = _obj(_obj(bench.get("summary") or {}, "bench.summary").get("decode") or {}, "bench.summary.decode")
    flip = _obj(bench.get("flip") or {}, "bench.flip")
    batches = {k: _num(flip.get(f"{k}_batch"), f"bench.flip.{k}_batch", 0) for k in ("measured", "predicted")}
    winners = {}
    for k in ("measured", "predicted"):
        by = _obj(flip.get(f"{k}_winner_by_batch") or {}, f"bench.flip.{k}_winner_by_batch")
        winners[k] = {str(b): _str(m, f"bench.flip.{k}_winner_by_batch.{b}") or "" for b, m in by.items()}
    warnings = tuple(_str(w, f"bench.warnings[{i}]") or ""
                     for i, w in enumerate(_list(bench.get("warnings") or [], "bench.warnings")))
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


# --- all of it --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evidence:
    """The measured parts of a study that the decision reads; None where a part was not measured."""

    training: TrainingEvidence | None = None
    bench: BenchEvidence | None = None

    @classmethod
    def read(cls, evidence: dict | None) -> Evidence:
        """From `{"training": ..., "bench": ...}` (study.json's parts of those names)."""
        if evidence is None:
            return cls()
        evidence = _obj(evidence, "(top level)")
        return cls(training=read_training(_part(evidence, "training")), bench=read_bench(_part(evidence, "bench")))
