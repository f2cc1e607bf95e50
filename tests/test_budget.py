"""Budget-aware search (search.budget): the ledger's rule on hand-made numbers, and a tiny study
that stops starting trials at about 2.5 trials' estimated cost."""

import json

import pytest

from tests.helpers import run_cli
from xlt.study.budget import Ledger, measured


def test_ledger_admits_while_spent_plus_running_plus_candidate_fits():
    led = Ledger("flops", 25.0)
    assert led.decide("a", 10).admit
    assert led.decide("b", 10).admit  # 0 spent + 10 running + 10 <= 25
    d = led.decide("c", 10)  # 0 + 20 + 10 > 25
    assert not d.admit and d.committed == 20 and "stopped by budget" in d.message()
    assert led.snapshot()["stopped"]


def test_ledger_corrects_estimates_by_what_finished_trials_measured():
    led = Ledger("flops", 25.0)
    assert led.decide("a", 10).admit
    led.finish("a", 5.0)  # measured half the estimate: the estimates are corrected by 0.5
    assert led.factor() == 0.5
    assert led.decide("b", 10).admit  # 5 + 0 + 5
    led.finish("b", 5.0)
    assert led.decide("c", 10).admit  # 10 + 0 + 5
    led.finish("c", 5.0)
    assert led.decide("d", 10).admit  # 15 + 5 = 20
    led.finish("d", 5.0)
    assert led.decide("e", 10).admit  # 20 + 5 = 25: exactly the budget
    led.finish("e", None)  # nothing measured (a failure before any report): the estimate counts
    assert led.snapshot()["spent"] == 30 and not led.decide("f", 10).admit


def test_measured_in_the_budget_unit():
    assert measured({"flops_train": 3e12, "device_seconds": 7200}, "flops") == 3e12
    assert measured({"flops_train": 3e12, "device_seconds": 7200}, "device_hours") == 2
    assert measured(None, "flops") is None


@pytest.mark.slow
@pytest.mark.ray
def test_a_study_stops_starting_trials_at_its_budget(ray_session, in_tmp):
    from tests.test_study import write_study
    from xlt.spec import load_spec
    from xlt.study.estimate import estimate

    grid = {"algorithm": "grid", "space": {"train.lr": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]}}
    plain = write_study(in_tmp, name="budget", search=grid)
    per_trial = estimate(load_spec(plain))["trials"][0]["flops_train"]
    study = write_study(in_tmp, name="budget", search={**grid, "budget": {"flops": 2.5 * per_trial}})
    out = in_tmp / "run"
    code, stdout, err = run_cli("run", str(study), "--out", str(out))
    assert code == 0, err
    status = json.loads((out / "status.json").read_text())
    done = status["counts"]["done"]
    assert done in (2, 3), stdout
    assert status["state"] == "done" and status["counts"]["pending"] == 0
    b = status["budget"]
    assert b["stopped"] and b["unit"] == "flops" and b["limit"] == pytest.approx(2.5 * per_trial)
    assert b["spent"] <= b["limit"] * 1.0001 and b["spent"] > 0
    assert "stopped by budget" in stdout and "budget: not starting" in stdout
    code, text, err = run_cli("status", str(out))
    assert code == 0, err
    assert f"{done} done, 0 running, 0 pending" in text and "stopped by budget" in text and "budget: " in text


class FakeTrial:
    def __init__(self, trial_id, config):
        self.trial_id, self.config = trial_id, config


class FakeSearch:
    """A search algorithm handing out trials with given params (what BudgetedSearch wraps)."""

    def __init__(self, n):
        self.left, self.completed, self.finished = list(range(n)), [], False

    def next_trial(self):
        return FakeTrial(f"t{self.left.pop(0)}", {"train.lr": 1e-3}) if self.left else None

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append((trial_id, error))

    def is_finished(self):
        return self.finished or not self.left

    def set_finished(self):
        self.finished = True

    def has_checkpoint(self, dirpath):
        return False

    def save_to_dir(self, dirpath, **kwargs):
        pass


def test_budgeted_search_stops_handing_out_trials_and_resumes_its_ledger(tmp_path):
    from xlt.study.budget import BudgetedSearch

    inner = FakeSearch(5)
    search = BudgetedSearch(inner, Ledger("flops", 25.0), lambda params: 10.0)
    a = search.next_trial()
    search.on_trial_complete(a.trial_id, {"flops_train": 10.0})
    assert search.next_trial().trial_id == "t1"
    assert search.next_trial() is None and search.is_finished()  # 10 + 10 + 10 > 25
    assert inner.completed[-1] == ("t2", True)  # the refused trial is closed in the wrapped algorithm
    search.save_to_dir(str(tmp_path))
    again = BudgetedSearch(FakeSearch(3), Ledger("flops", 25.0), lambda params: 10.0)
    assert again.has_checkpoint(str(tmp_path))
    again.restore_from_dir(str(tmp_path))
    assert again.is_finished() and again.ledger.snapshot()["spent"] == 10 and again.ledger.running == {"t1"}


def test_price_reuses_the_estimate(tmp_path):
    import yaml

    from tests.test_study import STUDY
    from xlt.spec import load_spec
    from xlt.study.budget import Price
    from xlt.study.estimate import estimate

    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({**STUDY, "search": {"algorithm": "grid", "space": {"train.lr": [1e-3, 3e-3]}}}))
    spec = load_spec(f)
    rows = estimate(spec)["trials"]
    flops, hours = Price(spec, "flops"), Price(spec, "device_hours")
    assert flops(rows[1]["params"]) == rows[1]["flops_train"]
    assert hours(rows[0]["params"]) == rows[0]["paid_device_hours"]
    assert flops({"train.lr": 9.0}) == pytest.approx(sum(r["flops_train"] for r in rows) / 2)  # unknown: the mean
