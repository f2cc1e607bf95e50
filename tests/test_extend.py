"""A study file that only extends its study resumes and adds trials (issue #19 case 4): the
decision (extension or change, xlt.study.extend), what run.json records, the extension's search;
and, with Ray (slow), a grid grown by one value runs just the new trial."""

import copy
import json

import pytest

from tests.helpers import run_cli
from xlt import results
from xlt.errors import XltError
from xlt.spec import apply_overrides, spec_from_dict
from xlt.study import extend, rundir, space

BASE = {
    "name": "s",
    "model": {"tiny": {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}},
    "data": {"english": {"synthetic": {"n": 10}},
             "eval": [{"name": "en-dev", "synthetic": {"n": 5, "split": "dev"}}]},
    "train": {"seed": 3},
}
GRID = {"algorithm": "grid", "space": {"train.lr": [1e-3, 3e-3]}}
TPE = {"algorithm": "tpe", "num_samples": 4, "space": {"train.lr": {"log_range": [1e-4, 1e-2]}}}


def spec(search, overrides=None):
    return spec_from_dict(apply_overrides(copy.deepcopy(BASE) | {"search": search}, overrides or {}))


def decide(old, new):
    return extend.decide(spec(old), spec(new) if isinstance(new, dict) else new)


# ---------------------------------------------------------------- extension or change (fast)


@pytest.mark.parametrize("new, points, samples", [
    ({**GRID, "space": {"train.lr": [1e-3, 3e-3, 1e-2]}}, [{"train.lr": 1e-2, "train.seed": 3}], 1),
    ({**GRID, "space": {"train.lr": [1e-2, 3e-3, 1e-3]}}, [{"train.lr": 1e-2, "train.seed": 3}], 1),  # any order
    ({**GRID, "seeds": [3, 5]}, [{"train.lr": 1e-3, "train.seed": 5}, {"train.lr": 3e-3, "train.seed": 5}], 2),
    ({**GRID, "points": [{"train.lr": 5e-3}]}, [{"train.lr": 5e-3, "train.seed": 3}], 1),
    ({**GRID, "num_samples": 9}, [], 0),  # no part of a grid's trials
    ({**GRID, "space": {"train.lr": [1e-3, 3e-3, 1e-2]}, "seeds": [3, 5]},
     [{"train.lr": 1e-3, "train.seed": 5}, {"train.lr": 3e-3, "train.seed": 5},
      {"train.lr": 1e-2, "train.seed": 3}, {"train.lr": 1e-2, "train.seed": 5}], 4),
])
def test_a_grid_that_grew_is_an_extension_adding_only_the_new_trials(new, points, samples):
    ext = decide(GRID, new)
    assert isinstance(ext, extend.Extension), ext
    assert sorted(ext.points, key=json.dumps) == sorted(points, key=json.dumps) and ext.samples == samples
    assert ext.difference.startswith("search.")


@pytest.mark.parametrize("old, new, points, samples", [
    (TPE, {**TPE, "num_samples": 6}, [], 2),
    (TPE, {**TPE, "num_samples": 6, "points": [{"train.lr": 1e-3}]}, [{"train.lr": 1e-3}], 2),
    ({**TPE, "algorithm": "random"}, {**TPE, "algorithm": "random", "num_samples": 5}, [], 1),
    ({**TPE, "algorithm": "nsga2", "points": [{"train.lr": 1e-3}]},
     {**TPE, "algorithm": "nsga2", "num_samples": 5, "points": [{"train.lr": 1e-3}, {"train.lr": 2e-3}]},
     [{"train.lr": 2e-3}], 1),
])
def test_more_samples_of_a_sampler_is_an_extension(old, new, points, samples):
    ext = decide(old, new)
    assert isinstance(ext, extend.Extension), ext
    assert ext.points == points and ext.samples == samples


@pytest.mark.parametrize("old, new, named", [
    (GRID, {**GRID, "space": {"train.lr": [1e-3]}}, "search.space.train.lr.choice: [0.001, 0.003] -> [0.001]"),  # a removed grid value
    (GRID, {**GRID, "space": {"train.lr": [1e-3, 3e-3], "train.epochs": [1, 2]}}, "search.space.train.epochs: (absent)"),
    ({**GRID, "seeds": [3, 5]}, {**GRID, "seeds": [5]}, "search.seeds: "),
    ({**GRID, "points": [{"train.lr": 5e-3}]}, GRID, "search.points: "),
    (GRID, {**GRID, "algorithm": "random"}, "search.algorithm: "),
    (TPE, {**TPE, "num_samples": 2}, "search.num_samples: 4 -> 2"),
    (TPE, {**TPE, "seeds": [1]}, "search.seeds: "),  # a sampler's seed: other draws
    (TPE, {**TPE, "space": {"train.lr": {"log_range": [1e-5, 1e-2]}}}, "search.space.train.lr.log_range: "),
    ({**TPE, "space": {"train.batch_size": [8, 16]}}, {**TPE, "space": {"train.batch_size": [8, 16, 32]}},
     "search.space.train.batch_size.choice: "),  # Optuna cannot widen a categorical it sampled
    (TPE, {**TPE, "points": [{"train.lr": 1e-3}]}, "search.points: 1 point(s) added but search.num_samples grows by 0"),
])
def test_a_search_key_changed_otherwise_is_refused_naming_it(old, new, named):
    decided = decide(old, new)
    assert isinstance(decided, str) and decided.startswith(named), decided


@pytest.mark.parametrize("overrides, named", [
    ({"train.lr": 0.01}, "train.lr: "),
    ({"model.tiny.layers": 2}, "model.tiny.layers: 1 -> 2"),
    ({"data.english.synthetic.n": 11}, "data.english.synthetic.n: 10 -> 11"),
    ({"resources.workers": 2}, "resources.workers: 1 -> 2"),  # named, not the grid value before it
])
def test_a_real_change_beside_an_extension_is_refused_naming_it(overrides, named):
    grown = spec({**GRID, "space": {"train.lr": [1e-3, 3e-3, 1e-2]}}, overrides)
    decided = decide(GRID, grown)
    assert isinstance(decided, str) and decided.startswith(named), decided


# ---------------------------------------------------------------- run.json (fast, no Ray)


def _started(out, name="tune", done=()):
    (out / "ray" / name).mkdir(parents=True, exist_ok=True)
    (out / "ray" / name / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    for t in done:
        (out / "trials" / t).mkdir(parents=True)
        (out / "trials" / t / "final.json").write_text("{}")


def test_resume_records_an_extension_and_says_what_it_keeps_and_adds(tmp_path, capsys):
    out = tmp_path / "run"
    old, grown = spec(GRID), spec({**GRID, "space": {"train.lr": [1e-3, 3e-3, 1e-2]}})
    rundir.create(out, old, None)
    _started(out, done=("a_00000", "a_00001"))
    run = rundir.check(out, grown, resume=True)
    assert run is not None
    (ext,) = run["extended"]
    assert ext["name"] == "tune-2" and ext["kept"] == 2 and ext["samples"] == 1
    assert ext["points"] == [{"train.lr": 1e-2, "train.seed": 3}] and ext["to_hash"] == grown.hash()
    assert "extended: 2 trials done kept, 1 added (search.space.train.lr.choice: [0.001, 0.003] -> [0.001, 0.003, 0.01])" \
        in capsys.readouterr().err
    rundir.create(out, grown, run)
    assert rundir.check(out, grown, resume=True) == json.loads((out / "run.json").read_text())  # the same spec now
    # grown again before tune-2 started: its trial joins the new one's, in tune-2
    again = spec({**GRID, "space": {"train.lr": [1e-3, 3e-3, 1e-2]}, "seeds": [3, 4]})
    run = rundir.check(out, again, resume=True)
    (ext,) = run["extended"]
    assert ext["name"] == "tune-2" and ext["samples"] == 4 and ext["from_hash"] == old.hash()
    assert {json.dumps(p, sort_keys=True) for p in ext["points"]} == {json.dumps(p, sort_keys=True) for p in (
        {"train.lr": 1e-2, "train.seed": 3}, {"train.lr": 1e-3, "train.seed": 4},
        {"train.lr": 3e-3, "train.seed": 4}, {"train.lr": 1e-2, "train.seed": 4})}
    # once tune-2 has started, a further extension is a third experiment
    rundir.create(out, again, run)
    _started(out, "tune-2")
    more = spec({**GRID, "space": {"train.lr": [1e-3, 3e-3, 1e-2, 3e-2]}, "seeds": [3, 4]})
    run = rundir.check(out, more, resume=True)
    assert [e["name"] for e in rundir.experiments(run)] == ["tune", "tune-2", "tune-3"]
    assert run["extended"][1]["samples"] == 2


def test_an_extension_of_a_study_that_never_started_runs_as_the_new_spec(tmp_path):
    out = tmp_path / "run"
    rundir.create(out, spec(GRID), None)
    run = rundir.check(out, spec({**GRID, "space": {"train.lr": [1e-3, 3e-3, 1e-2]}}), resume=True)
    assert run is not None and "extended" not in run


def test_a_removed_grid_value_is_still_refused_and_force_still_works(tmp_path):
    out = tmp_path / "run"
    rundir.create(out, spec(GRID), None)
    _started(out, done=("a_00000",))
    shrunk = spec({**GRID, "space": {"train.lr": [1e-3]}})
    with pytest.raises(XltError, match=r"different spec \(search.space.train.lr.choice: \[0.001, 0.003\] -> \[0.001\]\).*--resume --force"):
        rundir.check(out, shrunk, resume=True)
    run = rundir.check(out, shrunk, resume=True, force=True)
    assert "extended" not in run and run["forced"][0]["difference"].startswith("search.space.train.lr")


# ---------------------------------------------------------------- the extension's search (fast, no Ray started)


def test_an_extension_searches_only_its_trials(tmp_path):
    pytest.importorskip("ray")
    grown = spec({**GRID, "space": {"train.lr": [1e-3, 3e-3, 1e-2]}})
    part = {"points": [{"train.lr": 1e-2, "train.seed": 3}], "samples": 1}
    s = space.build(grown, tmp_path, part=part, index=1)
    assert s.num_samples == 1 and s.points == part["points"] and s.total == 3
    tpe = spec({**TPE, "num_samples": 6})
    s = space.build(tpe, tmp_path, part={"points": [], "samples": 2}, index=1)
    assert s.num_samples == 2 and s.total == 6 and s.search_alg is not None


def test_describing_an_optuna_study_leaves_its_storage_alone(tmp_path):
    """An OptunaSearch enqueues its points in optuna.db as it is made; made again on resume beside
    the restored one, the restored searcher asked Optuna for a trial and got the point again."""
    pytest.importorskip("ray")
    s = space.build(spec({**TPE, "points": [{"train.lr": 1e-3}]}), tmp_path, searcher=False)
    assert s.search_alg is None and s.total == 4 and not (tmp_path / "optuna.db").exists()


def test_an_extensions_budget_counts_what_the_run_spent_before():
    from xlt.study.budget import Ledger

    earlier = Ledger("flops", 100.0)
    earlier.decide("a", 10.0)
    earlier.finish("a", 12.0)
    earlier.decide("b", 10.0)  # still running when its experiment was saved
    ledger = Ledger("flops", 100.0)
    ledger.carry(json.loads(json.dumps(earlier.state())))
    assert ledger.snapshot()["spent"] == 22.0 and ledger.running == set()
    assert ledger.factor() == pytest.approx(1.1)


# ---------------------------------------------------------------- a grid grown by one value, on Ray (slow)


@pytest.mark.slow
@pytest.mark.ray
def test_a_grid_grown_by_a_value_resumes_running_only_the_new_trial(ray_session, in_tmp):
    from tests.test_study import EVAL_SETS, write_study

    study = write_study(in_tmp, train={"threads": 1}, search={"algorithm": "grid", "space": {"train.lr": [1e-3, 3e-3]}})
    out = in_tmp / "run"
    code, _, err = run_cli("run", str(study), "--out", str(out))
    assert code == 0, err
    before = results.read_table(out).to_dict("records")
    first = {r["trial_id"] for r in before}
    assert len(first) == 2
    finals = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("trials/*/final.json")}

    grown = write_study(in_tmp, train={"threads": 1},
                        search={"algorithm": "grid", "space": {"train.lr": [1e-3, 3e-3, 1e-2]}})
    code, stdout, err = run_cli("run", str(grown), "--out", str(out), "--resume")
    assert code == 0, err
    assert "extended: 2 trials done kept, 1 added (search.space.train.lr.choice: [0.001, 0.003] -> [0.001, 0.003, 0.01])" \
        in stdout + err
    rows = results.read_table(out).to_dict("records")
    keys = [tuple(r[k] for k in rundir.ROW_KEY) for r in rows]
    assert len(keys) == len(set(keys))  # every row once
    by_trial: dict[str, set] = {}
    for r in rows:
        by_trial.setdefault(r["trial_id"], set()).add(json.loads(r["params"])["train.lr"])
    (new,) = set(by_trial) - first
    assert by_trial[new] == {1e-2} and sorted(by_trial.values(), key=min) == [{1e-3}, {3e-3}, {1e-2}]
    # the two done trials kept their rows, unchanged, and did not run again
    assert sorted(map(json.dumps, [r for r in rows if r["trial_id"] in first])) == sorted(map(json.dumps, before))
    assert {t: (out / "trials" / t / "final.json").stat().st_mtime_ns for t in finals} == finals
    assert sum(r["stage"] == "final" for r in rows) == 3 * EVAL_SETS
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "done" and status["counts"] == {"done": 3, "running": 0, "failed": 0, "pending": 0}
    assert (out / "ray" / "tune-2").is_dir()
    code, text, _ = run_cli("status", str(out))
    assert code == 0 and "3 done" in text and "extended: 2 trials done kept, 1 added" in text
    # resumed once more with the same file: nothing runs again
    code, _, err = run_cli("run", str(grown), "--out", str(out), "--resume")
    assert code == 0, err
    assert len(results.read_table(out)) == len(rows)
