"""One driver per run directory (xlt.lock): a live driver refuses a second one in one line, a dead
driver's lock is taken over with a line saying so, and of two racing drivers exactly one wins."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from tests.helpers import run_cli, tiny_qa_study
from xlt import lock
from xlt.errors import XltError
from xlt.spec import spec_from_dict
from xlt.study import rundir


@pytest.fixture
def study(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_qa_study(train=16, dev=4, max_steps=2)))
    return path


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def plant(out, **holder):
    out.mkdir(parents=True, exist_ok=True)
    (out / lock.LOCK).write_text(json.dumps({"host": socket.gethostname(), "command": "xlt run",
                                             "since": time.time() - 60, **holder}))


def test_a_live_driver_refuses_a_second_trial_in_one_line(tmp_path, study, live_pid):
    out = tmp_path / "run"
    plant(out, pid=live_pid, start=lock._start_time(live_pid))
    (out / "rows.jsonl").write_text('{"kept": 1}\n')
    code, _, err = run_cli("trial", str(study), "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"pid {live_pid} on {socket.gethostname()}" in err and "in use by xlt run" in err
    assert (out / "rows.jsonl").read_text() == '{"kept": 1}\n'  # nothing lost
    assert json.loads((out / lock.LOCK).read_text())["pid"] == live_pid  # the live driver keeps its lock


def test_a_live_driver_refuses_xlt_run_resume_before_ray_starts(tmp_path, study, live_pid):
    out = tmp_path / "run"
    spec = spec_from_dict(yaml.safe_load(study.read_text()))
    rundir.create(out, spec, None)
    plant(out, pid=live_pid, start=lock._start_time(live_pid))
    code, _, err = run_cli("run", str(study), "--out", str(out), "--resume")
    assert code == 2 and "in use by xlt run" in err and str(live_pid) in err, err
    assert "ray" not in {p.name for p in out.iterdir()}


def test_a_dead_drivers_lock_is_taken_over_with_a_line(tmp_path, study):
    out = tmp_path / "run"
    gone = dead_pid()
    plant(out, pid=gone)
    code, _, err = run_cli("trial", str(study), "--out", str(out))
    assert code == 0, err
    assert f"taking over the lock of xlt run (pid {gone}" in err and "which is gone" in err
    assert not (out / lock.LOCK).exists()  # released when the trial ended
    assert (out / "results.parquet").exists()


def test_a_reused_pid_is_a_dead_driver(tmp_path):
    """Our own pid is alive, but a holder that started at another time was another process."""
    out = tmp_path / "run"
    plant(out, pid=os.getpid(), start="1")
    me = lock.acquire(out, "xlt trial")
    assert me["pid"] == os.getpid() and json.loads((out / lock.LOCK).read_text())["since"] == me["since"]


def test_another_hosts_lock_is_held_while_its_heartbeat_is_fresh(tmp_path):
    out = tmp_path / "run"
    plant(out, host="node-7", pid=1234)
    with pytest.raises(XltError, match=r"in use by xlt run \(pid 1234 on node-7"):
        lock.acquire(out, "xlt run")
    old = time.time() - lock.STALE_S - 5
    os.utime(out / lock.LOCK, (old, old))
    me = lock.acquire(out, "xlt run")
    assert json.loads((out / lock.LOCK).read_text())["pid"] == me["pid"]


def test_the_heartbeat_keeps_the_lock_fresh_and_release_removes_it(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.05)
    out = tmp_path / "run"
    with lock.held(out, "xlt run"):
        old = time.time() - 1000
        os.utime(out / lock.LOCK, (old, old))
        time.sleep(0.3)
        assert time.time() - (out / lock.LOCK).stat().st_mtime < 5
    assert not (out / lock.LOCK).exists()


def test_an_empty_run_directory_but_for_the_lock_is_a_new_run(tmp_path, study):
    out = tmp_path / "run"
    spec = spec_from_dict(yaml.safe_load(study.read_text()))
    plant(out, pid=dead_pid())
    assert rundir.check(out, spec, resume=False) is None


RACER = """
import sys, time
from pathlib import Path
from xlt import lock
from xlt.errors import XltError
out = Path(sys.argv[1])
while time.time() < float(sys.argv[2]):
    pass
try:
    lock.acquire(out, "racer")
    print("won", flush=True)
    time.sleep(8)  # holds it while the others try (its lock outlives it: no release)
except XltError:
    print("lost")
"""


def test_of_drivers_racing_for_a_dead_lock_exactly_one_wins(tmp_path):
    out = tmp_path / "run"
    plant(out, pid=dead_pid())
    go = time.time() + 4  # after every racer has started
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(out), str(go)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(4)]
    said = sorted(p.communicate(timeout=60)[0].strip() for p in racers)
    assert said == ["lost", "lost", "lost", "won"], said
