"""`xlt estimate STUDY --against RUN`: the estimate priced at the trials a run finished, beside
what each measured."""

import json

import pytest

from tests.helpers import ROOT, run_cli
from xlt import results
from xlt.spec import load_spec
from xlt.study.estimate import estimate
from xlt.study.estimate_vs_run import against


def fake_run(tmp_path, spec, trials):
    """A run directory as `xlt run` leaves it: status.json and the row log (several rows a trial,
    the last holding its running totals), trials given as (id, params, started, measured)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "spec.json").write_text(json.dumps(spec.model_dump(mode="json")))
    status = {"study": spec.name, "state": "done", "elapsed_seconds": 7200.0, "trials": {}}
    rows = []
    for tid, params, started, m in trials:
        status["trials"][tid] = {"params": params, "state": m.pop("state", "done"), "started": started}
        rows += [{"trial_id": tid, "stage": "qa", "device_seconds": m["device_seconds"] / 2,
                  "flops_train": m["flops_train"] / 2, "flops_eval": 0.0},
                 {"trial_id": tid, "stage": "final", **m}]
    (out / "status.json").write_text(json.dumps(status))
    results.append_rows(out, rows)
    return out


def test_each_finished_trial_is_priced_at_its_own_parameters(tmp_path):
    spec = load_spec(ROOT / "studies/quickstart.yaml", ["throughput={cpu: 1.0e9}"])
    a, b = {"train.lr": 1e-3, "data.target_count": 0}, {"train.lr": 2e-3, "data.target_count": 400}
    one = {"flops_train": 0.0, "flops_eval": 0.0}
    priced = [estimate(load_spec(ROOT / "studies/quickstart.yaml", ["throughput={cpu: 1.0e9}", "search.space={}",
                                                                   f"train.lr={p['train.lr']}",
                                                                   f"data.target_count={p['data.target_count']}"]))
              for p in (a, b)]
    # trial b started first; measured twice its estimated FLOPs and 3x its hours; a as estimated
    run = fake_run(tmp_path, spec, [
        ("t1", a, 20.0, {"flops_train": priced[0]["flops_train"], "flops_eval": priced[0]["flops_eval"],
                         "device_seconds": 3600 * priced[0]["device_hours"]}),
        ("t0", b, 10.0, {"flops_train": 2 * priced[1]["flops_train"], "flops_eval": priced[1]["flops_eval"],
                         "device_seconds": 3 * 3600 * priced[1]["device_hours"]}),
        ("t2", a, 30.0, {**one, "device_seconds": 1.0, "state": "running"})])
    c = against(spec, run)
    assert [t["trial_id"] for t in c["trials"]] == ["t0", "t1"]  # finished ones, in the order they started
    t0, t1 = c["trials"]
    assert t0["flops_train"][1] / t0["flops_train"][0] == pytest.approx(2.0)
    assert t0["device_hours"][1] / t0["device_hours"][0] == pytest.approx(3.0)
    assert t1["flops_train"][1] / t1["flops_train"][0] == pytest.approx(1.0)
    assert t1["device_hours"][1] / t1["device_hours"][0] == pytest.approx(1.0)
    assert c["wall_hours"][1] is None  # a trial is unfinished: the run's wall time is not the study's
    assert c["same_spec"] is True
    code, out, _ = run_cli("estimate", str(ROOT / "studies/quickstart.yaml"), "throughput={cpu: 1.0e9}",
                           "--against", str(run))
    assert code == 0 and "2 finished trials" in out and "(2.00x)" in out and "(3.00x)" in out, out
    assert "unfinished trials" in out


def test_against_a_directory_without_a_run_is_one_line(tmp_path):
    code, _, err = run_cli("estimate", str(ROOT / "studies/quickstart.yaml"), "--against", str(tmp_path))
    assert code == 2 and "no trials in status.json" in err and "Traceback" not in err


def test_the_token_model_holds_on_the_shipped_search_grid(data_dir, minilm_path):
    """The recorded MiniLM grid on SQuAD-train (studies/results/search_grid_cpu): the estimate's
    windows, counted by the model's tokenizer, against the windows each trial really cut."""
    c = against(load_spec(ROOT / "studies/search_grid_cpu.yaml"), ROOT / "studies/results/search_grid_cpu")
    assert len(c["trials"]) == 12 and c["same_spec"] is True
    for t in c["trials"]:
        est, measured = t["flops_train"]
        assert 0.95 < measured / est < 1.05, t


@pytest.mark.slow
def test_the_token_model_holds_across_languages_and_tokenizers(data_dir, e5_path, minilm_path):
    """studies/results/xquad_transfer_cpu: e5-small (XLM-R sentencepiece) and MiniLM (English
    WordPiece) on SQuAD-train, scored on XQuAD en/ru/zh and DRCD. Counted as words x 1.3, MiniLM's
    evaluation FLOPs came out at half of what it spent (its WordPiece cuts Cyrillic finely)."""
    c = against(load_spec(ROOT / "studies/xquad_transfer_cpu.yaml"), ROOT / "studies/results/xquad_transfer_cpu")
    assert len(c["trials"]) == 4 and c["same_spec"] is True
    for t in c["trials"]:
        for key in ("flops_train", "flops_eval"):
            est, measured = t[key]
            assert 0.9 < measured / est < 1.1, (key, t)
