"""`xlt run` and `xlt status` on Ray: tiny studies end to end, bad input, DDP workers, a killed
driver resumed, a killed trial process recovered from its checkpoint, a two-node cluster.

One Ray instance serves the in-process tests of the session (`ray_session`, tests/conftest.py).
Tests that need their own Ray (a driver to kill, a cluster) run it in subprocesses tagged with a
unique environment value, and clean up exactly the processes that carry the tag.
"""

import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, run_cli, tiny_qa_study
from xlt import results
from xlt.study import rundir

pytestmark = pytest.mark.ray

STUDY = {**tiny_qa_study(train=100, dev=20, max_steps=6),
         "search": {"algorithm": "grid", "space": {"train.lr": [1e-3, 3e-3]}}}
EVAL_SETS = 2


def run_two_rank_trial(study, out) -> list[dict]:
    """`xlt run` a one-trial study of two ranks; what each rank wrote about itself (rank-<r>.json)."""
    code, _, err = run_cli("run", str(study), "--out", str(out))
    assert code == 0, err
    (trial,) = list((out / "trials").iterdir())
    ranks = [json.loads((trial / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    return ranks


def write_study(path: Path, name: str = "tiny", **sections) -> Path:
    tree = copy.deepcopy(STUDY)
    tree["name"] = name
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict) and key != "search":
            tree[key] = {**tree[key], **value}
        else:
            tree[key] = value
    f = path / f"{name}.yaml"
    f.write_text(yaml.safe_dump(tree))
    return f


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float, what: str, interval: float = 0.2):
    end = time.time() + timeout
    while time.time() < end:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def final_rows(run_dir: Path) -> list[dict]:
    return [r for r in results.read_table(run_dir).to_dict("records") if r["stage"] == "final"]


# ---------------------------------------------------------------- tagged subprocesses


def tagged_env(tag: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env.update(XLT_TEST_TAG=tag, PYTHONPATH=str(ROOT), **extra)
    return env


def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries the tag: the ones this test started, and their children."""
    needle = f"XLT_TEST_TAG={tag}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
    return pids


def kill_tagged(tag: str, grace: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in tagged_pids(tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not tagged_pids(tag), grace, "tagged processes to exit", interval=0.5)
    left = tagged_pids(tag)
    assert not left, f"processes left behind: {left}"


def xlt(*args: str) -> list[str]:
    return [sys.executable, "-m", "xlt.cli", *args]


# ---------------------------------------------------------------- fast (default suite)


def test_grid_study_end_to_end(ray_session, in_tmp):
    study = write_study(in_tmp, search={"algorithm": "grid", "space": {"train.lr": [1e-3, 3e-3]}})
    out = in_tmp / "run"
    code, stdout, err = run_cli("run", str(study), "--out", str(out))
    assert code == 0, err
    table = results.read_table(out)
    assert table["trial_id"].nunique() == 2
    assert sorted(json.loads(p)["train.lr"] for p in table["params"].unique()) == [1e-3, 3e-3]
    assert len(final_rows(out)) == 2 * EVAL_SETS
    for _, g in table[table["stage"] == "qa"].groupby("trial_id"):
        assert sorted(g["event"].unique()) == [0, 1, 2]
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "done" and status["counts"] == {"done": 2, "running": 0, "failed": 0, "pending": 0}
    assert (out / "DONE").exists() and (out / "spec.json").exists()
    assert "done 2 running 0 pending 0" in stdout and "best f1" in stdout
    code, text, err = run_cli("status", str(out))
    assert code == 0, err
    assert "2 done" in text and "best: f1" in text and "device-hours" in text
    st = json.loads(run_cli("status", str(out), "--json")[1])
    assert all(t["overhead_seconds"] > 0 for t in st["trials"])
    assert st["flops_train_total"] == pytest.approx(sum(r["flops_train"] for r in final_rows(out)) / EVAL_SETS)
    # one CPU worker: each trial ran in its trial driver (no Train run), the second in the first's process
    assert json.loads((out / "run.json").read_text())["trial_host"] == "driver"
    assert not list((out / "ray").glob("train-*"))
    first, second = (json.loads(p.read_text()) for p in sorted(out.glob("trials/*/rank-0.json")))
    assert first["pid"] == second["pid"]
    # and a reused process changes nothing: the second trial as `xlt trial` gives the same rows
    # (the same tokenizer, from the run's cache: trained twice it differs, see README)
    code, _, err = run_cli("trial", str(study), "--out", str(in_tmp / "alone"), "train.lr=0.003",
                           f"cache_dir={out / 'artifacts'}")
    assert code == 0, err
    keys = ("stage", "event", "eval_set", "f1", "exact_match", "train_loss", "step", "tokens_real")
    rows = sorted(tuple(r[k] for k in keys) for r in results.read_log(out) if json.loads(r["params"])["train.lr"] == 3e-3)
    assert rows == sorted(tuple(r[k] for k in keys) for r in results.read_log(in_tmp / "alone"))


@pytest.fixture(scope="module")
def tpe_run(ray_session, tmp_path_factory) -> Path:
    """A finished two-trial TPE study's run directory (shared by the tests that read its optuna.db)."""
    tmp = tmp_path_factory.mktemp("tpe")
    study = write_study(tmp, name="tiny-tpe", search={
        "algorithm": "tpe", "num_samples": 2, "space": {"train.lr": {"log_range": [1e-3, 1e-2]}},
        "objectives": [{"metric": "f1", "eval_set": "ru-dev"}]})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # the dashboard goes to ./dashboards
        code, _, err = run_cli("run", str(study), "--out", str(tmp / "run"))
    assert code == 0, err
    return tmp / "run"


@pytest.mark.slow
def test_tpe_study_writes_an_optuna_study(tpe_run):
    optuna = pytest.importorskip("optuna")
    out = tpe_run
    ot = optuna.load_study(study_name="tiny-tpe", storage=f"sqlite:///{out / 'optuna.db'}")
    done = [t for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2
    finals = sorted(r["f1"] for r in final_rows(out) if r["eval_set"] == "ru-dev")
    assert sorted(t.value for t in done) == pytest.approx(finals)
    # Tune's CSV and JSON logs as ever; its TensorBoard files only where a study asks (test_tracking.py)
    trial_dirs = list((out / "ray" / "tune").glob("trial_driver_*"))
    assert len(trial_dirs) == 2 and all((d / "result.json").stat().st_size and (d / "progress.csv").exists()
                                        for d in trial_dirs)
    assert not list((out / "ray").rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_optuna_dashboard_serves_the_run_s_study(tpe_run, tmp_path):
    """optuna-dashboard (README) on the run's optuna.db: its JSON API lists the study and its trials."""
    import urllib.request

    pytest.importorskip("optuna_dashboard")
    port = free_port()
    log = tmp_path / "optuna-dashboard.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("optuna-dashboard")),
                                 f"sqlite:///{tpe_run / 'optuna.db'}", "--port", str(port), "--host", "127.0.0.1"],
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        def get(path: str):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return json.loads(r.read())

        def studies():
            if proc.poll() is not None:
                raise AssertionError(f"optuna-dashboard exited {proc.returncode}: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                return get("/api/studies")["study_summaries"]

        (summary,) = wait_for(studies, 60, "optuna-dashboard to answer")
        assert summary["study_name"] == "tiny-tpe" and summary["directions"] == ["maximize"]
        detail = get(f"/api/studies/{summary['study_id']}")
        done = [t for t in detail["trials"] if t["state"] == "Complete"]
        finals = sorted(r["f1"] for r in final_rows(tpe_run) if r["eval_set"] == "ru-dev")
        assert len(detail["trials"]) == len(done) == len(finals) == 2
        assert sorted(t["values"][0] for t in done) == pytest.approx(finals)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("override, word", [("resources.gpus_per_worker=1", "GPU"),
                                            ("resources.cpus_per_worker=8", "CPU")])
def test_more_resources_than_the_cluster_has_is_one_line(ray_session, in_tmp, override, word):
    study = write_study(in_tmp)
    code, _, err = run_cli("run", str(study), "--out", str(in_tmp / "run"), override)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("xlt: error:") and word in err, err
    assert not (in_tmp / "run").exists()  # nothing written: the same --out works once fixed


def test_unreachable_address_is_one_line(in_tmp):
    study = write_study(in_tmp)
    t0 = time.time()
    code, _, err = run_cli("run", str(study), "--out", str(in_tmp / "run"), "--address", f"127.0.0.1:{free_port()}")
    assert code == 2 and err.count("\n") == 1 and "cannot reach" in err, err
    assert time.time() - t0 < 15


def test_run_directory_guards(in_tmp):
    from xlt.spec import load_spec

    a, b = write_study(in_tmp, name="study-a"), write_study(in_tmp, name="study-b")
    out = in_tmp / "run"
    rundir.create(out, load_spec(a), None)
    code, _, err = run_cli("run", str(a), "--out", str(out))
    assert code == 2 and "--resume" in err and err.count("\n") == 1, err
    code, _, err = run_cli("run", str(b), "--out", str(out), "--resume")
    assert code == 2 and "study-a" in err and err.count("\n") == 1, err
    code, _, err = run_cli("run", str(a), "--out", str(out), "--resume", "train.lr=0.01")
    assert code == 2 and "different spec" in err and err.count("\n") == 1, err


def test_status_of_a_directory_that_is_no_run(in_tmp):
    code, _, err = run_cli("status", str(in_tmp))
    assert code == 2 and err.count("\n") == 1, err


# ---------------------------------------------------------------- slow (pytest -m slow)


@pytest.mark.slow
def test_two_ddp_workers_per_trial(ray_session, in_tmp):
    study = write_study(in_tmp, resources={"workers": 2, "cpus_per_worker": 0.5},
                        search={"algorithm": "grid", "space": {}})
    out = in_tmp / "run"
    ranks = run_two_rank_trial(study, out)
    assert all(r["trained_batches"] == 6 for r in ranks)  # 6 steps, each rank its own share
    assert ranks[0]["pid"] != ranks[1]["pid"]
    log = results.read_log(out)
    assert len(log) == len(rundir.dedupe(log)) == 4 * EVAL_SETS  # rank 0 alone wrote rows
    assert {r["n_devices"] for r in log} == {2}
    qa = [r for r in log if r["stage"] == "qa" and r["eval_set"] == "en-dev"]
    assert [r["step"] for r in qa] == [2, 4, 6]
    # both ranks' batches are counted: more than one rank's 8 a step could give (one batch of an epoch is short)
    assert all(8 * r["step"] < r["examples_seen"] <= 2 * 8 * r["step"] for r in qa)


@pytest.mark.slow
def test_two_ddp_workers_per_adaptation_trial(ray_session, in_tmp):
    """Every adaptation step is data-parallel: both ranks train steps 1, 3 and 2 (3, 4 and 4
    batches of 8, so 2 + 4 + 2 optimizer steps each) and agree on one target vocabulary."""
    from tests.test_adapt import TINY_ADAPT

    tree = yaml.safe_load(TINY_ADAPT)
    tree.update(resources={"workers": 2, "cpus_per_worker": 0.5}, search={"algorithm": "grid", "space": {}})
    study = in_tmp / "adapt.yaml"
    study.write_text(yaml.safe_dump(tree))
    out = in_tmp / "run"
    ranks = run_two_rank_trial(study, out)
    assert [r["trained_batches"] for r in ranks] == [8, 8]
    assert len(list((out / "artifacts/tokenizer").iterdir())) == 2  # source and target: one each for both ranks
    rows = rundir.read_rows(out)
    assert {r["n_devices"] for r in rows} == {2}
    curve = sorted((r["step"], r["examples_seen"]) for r in rows if r["stage"] == "step2")
    assert [s for s, _ in curve] == [0, 1, 2]  # evaluations every 2 batches of 8 = 1 step of both ranks
    assert [len(final_rows(out))] == [1]


@pytest.mark.slow
def test_killed_train_worker_recovers_from_its_checkpoint(ray_session, in_tmp):
    """Rank 0 of a one-worker trial is its trial driver (Tune's process): killed, Tune retries the
    trial from its last Tune checkpoint (resources.max_failures), as Train restarts a worker group."""
    study = write_study(in_tmp, train={"max_steps": 240, "eval_every": 12}, search={"algorithm": "grid", "space": {}})
    out = in_tmp / "run"
    tag = uuid.uuid4().hex
    with open(in_tmp / "log.txt", "w") as log:
        p = subprocess.Popen(xlt("run", str(study), "--out", str(out), "--address", ray_session), stdout=log,
                             stderr=subprocess.STDOUT, env=tagged_env(tag), cwd=in_tmp, start_new_session=True)
        try:
            marker = wait_for(lambda: list(out.glob("trials/*/rank-0.json")), 120, "the Train worker")[0]
            first = wait_for(lambda: (m := rundir.read_json(marker)) and m.get("reports", 0) >= 2 and m, 120,
                             "two reports", interval=0.05)
            os.kill(first["pid"], signal.SIGKILL)
            assert p.wait(timeout=300) == 0, (in_tmp / "log.txt").read_text()[-3000:]
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    again = rundir.read_json(marker)
    assert again["pid"] != first["pid"]
    # restarted from a checkpoint, not from scratch (the last one Train had registered: a checkpoint
    # reported just before the kill may not be, so the restart can go back an event or two)
    assert again["resumed_from_event"] is not None and 0 <= again["resumed_from_event"] < first["reports"]
    rows = rundir.read_rows(out)
    events = sorted(r["event"] for r in rows if r["stage"] == "qa" and r["eval_set"] == "en-dev")
    assert events == list(range(20))
    assert len(final_rows(out)) == EVAL_SETS
    redone = (len(results.read_log(out)) - len(rows)) // EVAL_SETS
    assert redone <= first["reports"]  # only events after the checkpoint were redone


@pytest.mark.slow
def test_killed_driver_resumes_without_recomputing(in_tmp):
    study = write_study(in_tmp, train={"max_steps": 60, "eval_every": 6},
                        search={"algorithm": "grid", "space": {"train.lr": [1e-3, 2e-3, 3e-3]}})
    out = in_tmp / "run"
    tag = uuid.uuid4().hex
    ray_tmp = tempfile.mkdtemp(prefix="xr", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = tagged_env(tag, RAY_TMPDIR=ray_tmp)
    log = open(in_tmp / "log.txt", "w")
    try:
        p = subprocess.Popen(xlt("run", str(study), "--out", str(out)), stdout=log, stderr=subprocess.STDOUT,
                             env=env, cwd=in_tmp, start_new_session=True)

        def one_done_one_started():
            st = rundir.read_json(out / "status.json") or {}
            done = [t for t, v in st.get("trials", {}).items() if v.get("state") == "done"]
            logged = {r["trial_id"] for r in results.read_log(out)}
            return done and (logged - set(done)) and (done, logged - set(done))

        done, started = wait_for(one_done_one_started, 300, "one trial done and the next one reporting")
        before = [r for r in results.read_log(out) if r["trial_id"] in done]
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        kill_tagged(tag)
    # the live page: rewritten when the first trial ended, it outlives the killed driver and says partial
    page = next(in_tmp.glob("dashboards/*.html")).read_text(encoding="utf-8")
    assert "<b>Partial run</b> (status.json says running)" in page and "this page was written" in page
    assert "id=\"fig-compute-flops\"" in page
    from tests.test_dashboards_browser import CHROMIUM, check_page

    if CHROMIUM.exists():  # and it renders: every figure drawn, nothing on the console
        partial = in_tmp / "partial.html"
        partial.write_text(page, encoding="utf-8")
        check_page(partial, in_tmp, "partial-page")
    r = subprocess.run(xlt("run", str(study), "--out", str(out), "--resume"), stdout=log, stderr=subprocess.STDOUT,
                       env=env, cwd=in_tmp, timeout=600)
    log.close()
    kill_tagged(tag)
    assert r.returncode == 0, (in_tmp / "log.txt").read_text()[-3000:]
    finals = final_rows(out)
    assert len(finals) == 3 * EVAL_SETS and len({(f["trial_id"], f["eval_set"]) for f in finals}) == 3 * EVAL_SETS
    after = [r for r in results.read_log(out) if r["trial_id"] in done]
    assert after == before  # completed trials: not one row recomputed
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "done" and status["counts"]["done"] == 3
    assert len(rundir.read_rows(out)) == len(results.read_table(out))


@pytest.mark.slow
def test_two_node_cluster(in_tmp):
    """A real two-node Ray cluster on this machine: trial drivers on the head (which alone
    advertises TRAIN_DRIVER), Train workers on the second node; results in the shared run dir."""
    study = write_study(in_tmp)
    out = in_tmp / "run"
    tag = uuid.uuid4().hex
    port = free_port()
    env = tagged_env(tag, RAY_AUTH_MODE="disabled")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    ray_tmp = tempfile.mkdtemp(prefix="xr", dir="/tmp")
    common = ["--object-store-memory=100000000", "--block"]
    log = open(in_tmp / "log.txt", "w")
    try:
        subprocess.Popen([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=true",
                          "--dashboard-port=0", f"--temp-dir={ray_tmp}", '--resources={"TRAIN_DRIVER": 1}', *common],
                         stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_for(lambda: _reachable(port), 60, "the head node")
        subprocess.Popen([ray_bin, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2",
                          '--resources={"node2": 1}', *common],
                         stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

        def two_nodes():
            r = subprocess.run([ray_bin, "status", f"--address=127.0.0.1:{port}"], capture_output=True, text=True,
                               env=env, timeout=60)
            return r.stdout.count(" node_") >= 2 or r.stdout.count("1 node_") >= 2

        wait_for(two_nodes, 90, "two nodes", interval=2)
        r = subprocess.run(xlt("run", str(study), "--out", str(out), "--address", f"127.0.0.1:{port}",
                               "--driver-resource", "TRAIN_DRIVER"),
                           stdout=log, stderr=subprocess.STDOUT, env=env, cwd=in_tmp, timeout=600)
        assert r.returncode == 0, (in_tmp / "log.txt").read_text()[-3000:]
    finally:
        log.close()
        kill_tagged(tag, grace=20)
    status = json.loads((out / "status.json").read_text())
    drivers = {t["last"]["driver_node"] for t in status["trials"].values()}
    workers = {w["node_id"] for t in status["trials"].values() for w in t["workers"]}
    assert len(drivers) == 1 and len(workers) == 1 and drivers != workers  # drivers on the head, workers on node 2
    assert results.read_table(out)["trial_id"].nunique() == 2


def _reachable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@pytest.mark.slow
def test_nsga2_with_asha(ray_session, in_tmp):
    """Two objectives (F1 up, FLOPs down) with ASHA stopping weak trials on the evaluation axis:
    stopped trials still end (no leaked placement groups) and Optuna records every trial."""
    optuna = pytest.importorskip("optuna")
    study = write_study(in_tmp, name="tiny-nsga2", train={"max_steps": 12, "eval_every": 2}, search={
        "algorithm": "nsga2", "num_samples": 3, "asha": True, "asha_grace": 2,
        "space": {"train.lr": {"log_range": [1e-4, 1e-2]}, "train.max_steps": [6, 12]},
        "objectives": [{"metric": "f1"}, {"metric": "flops_train", "mode": "min"}]})
    out = in_tmp / "run"
    code, stdout, err = run_cli("run", str(study), "--out", str(out))
    assert code == 0, err
    ot = optuna.load_study(study_name="tiny-nsga2", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(ot.directions) == 2
    assert len([t for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 3
    assert json.loads((out / "status.json").read_text())["counts"]["done"] == 3


@pytest.mark.slow
def test_a_failing_trial_is_reported_and_the_study_goes_on(ray_session, in_tmp):
    study = write_study(in_tmp, data={"english": None,
                                      "target": {"name": "ru-train", "lang": "ru", "synthetic": {"n": 50}},
                                      "with_english": False},
                        search={"algorithm": "grid", "space": {"data.target_count": [0, 20]}})
    out = in_tmp / "run"
    code, stdout, err = run_cli("run", str(study), "--out", str(out))
    assert code == 1
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and status["counts"]["done"] == 1 and status["counts"]["failed"] == 1
    (failed,) = [t for t in status["trials"].values() if t["state"] == "failed"]
    assert "training set is empty" in failed["error"]
    assert "FAILED" in stdout
    text = run_cli("status", str(out))[1]
    assert "training set is empty" in text
