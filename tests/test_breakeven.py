"""Break-even across target languages (xlt.breakeven, xlt.dashboards.breakeven) on hand-built
tables with known answers."""

import math

import pandas as pd
import pytest

from xlt import breakeven
from xlt.dashboards import breakeven as be


def curve(trial, method, depth, one_off, flops, f1, lang="ru"):
    """A trial's step-2 rows on its target set (and one English row and a step-3 row, both ignored)."""
    rows = [{"trial_id": trial, "method": method, "depth": depth, "stage": "step2", "eval_set": f"xquad-{lang}",
             "eval_lang": lang, "target_lang": lang, "f1": y, "flops_stage": float(x), "flops_train": one_off + x}
            for x, y in zip(flops, f1, strict=True)]
    rows.append({**rows[-1], "eval_set": "xquad-en", "eval_lang": "en", "f1": 1.0})  # not the target
    rows.append({**rows[0], "stage": "step3", "f1": 100.0, "flops_stage": 1.0})  # not step 2
    return rows


def table():
    return pd.DataFrame(
        curve("bl", "base_large", 2, 100.0, [0, 10, 20, 30], [0, 50, 80, 100])  # 95 first at 30
        + curve("mj", "mini_joint", 2, 150.0, [0, 4, 8, 12], [0, 90, 96, 98])  # 93.1 first at 8
        + curve("mp", "mini_post", 2, 105.0, [0, 5, 10], [0, 97, 97])  # at 5
        + curve("bs", "base_small", 2, 20.0, [0, 40, 80], [0, 10, 50]))  # at 80


def test_arms_measure_one_off_per_language_and_quality():
    arms = be.arms(table()).set_index("arm")
    assert list(arms.index) == ["base_large", "mini_joint k=2", "mini_post k=2", "base_small k=2"]
    assert arms["one_off"].to_dict() == {"base_large": 100, "mini_joint k=2": 150, "mini_post k=2": 105,
                                         "base_small k=2": 20}
    assert arms["per_language"].to_dict() == {"base_large": 30, "mini_joint k=2": 8, "mini_post k=2": 5,
                                              "base_small k=2": 80}
    assert arms.loc["mini_joint k=2", "retention"] == pytest.approx(0.98)
    assert arms.loc["mini_joint k=2", "cost_share"] == pytest.approx(8 / 30)
    # MiniPost shares BaseLarge's primary and step 3: it adds only its post layer once
    assert arms.loc["mini_post k=2", "one_off_extra"] == pytest.approx(5)
    assert arms.loc["mini_joint k=2", "one_off_extra"] == pytest.approx(150)


def test_break_even_verdicts():
    v = be.with_verdicts(be.arms(table())).set_index("arm")
    # MiniJoint: 150 + 8N < 100 + 30N from N = 3 (166 vs 160 at 2, 174 vs 190 at 3)
    assert (v.loc["mini_joint k=2", "verdict"], v.loc["mini_joint k=2", "break_even"]) == ("from", 3)
    assert v.loc["mini_post k=2", "verdict"] == "always"
    # BaseSmall: cheaper once (100 < 130) but dearer per language: only up to 1 (180 vs 160 at 2)
    assert (v.loc["base_small k=2", "verdict"], v.loc["base_small k=2", "break_even"]) == ("up_to", 1)
    assert v.loc["base_large", "verdict_text"] == "reference"


def test_tau_moves_the_near_max_point():
    arms = be.arms(table(), tau=0.5).set_index("arm")
    assert arms.loc["base_large", "per_language"] == 10  # 50 >= 0.5 x 100


@pytest.mark.parametrize("args, kind, n", [
    ((200, 40, 100, 30), "never", None),  # dearer once and per language
    ((100, 30, 100, 30), "never", None),  # a tie is not cheaper
    ((90, 30, 100, 30), "always", 1),
    ((110, 29, 100, 30), "from", 11),  # 110 + 29N < 100 + 30N  <=>  N > 10
    ((100, 20, 100, 30), "always", 1),
    ((10, 40, 100, 30), "up_to", 8),  # 10 + 40N < 100 + 30N  <=>  N < 9
    ((50, 40, 100, 30), "up_to", 4),  # N < 5
    ((math.nan, 1, 100, 30), "no_reference", None),
])
def test_break_even_rule(args, kind, n):
    v = breakeven.break_even(*args)
    assert (v.kind, v.languages) == (kind, n)
    if kind == "no_reference":
        return
    one, per, ref_one, ref_per = args  # the verdict is the exact crossing, checked by brute force
    cheaper = [breakeven.total(one, per, k) < breakeven.total(ref_one, ref_per, k) for k in range(1, 40)]
    expect = {"never": [False] * 39, "always": [True] * 39,
              "from": [k >= (n or 0) for k in range(1, 40)], "up_to": [k <= (n or 0) for k in range(1, 40)]}[kind]
    assert cheaper == expect


def test_totals_and_the_paper_line():
    arms = be.arms(table())
    t = be.totals(arms, n_max=3)
    assert t[t["arm"] == "mini_joint k=2"]["total"].tolist() == [158, 166, 174]
    ref = be.paper_reference(arms, 2)
    assert ref["total"].tolist() == pytest.approx([100 + 0.372 * 30, 100 + 2 * 0.372 * 30])
    assert be.horizon(be.with_verdicts(arms)) == 10


def test_no_reference_and_no_rows():
    rows = table()
    v = be.with_verdicts(be.arms(rows[rows["method"] != "base_large"]))
    assert set(v["verdict"]) == {"no_reference"} and v["retention"].isna().all()
    assert be.arms(rows.iloc[0:0]).empty


def test_estimate_prices_break_even_with_its_own_cost_model():
    from tests.helpers import ROOT
    from xlt.spec import load_spec, trial_spec
    from xlt.study.estimate import estimate, format_estimate, trial_cost

    spec = load_spec(ROOT / "studies" / "minimodel_quickstart.yaml")
    est = estimate(spec)
    arms = {a["arm"]: a for a in est["breakeven"]}
    assert arms["base_large"]["verdict"] == "reference"
    for row in est["trials"]:
        cost = trial_cost(trial_spec(spec, row["params"]))
        a = trial_spec(spec, row["params"]).adapt
        arm = arms[a.method if a.method == "base_large" else f"{a.method} k={a.depth}"]
        assert arm["one_off"] == pytest.approx(cost["stages"]["step1"] + cost["stages"]["step3"])
        assert arm["per_language"] == pytest.approx(cost["stages"]["step2"])
        if a.method != "base_large":
            ref = arms["base_large"]
            v = breakeven.break_even(arm["one_off"], arm["per_language"], ref["one_off"], ref["per_language"])
            assert arm["break_even"] == v.languages
    text = format_estimate(est)
    assert "break-even across target languages" in text and "37.2%" in text


def test_page_draws_break_even_for_an_adaptation_study(tmp_path):
    from tests.test_dashboards import adapt_rows, fake_run
    from xlt.dashboards import main_dashboard

    page = main_dashboard(str(fake_run(tmp_path, adapt_rows(), optuna_trials=0)), str(tmp_path / "p.html")).read_text()
    section = page.split("<section id='breakeven'>")[1].split("</section>")[0]
    assert 'id="fig-breakeven"' in section and "37.2%" in section and "tau = 0.95" in section
    assert "mini_joint k=2" in section and "reference" in section
    assert 'id="fig-search-progress"' in page
