"""Learning-curve extrapolation: a saturating power law fitted to final F1 vs target examples.

``F1(n) = a - b * n**(-c)`` with ``a <= 100`` (an F1 ceiling), ``b >= 0`` (F1 grows with data)
and ``c > 0`` (it saturates), fitted with scipy's ``curve_fit`` on every (size, seed) observation.
Uncertainty: a bootstrap over points and seeds (draw the distinct sizes with replacement, then,
within each drawn size, its seed runs with replacement; a draw with fewer than 3 distinct sizes is
drawn again), refitted each time; intervals are the central ``level`` (80%) of the refits.

A fit is *not trustworthy*, and nothing is extrapolated from it, when there are fewer than
``min_sizes`` (4) distinct sizes; when the seed-mean F1 falls from a size to a larger one by more
than max(1 F1, the pooled seed std) (non-monotone); when the fit fails, is flat (gains under
0.05 F1 beyond the smallest size) or does not saturate (its asymptote sits at the bound of 100);
or when fewer than half of the bootstrap refits succeed.

Pure: arrays and frames in, numbers out; ``views.learning_points`` gives the observations and
``views.learning_bounds`` the upper bound the default target is read from.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

LEVEL = 0.8
MIN_SIZES = 4
MULTIPLES = (2.0, 10.0)
DROP_TOLERANCE = 1.0  # F1 points a seed-mean curve may fall between sizes before it is "non-monotone"
BELOW_UPPER = 2.0  # default target: the upper bound - 2 F1 ...
OF_ASYMPTOTE = 0.95  # ... or, without an upper bound, 95% of the fitted asymptote
C_BOUNDS = (1e-3, 5.0)
FLAT = 0.05  # F1 points: a fit that gains less than this from the smallest size on is flat


@dataclass(frozen=True)
class Fit:
    """F1(n) = a - b * n**(-c), n in examples."""

    a: float
    b: float
    c: float

    def predict(self, n: np.ndarray | Sequence[float] | float) -> np.ndarray:
        return self.a - self.b * np.power(np.asarray(n, dtype=float), -self.c)

    def needed(self, target: float) -> float:
        """Examples at which the curve reaches ``target``: inf when the asymptote is not above it
        (within rounding: a fitted asymptote of 80.00000000000001 does not make 80 reachable)."""
        unreachable = target >= self.a - 1e-9 * max(1.0, abs(self.a))
        if unreachable or self.b <= 0:
            return math.inf if unreachable else 0.0
        return float((self.b / (self.a - target)) ** (1.0 / self.c))


def _model(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(x, -c)


def fit_power_law(n: Sequence[float], f1: Sequence[float], p0: Fit | None = None) -> Fit | None:
    """Least-squares fit of F1(n) = a - b n^-c within the saturating bounds; None if it fails.

    Sizes are scaled by the largest one while fitting (so b stays O(F1)) and b is returned in
    examples. Without ``p0`` a few starting exponents are tried and the best fit kept."""
    from scipy.optimize import curve_fit

    x = np.asarray(n, dtype=float)
    y = np.asarray(f1, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[ok], y[ok]
    if len(np.unique(x)) < 3:
        return None
    scale = float(x.max())
    xs = x / scale
    lo, hi = float(y.min()), float(y.max())
    a0 = min(100.0, hi + 0.1 * (hi - lo) + 0.5)
    if p0 is not None:
        starts = [(min(100.0, p0.a), p0.b * scale ** (-p0.c), min(max(p0.c, C_BOUNDS[0]), C_BOUNDS[1]))]
    else:
        starts = [(a0, max(a0 - float(y[xs == 1.0].mean()), 0.1), c) for c in (0.3, 0.7, 1.5)]
    best: tuple[float, np.ndarray] | None = None
    for start in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, _ = curve_fit(_model, xs, y, p0=start, bounds=([0.0, 0.0, C_BOUNDS[0]], [100.0, np.inf,
                                                                                                  C_BOUNDS[1]]),
                                      maxfev=5000)
        except (RuntimeError, ValueError):
            continue
        if not np.all(np.isfinite(params)):
            continue
        sse = float(np.sum((_model(xs, *params) - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, params)
    if best is None:
        return None
    a, b, c = (float(v) for v in best[1])
    return Fit(a, b * scale**c, c)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    if len(values) == 0:
        return math.nan, math.nan
    q = np.quantile(values, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")  # inf-safe: no interpolation
    return float(q[0]), float(q[1])


@dataclass(frozen=True)
class Extrapolation:
    """A fitted learning curve, or why it is not trustworthy (then ``fit`` may still be None)."""

    trustworthy: bool
    reason: str  # "" when trustworthy
    sizes: tuple[int, ...]
    n_obs: int
    fit: Fit | None = None
    boot: tuple[Fit, ...] = ()
    level: float = LEVEL
    target: float = math.nan
    target_rule: str = ""
    at: dict[float, tuple[float, float, float]] = field(default_factory=dict)  # multiple -> (F1, lo, hi)
    needed: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # examples (point, lo, hi)

    @property
    def largest(self) -> int:
        return max(self.sizes) if self.sizes else 0

    def band(self, ns: Sequence[float] | np.ndarray) -> pd.DataFrame:
        """The fitted curve and its bootstrap band at sizes ``ns``."""
        if self.fit is None or not self.trustworthy:
            return pd.DataFrame(columns=["n", "f1", "lo", "hi"])
        grid = np.asarray(ns, dtype=float)
        preds = np.array([b.predict(grid) for b in self.boot])
        lo = np.quantile(preds, (1 - self.level) / 2, axis=0)
        hi = np.quantile(preds, (1 + self.level) / 2, axis=0)
        return pd.DataFrame({"n": grid, "f1": self.fit.predict(grid), "lo": lo, "hi": hi})


def _non_monotone(x: np.ndarray, y: np.ndarray, tolerance: float) -> str:
    frame = pd.DataFrame({"n": x, "f1": y})
    stats = frame.groupby("n")["f1"].agg(["mean", "var", "size"])
    pooled = stats["var"][stats["size"] > 1]
    sd = math.sqrt(float(pooled.mean())) if len(pooled) else 0.0
    tol = max(tolerance, sd)
    best_n, best = None, -math.inf
    for n, mean in stats["mean"].items():
        if mean < best - tol:
            return (f"non-monotone: mean F1 falls from {best:.1f} at {best_n:g} to {mean:.1f} at {n:g} examples"
                    f" (more than {tol:.1f})")
        if mean > best:
            best_n, best = n, mean
    return ""


def extrapolate(n: Sequence[float], f1: Sequence[float], *, target: float | None = None,
                upper: float | None = None, level: float = LEVEL, n_boot: int = 200, seed: int = 0,
                min_sizes: int = MIN_SIZES, multiples: Sequence[float] = MULTIPLES,
                drop_tolerance: float = DROP_TOLERANCE) -> Extrapolation:
    """Fit one learning curve (observations: one per trial, size and F1) with bootstrap intervals.

    ``target`` for "examples needed": given, else ``upper - 2`` when an upper bound (all target
    data) is given, else 95% of the fitted asymptote."""
    x = np.asarray(n, dtype=float)
    y = np.asarray(f1, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[ok], y[ok]
    sizes = tuple(int(v) for v in np.unique(x))
    base: dict[str, Any] = {"sizes": sizes, "n_obs": len(x), "level": level}
    if len(sizes) < min_sizes:
        return Extrapolation(False, f"{len(sizes)} distinct sizes (needs >= {min_sizes})", **base)
    why = _non_monotone(x, y, drop_tolerance)
    if why:
        return Extrapolation(False, why, **base)
    fit = fit_power_law(x, y)
    if fit is None:
        return Extrapolation(False, "the power-law fit failed", **base)
    if fit.b * min(sizes) ** (-fit.c) < FLAT:
        return Extrapolation(False, "flat fit: F1 does not grow with the examples (b = 0)", fit=fit, **base)
    if fit.a >= 100.0 - 1e-6:
        return Extrapolation(False, "no saturation in the data: the fitted asymptote sits at the F1 bound of 100",
                             fit=fit, **base)
    rng = np.random.default_rng(seed)
    by_size = [np.flatnonzero(x == s) for s in np.unique(x)]
    boots: list[Fit] = []
    attempts = 0
    while len(boots) < n_boot and attempts < 5 * n_boot:
        attempts += 1
        chosen = rng.integers(0, len(by_size), len(by_size))
        if len(set(chosen.tolist())) < 3:
            continue
        idx = np.concatenate([rng.choice(by_size[i], len(by_size[i]), replace=True) for i in chosen])
        refit = fit_power_law(x[idx], y[idx], p0=fit)
        if refit is not None:
            boots.append(refit)
    if len(boots) < n_boot / 2:
        return Extrapolation(False, f"only {len(boots)} of {n_boot} bootstrap refits succeeded", fit=fit, **base)
    if target is None:
        if upper is not None and math.isfinite(upper):
            target, rule = upper - BELOW_UPPER, f"upper bound {upper:.2f} - {BELOW_UPPER:g}"
        else:
            target, rule = OF_ASYMPTOTE * fit.a, f"{OF_ASYMPTOTE:.0%} of the asymptote {fit.a:.2f}"
    else:
        rule = "given"
    largest = float(max(sizes))
    at = {}
    for m in multiples:
        preds = np.array([b.predict(m * largest) for b in boots], dtype=float)
        at[float(m)] = (float(fit.predict(m * largest)), *_interval(preds, level))
    needs = np.array([b.needed(target) for b in boots], dtype=float)
    needed = (fit.needed(target), *_interval(needs, level))
    return Extrapolation(True, "", fit=fit, boot=tuple(boots), target=float(target), target_rule=rule, at=at,
                         needed=needed, **base)


@dataclass(frozen=True)
class HoldOut:
    """The leave-largest-out check: fit without the largest size, predict it, compare."""

    size: int
    observed: float  # mean F1 over seeds at the largest size
    predicted: float
    lo: float
    hi: float
    trustworthy: bool
    reason: str

    @property
    def error(self) -> float:
        return self.predicted - self.observed


def leave_largest_out(n: Sequence[float], f1: Sequence[float], **kw) -> HoldOut:
    """Fit on every size but the largest (``extrapolate``'s rules and keywords) and predict it."""
    x = np.asarray(n, dtype=float)
    y = np.asarray(f1, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[ok], y[ok]
    if len(x) == 0:
        return HoldOut(0, math.nan, math.nan, math.nan, math.nan, False, "no observations")
    top = float(x.max())
    observed = float(y[x == top].mean())
    ext = extrapolate(x[x < top], y[x < top], multiples=(), target=0.0, **kw)
    if not ext.trustworthy or ext.fit is None:
        return HoldOut(int(top), observed, math.nan, math.nan, math.nan, False,
                       f"without the largest size: {ext.reason}")
    band = ext.band([top])
    return HoldOut(int(top), observed, float(band["f1"].iloc[0]), float(band["lo"].iloc[0]),
                   float(band["hi"].iloc[0]), True, "")


# ---------------------------------------------------------------- the learning-curve view's frames


def learning_fits(points: pd.DataFrame, bounds: pd.DataFrame, *, level: float = LEVEL, n_boot: int = 200,
                  grid: int = 60, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per eval set and series (``views.learning_points``): the drawn curve (eval_set, series, n, f1,
    lo, hi; from the smallest size to 10x the largest, trustworthy fits only) and one summary row
    (fit, F1 at 2x and 10x, examples needed for the target with its interval, leave-largest-out)."""
    curves, rows = [], []
    if points.empty:
        return (pd.DataFrame(columns=["eval_set", "series", "n", "f1", "lo", "hi"]), pd.DataFrame())
    uppers = {r["eval_set"]: float(r["f1"]) for _, r in bounds.iterrows() if r["bound"] == "upper"}
    pts = points[points["target_count"] > 0]
    for (eval_set, series), group in pts.groupby(["eval_set", "series"], sort=True):
        ext = extrapolate(group["target_count"], group["f1"], upper=uppers.get(eval_set), level=level, n_boot=n_boot,
                          **kw)
        hold = leave_largest_out(group["target_count"], group["f1"], level=level, n_boot=n_boot, **kw)
        row = {"eval_set": eval_set, "series": series, "trustworthy": ext.trustworthy, "reason": ext.reason,
               "sizes": len(ext.sizes), "n_obs": ext.n_obs, "largest": ext.largest, "level": level,
               "a": ext.fit.a if ext.fit else math.nan, "b": ext.fit.b if ext.fit else math.nan,
               "c": ext.fit.c if ext.fit else math.nan, "target": ext.target, "target_rule": ext.target_rule,
               "needed": ext.needed[0], "needed_lo": ext.needed[1], "needed_hi": ext.needed[2],
               "holdout_size": hold.size, "holdout_observed": hold.observed, "holdout_predicted": hold.predicted,
               "holdout_error": hold.error, "holdout_reason": hold.reason}
        for m in MULTIPLES:
            mid, lo, hi = ext.at.get(m, (math.nan, math.nan, math.nan))
            row |= {f"f1_{m:g}x": mid, f"f1_{m:g}x_lo": lo, f"f1_{m:g}x_hi": hi}
        rows.append(row)
        if ext.trustworthy:
            ns = np.geomspace(min(ext.sizes), max(MULTIPLES) * ext.largest, grid)
            curves.append(ext.band(ns).assign(eval_set=eval_set, series=series))
    curve = (pd.concat(curves, ignore_index=True)[["eval_set", "series", "n", "f1", "lo", "hi"]] if curves
             else pd.DataFrame(columns=["eval_set", "series", "n", "f1", "lo", "hi"]))
    return curve, pd.DataFrame(rows)
