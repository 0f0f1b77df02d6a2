"""Fit a GPU's efficiency curves and overheads to measurements: least squares on log time (`moelab fit`).

`fit` finds the hardware-file values that make the engine's predictions (cost.measurement.predict) closest to
measured figures, minimising  sum over points of log(predicted / measured)^2  (a ratio error: 2x too slow and
2x too fast weigh alike, and a 1 ms TPOT counts as much as a 10 s end-to-end latency). The parameters it can
fit, in hardware-file units (schema.hardware), each bounded (PARAMETERS: low, high, and whether it moves in log
space):

    gemm_efficiency.<dtype>   a large GEMM's share of the dense peak of that compute dtype (bf16, fp16, fp8, ...)
    gemm_half_rows            GEMM rows at which half of that share is reached
    moe_gemm_efficiency       grouped routed-expert GEMMs against the dense curve at equal rows per expert
    attention_efficiency      prefill attention's share of peak at long context
    attention_half_context    context at which prefill attention reaches half that share
    bandwidth_efficiency      achieved share of memory bandwidth (weights, KV cache, activations)
    kernel_launch_us          fixed cost per operator launch
    step_overhead_us          fixed cost per engine step (scheduler, input preparation)
    layer_overhead_us         fixed cost per layer per step (the small kernels between the matmuls)
    moe_layer_overhead_us     fixed cost per MoE layer per step (routing, top-k, permutation)
    intra_node_latency_us     per-call latency of a collective inside a node
    link_efficiency           achieved share of link bandwidth

moe_block_rows (an integer tile) is not fitted. The method is Levenberg-Marquardt with Marquardt's scaling, a
numeric forward-difference Jacobian in the transformed space (each parameter maps to an unbounded z by a logistic
of its bounds, of the log of its bounds where it moves in log space), and a small ridge toward the starting
values so that a parameter the points barely inform stays where it was rather than drifting to a bound. It is
deterministic. A point whose prediction fails on the base hardware (the model does not fit the GPUs) is reported
in FitResult.failed and not fitted; fewer usable points than parameters, or a parameter that changes no
prediction, is refused in one line.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from moelab.cost.capacity import capacity
from moelab.cost.dtypes import COMPUTE_DTYPE
from moelab.cost.measurement import Measurement, predict
from moelab.cost.plan import Plan
from moelab.errors import MoelabError
from moelab.spec.hardware import DTYPES, HardwareSpec
from moelab.spec.model import ModelSpec


@dataclass(frozen=True)
class Parameter:
    """One fittable hardware-file key: its bounds (file units), log space or not, and the HardwareSpec field."""

    key: str
    low: float
    high: float
    log: bool
    attr: str  # the HardwareSpec field ("gemm_efficiency" holds a dict by dtype)
    scale: float = 1.0  # file units -> SI (µs -> s)
    doc: str = ""


_BASE_PARAMETERS = (
    Parameter("gemm_half_rows", 1.0, 8192.0, True, "gemm_half_rows", doc="GEMM rows at half the large-GEMM share"),
    Parameter("moe_gemm_efficiency", 0.02, 1.0, True, "moe_gemm_efficiency",
              doc="grouped expert GEMMs against the dense curve"),
    Parameter("attention_efficiency", 0.02, 1.0, True, "attention_efficiency",
              doc="prefill attention's share of peak"),
    Parameter("attention_half_context", 1.0, 131072.0, True, "attention_half_context",
              doc="context at half the attention share"),
    Parameter("bandwidth_efficiency", 0.2, 1.0, False, "bandwidth_efficiency", doc="share of memory bandwidth"),
    Parameter("kernel_launch_us", 0.0, 50.0, False, "kernel_launch_s", 1e-6, "fixed cost per operator launch"),
    Parameter("step_overhead_us", 0.0, 20000.0, False, "step_overhead_s", 1e-6, "fixed cost per engine step"),
    Parameter("layer_overhead_us", 0.0, 2000.0, False, "layer_overhead_s", 1e-6,
              doc="fixed cost per layer per step (norms, residuals, the kernels between the matmuls)"),
    Parameter("moe_layer_overhead_us", 0.0, 2000.0, False, "moe_layer_overhead_s", 1e-6,
              doc="fixed cost per MoE layer per step"),
    Parameter("intra_node_latency_us", 0.1, 200.0, True, "intra_node_latency_s", 1e-6,
              doc="per-call latency of an intra-node collective"),
    Parameter("link_efficiency", 0.05, 1.0, False, "link_efficiency", doc="share of link bandwidth"),
)
PARAMETERS: dict[str, Parameter] = {
    **{f"gemm_efficiency.{dt}": Parameter(f"gemm_efficiency.{dt}", 0.02, 1.0, True, "gemm_efficiency",
                                          doc=f"a large {dt} GEMM's share of the {dt} dense peak")
       for dt in DTYPES},
    **{p.key: p for p in _BASE_PARAMETERS},
}
# Fitted when none are named, where the points inform them (a dtype's GEMM share only where a point runs it).
DEFAULT_PARAMETERS = ("gemm_efficiency.*", "gemm_half_rows", "moe_gemm_efficiency", "attention_efficiency",
                      "bandwidth_efficiency", "step_overhead_us", "layer_overhead_us", "moe_layer_overhead_us",
                      "intra_node_latency_us")

LOSSES = ("squared", "soft_l1")
RIDGE = 1e-3  # weight of (z - z0) in the cost, per parameter: keeps the normal equations regular
_MARGIN = 1e-4  # start no closer to a bound than this share of its range (the logistic is flat at the bounds)
_STEP = 1e-5  # forward-difference step in z


def value_of(hw: HardwareSpec, p: Parameter) -> float:
    """The parameter's value on `hw`, in hardware-file units."""
    if p.attr == "gemm_efficiency":
        return hw.gemm_share(p.key.split(".", 1)[1])
    return getattr(hw, p.attr) / p.scale


def with_values(hw: HardwareSpec, values: Mapping[str, float]) -> HardwareSpec:
    """`hw` with the parameters' values (hardware-file units) put in."""
    changes: dict[str, Any] = {}
    shares = dict(hw.gemm_efficiency)
    for key, value in values.items():
        p = PARAMETERS[key]
        if p.attr == "gemm_efficiency":
            shares[key.split(".", 1)[1]] = float(value)
        else:
            changes[p.attr] = float(value) * p.scale
    return replace(hw, gemm_efficiency=shares, **changes)


def _to_unit(p: Parameter, value: float) -> float:
    lo, hi = (math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)
    v = math.log(max(value, p.low, 1e-300)) if p.log else value
    return min(max((v - lo) / (hi - lo), _MARGIN), 1.0 - _MARGIN)


def _from_z(p: Parameter, z: float) -> float:
    s = 1.0 / (1.0 + math.exp(-min(max(z, -700.0), 700.0)))
    lo, hi = (math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)
    v = lo + (hi - lo) * s
    return min(max(math.exp(v) if p.log else v, p.low), p.high)


def _to_z(p: Parameter, value: float) -> float:
    u = _to_unit(p, value)
    return math.log(u / (1.0 - u))


@dataclass
class PointError:
    """One measured point before and after the fit; `failed` says why its prediction could not be made."""

    name: str
    metric: str
    phase: str
    measured: float
    predicted_before: float | None = None
    predicted_after: float | None = None
    failed: str | None = None

    @property
    def error_before(self) -> float | None:
        return None if self.predicted_before is None else self.predicted_before / self.measured - 1.0

    @property
    def error_after(self) -> float | None:
        return None if self.predicted_after is None else self.predicted_after / self.measured - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "metric": self.metric, "phase": self.phase, "measured": self.measured,
                "predicted_before": self.predicted_before, "predicted_after": self.predicted_after,
                "error_before": self.error_before, "error_after": self.error_after, "failed": self.failed}


def median_abs(errors: Sequence[float | None]) -> float | None:
    """The median |error| of the errors there are (None when there are none)."""
    values = [abs(e) for e in errors if e is not None]
    return statistics.median(values) if values else None


@dataclass
class FitResult:
    """The fitted values, the hardware with them, and every point's error before and after."""

    params: tuple[str, ...]
    before: dict[str, float]
    values: dict[str, float]
    hardware: dict[str, HardwareSpec]  # by hardware name, the fitted values put in
    points: list[PointError]
    iterations: int
    converged: bool
    cost_before: float
    cost_after: float
    at_bound: tuple[str, ...] = field(default=())  # parameters that ended within 0.2% of their range of a bound

    @property
    def fitted(self) -> list[PointError]:
        return [p for p in self.points if p.failed is None]

    @property
    def failed(self) -> list[PointError]:
        return [p for p in self.points if p.failed is not None]

    @property
    def median_before(self) -> float | None:
        return median_abs([p.error_before for p in self.fitted])

    @property
    def median_after(self) -> float | None:
        return median_abs([p.error_after for p in self.fitted])

    def to_dict(self) -> dict[str, Any]:
        return {"params": {k: {"before": self.before[k], "after": self.values[k],
                               "at_bound": k in self.at_bound} for k in self.params},
                "points": len(self.fitted), "iterations": self.iterations, "converged": self.converged,
                "median_abs_error_before": self.median_before, "median_abs_error_after": self.median_after,
                "per_point": [p.to_dict() for p in self.points]}


def _bases(measurements: Sequence[Measurement],
           base: HardwareSpec | Mapping[str, HardwareSpec]) -> dict[str, HardwareSpec]:
    """The base hardware of every measurement, by its `hardware` name (one spec: all of them)."""
    if isinstance(base, HardwareSpec):
        return {m.hardware: base for m in measurements}
    missing = sorted({m.hardware for m in measurements} - set(base))
    if missing:
        raise MoelabError(f"fit: no base hardware for {', '.join(missing)}")
    return {m.hardware: base[m.hardware] for m in measurements}


def compute_dtype_key(m: Measurement, hw: HardwareSpec) -> str:
    """The gemm_efficiency key a measurement's matmuls run at on `hw` (unsupported dtypes fall back)."""
    return f"gemm_efficiency.{hw.peak(COMPUTE_DTYPE.get(m.dtype, m.dtype))[0]}"


def _expand(names: Sequence[str], measurements: Sequence[Measurement], bases: Mapping[str, HardwareSpec]
            ) -> list[str]:
    """Parameter names with `gemm_efficiency.*` as every compute dtype the points run at."""
    out: list[str] = []
    for name in names:
        if name == "gemm_efficiency.*":
            keys = [compute_dtype_key(m, bases[m.hardware]) for m in measurements]
            out.extend(k for k in dict.fromkeys(keys) if k not in out)
        elif name not in PARAMETERS:
            from difflib import get_close_matches

            close = get_close_matches(name, list(PARAMETERS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise MoelabError(f"fit: {name!r} is not a parameter moelab fits{hint}; the parameters are "
                              f"{', '.join(k for k in PARAMETERS if not k.startswith('gemm_efficiency.'))} "
                              "and gemm_efficiency.<dtype>")
        elif name not in out:
            out.append(name)
    return out


def _weights_fit(m: Measurement, spec: ModelSpec, hw: HardwareSpec) -> str | None:
    """Why the measurement's model cannot have run on its plan (its weights do not fit), or None."""
    plan = Plan.parse(m.plan)
    cap = capacity(spec, hw, plan, m.dtype, m.kv_dtype, m.input + m.output)
    if cap.fits_weights:
        return None
    return (f"{m.model} {m.dtype} does not fit {plan.name} on {hw.name} ({cap.weights_bytes / 1e9:.1f} GB of weights "
            f"and {cap.workspace_bytes / 1e9:.1f} GB of workspace per GPU, {cap.usable_bytes / 1e9:.1f} GB usable)")


def predict_all(measurements: Sequence[Measurement], hardware: Mapping[str, HardwareSpec],
                specs: Mapping[str, ModelSpec], check_fits: bool = False) -> list[float | str]:
    """Each measurement's prediction on its hardware, or the one-line reason it could not be made (with
    `check_fits`: also where the model's weights do not fit its plan, which no fitted value changes)."""
    out: list[float | str] = []
    for m in measurements:
        try:
            reason = _weights_fit(m, specs[m.model], hardware[m.hardware]) if check_fits else None
            if reason:
                out.append(reason)
                continue
            value = predict(m, specs[m.model], hardware[m.hardware])
        except MoelabError as e:
            out.append(" ".join(str(e).split()))
            continue
        out.append(value if math.isfinite(value) and value > 0 else f"the prediction is {value!r}")
    return out


def _check_points(n_points: int, n_params: int, failed: Sequence[PointError]) -> None:
    if n_points < n_params:
        lost = f" ({len(failed)} more could not be predicted: {failed[0].name}: {failed[0].failed})" if failed else ""
        raise MoelabError(f"fit: {n_points} usable point{'s' if n_points != 1 else ''} for {n_params} parameters; "
                          f"give at least as many points as parameters, or fewer --params{lost}")


def fit(measurements: Sequence[Measurement], base: HardwareSpec | Mapping[str, HardwareSpec],
        params: Sequence[str] | None, specs: Mapping[str, ModelSpec], *, max_iterations: int = 100,
        ridge: float = RIDGE, relevant_only: bool | None = None, loss: str = "squared",
        loss_scale: float = 0.2) -> FitResult:
    """Fit `params` (hardware-file keys, PARAMETERS; None: DEFAULT_PARAMETERS the points inform) to the
    measurements, each priced on `base` (one spec, or one per measurement's `hardware` name; the same fitted
    values go into all). `specs` maps each measurement's `model` to its ModelSpec.

    Named parameters that change no prediction are refused; with `params` None (or `relevant_only`), those are
    left out instead. `loss`: "squared" (least squares on log ratio) or "soft_l1" (each point's log ratio r
    counts 2 s^2 (sqrt(1 + (r / s)^2) - 1) with s = `loss_scale`: squares below s, linear above, so a few points
    the model cannot explain do not pull every parameter; iteratively reweighted)."""
    if loss not in LOSSES:
        raise MoelabError(f"fit: loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if not loss_scale > 0:
        raise MoelabError(f"fit: loss_scale must be positive, got {loss_scale!r}")
    if not measurements:
        raise MoelabError("fit: no measurements to fit")
    missing = sorted({m.model for m in measurements} - set(specs))
    if missing:
        raise MoelabError(f"fit: no model spec for {', '.join(missing)}")
    bases = _bases(measurements, base)
    relevant_only = params is None if relevant_only is None else relevant_only
    names = _expand(DEFAULT_PARAMETERS if params is None else params, measurements, bases)
    if not names:
        raise MoelabError("fit: no parameters to fit")
    for hw in bases.values():
        if hw.execution != "gpu":
            raise MoelabError(f"fit: hardware {hw.name} runs the eager CPU model; moelab fit fits the GPU "
                              "operator model (use `moelab calibrate` for a CPU)")

    base_pred = predict_all(measurements, bases, specs, check_fits=True)
    points = [PointError(m.name or m.model, m.metric, m.phase, m.value) for m in measurements]
    for p, value in zip(points, base_pred, strict=True):
        if isinstance(value, str):
            p.failed = value
        else:
            p.predicted_before = value
    usable = [i for i, p in enumerate(points) if p.failed is None]
    failed = [p for p in points if p.failed is not None]
    if not usable:
        raise MoelabError(f"fit: no point could be predicted ({failed[0].name}: {failed[0].failed})")
    ms = [measurements[i] for i in usable]
    if not relevant_only:
        _check_points(len(ms), len(names), failed)
    measured = np.array([m.value for m in ms])
    start = {k: value_of(next(iter(bases.values())), PARAMETERS[k]) for k in names}

    def residuals(z: np.ndarray, keys: Sequence[str]) -> np.ndarray | None:
        values = {k: _from_z(PARAMETERS[k], zi) for k, zi in zip(keys, z, strict=True)}
        hws = {name: with_values(hw, values) for name, hw in bases.items()}
        pred = predict_all(ms, hws, specs)
        if any(isinstance(v, str) for v in pred):
            return None
        return np.log(np.array(pred, dtype=float) / measured)

    def jacobian(z: np.ndarray, r: np.ndarray, keys: Sequence[str]) -> np.ndarray:
        jac = np.zeros((len(r), len(z)))
        for j in range(len(z)):
            zj = z.copy()
            zj[j] += _STEP
            rj = residuals(zj, keys)
            if rj is None:  # a bound of feasibility: difference backwards
                zj[j] = z[j] - _STEP
                rj = residuals(zj, keys)
                jac[:, j] = 0.0 if rj is None else (r - rj) / _STEP
            else:
                jac[:, j] = (rj - r) / _STEP
        return jac

    z0 = np.array([_to_z(PARAMETERS[k], start[k]) for k in names])
    r0 = residuals(z0, names)
    if r0 is None:  # cannot happen: the same values predicted every usable point above
        raise MoelabError("fit: the base hardware's predictions failed")
    jac0 = jacobian(z0, r0, names)
    silent = [k for j, k in enumerate(names) if not np.any(np.abs(jac0[:, j]) > 1e-9)]
    if silent and not relevant_only:
        raise MoelabError(f"fit: {', '.join(silent)} change{'s' if len(silent) == 1 else ''} no prediction of these "
                          f"{len(ms)} points; leave {'it' if len(silent) == 1 else 'them'} out of --params")
    if silent:
        keep = [j for j, k in enumerate(names) if k not in silent]
        names = [names[j] for j in keep]
        z0, jac0 = z0[keep], jac0[:, keep]
        if not names:
            raise MoelabError("fit: none of the parameters changes a prediction of these points")
    _check_points(len(ms), len(names), failed)

    def cost(r: np.ndarray, z: np.ndarray) -> float:
        if loss == "soft_l1":
            data = float(np.sum(2 * loss_scale ** 2 * (np.sqrt(1 + (r / loss_scale) ** 2) - 1)))
        else:
            data = float(r @ r)
        return data + ridge ** 2 * float(np.sum((z - z0) ** 2))

    def weights(r: np.ndarray) -> np.ndarray:
        return 1 / np.sqrt(1 + (r / loss_scale) ** 2) if loss == "soft_l1" else np.ones_like(r)

    z, r, jac = z0.copy(), r0, jac0
    c = cost(r, z)
    c_start = c
    lam, iterations, converged = 1e-3, 0, False
    n = len(names)
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - the count is reported
        w = weights(r)
        g = jac.T @ (w * r) + ridge ** 2 * (z - z0)
        a = jac.T @ (w[:, None] * jac) + ridge ** 2 * np.eye(n)
        d = np.maximum(np.diag(a), 1e-12 * max(1.0, float(np.max(np.diag(a)))))
        improved = False
        while lam < 1e12:
            try:
                step = np.linalg.solve(a + lam * np.diag(d), -g)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            z_new = z + step
            r_new = residuals(z_new, names)
            c_new = math.inf if r_new is None else cost(r_new, z_new)
            if c_new < c:
                improved = True
                small = c - c_new <= 1e-12 * max(c, 1e-30) or float(np.max(np.abs(step))) < 1e-9
                z, r, c = z_new, r_new, c_new
                lam = max(lam / 3.0, 1e-9)
                break
            lam *= 4.0
        if not improved or small or c < 1e-24:
            converged = True
            break
        jac = jacobian(z, r, names)
    values = {k: _from_z(PARAMETERS[k], zi) for k, zi in zip(names, z, strict=True)}
    fitted_hw = {name: with_values(hw, values) for name, hw in bases.items()}
    after = predict_all(measurements, fitted_hw, specs)
    for p, value in zip(points, after, strict=True):
        if p.failed is None:
            p.predicted_after = value if not isinstance(value, str) else None
    at_bound = tuple(k for k in names if min(_to_unit(PARAMETERS[k], values[k]),
                                             1 - _to_unit(PARAMETERS[k], values[k])) < 0.002)
    return FitResult(params=tuple(names), before={k: start[k] for k in names}, values=values, hardware=fitted_hw,
                     points=points, iterations=iterations, converged=converged, cost_before=c_start,
                     cost_after=c, at_bound=at_bound)


def evaluate(measurements: Sequence[Measurement], before: Mapping[str, HardwareSpec],
             after: Mapping[str, HardwareSpec], specs: Mapping[str, ModelSpec]) -> list[PointError]:
    """Every measurement's prediction on the `before` and the `after` hardware (a holdout's errors)."""
    points = [PointError(m.name or m.model, m.metric, m.phase, m.value) for m in measurements]
    pred_before = predict_all(measurements, before, specs, check_fits=True)
    pred_after = predict_all(measurements, after, specs)
    for p, b, a in zip(points, pred_before, pred_after, strict=True):
        if isinstance(b, str) or isinstance(a, str):
            p.failed = b if isinstance(b, str) else a
        else:
            p.predicted_before, p.predicted_after = b, a
    return points


def fitted_hardware_file(result: FitResult, hardware: str, source: str) -> dict[str, Any]:
    """The hardware file `moelab fit` writes for the base named `hardware`: every field of the base (so it means
    the same whatever the presets' defaults become) with the fitted values, and a source note on each fitted key."""
    if hardware not in result.hardware:
        raise MoelabError(f"fit: no point was priced on {hardware} (fitted: {', '.join(result.hardware)})")
    raw = result.hardware[hardware].to_dict()
    raw.pop("name")  # the file's own name shows in results
    note = (f"fitted by moelab fit on {len(result.fitted)} points from {source} (base {hardware}; median |error| "
            f"{_pct(result.median_before)} before, {_pct(result.median_after)} after)")
    raw["sources"] = {**raw.get("sources", {}), **{k: note for k in result.params}}
    raw["measurements"] = {"fit": {"source": source, "base": hardware, "points": len(result.fitted),
                                   "params": {k: {"before": result.before[k], "after": result.values[k]}
                                              for k in result.params},
                                   "median_abs_error_before": result.median_before,
                                   "median_abs_error_after": result.median_after}}
    return raw


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def write_file_atomically(path: Path, text: str) -> None:
    """`text` into `path` all or nothing (moelab.outfile: temporary file in its folder, fsync, rename)."""
    from moelab.outfile import write_atomically

    write_atomically(path, text)


def dump_hardware_file(raw: dict[str, Any], path: Path) -> str:
    """The file's text: JSON for a `.json` path, YAML otherwise (both read back by moelab.userfile)."""
    if Path(path).suffix.lower() == ".json":
        from moelab.jsonout import dumps

        return dumps(raw) + "\n"
    import yaml

    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=120)


__all__ = ["DEFAULT_PARAMETERS", "PARAMETERS", "FitResult", "Parameter", "PointError", "evaluate", "fit",
           "fitted_hardware_file", "median_abs", "predict_all", "value_of", "with_values"]
