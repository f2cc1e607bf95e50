"""Comparing runs (xlt.dashboards.compare): the table and the best-so-far curve on hand-built
tables with known answers, the page from two run directories, and errors."""

import math

import pytest

from tests.helpers import run_cli
from tests.test_dashboards import fake_run, table, trial_rows
from xlt.dashboards import compare

SETS = (("xquad-ru", "ru"), ("xquad-zh", "zh"))


def run_rows(study: str, finals: list[float], eval_sets=SETS, hours: float = 1.0) -> list[dict]:
    rows = []
    for i, f1 in enumerate(finals):
        for r in trial_rows(f"t{i}", [(1e12, f1 - 5), (2e12, f1)], eval_sets=eval_sets, hours_per_flop=hours / 2e12):
            rows.append({**r, "study": study, "time": r["time"] + 1000 * i})
    return rows


def test_final_comparison_best_mean_spread_and_difference(tmp_path):
    a = table(tmp_path, run_rows("ru", [40.0, 50.0]))
    b = table(tmp_path, run_rows("zh", [55.0, 45.0, 47.0]))
    got = compare.final_comparison({"A": a, "B": b})
    assert list(got.index) == ["xquad-ru", "xquad-zh"]
    assert got.loc["xquad-ru", ("A", "best f1")] == 50 and got.loc["xquad-ru", ("A", "mean")] == 45
    assert got.loc["xquad-ru", ("A", "sd")] == pytest.approx(math.sqrt(50))
    assert got.loc["xquad-ru", ("B", "best f1")] == 55 and got.loc["xquad-ru", ("B", "trials")] == 3
    assert got.loc["xquad-ru", ("B", "Δ best")] == 5 and got.loc["xquad-zh", ("B", "Δ best")] == 5  # zh is 20 lower in both
    assert ("A", "Δ best") not in got.columns


def test_only_shared_eval_sets_are_compared_and_the_rest_listed(tmp_path):
    a = table(tmp_path, run_rows("ru", [40.0], eval_sets=SETS))
    b = table(tmp_path, run_rows("en", [60.0], eval_sets=(("xquad-en", "en"), ("xquad-ru", "ru"))))
    common, others = compare.shared_sets({"A": a, "B": b})
    assert common == ["xquad-ru"] and others == {"A": ["xquad-zh"], "B": ["xquad-en"]}
    assert list(compare.final_comparison({"A": a, "B": b}).index) == ["xquad-ru"]


def test_best_so_far_against_cumulative_hours(tmp_path):
    t = table(tmp_path, run_rows("ru", [40.0, 35.0, 52.0], hours=2.0))
    c = compare.best_so_far(t, "xquad-ru")
    assert c["trial_id"].tolist() == ["t0", "t1", "t2"]
    assert c["cumulative_hours"].tolist() == pytest.approx([2.0, 4.0, 6.0])
    assert c["best"].tolist() == [40.0, 40.0, 52.0]
    assert compare.best_so_far(t, "missing").empty


def test_labels_tell_apart_runs_of_one_study(tmp_path):
    assert compare.labels(["s", "s", "t"], [tmp_path / "a", tmp_path / "b", tmp_path / "c"]) == ["s (a)", "s (b)", "t"]


def test_xlt_dashboard_with_two_runs_writes_one_comparison_page(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    a = fake_run(tmp_path / "one", run_rows("demo", [40.0, 50.0]), optuna_trials=0)
    b = fake_run(tmp_path / "two", run_rows("demo", [44.0]), optuna_trials=0)
    out = tmp_path / "cmp.html"
    code, printed, err = run_cli("dashboard", str(a), str(b), "--out", str(out))
    assert code == 0, err
    page = out.read_text(encoding="utf-8")
    assert "<section id='comparison'>" in page and 'id="fig-compare-best-so-far"' in page
    assert "lc_demo (one/run) vs lc_demo (two/run)" in page  # one study name, told apart by directory
    code, _, err = run_cli("dashboard", str(a), str(tmp_path / "missing"), "--out", str(out))
    assert code == 2 and "no such run directory" in err and len(err.strip().splitlines()) == 1
