import subprocess
import sys

import pytest

from tests.helpers import ROOT, run_cli
from xlt.spec import load_spec
from xlt.study.estimate import estimate, planned_trials, trial_cost


def test_estimate_quickstart_torch_free():
    # (how fast it starts is not asserted: timings on a shared machine are noise; it imports no torch)
    code = subprocess.run(
        [sys.executable, "-c", "import sys, xlt.cli; r = xlt.cli.main(['estimate', 'studies/quickstart.yaml']);"
         "assert 'torch' not in sys.modules, 'estimate imported torch'; sys.exit(r)"],
        cwd=ROOT, capture_output=True, text=True)
    assert code.returncode == 0, code.stderr
    assert "total:" in code.stdout and "cpu-hours" in code.stdout
    # what a trial reserves, as `xlt run` counts it: one CPU worker runs in its trial driver
    assert "resources: 1 trial = 1 CPU (its one worker runs in the trial driver)" in code.stdout


def test_grid_plans_every_point_times_seeds(tmp_path):
    spec = load_spec(ROOT / "studies/minimodel_quickstart.yaml", ["search.seeds=[0,1]"])
    trials = planned_trials(spec)
    assert len(trials) == (1 + 3 * 2) * 2  # BaseLarge once (no depth), three methods x depth {1, 2}
    assert {t["train.seed"] for t in trials} == {0, 1}


def test_planned_trials_of_an_empty_space_are_one_per_seed():
    tpe = load_spec(ROOT / "studies/quickstart.yaml", ["search.algorithm=tpe", "search.space={}", "search.num_samples=4"])
    assert planned_trials(tpe) == [{"train.seed": 0}]
    seeded = load_spec(ROOT / "studies/quickstart.yaml", ["search.space={}", "train.seed=7"])
    assert planned_trials(seeded) == [{"train.seed": 7}]


def test_estimate_scales_with_steps():
    spec = load_spec(ROOT / "studies/quickstart.yaml", ["train.epochs=5"])
    more = load_spec(ROOT / "studies/quickstart.yaml", ["train.epochs=10"])
    a, b = estimate(spec), estimate(more)
    assert b["flops_train"] == pytest.approx(2 * a["flops_train"], rel=0.02)


def test_adapt_step2_cost_grows_with_depth():
    costs = {}
    for method, k in [("mini_joint", 1), ("mini_joint", 2), ("base_large", 1)]:
        spec = load_spec(ROOT / "studies/minimodel_quickstart.yaml", [f"adapt.method={method}", f"adapt.depth={k}"])
        costs[(method, k)] = trial_cost(spec)["stages"]["step2"]
    assert costs[("mini_joint", 1)] < costs[("mini_joint", 2)] < costs[("base_large", 1)]


def test_unknown_hub_size_is_a_clear_error(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: h\nmodel: {name: bert-base-cased}\ndata:\n  english: {hub: some/unknown}\n"
                 "  eval: [{hub: squad, split: validation}]\n", encoding="utf-8")
    code, _, err = run_cli("estimate", str(p))
    assert code == 2 and "size of hub dataset some/unknown:train unknown offline" in err


def test_steps_trials_share_through_the_cache_are_paid_once():
    spec = load_spec(ROOT / "studies/minimodel_quickstart.yaml")
    est = estimate(spec)
    by = {(t["params"]["adapt.method"], t["params"]["adapt.depth"]): t for t in est["trials"]}
    large, post1, post2 = by[("base_large", 2)], by[("mini_post", 1)], by[("mini_post", 2)]
    # each trial is charged all it uses: MiniPost its post layer on top of BaseLarge's whole step 1
    assert post1["stages"]["step1"] > large["stages"]["step1"] > 0
    assert post1["stages"]["step3"] == large["stages"]["step3"] == post2["stages"]["step3"]
    # the study pays BaseLarge's primary and its step 3 once for the three trials, and each
    # other method's step 1 and step 3 once per depth
    s = {name: sum(t["stages"][name] for t in est["trials"]) for name in ("step1", "step2", "step3")}
    primary, step3 = large["stages"]["step1"], large["stages"]["step3"]
    want = s["step1"] - 2 * primary + s["step2"] + s["step3"] - 2 * step3
    assert est["flops_train"] == pytest.approx(want)
    assert est["flops_train_attributed"] == pytest.approx(s["step1"] + s["step2"] + s["step3"])
    assert est["device_hours"] < est["device_hours_attributed"]


def test_one_step3_serves_every_target_language():
    evals = ", ".join(f"{{name: synth-{lang}-dev, lang: {lang}, synthetic: {{n: 200, split: dev}}}}"
                      for lang in ("en", "ru", "zh", "de"))  # a trial needs an eval set in its target language
    spec = load_spec(ROOT / "studies/minimodel_quickstart.yaml",
                     ['search.space={"adapt.target_lang": [ru, zh, de]}', "search.points=[]", f"data.eval=[{evals}]"])
    est = estimate(spec)
    assert est["n_trials"] == 3
    t = est["trials"][0]["stages"]
    step2 = sum(r["stages"]["step2"] for r in est["trials"])  # per language: its text decides what masking picks
    assert est["flops_train"] == pytest.approx(t["step1"] + t["step3"] + step2)


def test_sequential_english_stage_is_priced_once_per_study():
    """english_mix: sequential: every +English trial is charged its English stage, the study pays it
    once; target-only trials and the English-only trial (target_count 0, trained as usual) have none."""
    base = ["data.english_mix=sequential", "search.algorithm=grid",
            "search.space={data.target_count: [0, 100, 400], data.with_english: [false, true]}"]
    spec = load_spec(ROOT / "studies/quickstart.yaml", base)
    est = estimate(spec)
    stages = [(t["params"], t["stages"]) for t in est["trials"]]
    english = [s["english"] for p, s in stages if "english" in s]
    assert len(english) == 2 and english[0] == pytest.approx(english[1])  # the +English trials at 100 and 400
    assert est["flops_train"] == pytest.approx(est["flops_train_attributed"] - english[0])
    joint = estimate(load_spec(ROOT / "studies/quickstart.yaml", base[1:]))
    assert joint["flops_train"] > est["flops_train"]  # joint trains English again in every +English trial
