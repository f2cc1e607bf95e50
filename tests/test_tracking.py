"""Trackers (a study's `tracking:` section, xlt.study.tracking): none imported unless named, a
missing package or an unusable MLflow store is one line before Ray starts, and a tiny study run
with MLflow (SQLite store in the run directory), W&B (offline) and TensorBoard on logs every
evaluation per eval set, the trial's parameters and its saved model, read back with each tool's
own reader.
"""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli
from tests.test_study import write_study
from xlt import results

BUILD = """
import json, sys
from pathlib import Path
from xlt.spec import load_spec
from xlt.study import tracking
spec = load_spec(sys.argv[1], sys.argv[2:])
built = [type(c).__name__ for c in tracking.trackers(spec, Path("/nonexistent"), "run-0")._callbacks]
imported = {m.split(".")[0] for m in sys.modules} & {"mlflow", "wandb", "tensorboardX", "tensorboard"}
print(json.dumps({"built": built, "imported": sorted(imported)}))
"""


def _build(*overrides: str) -> dict:
    """The quickstart study's trackers built in a fresh interpreter: which, and which tracker packages that imported."""
    p = subprocess.run([sys.executable, "-c", BUILD, str(ROOT / "studies" / "quickstart.yaml"), *overrides],
                       capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.splitlines()[-1])


def test_no_tracker_package_is_imported_without_tracking():
    assert _build() == {"built": ["CSVLoggerCallback", "JsonLoggerCallback"], "imported": []}
    # the same build with every tracker named does import them (so the check above can fail)
    on = _build("tracking.mlflow={}", "tracking.wandb={}", "tracking.tensorboard=true")
    assert on["built"] == ["CSVLoggerCallback", "JsonLoggerCallback", "MLflow", "Wandb", "TensorBoard"]
    assert {"mlflow", "wandb", "tensorboardX"} <= set(on["imported"])


@pytest.mark.parametrize("override, env, message", [
    ("tracking.wandb={}", {}, "tracking.wandb: needs the wandb package: pip install 'xlt[wandb]'"),
    ("tracking.mlflow.tracking_uri=${XLT_TEST_MLFLOW_URI}", {"XLT_TEST_MLFLOW_URI": "/tmp/mlruns"},
     "tracking.mlflow.tracking_uri: MLflow's file store cannot hold both f1 and f1/<set>"),
])
def test_a_tracker_that_cannot_work_is_one_line_before_ray_starts(in_tmp, monkeypatch, override, env, message):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: find_spec says None
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, _, err = run_cli("run", str(write_study(in_tmp)), override, "--out", str(in_tmp / "run"))
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (in_tmp / "run" / "ray").exists()  # Tune never started


def test_a_restored_tuner_logs_to_this_session_s_trackers(tmp_path):
    """Tune pickles its callbacks into the experiment and a restored Tuner uses the unpickled ones:
    they resolve to the trackers the resuming session built from its study file."""
    from ray import cloudpickle

    from xlt.spec import load_spec
    from xlt.study import tracking

    spec = load_spec(ROOT / "studies" / "quickstart.yaml")
    pickled = cloudpickle.dumps([tracking.trackers(spec, tmp_path, "first")])
    resumed = tracking.trackers(spec, tmp_path, "second")
    (restored,) = cloudpickle.loads(pickled)
    assert restored is resumed


# ---------------------------------------------------------------- a study with every tracker on


def wandb_records(path: Path):
    """The records of a W&B offline run's transaction log (run-<id>.wandb), parsed with wandb's own
    protobuf schema (wandb 0.31 reads these files in its Go core only): after a 7-byte file header
    (":W&B", 0xBEE1, version 0), LevelDB's log format: 32 KiB blocks of chunks, each a 7-byte
    header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last) and its bytes."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:7] == b":W&B" + struct.pack("<HB", 0xBEE1, 0), data[:7]
    pos, record = 7, b""
    while len(data) - pos >= 7:
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, pos)
        record += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(record)
            record = b""


def wandb_run(path: Path) -> dict:
    """A W&B run file's run record, config and history rows."""
    run, config, history = None, {}, []
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in r.config.update})
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item})
    return {"run": run, "config": config, "history": history}


@pytest.mark.slow
@pytest.mark.ray
def test_trackers_log_every_evaluation_the_params_and_the_model(ray_session, in_tmp):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    study = write_study(in_tmp, name="tiny-track", train={"save_model": True},
                        tracking={"mlflow": {}, "wandb": {}, "tensorboard": True})
    out = in_tmp / "run"
    code, _, err = run_cli("run", str(study), "--out", str(out))  # two trials (train.lr 1e-3, 3e-3), in the driver
    assert code == 0, err
    run_id = json.loads((out / "run.json").read_text())["run_id"]

    # what each trial's evaluations scored, per eval set, in order: the trackers' series are these
    # and the trial's closing report (xlt.study.driver reports the last event once more, with the model)
    rows = sorted(results.read_log(out), key=lambda r: r["event"])
    lr = {r["trial_id"]: json.loads(r["params"])["train.lr"] for r in rows}
    assert sorted(lr.values()) == [1e-3, 3e-3]
    sets = ("en-dev", "ru-dev")
    series = {(t, s, score): [r[score] for r in rows if r["trial_id"] == t and r["eval_set"] == s]
              for t in lr for s in sets for score in ("f1", "exact_match")}
    assert all(len(v) == 4 for v in series.values())  # evaluations at steps 2, 4, 6 and the final one
    expected = {k: v + v[-1:] for k, v in series.items()}
    model = {t: out / "trials" / t / "model" for t in lr}
    assert all(m.is_dir() for m in model.values())
    tune_dir = {t: next((out / "ray" / "tune").glob(f"trial_driver_{t}_*")) for t in lr}

    # MLflow: the default store, SQLite in the run directory; one run per trial
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "tiny-track"]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["trial_name"] for r in runs) == sorted(f"trial_driver_{t}" for t in lr)
    for r in runs:
        t = r.data.tags["trial_name"].removeprefix("trial_driver_")
        assert float(r.data.params["train.lr"]) == lr[t] and r.info.status == "FINISHED"
        assert r.data.tags["model_path"] == str(model[t]) and r.data.tags["xlt.run_id"] == run_id
        for s in sets:
            for score in ("f1", "exact_match"):
                history = sorted(client.get_metric_history(r.info.run_id, f"{score}/{s}"), key=lambda m: m.step)
                assert [m.value for m in history] == pytest.approx(expected[t, s, score]), (t, s, score)

    # W&B, offline: a run file per trial in the run directory, nothing sent
    for t in lr:
        (path,) = (out / "wandb").glob(f"offline-run-*-{t}/run-{t}.wandb")
        w = wandb_run(path)
        assert (w["run"].run_id, w["run"].project, w["run"].run_group) == (t, "tiny-track", run_id)
        assert w["config"]["train.lr"] == lr[t] and w["config"]["model_path"] == str(model[t])
        for s in sets:
            logged = [h[f"f1/{s}"] for h in w["history"] if f"f1/{s}" in h]
            assert logged == pytest.approx(expected[t, s, "f1"]), (t, s)

    # TensorBoard: Tune's scalars, the model's path as text, the parameters as hparams
    for t in lr:
        acc = EventAccumulator(str(tune_dir[t]), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        for s in sets:
            assert [e.value for e in acc.Scalars(f"ray/tune/f1/{s}")] == pytest.approx(expected[t, s, "f1"])
        (text,) = acc.Tensors("model_path/text_summary")
        assert text.tensor_proto.string_val[0].decode() == str(model[t])
        start = plugin_data_pb2.HParamsPluginData.FromString(
            acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["train.lr"].number_value == lr[t]

    # nothing written outside the run directory (the study file and the dashboard aside)
    assert sorted(p.name for p in in_tmp.iterdir()) == ["dashboards", "run", "tiny-track.yaml"]
