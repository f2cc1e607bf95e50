"""Claims judged from hand-built results tables with known answers: every verdict of every kind,
seed spread, missing data."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import TypeAdapter

from tests.test_dashboards import LANGS, adapt_rows, learning_curve_rows, table, trial_rows
from xlt.dashboards.claims import FAILS, HOLDS, NO_DATA, judge, judge_all, matches
from xlt.spec import Bounds, Claim

CLAIM = TypeAdapter(Claim)


def claim(**kw: Any):
    return CLAIM.validate_python(kw)


def order(**kw: Any):
    base = {"kind": "order", "text": "+English beats target-only", "eval_set": "sberquad-dev",
            "better": {"where": {"data.with_english": True}, "label": "+English"},
            "worse": {"where": {"data.with_english": False}, "label": "target only"}}
    return claim(**{**base, **kw})


def adapt_table(tmp_path, rows: list[dict[str, Any]] | None = None):
    """adapt_rows() with step-2 evaluations at steps 0, 100, ...: step 0 is the un-adapted baseline."""
    rows = adapt_rows() if rows is None else rows
    for r in rows:
        if r["stage"] == "step2":
            r["step"] = 100 * r["event"]
    return table(tmp_path, rows)


def ratio(**kw: Any):
    base = {"kind": "ratio", "text": "MiniJoint reaches 60% of BaseLarge with at most half its step-2 FLOPs",
            "eval_set": "xnli-ru", "subject": {"where": {"adapt.method": "mini_joint"}},
            "reference": {"where": {"adapt.method": "base_large"}}, "quality": 0.6, "compute": 0.5}
    return claim(**{**base, **kw})


def lift(**kw: Any):
    base = {"kind": "lift", "text": "step 2 lifts ru F1 by >= 5", "eval_set": "xnli-ru", "delta": 5}
    return claim(**{**base, **kw})


# ---------------------------------------------------------------- selectors


def test_where_conditions():
    assert matches(800, Bounds(le=1000)) and not matches(1200, Bounds(le=1000))
    assert matches(5, Bounds(gt=0, lt=10)) and not matches(0, Bounds(gt=0)) and matches(0, Bounds(ge=0))
    assert not matches(None, Bounds(le=1)) and not matches(float("nan"), Bounds(le=1)) and not matches("a", Bounds(le=1))
    assert matches("mini_post", ("mini_joint", "mini_post")) and not matches("base_large", ("mini_joint",))
    assert matches(True, True) and not matches(False, True) and matches(100.0, 100) and matches(None, None)


# ---------------------------------------------------------------- order


def test_order_holds_per_target_count(tmp_path):
    df = table(tmp_path, learning_curve_rows())  # +English is 8 F1 above target-only at every count and seed
    v = judge(order(where={"data.target_count": {"gt": 0, "le": 1000}}), df)
    assert v.verdict == HOLDS
    assert [c.label for c in v.cells] == ["target_count=100", "target_count=1000"]
    assert "target_count=100: +English 49.04 vs target only 41.04, diff +8.00 > margin 0 (n=2 vs 2)" in v.numbers
    assert "2 of 2 cells hold" in v.detail
    # seeds 0 and 1 on both sides, paired: the difference is 8 for both
    assert v.cells[0].spread.startswith("diff +8 ± 0 (+8..+8) over 2 seeds") and not v.within_spread


def test_order_does_not_hold_with_a_margin(tmp_path):
    df = table(tmp_path, learning_curve_rows())
    v = judge(order(margin=10), df)
    assert v.verdict == FAILS and "diff +8.00 <= margin 10" in v.numbers and "0 of 3 cells hold" in v.detail
    # the English-only point (count 0) has no target-only partner
    assert "no partner for target_count=0" in v.detail


def test_order_pooled_and_require_any(tmp_path):
    df = table(tmp_path, learning_curve_rows())
    pooled = judge(order(pair_by=[], where={"data.target_count": {"gt": 0}}), df)
    assert pooled.verdict == HOLDS and [c.label for c in pooled.cells] == ["all trials"]
    # worse on purpose: target-only "beats" +English nowhere; with require any still nowhere
    flipped = order(better={"where": {"data.with_english": False}}, worse={"where": {"data.with_english": True}},
                    require="any", where={"data.target_count": [100, 5000]})
    v = judge(flipped, df)
    assert v.verdict == FAILS and [c.label for c in v.cells] == ["target_count=100", "target_count=5000"]


def test_order_not_enough_data(tmp_path):
    df = table(tmp_path, learning_curve_rows())
    assert judge(order(eval_set="xquad-zh"), df).verdict == NO_DATA
    v = judge(order(better={"where": {"model": "rubert"}}), df)
    assert v.verdict == NO_DATA and "no trials match model=rubert" in v.detail
    # sides that share no value of a parameter that varies in both: no cell
    v = judge(order(better={"where": {"data.target_count": [100, 1000], "data.with_english": False}},
                    worse={"where": {"data.target_count": [0, 5000], "data.with_english": True}}), df)
    assert v.verdict == NO_DATA and "pair_by: []" in v.detail
    # the worse side's final rows have no F1
    rows = [r if r["with_english"] or r["stage"] != "final" else {**r, "f1": None} for r in learning_curve_rows()]
    v = judge(order(where={"data.target_count": 100}), table(tmp_path, rows))
    assert v.verdict == NO_DATA and "no final f1 of target only" in v.numbers


def seeded(values: dict[str, list[float]], **columns: Any) -> list[dict[str, Any]]:
    """Final F1 per arm and seed on one eval set ("dev", en)."""
    rows = []
    for arm, scores in values.items():
        for seed, f1 in enumerate(scores):
            rows += trial_rows(f"{arm}-{seed}", [(1e12, f1)], seed=seed, params=json.dumps(
                {"model.name": arm, "train.seed": seed}), model=arm, eval_sets=(("dev", "en"),), **columns)
    return rows


def by_model(**kw: Any):
    return claim(**{"kind": "order", "text": "e5 above MiniLM", "eval_set": "dev",
                    "better": {"where": {"model.name": "e5"}}, "worse": {"where": {"model.name": "minilm"}}, **kw})


def test_order_within_seed_spread(tmp_path):
    # diffs per seed -1, +6, -3: the means say +0.67 (holds), one seed std is 4.7, and 2 seeds disagree
    df = table(tmp_path, seeded({"e5": [50, 56, 52], "minilm": [51, 50, 55]}))
    v = judge(by_model(), df)
    assert v.verdict == HOLDS and v.within_spread
    assert "diff +0.67 > margin 0" in v.numbers
    assert "within seed spread: all trials" in v.detail and "2 of 3 seeds disagree" in v.detail
    assert "diff +0.667 ± 4.7 (-3..+6) over 3 seeds" in v.detail
    # clearly apart: every seed agrees and the gap is many std
    v = judge(by_model(), table(tmp_path, seeded({"e5": [60, 61, 62], "minilm": [50, 50.5, 51]})))
    assert v.verdict == HOLDS and not v.within_spread and "within seed spread" not in v.detail
    # the other way round, within spread: does not hold, and says so
    v = judge(by_model(margin=1), df)
    assert v.verdict == FAILS and v.within_spread and "within seed spread" in v.detail


def test_order_seed_spread_against_a_single_seed(tmp_path):
    # three e5 seeds against one MiniLM run: each e5 seed against MiniLM's value
    df = table(tmp_path, seeded({"e5": [54, 56, 58], "minilm": [50]}))
    v = judge(by_model(), df)
    assert v.verdict == HOLDS and "diff +6 ± 2 (+4..+8) over 3 seeds" in v.detail
    one = judge(by_model(), table(tmp_path, seeded({"e5": [54], "minilm": [50]})))
    assert one.verdict == HOLDS and "one seed per side: no seed spread" in one.detail


# ---------------------------------------------------------------- ratio


def test_ratio_holds_per_depth(tmp_path):
    df = adapt_table(tmp_path)
    v = judge(ratio(), df)
    # BaseLarge's final ru F1 is 45 at 4e13 step-2 FLOPs; 60% of it is 27
    assert v.verdict == HOLDS and [c.label for c in v.cells] == ["depth=2", "depth=4", "depth=6"]
    depth4 = v.cells[1].numbers
    assert "reaches 27.00 (= 0.6 x method=base_large 45.00) at 1.33e+13 flops_stage = 0.333 x" in depth4
    assert "4e+13 (<= 0.5 needed)" in depth4


def test_ratio_does_not_hold(tmp_path):
    df = adapt_table(tmp_path)
    strict = judge(ratio(compute=0.2), df)  # only depth 2 (0.167) is cheap enough
    assert strict.verdict == FAILS and "1 of 3 cells hold" in strict.detail
    assert judge(ratio(compute=0.2, require="any"), df).verdict == HOLDS
    never = judge(ratio(quality=0.95), df)  # 42.75: no mini-model gets there
    assert never.verdict == FAILS and "never reaches 42.75" in never.numbers
    # against the reference's own time to 60%: BaseLarge is there at its first evaluation (1e13)
    reach = judge(ratio(reference_cost="reach"), df)
    assert reach.verdict == FAILS and "= 1.333 x method=base_large's 1e+13" in reach.numbers


def test_ratio_not_enough_data(tmp_path):
    df = adapt_table(tmp_path)
    assert judge(ratio(stage="qa"), df).verdict == NO_DATA  # no curve rows of that stage
    assert judge(ratio(reference={"where": {"adapt.method": "base_small"}}), df).verdict == NO_DATA
    rows = [r for r in adapt_rows() if not (r["method"] == "base_large" and r["stage"] == "final")]
    v = judge(ratio(), adapt_table(tmp_path, rows))
    assert v.verdict == NO_DATA and "needs method=base_large's final f1" in v.numbers


def test_ratio_seed_spread(tmp_path):
    rows = []
    for seed, bump in ((0, 0.0), (1, 6.0)):  # seed 1 of MiniJoint climbs faster
        for method, depth, top in (("base_large", 4, 50.0), ("mini_joint", 2, 45.0)):
            scale = 1.0 if method == "base_large" else 0.25
            curve = [(0.0, 5.0)] + [(1e13 * scale * (i + 1), top - 15 + 5 * i + (bump if method == "mini_joint" else 0))
                                    for i in range(4)]
            rows += trial_rows(f"{method}-{seed}", curve, eval_sets=(("xnli-ru", "ru"),), stage="step2",
                               flops_col="flops_stage", task="adapt", method=method, depth=depth, seed=seed,
                               target_lang="ru", params=json.dumps({"adapt.method": method, "train.seed": seed}))
    v = judge(ratio(quality=0.9, compute=0.5), adapt_table(tmp_path, rows))
    # mean curve 33, 38, 43, 48 vs 0.9 x 50 = 45: reached at 1e13 = 0.25 x 4e13; seed 0 (45 at 1e13), seed 1 (47 at 7.5e12)
    assert v.verdict == HOLDS and "= 0.250 x" in v.numbers
    assert "cost ratio +0.219 ± 0.044 (+0.188..+0.25) over 2 seeds" in v.detail


# ---------------------------------------------------------------- lift


def test_lift_holds_and_fails(tmp_path):
    df = adapt_table(tmp_path)
    v = judge(lift(where={"adapt.method": "base_large"}), df)
    assert v.verdict == HOLDS and "step2 step 0 -10.00 -> final 45.00, lift +55.00 >= 5 (n=1)" in v.numbers
    assert "one seed per side" in v.detail
    per_depth = judge(lift(where={"adapt.method": ["mini_joint", "mini_post"]}, delta=40), df)
    # one cell per method and depth; mini_post at depth 2 lifts 38.3 only
    assert per_depth.verdict == FAILS and len(per_depth.cells) == 6
    assert [c.ok for c in per_depth.cells if c.label == "method=mini_post, depth=2"] == [False]
    assert judge(lift(where={"adapt.method": "mini_joint"}, delta=40, require="any"), df).verdict == HOLDS


def test_lift_not_enough_data(tmp_path):
    qa = table(tmp_path, learning_curve_rows())  # QA trials have no step-2 baseline
    v = judge(lift(eval_set="sberquad-dev"), qa)
    assert v.verdict == NO_DATA and "no trial has both a step2 step 0 and a final f1" in v.numbers
    df = adapt_table(tmp_path)
    assert judge(lift(baseline={"stage": "step2", "step": 7}), df).verdict == NO_DATA


def test_lift_seed_spread(tmp_path):
    rows = []
    for seed, top in ((0, 14.0), (1, 20.0), (2, 8.0)):  # lifts 4, 10, -2 from a baseline of 10
        rows += trial_rows(f"mj-{seed}", [(0.0, 10.0), (1e12, top)], eval_sets=(("xnli-ru", "ru"),), stage="step2",
                           flops_col="flops_stage", task="adapt", method="mini_joint", depth=2, seed=seed,
                           params=json.dumps({"adapt.method": "mini_joint", "train.seed": seed}))
    v = judge(lift(), adapt_table(tmp_path, rows))
    assert v.verdict == FAILS and "lift +4.00 < 5 (n=3)" in v.numbers
    assert v.within_spread and "lift +4 ± 6 (-2..+10) over 3 seeds; 1 of 3 seeds disagree" in v.detail


def test_judge_all_table(tmp_path):
    df = table(tmp_path, learning_curve_rows())
    out = judge_all([order(source="DeepPavlov 2020, Fig. 2"), order(eval_set="nope")], df)
    assert list(out["verdict"]) == [HOLDS, NO_DATA]
    assert list(out.columns) == ["kind", "text", "source", "metric", "eval_set", "verdict", "numbers", "detail",
                                 "within_spread"]
    assert out["source"].iloc[0] == "DeepPavlov 2020, Fig. 2"


def test_eval_sets_other_than_the_claims_are_ignored(tmp_path):
    # LANGS has squad-dev and sberquad-dev; a claim on squad-dev sees only its rows
    rows = trial_rows("a", [(1e12, 70)], eval_sets=LANGS, with_english=True) + trial_rows(
        "b", [(1e12, 60)], eval_sets=LANGS, with_english=False)
    v = judge(order(eval_set="squad-dev"), table(tmp_path, rows))
    assert v.verdict == HOLDS and "diff +10.00" in v.numbers
    with pytest.raises(ValueError):
        order(kind="nope")


def test_cells_come_in_parameter_order(tmp_path):
    rows = []
    for i, count in enumerate((1000, 20, 300)):  # trial ids in another order than the counts
        for english in (True, False):
            rows += trial_rows(f"t{i}{int(english)}", [(1e12, 50 + count / 100 + (5 if english else 0))],
                               eval_sets=(("sberquad-dev", "ru"),), target_count=count, with_english=english,
                               params=json.dumps({"data.target_count": count, "data.with_english": english}))
    v = judge(order(), table(tmp_path, rows))
    assert [c.label for c in v.cells] == ["target_count=20", "target_count=300", "target_count=1000"]
