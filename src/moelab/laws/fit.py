"""Fitting L(x) = E + A * x^-alpha (numpy only): a profile over alpha with bounded linear least squares for E, A.

For a fixed alpha the model is linear in (E, A); the best E >= 0, A >= 0 comes in closed form (the unconstrained
solution, else the better of the two faces E = 0 and A = 0: a convex problem in two variables). The residual sum
of squares S(alpha) of those is minimised over a log grid of alpha in [ALPHA_MIN, ALPHA_MAX], then refined by
golden-section search around the best grid point.

Uncertainty: the profile (likelihood-ratio) interval of nonlinear least squares, {alpha : S(alpha) <= S_min *
(1 + t^2 / (n - 3))} with t the two-sided Student-t quantile on n - 3 degrees of freedom (Bates & Watts 1988,
"Nonlinear Regression Analysis and Its Applications", sec. 6.1; F(1, v) = t(v)^2). It needs n >= 4 points; an
interval that runs into the search limits says so (`ci_open`). The pure power law L = A * x^-alpha (the seeds'
form, no irreducible term) is fitted in log-log by ordinary least squares with the slope's t interval.

x is normalised by its geometric mean inside the fit (x^-alpha of 1e15 at alpha 3 underflows nothing, but the
normal equations stay well conditioned); A is reported for the raw x.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from moelab.errors import MoelabError

ALPHA_MIN, ALPHA_MAX = 1e-3, 3.0
GRID = 800
CONFIDENCE = 0.95
# Two-sided 95% Student-t quantiles t_{0.975}(v), v = 1..30 (any statistics table, e.g. NIST/SEMATECH e-Handbook
# of Statistical Methods, 1.3.6.7.2); beyond 30 the normal 1.96 is within 4%.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(dof: int) -> float:
    """The two-sided 95% Student-t quantile on `dof` degrees of freedom (1.96 beyond the table)."""
    if dof < 1:
        raise ValueError("no degrees of freedom")
    return _T975[dof - 1] if dof <= len(_T975) else 1.96


@dataclass(frozen=True)
class PowerLawFit:
    """L(x) = E + A * x^-alpha fitted to n points; alpha_ci None when n < 4 (no residual degrees of freedom)."""

    E: float
    A: float
    alpha: float
    alpha_ci: tuple[float, float] | None
    ci_open: list[str]  # "low" / "high": the interval reached ALPHA_MIN / ALPHA_MAX (it may extend further)
    rss: float
    n: int
    x_ref: float  # the geometric mean of x the fit normalised by
    at_bound: list[str]  # parameters the optimum sits on a bound of: "E=0", "A=0", "alpha_min", "alpha_max"

    def predict(self, x: float) -> float:
        return self.E + self.A * x ** -self.alpha

    def to_dict(self) -> dict:
        out = asdict(self)
        out["alpha_ci"] = list(self.alpha_ci) if self.alpha_ci else None
        return out


def _checked(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise MoelabError("a fit needs as many losses as compute values")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        raise MoelabError("a fit needs positive finite compute values and losses")
    if (np.log(x.max()) - np.log(x.min())) * ALPHA_MAX > 300 or y.max() > 1e100:  # x^-alpha, its squares: overflow
        raise MoelabError("a fit needs compute values within a factor e^100 of each other and losses up to 1e100")
    if len(np.unique(x)) < 3:
        raise MoelabError(f"a fit of E + A*C^-alpha needs at least 3 distinct compute values, got {len(np.unique(x))}")
    return x, y


def _solve(z: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(E, A, residual sum of squares) of the best E >= 0, A >= 0 for y ~ E + A z."""
    zm, ym = z.mean(), y.mean()
    var = float(((z - zm) ** 2).sum())
    candidates = []
    if var > 0:
        a = float(((z - zm) * (y - ym)).sum()) / var
        e = ym - a * zm
        if a >= 0 and e >= 0:
            candidates.append((e, a))
    if not candidates:
        candidates = [(0.0, max(0.0, float(z @ y) / float(z @ z))), (float(ym), 0.0)]
    best = None
    for e, a in candidates:
        rss = float(((y - e - a * z) ** 2).sum())
        if best is None or rss < best[2]:
            best = (e, a, rss)
    return best


def _profile(u: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, float, float]:
    return _solve(u ** -alpha, y)


def _profile_rss(u: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """_profile's residual sum of squares at every alpha at once (the same three cases, vectorised)."""
    z = u[None, :] ** -alphas[:, None]  # (alphas, points)
    zm, ym = z.mean(axis=1, keepdims=True), y.mean()
    dz = z - zm
    var = (dz**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(var > 0, (dz * (y - ym)).sum(axis=1) / var, -1.0)
    e = ym - a * zm[:, 0]
    free = ((y[None, :] - e[:, None] - a[:, None] * z) ** 2).sum(axis=1)
    a0 = np.maximum(0.0, (z @ y) / (z**2).sum(axis=1))
    on_e0 = ((y[None, :] - a0[:, None] * z) ** 2).sum(axis=1)
    flat = float(((y - ym) ** 2).sum())
    return np.where((a >= 0) & (e >= 0), free, np.minimum(on_e0, flat))


def fit_power_law(x, y) -> PowerLawFit:
    """Fit y = E + A * x^-alpha (E >= 0, A >= 0, alpha in [ALPHA_MIN, ALPHA_MAX]); see the module docstring."""
    x, y = _checked(x, y)
    x_ref = float(np.exp(np.log(x).mean()))
    u = x / x_ref
    grid = np.geomspace(ALPHA_MIN, ALPHA_MAX, GRID)
    rss = _profile_rss(u, y, grid)
    i = int(np.argmin(rss))
    lo, hi = grid[max(0, i - 1)], grid[min(GRID - 1, i + 1)]
    alpha = _golden(lambda a: _profile(u, y, a)[2], lo, hi) if hi > lo else float(grid[i])
    if _profile(u, y, alpha)[2] > rss[i]:
        alpha = float(grid[i])
    e, a_ref, best = _profile(u, y, alpha)
    n = len(y)
    ci, open_ = None, []
    if n >= 4:
        limit = best * (1 + t975(n - 3) ** 2 / (n - 3))
        ci, open_ = _interval(lambda a: _profile(u, y, a)[2], grid, rss, alpha, limit)
    bounds = [name for name, hit in (("E=0", e == 0.0), ("A=0", a_ref == 0.0),
                                     ("alpha_min", math.isclose(alpha, ALPHA_MIN, rel_tol=1e-6)),
                                     ("alpha_max", math.isclose(alpha, ALPHA_MAX, rel_tol=1e-6))) if hit]
    with np.errstate(over="ignore", invalid="ignore"):
        a_raw = float(np.float64(a_ref) * np.power(np.float64(x_ref), alpha))
    _finite("E + A*x^-alpha", E=e, A=a_raw, rss=best, x_ref=x_ref)
    return PowerLawFit(E=float(e), A=a_raw, alpha=float(alpha), alpha_ci=ci, ci_open=open_,
                       rss=float(best), n=n, x_ref=x_ref, at_bound=bounds)


def _finite(form: str, **values: float) -> None:
    """A fit whose numbers overflowed (compute or losses far outside any real sweep) is one line, not inf/nan."""
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise MoelabError(f"the fit of {form} overflowed ({', '.join(bad)} not finite): the compute values or "
                          "losses are far outside a training run's range")


def _golden(f, lo: float, hi: float, iters: int = 80) -> float:
    """The minimiser of a unimodal f on [lo, hi] (golden-section search in log alpha)."""
    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(math.exp(c)), f(math.exp(d))
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(math.exp(d))
    return math.exp((a + b) / 2)


def _interval(f, grid: np.ndarray, rss: np.ndarray, alpha: float, limit: float) -> tuple[tuple[float, float], list]:
    """The connected set {a : f(a) <= limit} around `alpha`: walk the grid outwards to the first point above the
    limit on each side, then bisect (in log alpha) between it and its inner neighbour."""
    start = int(np.searchsorted(grid, alpha))
    ends, open_ = [], []
    for step, side in ((-1, "low"), (1, "high")):
        j = min(max(start if step > 0 else start - 1, 0), len(grid) - 1)
        inner = alpha
        while 0 <= j < len(grid) and rss[j] <= limit:
            inner = float(grid[j])
            j += step
        if not 0 <= j < len(grid):
            ends.append(float(grid[0] if step < 0 else grid[-1]))
            open_.append(side)
            continue
        a, b = math.log(inner), math.log(float(grid[j]))  # f(inner) <= limit < f(grid[j])
        for _ in range(60):
            m = (a + b) / 2
            a, b = (m, b) if f(math.exp(m)) <= limit else (a, m)
        ends.append(math.exp(a))
    return (min(ends[0], alpha), max(ends[1], alpha)), open_


def prediction_range(x, y, fit: PowerLawFit, at: float, samples: int = 60) -> list[float] | None:
    """The prediction at `at` over the exponents inside the fit's interval, each with its own best E, A (the fit's
    own points x, y); None without an interval."""
    if not fit.alpha_ci:
        return None
    u, y = np.asarray(x, dtype=float) / fit.x_ref, np.asarray(y, dtype=float)
    preds = []
    for a in np.geomspace(fit.alpha_ci[0], fit.alpha_ci[1], samples):
        e, a_ref, _ = _profile(u, y, float(a))
        preds.append(e + a_ref * (at / fit.x_ref) ** -a)
    return [float(min(preds)), float(max(preds))]


def fit_pure_power_law(x, y) -> dict:
    """log y = log A - alpha log x by ordinary least squares: {"A", "alpha", "alpha_ci" (the slope's t interval on
    n - 2 degrees of freedom), "n"}; n >= 3."""
    x, y = _checked(x, y)
    lx, ly = np.log(x), np.log(y)
    n = len(lx)
    xm = lx.mean()
    sxx = float(((lx - xm) ** 2).sum())
    slope = float(((lx - xm) * (ly - ly.mean())).sum()) / sxx
    intercept = float(ly.mean() - slope * xm)
    resid = ly - intercept - slope * lx
    se = math.sqrt(float(resid @ resid) / (n - 2) / sxx)
    half = t975(n - 2) * se
    with np.errstate(over="ignore"):
        a = float(np.exp(intercept))
    _finite("A*x^-alpha", A=a if a > 0 else math.nan, alpha=slope, alpha_ci=half)  # A = 0: exp underflowed
    alpha = -slope + 0.0  # + 0.0: a flat sweep's slope is 0, never "-0"
    return {"A": a, "alpha": alpha, "alpha_ci": [alpha - half + 0.0, alpha + half + 0.0], "n": n}
