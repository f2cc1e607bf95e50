"""The hooks the study runner relies on, without Ray: a pipeline resumed from a checkpoint
continues exactly where it stopped, batch sharding splits one global order, and the run
directory's rows deduplicate."""

import copy
import io
import json
import random

import pytest
import torch

from tests.helpers import tiny_qa_study
from xlt.errors import XltError
from xlt.spec import spec_from_dict
from xlt.study import rundir
from xlt.train.loop import BatchCursor, Session, shard
from xlt.train.qa import run_qa
from xlt.train.trial import TrialInfo

TINY = tiny_qa_study(train=80, dev=16, max_steps=8)


def tiny(**train):
    tree = copy.deepcopy(TINY)
    tree["train"].update(train)
    return spec_from_dict(tree)


def run(spec, session=None):
    rows = []
    info = TrialInfo(study=spec.name, run_id="r", trial_id="t")
    run_qa(spec, rows.extend, info, device=torch.device("cpu"), session=session)
    return rows


def keyed(rows):
    drop = {"wall_seconds", "pipeline_seconds", "device_seconds", "time"}
    return {(r["stage"], r["event"], r["eval_set"]): {k: v for k, v in r.items() if k not in drop} for r in rows}


def snapshots(spec, trial_dir):
    saved = []
    rows = run(spec, Session(on_event=lambda state: saved.append(copy.deepcopy(state())), trial_dir=str(trial_dir)))
    return rows, saved


@pytest.mark.parametrize("mode", ["fixed", "validated"])
def test_resume_from_a_checkpoint_continues_exactly(mode, tmp_path):
    spec = tiny(mode=mode, patience=2)
    full, saved = snapshots(spec, tmp_path)
    assert (tmp_path / "tokenizer").is_dir()  # a restart must reuse the trial's vocabulary
    assert len(saved) == len({r["event"] for r in full if r["stage"] == "qa"})
    buf = io.BytesIO()
    torch.save(saved[1], buf)  # what the worker writes: it must load with weights_only
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    resumed = run(spec, Session(resume=state, trial_dir=str(tmp_path)))
    assert min(r["event"] for r in resumed if r["stage"] == "qa") == 2  # nothing before the checkpoint redone
    want = {k: v for k, v in keyed(full).items() if k[0] == "final" or k[1] >= 2}
    got = keyed(resumed)
    assert got.keys() == want.keys()
    for k in want:
        for col in ("f1", "exact_match", "step", "flops_train", "examples_seen", "tokens_real", "train_loss"):
            assert got[k][col] == pytest.approx(want[k][col], rel=1e-5, nan_ok=True), (k, col)


def test_a_checkpoint_after_the_last_evaluation_trains_no_further(tmp_path):
    spec = tiny()
    full, saved = snapshots(spec, tmp_path)
    assert saved[-1]["loop"]["finished"]
    resumed = run(spec, Session(resume=saved[-1], trial_dir=str(tmp_path)))
    assert [r["stage"] for r in resumed] == ["final", "final"]
    assert keyed(resumed).keys() == {k for k in keyed(full) if k[0] == "final"}
    assert {r["f1"] for r in resumed} == {r["f1"] for r in full if r["stage"] == "final"}


def test_shards_split_one_global_order():
    def order(rng):
        items = list(range(10))
        rng.shuffle(items)
        return items

    whole = BatchCursor(order, seed=3)
    want = [next(it) for it in [iter(whole)] for _ in range(24)]
    got, skipped = {0: [], 1: []}, {0: [], 1: []}
    for rank in (0, 1):
        stream = shard(BatchCursor(order, seed=3), Session(rank=rank, world_size=2), skipped[rank].append)
        got[rank] = [next(stream) for _ in range(12)]
    assert got[0] == want[0::2] and got[1] == want[1::2]
    assert skipped[0][:11] == want[1::2][:11]  # every rank meters the whole job's batches


def test_cursor_resumes_mid_epoch():
    def order(rng):
        return random.Random(rng.random()).sample(range(7), 7)

    a = BatchCursor(order, seed=1)
    it = iter(a)
    first = [next(it) for _ in range(10)]
    b = BatchCursor(order, seed=1)
    b.load(a.state())
    rest = [next(iter(b)) for _ in range(1)]
    assert rest == [next(it)]
    assert len(first) == 10


def test_rows_dedupe_keeps_the_last_of_each_event(tmp_path):
    from xlt import results

    base = {"trial_id": "t", "stage": "qa", "eval_set": "en", "f1": 1.0}
    results.append_rows(tmp_path, [{**base, "event": 0}, {**base, "event": 1}])
    results.append_rows(tmp_path, [{**base, "event": 1, "f1": 2.0}, {**base, "event": 2}])  # a restart redid event 1
    rows = rundir.read_rows(tmp_path)
    assert [(r["event"], r["f1"]) for r in rows] == [(0, 1.0), (1, 2.0), (2, 1.0)]
    rundir.compact(tmp_path)
    assert len(results.read_table(tmp_path / results.TABLE)) == 3


def test_adaptation_resumes_in_step3_and_step2_exactly(tmp_path):
    """Steps 3 and 2 checkpoint at every evaluation; a restart from any of them redoes nothing
    before it and ends where an uninterrupted trial ends. A restart inside step 3 finds no
    step-3 artifact (the crash came before it was cached)."""
    import shutil

    import yaml

    from tests.test_adapt import TINY_ADAPT
    from xlt.train.adapt import run_adapt

    tree = yaml.safe_load(TINY_ADAPT)
    tree["train"]["eval_every"] = 2
    spec = spec_from_dict(tree)

    def go(session, cache):
        rows = []
        s = spec.model_copy(update={"cache_dir": str(cache)})
        run_adapt(s, rows.extend, TrialInfo(study="a", run_id="r", trial_id="t"), device=torch.device("cpu"),
                  session=session)
        return rows

    saved = []
    full = go(Session(on_event=lambda state: saved.append(copy.deepcopy(state())), trial_dir=str(tmp_path / "t")),
              tmp_path / "cache")
    stages = [s["stage"] for s in saved]
    assert stages == ["step3", "step3", "step2", "step2"]  # step-3 evaluations at 2, 4; step 2 at 2, 4
    assert len(list((tmp_path / "cache/tokenizer").iterdir())) == 2  # source and target, made once
    shutil.copytree(tmp_path / "cache", tmp_path / "no-step3")
    shutil.rmtree(tmp_path / "no-step3/step3")
    for i, cache in ((0, tmp_path / "no-step3"), (2, tmp_path / "cache")):
        state = saved[i]
        resumed = go(Session(resume=state, trial_dir=str(tmp_path / "t")), cache)
        first = min((r["stage"] != "step3", r["event"]) for r in resumed)
        assert first == (False, 1) if i == 0 else first == (True, 2)  # nothing before the checkpoint redone
        want = {k: v for k, v in keyed(full).items() if k in keyed(resumed)}
        assert {k[0] for k in want} >= {"step2", "final"} and len(want) == len(keyed(resumed))
        for k, row in keyed(resumed).items():
            for col in ("f1", "exact_match", "step", "flops_train", "examples_seen", "train_loss"):
                assert row[col] == pytest.approx(want[k][col], rel=1e-5, nan_ok=True), (i, k, col)


def test_answer_rule_reaches_every_evaluation(monkeypatch):
    from xlt.data import features as F

    seen = []
    init = F.SpanDecoder.__init__

    def spy(self, *args, rule="run_qa", **kwargs):
        seen.append(rule)
        init(self, *args, rule=rule, **kwargs)

    monkeypatch.setattr(F.SpanDecoder, "__init__", spy)
    rows = run(tiny(max_steps=2, answer_rule="pipeline"))
    assert len(seen) == 2 and set(seen) == {"pipeline"}  # one evaluation (step 2, the last), 2 eval sets
    assert rows and all(0 <= r["f1"] <= 100 for r in rows)


def test_a_run_directory_from_before_a_key_was_retired_still_resumes(tmp_path):
    """A spec.json written before train.checkpoint became train.save_model and train.n_best went
    away is read as this version writes it, so `--resume` accepts the run (same hash); a study
    file with the old keys is still refused."""
    import json

    from xlt.spec import load_spec, migrate_saved

    study = tmp_path / "s.yaml"
    study.write_text("name: t\nmodel: {tiny: {layers: 2}}\ndata:\n  english: {lang: en, synthetic: {n: 10}}\n"
                     "  eval: [{name: dev, lang: en, synthetic: {n: 5, split: dev}}]\ntrain: {save_model: false}\n")
    spec = load_spec(study)
    old = spec.model_dump(mode="json")
    old["train"]["checkpoint"] = old["train"].pop("save_model")
    old["train"]["n_best"] = 20
    out = tmp_path / "run"
    out.mkdir()
    (out / rundir.SPEC).write_text(json.dumps(old))
    assert spec_from_dict(migrate_saved(old)).hash() == spec.hash()
    rundir.check(out, spec, resume=True)  # no error: the same study
    with pytest.raises(XltError, match="train.checkpoint: renamed to train.save_model"):
        spec_from_dict(old)


@pytest.mark.parametrize("override, named", [
    ({"train": {"lr": 0.01}}, "train.lr: 0.003 -> 0.01"),
    ({"search": {"space": {"train.lr": [0.001, 0.003]}}}, 'search.space.train.lr: (absent) -> {"choice": [0.001, 0.003]}'),
])
def test_resume_with_a_changed_study_names_the_first_key_that_differs(tmp_path, override, named):
    from xlt.spec import apply_overrides

    tree = tiny_qa_study(train=16, dev=4, max_steps=2)
    spec = spec_from_dict(tree)
    out = tmp_path / "run"
    rundir.create(out, spec, None)
    changed = spec_from_dict(apply_overrides(tree, {k: {**tree.get(k, {}), **v} for k, v in override.items()}))
    with pytest.raises(XltError, match="different spec") as e:
        rundir.check(out, changed, resume=True)
    assert named in str(e.value) and "--resume --force" in str(e.value), str(e.value)
    # --resume --force goes on, and run.json says when and what differed
    run = rundir.check(out, changed, resume=True, force=True)
    rundir.create(out, changed, run)
    saved = json.loads((out / "run.json").read_text())
    assert saved["run_id"] == run["run_id"] and saved["forced"][0]["difference"] == named
    assert saved["forced"][0]["to_hash"] == changed.hash() and rundir.check(out, changed, resume=True) is not None
