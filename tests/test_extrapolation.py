"""Learning-curve extrapolation on synthetic curves with known parameters, and on degenerate ones."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.test_dashboards import table, trial_rows
from xlt.dashboards import extrapolation as X
from xlt.dashboards import views

SIZES = np.array([100, 200, 400, 800, 1600, 3200])
A, B, C = 80.0, 300.0, 0.5


def curve(n):
    return A - B * np.asarray(n, dtype=float) ** -C


def noisy(seeds: int = 3, sd: float = 0.7, rng: int = 1):
    n = np.repeat(SIZES, seeds)
    return n, curve(n) + np.random.default_rng(rng).normal(0, sd, len(n))


def test_exact_curve_recovers_its_parameters():
    fit = X.fit_power_law(SIZES, curve(SIZES))
    assert (fit.a, fit.b, fit.c) == pytest.approx((A, B, C), rel=1e-4)
    assert fit.needed(76.0) == pytest.approx((B / 4.0) ** 2)  # 80 - 300 / sqrt(n) = 76 at n = 5625
    assert fit.needed(80.0) == math.inf and fit.needed(A + 1) == math.inf


def test_noisy_seeds_recover_within_tolerance_and_bands_cover_the_truth():
    n, y = noisy()
    ext = X.extrapolate(n, y)
    assert ext.trustworthy and ext.reason == "" and ext.sizes == tuple(SIZES) and ext.n_obs == 18
    assert ext.fit.a == pytest.approx(A, abs=2) and ext.fit.c == pytest.approx(C, abs=0.15)
    assert len(ext.boot) == 200
    for m in (2.0, 10.0):
        mid, lo, hi = ext.at[m]
        truth = float(curve(m * 3200))
        assert lo <= truth <= hi and mid == pytest.approx(truth, abs=1.0) and lo < mid < hi
    # default target without an upper bound: 95% of the fitted asymptote
    assert ext.target == pytest.approx(0.95 * ext.fit.a) and ext.target_rule.startswith("95% of the asymptote")
    need, lo, hi = ext.needed
    true_need = (B / (A - ext.target)) ** (1 / C)
    assert lo <= true_need <= hi and need == pytest.approx(true_need, rel=0.3)
    band = ext.band([100, 6400])
    assert list(band.columns) == ["n", "f1", "lo", "hi"] and (band["lo"] <= band["f1"]).all()
    assert (band["hi"] - band["lo"]).iloc[1] > (band["hi"] - band["lo"]).iloc[0]  # wider out of the data


def test_target_from_the_upper_bound_and_given():
    n, y = noisy()
    ext = X.extrapolate(n, y, upper=77.0)
    assert ext.target == 75.0 and ext.target_rule == "upper bound 77.00 - 2"
    assert ext.needed[0] == pytest.approx(ext.fit.needed(75.0))
    given = X.extrapolate(n, y, target=99.0)  # above the asymptote: never reached
    assert given.needed[0] == math.inf and given.target_rule == "given"


def test_the_bootstrap_is_reproducible():
    n, y = noisy()
    assert X.extrapolate(n, y, seed=3).needed == X.extrapolate(n, y, seed=3).needed


@pytest.mark.parametrize("n, f1, reason", [
    (SIZES[:3], curve(SIZES[:3]), "3 distinct sizes (needs >= 4)"),
    (np.repeat(SIZES[:3], 4), np.repeat(curve(SIZES[:3]), 4), "3 distinct sizes"),
    ([], [], "0 distinct sizes"),
    (SIZES, [50, 60, 66, 58, 70, 72], "non-monotone: mean F1 falls from 66.0 at 400 to 58.0 at 800"),
    (SIZES, np.full(6, 50.0), "flat fit"),
    (SIZES, [10, 20, 30, 40, 50, 60], "no saturation in the data"),
])
def test_degenerate_curves_are_not_trustworthy(n, f1, reason):
    ext = X.extrapolate(n, f1)
    assert not ext.trustworthy and reason in ext.reason
    assert ext.band([100, 1000]).empty and math.isnan(ext.needed[0]) and ext.at == {}


def test_small_drops_within_seed_noise_are_monotone_enough():
    n, y = noisy(sd=1.5, rng=4)
    assert "non-monotone" not in X.extrapolate(n, y).reason
    nan = np.append(curve(SIZES), np.nan)  # a failed evaluation is dropped, not fitted
    assert X.extrapolate(np.append(SIZES, 6400), nan).trustworthy


def test_leave_largest_out():
    n, y = noisy(sd=0.3)
    hold = X.leave_largest_out(n, y)
    assert hold.trustworthy and hold.size == 3200
    assert hold.observed == pytest.approx(float(y[n == 3200].mean()))
    assert abs(hold.error) < 1.0 and hold.lo <= hold.predicted <= hold.hi
    short = X.leave_largest_out(SIZES[:4], curve(SIZES[:4]))  # 3 sizes left
    assert not short.trustworthy and "without the largest size: 3 distinct sizes" in short.reason
    assert math.isnan(short.error)


def lc_rows(sizes=(100, 200, 400, 800, 1600, 3200)):
    rows = []
    for count in (0, *sizes):
        for english in (True, False):
            if count == 0 and not english:
                continue
            for seed in (0, 1):
                f1 = (0.0 if count == 0 else A - B * count ** -C) + (5 if english else 0) + 0.3 * seed
                rows += trial_rows(f"c{count}-e{int(english)}-s{seed}", [(1e12, f1)],
                                   eval_sets=(("xquad-zh", "zh"),), target_lang="zh", target_count=count,
                                   with_english=english, seed=seed,
                                   params=json.dumps({"data.target_count": count, "data.with_english": english}))
    return rows


def test_learning_fits_per_arm(tmp_path):
    df = table(tmp_path, lc_rows())
    points = views.learning_points(df)
    assert set(points["series"]) == {"+English", "target only"} and len(points) == 2 * 2 * 6 + 2
    curve_, summary = X.learning_fits(points, views.learning_bounds(df), n_boot=60)
    s = summary.set_index("series")
    assert s["trustworthy"].all()
    upper = A - B * 3200 ** -C + 0.15  # the all-data target-only point, mean over seeds
    assert s.loc["target only", "target"] == pytest.approx(upper - 2)
    assert s.loc["target only", "a"] == pytest.approx(A + 0.15, abs=0.5)
    # +English is 5 F1 up everywhere: it needs fewer examples for the same target
    assert s.loc["+English", "needed"] < s.loc["target only", "needed"]
    assert s.loc["target only", "needed"] == pytest.approx((B / (A + 0.15 - upper + 2)) ** 2, rel=0.05)
    assert s.loc["target only", "holdout_size"] == 3200 and abs(s.loc["target only", "holdout_error"]) < 1
    assert set(curve_["series"]) == {"+English", "target only"}
    assert curve_["n"].min() == 100 and curve_["n"].max() == pytest.approx(32000)


def test_learning_fits_say_why_not(tmp_path):
    df = table(tmp_path, lc_rows(sizes=(100, 1000, 5000)))
    curve_, summary = X.learning_fits(views.learning_points(df), views.learning_bounds(df))
    assert curve_.empty and not summary["trustworthy"].any()
    assert set(summary["reason"]) == {"3 distinct sizes (needs >= 4)"}
    empty_curve, empty = X.learning_fits(views.learning_points(df.iloc[:0]), views.learning_bounds(df.iloc[:0]))
    assert empty_curve.empty and empty.empty
