"""Dashboards: the pure views on hand-built tables, the page from a fake run directory, errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.helpers import run_cli
from xlt import results
from xlt.dashboards import views
from xlt.errors import XltError

EVIL = "<script>alert(1)</script>"
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def trial_rows(trial_id: str, curve: list[tuple[float, float]], *, eval_sets=(("en-dev", "en"),), kept: int = -1,
               stage: str = "qa", hours_per_flop: float = 1e-12, flops_col: str = "flops_train",
               **columns: Any) -> list[dict[str, Any]]:
    """One trial's rows: an evaluation event per (flops, f1) point and eval set, then the final copy
    of the kept point. EM is F1 - 10; a second eval set scores 20 points lower."""
    base = {"study": "demo", "run_id": "run-1", "trial_id": trial_id, "task": "qa", "model": "mbert",
            "method": "finetune", "lr": 5e-5, "train_mode": "fixed", "seed": 0, "with_english": True,
            "xlt_version": "0.1.0", "hardware": "x86_64 2 cpus", "device_kind": "cpu", "n_devices": 1,
            "metric_mode": "xlt", "n_examples": 100, **columns}
    base.setdefault("params", json.dumps({"train.lr": base["lr"]}))
    rows = []
    for event, (flops, f1) in enumerate(curve):
        for k, (name, lang) in enumerate(eval_sets):
            score = f1 - 20 * k
            rows.append({**base, "stage": stage, "event": event, "step": 10 * (event + 1), "flops_train": flops,
                         flops_col: flops, "device_seconds": flops * hours_per_flop * 3600, "eval_set": name,
                         "eval_lang": lang, "f1": score, "exact_match": score - 10, "is_best": False,
                         "is_final": False, "time": T0 + 60 * event})
    last = curve[kept]
    for k, (name, lang) in enumerate(eval_sets):
        score = last[1] - 20 * k
        rows.append({**base, "stage": "final", "event": len(curve), "step": 10 * len(curve),
                     "flops_train": curve[-1][0], flops_col: curve[-1][0],
                     "device_seconds": curve[-1][0] * hours_per_flop * 3600, "eval_set": name, "eval_lang": lang,
                     "f1": score, "exact_match": score - 10, "is_best": True, "is_final": True,
                     "time": T0 + 60 * len(curve)})
    return rows


def table(tmp_path: Path, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Through parquet and back, so the views see the dtypes a real run gives them."""
    run = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
    run.mkdir()
    results.write_table(run, rows)
    return results.read_table(run)


LANGS = (("squad-dev", "en"), ("sberquad-dev", "ru"))


def learning_curve_rows() -> list[dict[str, Any]]:
    """A DeepPavlov-style learning curve: target counts x (target only, +English) x 2 seeds."""
    rows = []
    for count in (0, 100, 1000, 5000):
        for english in (True, False):
            if count == 0 and not english:
                continue
            for seed in (0, 1):
                f1 = 40 + 10 * math.log10(count + 1) + (8 if english else 0) + 2 * seed
                rows += trial_rows(f"c{count}-e{int(english)}-s{seed}", [(1e12 * (count + 1), f1 - 5),
                                                                        (2e12 * (count + 1), f1)],
                                   eval_sets=LANGS, target_lang="ru", target_count=count, with_english=english,
                                   seed=seed, train_mode="validated",
                                   params=json.dumps({"data.target_count": count, "data.with_english": english}))
    return rows


def adapt_rows() -> list[dict[str, Any]]:
    """A mini-model adaptation depth sweep: methods x depths, step-2 curves, final step-4 scores."""
    rows = []
    # base_large records the spec's adapt.depth (4) like the pipeline does, though it runs all 12 layers
    for method, depths, offset in (("mini_joint", (2, 4, 6), 0), ("base_large", (4,), 0), ("mini_post", (2, 4, 6), -3)):
        for depth in depths:
            scale = 1.0 if method == "base_large" else depth / 12
            # step 0 is the un-adapted baseline, evaluated before any step-2 compute
            curve = [(0.0, 10.0)] + [(1e13 * scale * (i + 1), 30 + offset + 20 * scale + 5 * i) for i in range(4)]
            rows += trial_rows(f"{method}-{depth}", curve, eval_sets=(("xnli-en", "en"), ("xnli-ru", "ru")),
                               stage="step2", flops_col="flops_stage", task="adapt", method=method, depth=depth,
                               target_lang="ru", params=json.dumps({"adapt.method": method, "adapt.depth": depth}))
    return rows


# ---------------------------------------------------------------- views


def test_fmt_reads_like_a_person_wrote_it():
    assert views.fmt(4.0) == "4"
    assert views.fmt(5e-5) == "5e-05"
    assert views.fmt(float("nan")) == "-"
    assert views.fmt(None) == "-"
    assert views.fmt(True) == "True"


def test_colour_parameter_is_the_one_that_varies(tmp_path):
    rows = trial_rows("a", [(1e12, 50)], lr=1e-4) + trial_rows("b", [(1e12, 60)], lr=3e-4)
    t = views.trials(table(tmp_path, rows))
    assert list(t["colour_by"].unique()) == ["lr"]
    assert list(t["colour"]) == ["lr=0.0001", "lr=0.0003"]
    assert "lr=0.0001" in t.loc[0, "label"] and t.loc[0, "label"].startswith("a (")
    # method beats lr: the adaptation papers compare methods
    rows = adapt_rows()
    assert views.trials(table(tmp_path, rows))["colour_by"].iloc[0] == "method"


def test_compute_points_exclude_final_rows_and_use_device_hours(tmp_path):
    rows = trial_rows("a", [(1e12, 50), (2e12, 70), (4e12, 60)], kept=1, hours_per_flop=1e-12)
    points = views.compute_points(table(tmp_path, rows))
    assert list(points["stage"].unique()) == ["qa"]
    assert list(points["flops"]) == [1e12, 2e12, 4e12]
    assert list(points["hours"]) == pytest.approx([1.0, 2.0, 4.0])
    assert points["flops_kind"].iloc[0] == "training FLOPs"


def test_adaptation_curves_use_step2_stage_flops(tmp_path):
    rows = adapt_rows()
    # step-1 rows with much larger flops_train must not be on the step-2 axis
    rows += trial_rows("mini_joint-2", [(1e18, 10)], stage="step1", task="adapt", method="mini_joint", depth=2,
                       eval_sets=(("xnli-en", "en"),))[:1]
    df = table(tmp_path, rows)
    points = views.compute_points(df)
    assert set(points["stage"]) == {"step2"}
    assert points["flops_kind"].iloc[0] == "step-2 training FLOPs"
    assert points["flops"].max() < 1e14


def test_frontier_is_the_upper_envelope_over_all_trials(tmp_path):
    rows = trial_rows("a", [(1e12, 50), (4e12, 60)]) + trial_rows("b", [(2e12, 55), (3e12, 52), (8e12, 58)])
    points = views.compute_points(table(tmp_path, rows))
    fr = views.frontier_points(points, "flops")
    f1 = fr[fr["metric"] == "f1"]
    assert list(zip(f1["x"], f1["y"], strict=True)) == [(1e12, 50), (2e12, 55), (4e12, 60)]
    assert set(fr["metric"]) == {"f1", "exact_match"}


def test_frontier_skips_zero_compute_points(tmp_path):
    rows = trial_rows("a", [(0.0, 5), (1e12, 50)])
    fr = views.frontier_points(views.compute_points(table(tmp_path, rows)), "flops")
    assert 0.0 not in set(fr["x"])


def test_time_to_near_max_marker_per_trial(tmp_path):
    rows = trial_rows("a", [(1e12, 10), (2e12, 96), (3e12, 100)]) + trial_rows("b", [(1e12, 50), (2e12, 50)])
    nm = views.near_max_points(views.compute_points(table(tmp_path, rows)), "flops", tau=0.95)
    f1 = nm[nm["metric"] == "f1"].set_index("trial_id")
    assert f1.loc["a", "x"] == 2e12 and f1.loc["a", "y"] == 96
    assert f1.loc["b", "x"] == 1e12
    strict = views.near_max_points(views.compute_points(table(tmp_path, rows)), "flops", tau=1.0)
    assert strict[(strict["metric"] == "f1") & (strict["trial_id"] == "a")]["x"].iloc[0] == 3e12


def test_dominated_points():
    xs = [1, 2, 3, 3, 4]
    ys = [50, 60, 55, 60, 70]
    # (3, 55) is beaten by (2, 60); (3, 60) by (2, 60) at less compute
    assert views.dominated(xs, ys) == [False, False, True, True, False]
    assert views.dominated([1, 1], [5, 5]) == [False, False]  # ties dominate nothing


def test_pareto_marks_dominated_trials_per_eval_set(tmp_path):
    rows = (trial_rows("cheap", [(1e12, 50)], eval_sets=LANGS) + trial_rows("good", [(4e12, 70)], eval_sets=LANGS)
            + trial_rows("waste", [(8e12, 60)], eval_sets=LANGS))
    par = views.pareto(table(tmp_path, rows))
    en = par[par["eval_set"] == "squad-dev"].set_index("trial_id")
    assert en["dominated"].to_dict() == {"cheap": False, "good": False, "waste": True}
    assert set(par["eval_set"]) == {"squad-dev", "sberquad-dev"}


def test_pareto_needs_two_trials(tmp_path):
    assert views.pareto(table(tmp_path, trial_rows("a", [(1e12, 50)]))).empty


def test_learning_curves_aggregate_over_seeds(tmp_path):
    df = table(tmp_path, learning_curve_rows())
    lc = views.learning_curves(df)
    # only the target language, only positive counts
    assert set(lc["eval_set"]) == {"sberquad-dev"}
    assert sorted(lc["target_count"].unique()) == [100, 1000, 5000]
    assert set(lc["series"]) == {"+English", "target only"}
    point = lc[(lc["series"] == "+English") & (lc["target_count"] == 100)].iloc[0]
    expected = [40 + 10 * math.log10(101) + 8 + 2 * s - 20 for s in (0, 1)]
    assert point["f1_mean"] == pytest.approx(sum(expected) / 2)
    assert point["f1_min"] == pytest.approx(min(expected)) and point["f1_max"] == pytest.approx(max(expected))
    assert point["f1_std"] == pytest.approx(math.sqrt(2))  # sample std of two values 2 apart
    assert point["n"] == 2 and point["seeds"] == 2
    bounds = views.learning_bounds(df).set_index("bound")
    assert bounds.loc["lower", "f1"] == pytest.approx(40 + 8 + 1 - 20)  # English only, mean over seeds
    assert bounds.loc["upper", "target_count"] == 5000
    assert bounds.loc["upper", "f1"] == pytest.approx(40 + 10 * math.log10(5001) + 1 - 20)  # target only


def test_learning_curves_need_a_count_sweep(tmp_path):
    rows = trial_rows("a", [(1e12, 50)], target_count=100, target_lang="ru", eval_sets=LANGS)
    assert views.learning_curves(table(tmp_path, rows)).empty
    assert views.learning_bounds(table(tmp_path, rows)).empty


def test_depth_sweep_per_method_and_language(tmp_path):
    ds = views.depth_sweep(table(tmp_path, adapt_rows()))
    assert set(ds["eval_lang"]) == {"ru"}  # the target language
    mj = ds[ds["method"] == "mini_joint"].set_index("depth")
    assert list(mj.index) == [2, 4, 6]
    assert mj.loc[4, "f1_mean"] == pytest.approx(30 + 20 * 4 / 12 + 15 - 20)
    assert mj.loc[6, "flops_mean"] == pytest.approx(4e13 * 0.5)  # step-2 FLOPs, not the total
    assert ds["flops_kind"].iloc[0] == "step-2 training FLOPs"
    full = ds[ds["method"] == "base_large"]  # a reference, not a point at its meaningless depth
    assert list(full["reference"]) == [True] and full["depth"].isna().all()
    assert full["f1_mean"].iloc[0] == pytest.approx(30 + 20 + 15 - 20) and full["flops_mean"].iloc[0] == 4e13


def test_depth_sweep_needs_several_depths(tmp_path):
    assert views.depth_sweep(table(tmp_path, learning_curve_rows())).empty


def test_paper_table_layout(tmp_path):
    rows = []
    for mode, f1 in (("fixed", 80.0), ("validated", 83.0)):
        for seed in (0, 1):
            rows += trial_rows(f"m-{mode}-{seed}", [(1e12, f1 + seed)], eval_sets=LANGS, train_mode=mode, seed=seed,
                               target_lang="ru", target_count=0, with_english=True)
        rows += trial_rows(f"ru-{mode}", [(1e12, f1 + 5)], eval_sets=LANGS, train_mode=mode, target_lang="ru",
                           target_count=45000, with_english=False, model="rubert")
    tables = views.paper_tables(table(tmp_path, rows))
    assert set(tables) == {"squad-dev", "sberquad-dev"}
    t = tables["sberquad-dev"]
    assert list(t.columns) == [("fixed", "F1"), ("fixed", "EM"), ("validated", "F1"), ("validated", "EM")]
    assert list(t.index) == ["mbert (English)", "rubert (ru 45000)"]
    assert t.loc["mbert (English)", ("validated", "F1")] == pytest.approx(83.5 - 20)
    assert t.loc["rubert (ru 45000)", ("fixed", "EM")] == pytest.approx(85 - 20 - 10)


def test_language_table_for_adaptation(tmp_path):
    t = views.language_table(table(tmp_path, adapt_rows()))
    assert list(t.columns.get_level_values(0).unique()) == ["en", "ru"]
    assert "mini_joint, depth 4" in t.index and "base_large" in t.index
    assert t.loc["base_large", ("ru", "F1")] == pytest.approx(30 + 20 + 15 - 20)


def test_breakdown_has_every_final_score(tmp_path):
    df = table(tmp_path, learning_curve_rows())
    b = views.breakdown(df)
    assert len(b) == df["trial_id"].nunique()
    assert set(b.columns.get_level_values(0)) == {"squad-dev", "sberquad-dev"}
    assert not b.isna().any().any()


def expected(**kw) -> dict[str, Any]:
    return {"label": "x", "metric": "f1", "eval_set": "sberquad-dev", "value": 50.0, "tolerance": 1.0, **kw}


def test_verdicts(tmp_path):
    rows = []
    for seed, f1 in ((0, 70.0), (1, 74.0)):  # mean 72, std 2.83 on sberquad-dev (scores - 20)
        rows += trial_rows(f"s{seed}", [(1e12, f1)], eval_sets=LANGS, seed=seed, train_mode="validated",
                           params=json.dumps({"train.lr": 5e-5, "data.with_english": True}))
    # not matched by data.with_english=True: not in its params, and its with_english column is False
    rows += trial_rows("fixed", [(1e12, 90.0)], eval_sets=LANGS, train_mode="fixed", with_english=False)
    df = table(tmp_path, rows)
    where = {"train_mode": "validated"}
    v = views.verdicts(df, [
        expected(label="hit", value=52.5, where=where),
        expected(label="noise", value=56.0, where=where),
        expected(label="miss", value=60.0, where=where),
        expected(label="params", value=52.0, where={"train.lr": 5e-5, "data.with_english": True}),
        expected(label="none", value=52.0, where={"train_mode": "other"}),
        expected(label="em", metric="exact_match", value=42.0, tolerance=0.5, where=where),
    ], scale="gpu").set_index("label")
    assert v.loc["hit", "verdict"] == "reproduced" and v.loc["hit", "measured"] == pytest.approx(52.0)
    assert v.loc["hit", "seed_std"] == pytest.approx(2 * math.sqrt(2))
    assert v.loc["noise", "verdict"] == "within noise"
    assert v.loc["miss", "verdict"] == "not reproduced"
    assert v.loc["params", "verdict"] == "reproduced" and v.loc["params", "n"] == 2
    assert v.loc["none", "verdict"] == "not run" and v.loc["none", "n"] == 0
    assert v.loc["em", "verdict"] == "reproduced" and v.loc["em", "metric"] == "EM"
    cpu = views.verdicts(df, [expected(value=52.0, where=where), expected(where={"seed": 9})], scale="cpu")
    assert list(cpu["verdict"]) == ["CPU-scale", "not run"]


def test_one_seed_has_no_noise_band(tmp_path):
    df = table(tmp_path, trial_rows("a", [(1e12, 75.0)], eval_sets=LANGS))
    v = views.verdicts(df, [expected(value=60.0)], scale="gpu")
    assert v["verdict"].iloc[0] == "not reproduced" and math.isnan(v["seed_std"].iloc[0])


def test_summary(tmp_path):
    rows = trial_rows("a", [(1e12, 50), (3e12, 60)], hours_per_flop=1e-12) + trial_rows("b", [(2e12, 55)])
    s = views.summary(table(tmp_path, rows))
    assert s["trials"] == 2
    assert s["flops_train"] == pytest.approx(5e12)
    assert s["device_hours"] == pytest.approx(5.0)
    assert s["first_time"] == T0 and s["xlt_versions"] == ["0.1.0"]


# ---------------------------------------------------------------- the page from a run directory


def spec_dict(**kw: Any) -> dict[str, Any]:
    """A StudySpec as the runner dumps it to spec.json."""
    from xlt.spec import spec_from_dict

    tree = {
        "name": "lc_demo", "description": "Learning curves on SberQuAD", "task": "qa", "scale": "gpu",
        "model": {"name": "mbert"},
        "data": {"english": {"name": "squad-train", "synthetic": {"n": 10}},
                 "target": {"name": "sberquad-train", "lang": "ru", "synthetic": {"n": 10}},
                 "eval": [{"name": n, "lang": lang, "synthetic": {"n": 10}} for n, lang in LANGS]},
        "search": {"algorithm": "tpe", "objectives": [{"metric": "f1", "eval_set": "sberquad-dev"},
                                                      {"metric": "flops_train", "mode": "min"}]},
        "expected": [
            {"label": "M-BERT +SQuAD, 5000 SberQuAD", "eval_set": "sberquad-dev", "value": 65.0, "tolerance": 2,
             "where": {"data.target_count": 5000, "data.with_english": True}, "source": "DeepPavlov 2020, Fig. 2"},
            {"label": "English only (zero-shot)", "eval_set": "sberquad-dev", "value": 73.49, "tolerance": 1,
             "where": {"target_count": 0}, "source": "DeepPavlov 2020, Table 2"},
            {"label": "not in this run", "eval_set": "sberquad-dev", "value": 84.19, "where": {"model": "rubert"}},
        ],
        "claims": [
            {"kind": "order", "text": "+English beats target-only at <= 1,000 questions", "eval_set": "sberquad-dev",
             "where": {"data.target_count": {"gt": 0, "le": 1000}}, "better": {"where": {"data.with_english": True}},
             "worse": {"where": {"data.with_english": False}}, "source": "DeepPavlov 2020, Fig. 2"},
            {"kind": "lift", "text": "step 2 lifts F1", "eval_set": "sberquad-dev", "delta": 5},
        ],
    }
    for key, value in kw.items():
        tree[key] = value
    return spec_from_dict(tree).model_dump(mode="json")


def optuna_db(run: Path, name: str, n_trials: int) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{run / 'optuna.db'}",
                                directions=["maximize", "minimize"])
    dists = {"data.target_count": optuna.distributions.CategoricalDistribution([0, 100, 1000, 5000]),
             "train.lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)}
    for i in range(n_trials):
        count = (0, 100, 1000, 5000)[i % 4]
        lr = 1e-5 * 1.7 ** i
        study.add_trial(optuna.trial.create_trial(
            params={"data.target_count": count, "train.lr": lr}, distributions=dists,
            values=[40 + 10 * math.log10(count + 1) - 3 * abs(math.log10(lr) + 4), 1e12 * (count + 1)]))


def fake_run(tmp_path: Path, rows: list[dict[str, Any]] | None = None, *, spec: dict | None = None,
             done: bool = True, status: str | None = None, optuna_trials: int = 8) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    results.write_table(run, learning_curve_rows() if rows is None else rows)
    spec = spec_dict() if spec is None else spec
    (run / "spec.json").write_text(json.dumps(spec, indent=1))
    if done:
        (run / "DONE").write_text("")
    if status:
        (run / "status.json").write_text(json.dumps({"state": status}))
    if optuna_trials:
        optuna_db(run, spec["name"], optuna_trials)
    return run


def test_page_from_a_run_directory(tmp_path):
    from xlt.dashboards import main_dashboard

    run = fake_run(tmp_path)
    out = main_dashboard(str(run), str(tmp_path / "page.html"))
    page = out.read_text(encoding="utf-8")
    assert out.stat().st_mode & 0o044  # readable by others: a dashboard is for sharing
    assert re.findall(r'<div id="(fig-[^"]+)" class="plotly-graph-div"', page) == [
        "fig-compute-flops", "fig-compute-hours", "fig-pareto", "fig-search-progress", "fig-learning",
        "fig-search-0", "fig-search-1", "fig-search-2", "fig-search-3",  # history, importances, parallel, Pareto
    ]
    assert page.count("<script type='text/javascript'>") == 1  # plotly.js inlined once
    from plotly.offline import get_plotlyjs

    rest = page.replace(get_plotlyjs(), "")  # plotly.js itself names a CDN for map data it never fetches here
    assert "<script src" not in rest and "http://" not in rest and "https://" not in rest
    for section in ("compute", "pareto", "learning", "tables", "verdicts", "search", "breakdown"):
        assert f"<section id='{section}'>" in page, section
    assert "<b>Depth sweep</b>: not shown" in page  # no depth in a QA learning-curve study
    assert "lc_demo" in page and "Learning curves on SberQuAD" in page
    assert "2026-01-01 00:00 UTC" in page and "x86_64 2 cpus" in page and "14 (84 result rows)" in page
    assert "Partial run" not in page and "trust_remote_code" not in page
    assert "✓ reproduced" in page and "– not run" in page
    claims = page.split("<section id='claims'>")[1].split("</section>")[0]
    assert "+English beats target-only at &lt;= 1,000 questions" in claims and "DeepPavlov 2020, Fig. 2" in claims
    assert "✓ holds" in claims and "– not enough data" in claims
    assert "target_count=100: with_english=True 49.04 vs with_english=False 41.04, diff +8.00" in claims
    assert "<br>target_count=1000: " in claims  # one line per cell
    learning = page.split("<section id='learning'>")[1].split("</section>")[0]
    assert "not trustworthy: 3 distinct sizes (needs &gt;= 4)" in learning  # 100, 1000, 5000: no line drawn


def extrapolating_run(tmp_path: Path) -> Path:
    """A learning-curve run with six target sizes per arm: trustworthy power-law fits."""
    from tests.test_extrapolation import lc_rows

    spec = spec_dict(data={"english": {"name": "squad", "synthetic": {"n": 10}},
                           "target": {"name": "drcd", "lang": "zh", "synthetic": {"n": 10}},
                           "eval": [{"name": "xquad-zh", "lang": "zh", "synthetic": {"n": 10}}]},
                     expected=[], claims=[], search={"algorithm": "grid"})
    return fake_run(tmp_path, lc_rows(), spec=spec, optuna_trials=0)


def test_learning_curves_page_extrapolates(tmp_path):
    from xlt.dashboards import main_dashboard

    page = main_dashboard(str(extrapolating_run(tmp_path)), str(tmp_path / "lc.html")).read_text(encoding="utf-8")
    learning = page.split("<section id='learning'>")[1].split("</section>")[0]
    assert "+English: power-law fit" in learning and "target only: power-law fit" in learning
    assert "<h3>Extrapolated on xquad-zh</h3>" in learning and "not trustworthy:" not in learning
    assert "(upper bound 74.85 - 2)" in learning and " at 6,400</td>" in learning and " at 32,000</td>" in learning
    assert "vs 74.85 at 3,200" in learning  # leave-largest-out: target only at its largest size


def test_default_output_is_dashboards_study_html(tmp_path, monkeypatch):
    from xlt.dashboards import main_dashboard

    run = fake_run(tmp_path, optuna_trials=0)
    monkeypatch.chdir(tmp_path)
    assert main_dashboard(str(run), None) == Path("dashboards/lc_demo.html")
    assert (tmp_path / "dashboards" / "lc_demo.html").exists()
    (tmp_path / "elsewhere").mkdir()
    assert main_dashboard(str(run), str(tmp_path / "elsewhere")) == tmp_path / "elsewhere" / "lc_demo.html"


def test_partial_run_and_remote_code_warnings(tmp_path):
    from xlt.dashboards import main_dashboard

    spec = spec_dict(model={"name": "mbert", "trust_remote_code": True})
    run = fake_run(tmp_path, spec=spec, done=True, status="killed", optuna_trials=0)
    page = main_dashboard(str(run), str(tmp_path / "p.html")).read_text(encoding="utf-8")
    assert "<b>Partial run</b> (status.json says killed)" in page
    assert "<b>trust_remote_code was ON</b>" in page
    (run / "status.json").unlink()
    (run / "DONE").unlink()
    page = main_dashboard(str(run), str(tmp_path / "p.html")).read_text(encoding="utf-8")
    assert "<b>Partial run</b> (no DONE marker in the run directory)" in page


def test_adaptation_page(tmp_path):
    from xlt.dashboards import main_dashboard

    spec = spec_dict(name="adapt_demo", task="adapt", scale="cpu",
                     adapt={"method": "mini_joint", "depth": 4, "target_lang": "ru"},
                     expected=[{"label": "MiniJoint", "eval_set": "xnli-ru", "value": 30.0,
                                "where": {"method": "mini_joint", "depth": 4}}])
    run = fake_run(tmp_path, adapt_rows(), spec=spec, optuna_trials=1)
    page = main_dashboard(str(run), str(tmp_path / "a.html")).read_text(encoding="utf-8")
    for section in ("compute", "pareto", "depth", "tables", "verdicts", "breakdown"):
        assert f"<section id='{section}'>" in page, section
    assert "step-2 training FLOPs" in page
    assert "<b>Learning curves</b>: not shown" in page
    assert "<b>Search diagnostics</b>: not shown — 1 completed Optuna trial(s)" in page
    assert "◦ CPU-scale" in page and "reproduced" not in page.split("id='verdicts'")[1].split("</section>")[0]
    assert "method, depth" in page and "mini_joint, depth 4" in page


def test_no_spec_no_optuna_still_draws(tmp_path):
    from xlt.dashboards import main_dashboard

    run = tmp_path / "bare"
    run.mkdir()
    results.write_table(run, trial_rows("a", [(1e12, 50), (2e12, 60)]))
    page = main_dashboard(str(run), str(tmp_path / "b.html")).read_text(encoding="utf-8")
    assert "<h1>demo</h1>" in page  # the study name from the table
    assert "No spec.json in the run directory" in page
    assert "<b>Verdicts</b>: not shown" in page and "<b>Search diagnostics</b>: not shown — no optuna.db" in page
    assert "<b>Pareto front</b>: not shown — needs final scores of at least two trials." in page
    assert "<section id='compute'>" in page


def test_everything_from_data_is_escaped(tmp_path):
    from xlt.dashboards import main_dashboard

    rows = []
    for i, lr in enumerate((1e-4, 3e-4)):
        rows += trial_rows(f"t{i}{EVIL}", [(1e12, 50 + i), (2e12, 60 + i)], study=EVIL, model=EVIL,
                           eval_sets=((EVIL, "en"), ("ru-dev", "ru")), lr=lr, target_lang="ru",
                           params=json.dumps({"train.lr": lr, "model.name": EVIL}))
    spec = spec_dict()
    spec.update(name=EVIL, description=EVIL)  # not a valid spec name: the page reads it as plain JSON
    spec["expected"] = [{"label": EVIL, "eval_set": EVIL, "value": 50, "where": {"model": EVIL}, "source": EVIL}]
    spec["claims"] = [{"kind": "order", "text": EVIL, "source": EVIL, "eval_set": EVIL,
                       "better": {"where": {"model": EVIL}, "label": EVIL}, "worse": {"where": {"model": "x"}}},
                      {"kind": "lift", "text": EVIL, "eval_set": EVIL, "delta": 1, "where": {"model": EVIL},
                       "baseline": {"stage": "qa", "step": "first"}}]
    run = fake_run(tmp_path, rows, spec=spec, optuna_trials=0)
    page = main_dashboard(str(run), str(tmp_path / "e.html")).read_text(encoding="utf-8")
    assert "<script>alert" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    assert "does not validate against this xlt" in page
    claims = page.split("<section id='claims'>")[1].split("</section>")[0]
    assert claims.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # text, source, eval set, numbers
    assert "✓ holds" in claims  # the lift from each trial's first qa evaluation to its final row


# ---------------------------------------------------------------- errors


def test_errors_are_one_line(tmp_path):
    from xlt.dashboards import main_dashboard

    with pytest.raises(XltError, match="no such run directory"):
        main_dashboard(str(tmp_path / "missing"), None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(XltError, match="no results table"):
        main_dashboard(str(empty), None)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "results.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(XltError, match="not a readable parquet file"):
        main_dashboard(str(corrupt), None)
    old = tmp_path / "old"
    old.mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"schema_version": [0], "study": ["x"], "f1": [1.0]}), old / "results.parquet")
    with pytest.raises(XltError, match="schema version 0"):
        main_dashboard(str(old), None)
    no_rows = tmp_path / "no_rows"
    no_rows.mkdir()
    results.write_table(no_rows, [])
    with pytest.raises(XltError, match="no rows yet"):
        main_dashboard(str(no_rows), None)
    bad_spec = fake_run(tmp_path, optuna_trials=0)
    (bad_spec / "spec.json").write_text("{not json")
    with pytest.raises(XltError, match="spec.json: not a JSON study spec") as e:
        main_dashboard(str(bad_spec), None)
    assert "\n" not in str(e.value)


def test_unwritable_output(tmp_path):
    from xlt.dashboards import main_dashboard

    run = fake_run(tmp_path, optuna_trials=0)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(XltError, match="cannot write the dashboard"):
        main_dashboard(str(run), str(blocker / "sub" / "page.html"))


def test_not_an_optuna_database(tmp_path):
    from xlt.dashboards import main_dashboard

    run = fake_run(tmp_path, optuna_trials=0)
    (run / "optuna.db").write_bytes(b"garbage")
    page = main_dashboard(str(run), str(tmp_path / "o.html")).read_text(encoding="utf-8")
    assert "optuna.db is not an Optuna database" in page
    assert (run / "optuna.db").read_bytes() == b"garbage"  # never written to


def test_dashboards_never_import_torch():
    import subprocess
    import sys

    code = ("import sys, xlt.dashboards, xlt.dashboards.views, xlt.dashboards.figures; "
            "bad = [m for m in ('torch', 'transformers', 'ray') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_run_in_progress_with_gaps_still_draws(tmp_path):
    from xlt.dashboards import main_dashboard

    rows = [r for r in trial_rows("a", [(1e12, 50), (2e12, 55), (3e12, 60)]) + trial_rows("b", [(1e12, 40)])
            if r["stage"] != "final"]  # no trial has finished
    rows[1]["f1"] = float("nan")  # a failed evaluation
    for r in rows:
        r.update(device_seconds=None, eval_lang=None)
    run = tmp_path / "live"
    run.mkdir()
    results.write_table(run, rows)
    page = main_dashboard(str(run), str(tmp_path / "live.html")).read_text(encoding="utf-8")
    assert "<b>Partial run</b>" in page
    assert 'id="fig-compute-flops"' in page and 'id="fig-compute-hours"' not in page
    assert "Quality vs device-hours: not shown — no device time recorded." in page
    for title in ("Pareto front", "Learning curves", "Depth sweep", "Tables", "Every final score"):
        assert f"<b>{title}</b>: not shown" in page


def test_watch_rewrites_the_page_while_the_driver_runs_and_once_after(tmp_path):
    """`xlt dashboard RUN --watch`: a page per interval while a driver holds the run directory,
    each saying it is partial and when it was written, then one more once the driver is gone."""
    from xlt import lock
    from xlt.dashboards.page import watch

    run = fake_run(tmp_path, done=False, status="running")
    me = lock.acquire(run, "xlt run")
    pages: list[str] = []
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:  # the study ends during the second interval
            (run / "DONE").write_text("done\n")
            (run / "status.json").write_text(json.dumps({"state": "done"}))
            lock.release(run, me)

    out = watch(str(run), str(tmp_path / "page.html"), every=7.0, sleep=sleep,
                on_write=lambda p: pages.append(p.read_text(encoding="utf-8")))
    assert sleeps == [7.0, 7.0] and len(pages) == 3 and out == tmp_path / "page.html"
    assert all("<b>Partial run</b>" in p and "this page was written 20" in p for p in pages[:2])
    assert "Partial run" not in pages[2]


def test_watch_of_a_run_without_a_driver_writes_once(tmp_path):
    from xlt.dashboards.page import watch

    run = fake_run(tmp_path, done=False, status="running")  # killed: status says running, no lock
    written = []
    watch(str(run), str(tmp_path / "p.html"), every=1.0, sleep=lambda s: pytest.fail("slept"), on_write=written.append)
    assert len(written) == 1 and "status.json says running" in written[0].read_text(encoding="utf-8")


def test_watch_interval_must_be_positive(tmp_path):
    code, out, err = run_cli("dashboard", str(fake_run(tmp_path)), "--watch", "0")
    assert code == 2 and err.strip() == "xlt: error: --watch 0: the interval must be > 0 seconds"
