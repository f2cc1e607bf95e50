"""The study ETA: estimates corrected by finished trials, scheduled over the trial slots."""

import pytest

from xlt.study.eta import TrialClock, eta


def test_before_any_trial_finishes_the_estimate_stands():
    trials = [TrialClock(100, "running", 30), TrialClock(100, "pending"), TrialClock(50, "pending")]
    one = eta(trials, slots=1)
    assert one.seconds == pytest.approx(70 + 100 + 50) and one.factor == 1.0 and one.finished == 0
    two = eta(trials, slots=2)  # the running trial's slot frees at 70; the other takes 100 at once
    assert two.seconds == pytest.approx(max(70 + 50, 100))


def test_finished_trials_correct_the_estimate():
    # the first trial took twice its estimate: everything left is priced at 2x
    trials = [TrialClock(100, "done", 200), TrialClock(100, "running", 50), TrialClock(100, "pending")]
    e = eta(trials, slots=1)
    assert e.factor == pytest.approx(2.0) and e.finished == 1
    assert e.seconds == pytest.approx((200 - 50) + 200)


def test_a_trial_past_its_estimate_counts_as_ending_now_and_failed_ones_are_ignored():
    trials = [TrialClock(10, "running", 99), TrialClock(10, "failed", 3), TrialClock(10, "pending")]
    assert eta(trials, slots=1).seconds == pytest.approx(10)


def test_done_study_has_nothing_left():
    assert eta([TrialClock(10, "done", 12)], slots=4).seconds == 0.0


def test_progress_lines_and_status_carry_the_eta_on_a_fake_clock(tmp_path, monkeypatch):
    """The study driver's progress: each line ends in the ETA and status.json holds it; a trial
    that took twice its estimate doubles what is left."""
    import io
    import json
    from types import SimpleNamespace

    pytest.importorskip("ray")
    from xlt.study import progress as P
    from xlt.study.space import Search

    now = [1000.0]
    monkeypatch.setattr(P.time, "time", lambda: now[0])
    search = Search({}, None, None, 3, 3, ["f1"], ["max"], "en-dev")
    out = io.StringIO()
    costs = {0.1: 100.0, 0.2: 100.0, 0.3: 50.0}
    prog = P.Progress(tmp_path, search, {"study": "s", "run_id": "r"}, None, stream=out,
                      estimate=lambda params: costs.get(params.get("train.lr"), 250 / 3), slots=1,  # unknown: the mean
                      planned=[{"train.lr": lr} for lr in costs])
    trial = SimpleNamespace(trial_id="t0", config={"train.lr": 0.1}, error_file=None)
    prog.on_trial_start(0, [], trial)
    assert out.getvalue().rstrip().endswith("| ETA 0:04:10")  # 100 + the two planned trials not started (100, 50)
    now[0] += 200  # it takes 200 s, twice its estimate
    prog._finish(trial, "done")
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["eta"]["factor"] == pytest.approx(2.0) and status["eta"]["finished"] == 1
    assert status["eta"]["seconds"] == pytest.approx(2 * (100 + 50))
    prog.on_trial_start(0, [], SimpleNamespace(trial_id="t1", config={"train.lr": 0.3}, error_file=None))
    now[0] += 30
    prog.write()
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["eta"]["seconds"] == pytest.approx((2 * 50 - 30) + 2 * 100)  # lr 0.2 is the one left
    # a sampler's trial the plan does not list: the mean, and the plan's unseen trials still count
    (tmp_path / "b").mkdir()
    sampler = P.Progress(tmp_path / "b", search, {"study": "s", "run_id": "r"}, None, stream=io.StringIO(),
                         estimate=lambda params: costs.get(params.get("train.lr"), 250 / 3), slots=1)
    assert sampler.eta(now[0])["seconds"] == pytest.approx(250)
    prog.write("done")
    assert json.loads((tmp_path / "status.json").read_text())["eta"] is None


def test_the_live_page_is_rewritten_at_the_first_trial_end_then_at_most_every_30_s(tmp_path, monkeypatch):
    import io
    from types import SimpleNamespace

    pytest.importorskip("ray")
    from xlt.study import progress as P
    from xlt.study.space import Search

    now = [0.0]
    monkeypatch.setattr(P.time, "time", lambda: now[0])
    pages: list[float] = []
    prog = P.Progress(tmp_path, Search({}, None, None, 3, 3, ["f1"], ["max"], "en-dev"), {"study": "s", "run_id": "r"},
                      None, stream=io.StringIO(), page=lambda: pages.append(now[0]))
    for i, at in enumerate([5.0, 20.0, 40.0]):
        now[0] = at
        trial = SimpleNamespace(trial_id=f"t{i}", config={}, error_file=None)
        prog.on_trial_start(0, [], trial)
        prog._finish(trial, "done")
    assert pages == [5.0, 40.0]
