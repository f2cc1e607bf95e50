"""Search spaces, resource checks, trial metrics and `xlt status`, without starting Ray."""

import copy
import json
import os
import time

import pytest

from tests.helpers import run_cli
from xlt import results
from xlt.errors import XltError
from xlt.spec import spec_from_dict
from xlt.study import rundir, space
from xlt.study.resources import TrialResources
from xlt.study.runner import parse_driver_resource, resource_gap

pytest.importorskip("ray")

BASE = {
    "name": "s",
    "model": {"tiny": {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}},
    "data": {"english": {"synthetic": {"n": 10}},
             "eval": [{"name": "en-dev", "synthetic": {"n": 5, "split": "dev"}},
                      {"name": "ru-dev", "lang": "ru", "synthetic": {"n": 5, "split": "dev"}}]},
}


def spec(search=None, resources=None):
    tree = copy.deepcopy(BASE)
    if search is not None:
        tree["search"] = search
    if resources is not None:
        tree["resources"] = resources
    return spec_from_dict(tree)


def test_grid_is_every_choice_times_every_seed(tmp_path):
    s = spec({"algorithm": "grid", "seeds": [0, 1, 2], "space": {"train.lr": [1e-3, 3e-3], "data.seed": [0, 1]}})
    b = space.build(s, tmp_path)
    assert b.total == 12 and b.num_samples == 1
    assert b.param_space["train.seed"] == {"grid_search": [0, 1, 2]}
    with_points = space.build(spec({"algorithm": "grid", "space": {"train.lr": [1e-3, 3e-3]},
                                    "points": [{"train.lr": 5e-5}]}), tmp_path)
    assert with_points.total == 3 and with_points.num_samples == 2  # a point replaces one sample


def test_grid_seeds_default_to_the_study_seed(tmp_path):
    """Without search.seeds, a grid runs with the train.seed the study file sets (it used to be
    replaced by seed 0 without a word)."""
    tree = copy.deepcopy(BASE) | {"train": {"seed": 7}, "search": {"algorithm": "grid", "space": {"train.lr": [1e-3]}}}
    b = space.build(spec_from_dict(tree), tmp_path)
    assert b.param_space["train.seed"] == {"grid_search": [7]} and b.total == 1


@pytest.mark.parametrize("algorithm", ["tpe", "random", "nsga2"])
def test_nothing_to_search_runs_one_trial_per_seed(tmp_path, algorithm):
    """An empty search.space with a sampler ran num_samples identical trials; it is one per seed."""
    one = space.build(spec({"algorithm": algorithm, "num_samples": 4}), tmp_path)
    assert one.total == 1 and one.param_space == {"train.seed": {"grid_search": [0]}}
    three = space.build(spec({"algorithm": algorithm, "num_samples": 4, "seeds": [0, 1, 2]}), tmp_path)
    assert three.total == 3 and not (tmp_path / "optuna.db").exists()


def test_validate_says_an_empty_space_runs_once_per_seed(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(copy.deepcopy(BASE) | {"search": {"algorithm": "tpe", "num_samples": 4}}))
    code, out, err = run_cli("validate", str(path))
    assert code == 0, err
    assert "search.space is empty: 1 trial (one per seed), not search.num_samples=4 copies of one" in out


def test_grid_needs_lists(tmp_path):
    with pytest.raises(XltError, match=r"search.space.train.lr: grid search needs a list"):
        space.build(spec({"algorithm": "grid", "space": {"train.lr": {"log_range": [1e-4, 1e-3]}}}), tmp_path)


def test_tpe_is_optuna_with_storage_in_the_run_dir(tmp_path):
    from ray.tune.search.optuna import OptunaSearch

    s = spec({"algorithm": "tpe", "num_samples": 5, "space": {"train.lr": {"log_range": [1e-4, 1e-3]},
                                                              "data.target_count": [0, 100]},
              "points": [{"train.lr": 3e-4, "data.target_count": 0}]})
    b = space.build(s, tmp_path)
    assert isinstance(b.search_alg, OptunaSearch) and b.total == 5 and b.metrics == ["f1"]
    assert (tmp_path / "optuna.db").exists()
    with pytest.raises(XltError, match="tpe optimises one objective"):
        space.check(spec({"algorithm": "tpe", "objectives": [{"metric": "f1"}, {"metric": "flops_train", "mode": "min"}]}))
    with pytest.raises(XltError, match=r"search.points\[0\]: Optuna needs every search.space key"):
        space.check(spec({"algorithm": "tpe", "space": {"train.lr": {"range": [0.1, 0.2]}, "train.seed": [0, 1]},
                          "points": [{"train.lr": 0.1}]}))


def test_nsga2_objectives_and_metric_names(tmp_path):
    s = spec({"algorithm": "nsga2", "space": {"train.lr": {"log_range": [1e-4, 1e-3]}}, "asha": True,
              "objectives": [{"metric": "f1", "eval_set": "ru-dev"}, {"metric": "exact_match", "eval_set": "en-dev"},
                             {"metric": "flops_train", "mode": "min"}]})
    b = space.build(s, tmp_path)
    assert b.primary_set == "ru-dev"
    assert b.metrics == ["f1", "exact_match/en-dev", "flops_train"] and b.modes == ["max", "max", "min"]
    assert b.search_alg.metric == b.metrics
    assert b.scheduler.metric == "f1" and b.scheduler._time_attr == "training_iteration"


@pytest.mark.parametrize("algorithm", ["tpe", "nsga2"])
def test_the_search_algorithm_pickles_as_tune_saves_it(tmp_path, algorithm):
    """Tune writes the search algorithm into the Tuner's pickled state (for resume); Optuna 5.1's
    NSGA-II sampler holds a threading.Lock that broke it (CI: test_nsga2_with_asha)."""
    from ray import cloudpickle

    s = spec({"algorithm": algorithm, "space": {"train.lr": {"log_range": [1e-4, 1e-3]}}})
    search_alg = space.build(s, tmp_path).search_alg
    sampler, copy = search_alg._sampler, cloudpickle.loads(cloudpickle.dumps(search_alg))._sampler
    assert type(copy) is type(sampler) and vars(copy).keys() == vars(sampler).keys()
    assert copy._rng.rng.random() == sampler._rng.rng.random()  # the seeded state travels


def test_bad_objectives_are_one_line():
    with pytest.raises(XltError, match=r"search.objectives\[0\].eval_set: 'xx' is not an eval set"):
        space.check(spec({"objectives": [{"eval_set": "xx"}]}))
    with pytest.raises(XltError, match=r"search.objectives\[0\].metric: 'loss' is not one of"):
        space.check(spec({"objectives": [{"metric": "loss"}]}))


def test_random_samples_num_samples(tmp_path):
    b = space.build(spec({"algorithm": "random", "num_samples": 7,
                          "space": {"train.lr": {"range": [0.1, 0.2]}, "train.batch_size": {"int_range": [4, 8]}}}),
                    tmp_path)
    assert b.total == b.num_samples == 7
    assert b.param_space["train.batch_size"].upper == 9  # the spec's bounds are inclusive


def trial(resources=None, recorded=None, driver_resource=None) -> TrialResources:
    return TrialResources.of(spec(resources=resources).resources, recorded, driver_resource)


def test_resource_gap_names_what_is_missing():
    node = {"CPU": 2.0, "memory": 1e9}
    assert resource_gap(trial(), {"CPU": 2.0}, [node]) is None
    gpu = resource_gap(trial({"gpus_per_worker": 1}), {"CPU": 2.0}, [node])
    assert "1 GPU (cluster has 0)" in gpu
    cpu = resource_gap(trial({"workers": 2, "cpus_per_worker": 2}), {"CPU": 4.0}, [node, node])
    assert "5 CPU (cluster has 4)" in cpu
    per_node = resource_gap(trial({"workers": 2, "cpus_per_worker": 3}), {"CPU": 8.0}, [node] * 4)
    assert per_node.startswith("no node can host a Train worker (3 CPU)")
    alone = resource_gap(trial({"cpus_per_worker": 3}), {"CPU": 4.0}, [node, node])
    assert alone.startswith("no node can host a trial driver (and its worker) (3 CPU)")
    drv = resource_gap(trial(driver_resource=parse_driver_resource("TRAIN_DRIVER")), {"CPU": 2.0}, [node])
    assert "0.01 TRAIN_DRIVER (cluster has 0)" in drv
    with pytest.raises(XltError, match="--driver-resource"):
        parse_driver_resource("X=abc")


def test_a_one_worker_cpu_trial_reserves_only_its_worker(monkeypatch):
    """In its driver, a one-worker CPU trial holds its worker's CPUs, not 1 more for a Train
    driver: twice as many such trials fit on 2 CPUs; Train trials keep the driver's CPU."""
    monkeypatch.delenv("XLT_RAY_TRAIN", raising=False)
    one = trial({"max_concurrent_trials": 4})
    assert one.host == "driver" and one.need() == {"CPU": 1.0} and one.fit({"CPU": 2.0}) == 2
    assert one.slots({"CPU": 2.0}) == 2 and one.slots({"CPU": 0.5}) == 1
    assert "1 CPU (its one worker runs in the trial driver)" in one.describe()
    for train in (trial({"workers": 2}), trial({"gpus_per_worker": 1}), trial(recorded="train")):
        assert train.host == "train" and train.need()["CPU"] == 1.0 + train.r.workers
    assert trial({"max_concurrent_trials": 4}, recorded="train").fit({"CPU": 2.0}) == 1
    # a run recorded as in-driver resumed under more workers (--force) goes to Train
    assert trial({"workers": 2}, recorded="driver").host == "train"
    assert trial(recorded="driver").host == "driver"
    # drivers kept on some nodes (--driver-resource): the workers go anywhere, on Train
    assert trial(driver_resource=("TRAIN_DRIVER", 0.01)).host == "train"
    monkeypatch.setenv("XLT_RAY_TRAIN", "1")
    assert trial().host == "train" and trial().fit({"CPU": 7.0}) == 3


def test_event_metrics_carry_every_objective():
    from xlt.study.worker import event_metrics

    rows = [{"eval_set": "en-dev", "f1": 50.0, "exact_match": 40.0, "stage": "qa", "event": 0, "flops_train": 1e9,
             "device_seconds": 2.0, "step": 10},
            {"eval_set": "ru-dev", "f1": 20.0, "exact_match": 10.0, "stage": "qa", "event": 0, "flops_train": 1e9,
             "device_seconds": 2.0, "step": 10}]
    m = event_metrics(rows, "ru-dev", {})
    assert (m["f1"], m["exact_match"], m["f1/en-dev"], m["exact_match/ru-dev"]) == (20.0, 10.0, 50.0, 10.0)
    assert m["flops_train"] == 1e9 and m["event"] == 0 and m["is_final"] is False
    later = event_metrics([{**rows[0], "event": 1, "f1": 60.0}], "ru-dev", m)  # a stage scoring en-dev only
    assert later["f1"] == 20.0 and later["f1/en-dev"] == 60.0


def _status_dir(tmp_path, state="done", pid=None):
    out = tmp_path / "run"
    rundir.create(out, spec(), None)
    now = time.time()
    trials = {"t1": {"params": {"train.lr": 0.001}, "state": "done", "started": now - 100, "ended": now - 40,
                     "seconds": 60.0, "workers": [{"node_id": "n1"}]},
              "t2": {"params": {"train.lr": 0.003}, "state": "running", "started": now - 30}}
    rundir.write_json(out / "status.json", {
        "study": "s", "run_id": "s-1", "state": state, "driver": {"pid": pid or os.getpid(), "host": os.uname()[1]},
        "elapsed_seconds": 100.0, "updated": now, "objectives": [["f1", "max"]], "primary_set": "en-dev", "total": 3,
        "trials": trials})
    row = {"study": "s", "stage": "qa", "eval_set": "en-dev", "f1": 10.0, "exact_match": 5.0, "flops_train": 1e12,
           "device_seconds": 36.0, "wall_seconds": 36.0}
    results.append_rows(out, [{**row, "trial_id": "t1", "event": 0, "time": now - 60},
                              {**row, "trial_id": "t1", "event": 1, "stage": "final", "f1": 30.0, "time": now - 50},
                              {**row, "trial_id": "t2", "event": 0, "f1": 40.0, "time": now - 5}])
    return out


def test_status_reads_the_run_directory_alone(tmp_path):
    out = _status_dir(tmp_path)
    code, text, err = run_cli("status", str(out))
    assert code == 0, err
    assert "1 done, 1 running, 1 pending" in text
    assert "best: f1 30 (t1" in text  # a finished trial's final score, not a running trial's latest
    assert "orchestration overhead 24.0s per trial" in text  # 60 s seen by the driver - 36 s in the pipeline
    st = json.loads(run_cli("status", str(out), "--json")[1])
    assert st["device_hours_total"] == pytest.approx(72 / 3600)
    assert st["trials"][0]["nodes"] == ["n1"]


def test_status_notices_a_dead_driver(tmp_path):
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    out = _status_dir(tmp_path, state="running", pid=gone.pid)
    code, text, _ = run_cli("status", str(out))
    assert code == 0 and "interrupted" in text and "--resume" in text


def test_trials_share_the_run_directory_artifacts(tmp_path):
    from xlt.study.driver import StudyContext, trial_spec_for

    tree = copy.deepcopy(BASE)
    tree.update(task="adapt", adapt={"synthetic_lines": 10})
    ctx = StudyContext(spec=spec_from_dict(tree).model_dump(mode="json"), run_dir=str(tmp_path), run_id="r")
    t = trial_spec_for(ctx, {"adapt.depth": 2})
    assert t.adapt.depth == 2 and t.cache_dir == str(tmp_path / "artifacts")
    tree["cache_dir"] = "/elsewhere"
    ctx = StudyContext(spec=spec_from_dict(tree).model_dump(mode="json"), run_dir=str(tmp_path), run_id="r")
    assert trial_spec_for(ctx, {}).cache_dir == "/elsewhere"  # a study's own choice stands


def _adapt_tree():
    tree = copy.deepcopy(BASE)
    tree["data"]["eval"].append({"name": "zh-dev", "lang": "zh", "synthetic": {"n": 5, "split": "dev"}})
    tree.update(task="adapt", adapt={"target_lang": "ru", "synthetic_lines": 10})
    return tree


def test_an_adaptation_trial_is_scored_on_its_target_language():
    """English is step 3's, before any adaptation: the bare f1 of an adaptation trial is its
    target language's, whichever language the trial adapts to; an explicit objective set wins."""
    from xlt.spec import trial_spec

    s = spec_from_dict(_adapt_tree())
    assert space.primary_set(s) == "ru-dev"
    assert space.primary_set(trial_spec(s, {"adapt.target_lang": "zh"})) == "zh-dev"
    explicit = spec_from_dict({**_adapt_tree(), "search": {"objectives": [{"metric": "f1", "eval_set": "en-dev"}]}})
    assert space.primary_set(trial_spec(explicit, {"adapt.target_lang": "zh"})) == "en-dev"
    assert space.primary_set(spec()) == "en-dev"  # QA: the validation set


def test_status_scores_each_adaptation_trial_on_its_own_target(tmp_path):
    out = tmp_path / "run"
    rundir.create(out, spec_from_dict(_adapt_tree()), None)
    now = time.time()
    trials = {t: {"params": {"adapt.target_lang": lang}, "state": "done", "seconds": 9.0}
              for t, lang in (("t1", "ru"), ("t2", "zh"))}
    rundir.write_json(out / "status.json", {"study": "s", "run_id": "s-1", "state": "done", "updated": now,
                                            "objectives": [["f1", "max"]], "primary_set": "ru-dev", "trials": trials})
    row = {"study": "s", "exact_match": 1.0, "flops_train": 1e9, "wall_seconds": 5.0, "time": now}
    results.append_rows(out, [{**row, "trial_id": "t1", "stage": "step3", "event": 0, "eval_set": "en-dev", "f1": 50.0},
                              {**row, "trial_id": "t1", "stage": "final", "event": 1, "eval_set": "ru-dev", "f1": 20.0},
                              {**row, "trial_id": "t2", "stage": "step3", "event": 0, "eval_set": "en-dev", "f1": 50.0},
                              {**row, "trial_id": "t2", "stage": "final", "event": 1, "eval_set": "zh-dev", "f1": 30.0}])
    st = json.loads(run_cli("status", str(out), "--json")[1])
    assert {t["trial_id"]: t["scores"]["f1"] for t in st["trials"]} == {"t1": 20.0, "t2": 30.0}
