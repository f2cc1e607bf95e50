"""Reliability (issue #9): a diverging trial fails alone with its reason; an unwritable or full run
directory is refused before Ray starts; a study survives its driver being killed at random times.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import ROOT, run_cli
from tests.test_study import EVAL_SETS, final_rows, write_study
from xlt import results
from xlt.errors import TrainingDiverged, XltError
from xlt.study import rundir
from xlt.train.loop import LoopConfig, train_loop

# ---------------------------------------------------------------- divergence (fast)


def _tiny_regression(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.randn(4, 1, generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def batches():
        while True:
            for i in range(0, 64, 16):
                yield {"x": x[i:i + 16], "y": y[i:i + 16]}

    def loss_fn(m, b):
        return torch.nn.functional.mse_loss(m(b["x"]), b["y"])

    return model, batches(), loss_fn


def _run(model, batches, loss_fn, cfg: LoopConfig):
    evaluated: list[int] = []
    batches_seen = [0]

    def on_batch(_):
        batches_seen[0] += 1

    def evaluate(state):
        evaluated.append(state.step)
        return 0.0

    err = None
    try:
        train_loop(model, batches, cfg, device=torch.device("cpu"), loss_fn=loss_fn, on_batch=on_batch,
                   evaluate=evaluate)
    except TrainingDiverged as e:
        err = e
    return err, evaluated, batches_seen[0]


@pytest.mark.parametrize("bad, value", [(float("nan"), "nan"), (float("inf"), "inf")])
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_a_non_finite_loss_stops_the_loop_at_its_step(bad, value, grad_accum):
    """The loss turns non-finite on micro-batch 23 (optimizer step 12 without accumulation, 6 with
    two micro-batches a step): the loop stops there, evaluations before it ran, none after."""
    model, batches, base_loss = _tiny_regression()
    calls = [0]

    def loss_fn(m, b):
        calls[0] += 1
        loss = base_loss(m, b)
        return loss * bad if calls[0] == 23 else loss

    cfg = LoopConfig(total_steps=40, lr=1e-3, eval_every=2, grad_accum=grad_accum)
    err, evaluated, seen = _run(model, batches, loss_fn, cfg)
    step = math.ceil(23 / grad_accum)
    assert err is not None and isinstance(err, XltError)
    assert str(err) == f"training diverged: loss is {value} at step {step} (lr 0.001)"
    assert evaluated == list(range(2, step, 2))  # the good evaluations ran, none after
    assert seen == 23  # stopped on the bad batch, not at the next evaluation


def test_a_huge_learning_rate_diverges_a_tiny_model():
    model, batches, loss_fn = _tiny_regression()
    err, evaluated, seen = _run(model, batches, loss_fn, LoopConfig(total_steps=50, lr=1e30, eval_every=5, warmup=0))
    assert err is not None and str(err).startswith("training diverged: loss is ")
    assert seen < 5 and evaluated == []
    # a sane learning rate trains to the end
    model, batches, loss_fn = _tiny_regression()
    err, evaluated, seen = _run(model, batches, loss_fn, LoopConfig(total_steps=50, lr=1e-2, eval_every=5))
    assert err is None and evaluated == list(range(5, 51, 5)) and seen == 50


def test_trial_with_a_diverging_lr_is_one_line(tmp_path):
    """`xlt trial` (no Ray): the tiny QA model at lr 1e6 is nan at step 2 (checked: step 1's loss is
    finite, its update is not survivable); the error is the CLI's one line and exit 2."""
    study = write_study(tmp_path, train={"threads": 1})
    code, _, err = run_cli("trial", str(study), "--out", str(tmp_path / "t"), "train.lr=1e6")
    lines = [ln for ln in err.splitlines() if ln.startswith("xlt: error")]
    assert code == 2 and lines == ["xlt: error: training diverged: loss is nan at step 2 (lr 1e+06)"], err


# ---------------------------------------------------------------- divergence in a study (slow, Ray)


@pytest.mark.slow
@pytest.mark.ray
def test_a_diverging_trial_fails_alone_with_its_reason(ray_session, in_tmp):
    """lr 1e4 (checked): the tiny model evaluates at step 2, then its loss is nan at step 4, before
    the next evaluation. (Larger rates break it within one update; evaluating such a model crashes
    in span decoding, see the README's Reliability section.)"""
    study = write_study(in_tmp, train={"threads": 1},
                        search={"algorithm": "grid", "space": {"train.lr": [3e-3, 1e4]}})
    out = in_tmp / "run"
    code, stdout, err = run_cli("run", str(study), "--out", str(out))
    assert code == 1, err
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and status["counts"]["done"] == 1 and status["counts"]["failed"] == 1
    (bad_id,) = [t for t, v in status["trials"].items() if v["state"] == "failed"]
    reason = "training diverged: loss is nan at step 4 (lr 10000)"
    assert status["trials"][bad_id]["error"] == reason
    assert f"{bad_id} FAILED: {reason}" in stdout
    assert f"{bad_id} failed: {reason}" in run_cli("status", str(out))[1]
    rows = results.read_table(out).to_dict("records")
    bad = [r for r in rows if r["trial_id"] == bad_id]
    assert sorted((r["step"], r["eval_set"]) for r in bad) == [(2, "en-dev"), (2, "ru-dev")]  # kept
    good = final_rows(out)
    assert len(good) == EVAL_SETS and bad_id not in {r["trial_id"] for r in good}


# ---------------------------------------------------------------- unwritable or full run directory (fast)

# `xlt run` in a fresh process, then whether Ray was so much as imported
CLI_THEN_RAY = "import sys; from xlt.cli import main; c = main(sys.argv[1:]); print('ray' in sys.modules); sys.exit(c)"


def _one_line(code: int, err: str, *words: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("xlt: error: "), (code, err)
    assert all(w in lines[0] for w in words), err


@pytest.fixture
def no_ray(monkeypatch):
    from xlt.study import runner

    def connect(*_):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(runner, "connect", connect)


@pytest.mark.parametrize("case", ["new", "resume"])
def test_unwritable_run_directory_is_one_line_before_ray(tmp_path, case):
    """A new run directory in a read-only (0555) directory, or a read-only run directory resumed.
    Root ignores modes through CAP_DAC_OVERRIDE: as root the CLI runs without it (setpriv), so the
    kernel checks the modes as it does for everyone else."""
    from xlt.spec import load_spec

    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root and no setpriv(1) to drop CAP_DAC_OVERRIDE")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    study = write_study(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    out = ro / "run"
    if case == "resume":
        rundir.create(out, load_spec(study), None)
        out.chmod(0o555)
    ro.chmod(0o555)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    args = ["run", str(study), "--out", str(out)] + (["--resume"] if case == "resume" else [])
    try:
        t0 = time.time()
        r = subprocess.run([*prefix, sys.executable, "-c", CLI_THEN_RAY, *args], capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=120)
        seconds = time.time() - t0
    finally:
        for d in (out, ro):
            if d.exists():
                d.chmod(0o755)
    _one_line(r.returncode, r.stderr, str(out), "not writable", "Permission denied")
    assert r.stdout.strip() == "False"  # failed before Ray was imported, let alone started
    assert seconds < 60
    assert out.exists() == (case == "resume") and not list(ro.glob(".xlt-write-probe-*"))


def test_a_run_directory_on_a_full_disk_is_one_line_before_ray(in_tmp, monkeypatch, no_ray):
    monkeypatch.delenv("XLT_MIN_FREE_MB", raising=False)
    study = write_study(in_tmp)
    real = shutil.disk_usage

    def full(path):
        return real(path)._replace(free=100 * 2**20)  # 100 MB left

    monkeypatch.setattr(shutil, "disk_usage", full)
    out = in_tmp / "run"
    code, _, err = run_cli("run", str(study), "--out", str(out))
    _one_line(code, err, str(out), "only 100 MB free", "needs 1024 MB", "XLT_MIN_FREE_MB")
    assert not out.exists()  # nothing written: the same --out works once there is room
    monkeypatch.setenv("XLT_MIN_FREE_MB", "lots")
    code, _, err = run_cli("run", str(study), "--out", str(out))
    _one_line(code, err, "XLT_MIN_FREE_MB=lots")
    monkeypatch.setenv("XLT_MIN_FREE_MB", "64")  # the user's call, enough for this tiny study: on to Ray
    with pytest.raises(AssertionError, match="Ray was started"):
        run_cli("run", str(study), "--out", str(out))


@pytest.mark.parametrize("min_free_mb, words", [(None, ("MB free", "needs 1024 MB")),
                                                 ("0", ("no space left", "64 KB test write failed"))])
def test_a_really_full_filesystem_is_one_line_before_ray(tmp_path, min_free_mb, words):
    """A 256 KB tmpfs filled up, in a private mount namespace (an unprivileged user namespace: no
    root needed, nothing left mounted). With the free-space floor at 0 the write probe meets ENOSPC."""
    if not shutil.which("unshare"):
        pytest.skip("no unshare(1)")
    mnt = tmp_path / "full"
    mnt.mkdir()
    study = write_study(tmp_path)
    script = ('mount -t tmpfs -o size=256k xlt-full "$1" && { head -c 1M /dev/zero > "$1/fill" 2>/dev/null; '
              'shift; exec "$@"; }')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    env.pop("XLT_MIN_FREE_MB", None)
    if min_free_mb is not None:
        env["XLT_MIN_FREE_MB"] = min_free_mb
    out = mnt / "run"
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(mnt),
                        sys.executable, "-c", CLI_THEN_RAY, "run", str(study), "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    if r.returncode != 2 and "xlt: error" not in r.stderr:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {r.stderr.strip()[:200]}")
    _one_line(r.returncode, r.stderr, str(out), *words)
    assert r.stdout.strip() == "False"
