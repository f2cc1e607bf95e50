"""Pareto hypervolume and best-so-far against cumulative device-hours (xlt.dashboards.search_progress)
on hand-built tables with known answers."""

import pandas as pd
import pytest

from xlt.dashboards import search_progress as sp


def test_hypervolume_known_area():
    pts = [(1, 50), (2, 80), (3, 60), (4, 90), (6, 100)]  # (3, 60) dominated, (6, 100) beyond the reference
    # strips: [1, 2] x 50 + [2, 4] x 80 + [4, 5] x 90
    assert sp.hypervolume(pts, (5, 0)) == pytest.approx(50 + 160 + 90)
    assert sp.hypervolume(pts, (5, 40)) == pytest.approx(10 + 80 + 50)
    assert sp.hypervolume([], (5, 0)) == 0
    assert sp.hypervolume([(1, 50), (1, 70)], (2, 0)) == pytest.approx(70)  # same compute: the better one


def rows(trial, flops, hours, f1, ended):
    base = {"trial_id": trial, "task": "qa", "eval_set": "dev", "flops_train": flops, "flops_stage": flops,
            "device_seconds": 3600 * hours, "f1": f1, "time": ended}
    return [{**base, "stage": "qa", "is_final": False, "f1": f1 / 2, "time": ended - 1},
            {**base, "stage": "final", "is_final": True}]


def test_progress_orders_by_end_and_accumulates_device_hours():
    df = pd.DataFrame(rows("b", 2.0, 0.5, 80.0, 20.0) + rows("a", 1.0, 0.25, 50.0, 10.0)
                      + rows("c", 4.0, 1.0, 90.0, 30.0) + rows("d", 3.0, 0.25, 60.0, 40.0))
    p = sp.progress(df)
    assert p["trial_id"].tolist() == ["a", "b", "c", "d"]
    assert p["cum_hours"].tolist() == pytest.approx([0.25, 0.75, 1.75, 2.0])
    assert p["best_f1"].tolist() == [50, 80, 90, 90]
    ref_x = 1.1 * 4.0
    assert p["ref_x"].iloc[0] == pytest.approx(ref_x)
    box = ref_x * 100
    expect = [sp.hypervolume([(1, 50)], (ref_x, 0)), 1 * 50 + (ref_x - 2) * 80,
              1 * 50 + 2 * 80 + (ref_x - 4) * 90, 1 * 50 + 2 * 80 + (ref_x - 4) * 90]  # d is dominated
    assert p["hypervolume"].tolist() == pytest.approx([e / box for e in expect])


def test_one_trial_has_no_progress():
    assert sp.progress(pd.DataFrame(rows("a", 1.0, 0.25, 50.0, 10.0))).empty
