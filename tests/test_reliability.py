"""Reliability (issue #9): a diverging trial fails alone with its reason; an unwritable or full run
directory is refused before Ray starts; a study survives its driver being killed at random times.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, run_cli
from tests.test_study import EVAL_SETS, final_rows, kill_tagged, tagged_env, write_study, xlt
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


# ---------------------------------------------------------------- the disk fills during the run (fast parts)


ROWS_PER_EVENT = EVAL_SETS  # one row per eval set


def _row(event: int, eval_set: str = "en-dev") -> dict:
    return {"study": "s", "trial_id": "t", "stage": "qa", "event": event, "eval_set": eval_set, "f1": 1.0}


def test_an_append_that_meets_a_full_disk_leaves_no_torn_line(tmp_path, monkeypatch):
    """The kernel may take part of a write before ENOSPC: the log is cut back to the rows before,
    so the append after more space is found starts on a line of its own (none lost)."""
    results.append_rows(tmp_path, [_row(0)])
    size = (tmp_path / results.ROWS_LOG).stat().st_size
    real = os.write

    def half_then_full(fd, data):
        if len(data) > 100:
            real(fd, bytes(data[:len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(XltError, match=r"^disk full: No space left on device appending \d+ bytes of rows to "):
        results.append_rows(tmp_path, [_row(1), _row(1, "ru-dev")])
    assert (tmp_path / results.ROWS_LOG).stat().st_size == size
    monkeypatch.setattr(os, "write", real)
    results.append_rows(tmp_path, [_row(1), _row(1, "ru-dev")])
    assert [(r["event"], r["eval_set"]) for r in results.read_log(tmp_path)] == [(0, "en-dev"), (1, "en-dev"),
                                                                                (1, "ru-dev")]


def test_a_line_torn_by_a_crash_does_not_swallow_the_next_row(tmp_path):
    results.append_rows(tmp_path, [_row(0)])
    with open(tmp_path / results.ROWS_LOG, "ab") as f:
        f.write(b'{"study": "s", "trial_id": "t", "sta')  # the driver died mid-line
    results.append_rows(tmp_path, [_row(1)])
    assert [r["event"] for r in results.read_log(tmp_path)] == [0, 1]


def _reporter(run_dir, report, **cfg):
    from xlt.study.worker import _Marker, _Reporter

    marker = _Marker.__new__(_Marker)  # no rank file
    marker.path, marker.info = Path(run_dir) / "rank-0.json", {}
    reporter = _Reporter({"run_dir": str(run_dir), "primary_set": "en-dev", **cfg}, 0, marker, report)
    reporter.pending = {"stage": "qa", "step": 4}
    return reporter


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   # pyarrow's copy (Tune persisting a checkpoint) words it without an errno
                                   OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device")])
def test_a_checkpoint_that_meets_a_full_disk_fails_the_trial_in_one_line(tmp_path, error):
    def report(metrics, checkpoint):
        raise error

    with pytest.raises(XltError, match=r"^disk full: .*No space left on device.* writing the checkpoint of qa step 4 "):
        _reporter(tmp_path, report).on_event(lambda: {"step": 4})


def test_a_checkpoint_that_would_fill_the_disk_is_not_written(tmp_path):
    """A trial stops before its checkpoint takes the run's filesystem below XLT_KEEP_FREE_MB: what
    the study writes to end cleanly (Tune's experiment state, status.json) must still fit."""
    sent = []
    free = shutil.disk_usage(tmp_path).free
    reporter = _reporter(tmp_path, lambda m, c: sent.append(c), keep_free=free + 2**30)
    with pytest.raises(XltError, match=r"^disk full: [\d.e+]+ MB free on the run directory's filesystem; the checkpoint "
                                       r"of qa step 4 \([\d.e+-]+ MB\) would leave less than the [\d.e+]+ MB a study "
                                       r"keeps free for its own state \(XLT_KEEP_FREE_MB\)$"):
        reporter.on_event(lambda: {"step": 4})
    assert sent == []
    reporter = _reporter(tmp_path, lambda m, c: sent.append(c), keep_free=2**20)
    reporter.on_event(lambda: {"step": 4})
    assert len(sent) == 1


def test_the_driver_goes_on_when_its_status_meets_a_full_disk(tmp_path, monkeypatch, capsys):
    pytest.importorskip("ray")
    import io

    from xlt.spec import load_spec
    from xlt.study import space
    from xlt.study.progress import Progress

    spec = load_spec(write_study(tmp_path))
    stream = io.StringIO()
    progress = Progress(tmp_path, space.build(spec, tmp_path, searcher=False), {"study": "tiny", "run_id": "r"}, None,
                        stream=stream)

    def full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir, "write_json", full)
    progress.write()
    progress.write()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("xlt: disk full: No space left on device writing "), err
    assert progress.disk_full_state()


# ---------------------------------------------------------------- the driver killed at random times (slow)

KILL_SEEDS = (0, 1, 2)  # seed % 3: which part of the timeline the kill falls in (see _strata)
LRS = [1e-3, 3e-3]
STEPS, EVAL_EVERY = 24, 3
ROWS_PER_TRIAL = (STEPS // EVAL_EVERY + 1) * EVAL_SETS  # evaluations and the final rows
# what an evaluation row says of the training that led to it: equal values = the same computation
# (train_loss, the mean loss of the window, moves with any change in the weights or the batches)
ROW_VALUES = ("step", "examples_seen", "tokens_real", "train_loss", "f1", "exact_match")


@pytest.fixture(scope="module")
def kill_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kills")


def _kill_study(root: Path, cache: Path) -> Path:
    # one cache for every run: the tokenizer is trained once and shared (tokenizers' WordPiece
    # trainer is not deterministic, huggingface/tokenizers#1794; all else is, with one thread)
    return write_study(root, name="kills", cache_dir=str(cache),
                       train={"threads": 1, "max_steps": STEPS, "eval_every": EVAL_EVERY},
                       search={"algorithm": "grid", "space": {"train.lr": LRS}})


def _lines(out: Path) -> int:
    try:
        return (out / results.ROWS_LOG).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _by_params(run_dir: Path) -> dict[tuple, tuple]:
    """(params, stage, event, eval set) -> the row's values, from results.parquet; unique keys."""
    rows = results.read_table(run_dir).to_dict("records")
    keys = [tuple(r[k] for k in rundir.ROW_KEY) for r in rows]
    assert len(keys) == len(set(keys)), "a row key twice in results.parquet"
    return {(r["params"], r["stage"], r["event"], r["eval_set"]): tuple(r[k] for k in ROW_VALUES) for r in rows}


class _Runs:
    """`xlt run` in its own session with its own local Ray, every process tagged for clean-up."""

    def __init__(self, root: Path):
        self.root, self.tag = root, uuid.uuid4().hex
        self.ray_tmp = tempfile.mkdtemp(prefix="xr", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        self.env = tagged_env(self.tag, RAY_TMPDIR=self.ray_tmp)
        self.log = open(root / "log.txt", "a")

    def start(self, study: Path, out: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(xlt("run", str(study), "--out", str(out), *extra), stdout=self.log,
                                stderr=subprocess.STDOUT, env=self.env, cwd=self.root, start_new_session=True)

    def finish(self, p: subprocess.Popen, timeout: float = 300) -> int:
        try:
            return p.wait(timeout=timeout)
        finally:
            kill_tagged(self.tag)  # the run's Ray, and a killed driver's orphans: by their tag only

    def close(self) -> None:
        self.log.close()
        kill_tagged(self.tag)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def uninterrupted(kill_root):
    """The study run once without interruption: its rows, and when its rows were logged (seconds
    after launch, by row count), the timeline kill times are drawn from."""
    root = kill_root / "uninterrupted"
    root.mkdir()
    runs = _Runs(root)
    out = root / "run"
    milestones: list[tuple[int, float]] = []
    try:
        t0 = time.time()
        p = runs.start(_kill_study(root, kill_root / "cache"), out)
        while p.poll() is None and time.time() - t0 < 300:
            n = _lines(out)
            if n > (milestones[-1][0] if milestones else 0):
                milestones.append((n, time.time() - t0))
            time.sleep(0.05)
        code = runs.finish(p)
        seconds = time.time() - t0
    finally:
        runs.close()
    assert code == 0, (root / "log.txt").read_text()[-3000:]
    assert milestones[-1][0] == ROWS_PER_TRIAL * len(LRS)
    return {"rows": _by_params(out), "milestones": milestones, "seconds": seconds}


def _strata(milestones: list[tuple[int, float]]) -> list[list[tuple[float, float]]]:
    """Three parts of the uninterrupted run's timeline (spans of seconds after launch): before any
    row (Ray, the Tuner and the first trial starting); while a trial reports its evaluations (a
    kill there resumes the trial from its checkpoint); between two trials."""
    def t(rows: int) -> float:  # when the uninterrupted run had logged `rows` rows
        return next(s for n, s in milestones if n >= rows)

    firsts = [t(k * ROWS_PER_TRIAL + 1) for k in range(len(LRS))]
    lasts = [t((k + 1) * ROWS_PER_TRIAL) for k in range(len(LRS))]
    return [[(0.0, firsts[0])], list(zip(firsts, lasts, strict=True)), list(zip(lasts[:-1], firsts[1:], strict=True))]


def _kill_at_random(p: subprocess.Popen, out: Path, milestones: list[tuple[int, float]], spans,
                    rng: random.Random) -> tuple[float, bool]:
    """SIGKILL the driver at a time drawn uniformly from `spans` of the uninterrupted run's timeline,
    replayed on this run's own progress: once it has logged the rows the uninterrupted run had by
    then, wait as long as that run went on without more (but not past its next rows). Returns the
    drawn time and whether the driver was still running when killed."""
    x = rng.uniform(0, sum(b - a for a, b in spans))
    for a, b in spans:
        if x <= b - a:
            at = a + x
            break
        x -= b - a
    before = [m for m in milestones if m[1] <= at]
    rows, since = before[-1] if before else (0, 0.0)
    after = milestones[len(before)][0] if len(before) < len(milestones) else rows + 1
    t0 = time.time()
    while p.poll() is None and _lines(out) < rows and time.time() - t0 < 300:
        time.sleep(0.02)
    t1 = time.time() if rows else t0
    while p.poll() is None and time.time() - t1 < at - since and _lines(out) < after:
        time.sleep(0.02)
    alive = p.poll() is None
    if alive:
        os.kill(p.pid, signal.SIGKILL)
    return at, alive


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_a_driver_killed_at_a_random_time_resumes_to_the_same_results(uninterrupted, kill_root, seed):
    """SIGKILL the study's driver at a seeded random time (each seed in another part of the
    timeline), then `--resume` until the study is done:
    every trial once, every row logged before the kill kept with the same values, no finished
    trial trained again, and the same rows (params, stage, event, eval set) with the same F1, EM,
    train loss and counters as the uninterrupted run."""
    root = kill_root / f"seed-{seed}"
    root.mkdir()
    study, out = _kill_study(root, kill_root / "cache"), root / "run"
    runs = _Runs(root)
    t0 = time.time()
    try:
        p = runs.start(study, out)
        spans = _strata(uninterrupted["milestones"])[seed % 3]
        at, killed = _kill_at_random(p, out, uninterrupted["milestones"], spans, random.Random(seed))
        code = runs.finish(p)
        assert killed and code == -signal.SIGKILL, f"the study ended before the kill at {at:.1f}s"
        # what the killed study left, once every process it started is gone
        logged = results.read_log(out)
        done = {d.parent.name for d in out.glob("trials/*/final.json")}
        workers = {t: (out / "trials" / t / "rank-0.json").read_text() for t in done}
        resumes = 0
        while code != 0:
            resumes += 1
            assert resumes <= 3, (root / "log.txt").read_text()[-3000:]
            code = runs.finish(runs.start(study, out, "--resume"))
    finally:
        runs.close()
    print(f"seed {seed}: killed at {at:.1f}s of the uninterrupted run's {uninterrupted['seconds']:.0f}s, with "
          f"{len(done)} trial(s) done and {len(logged)} rows logged; {resumes} resume(s); {time.time() - t0:.0f}s")

    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "done" and (out / "DONE").exists()
    assert status["counts"] == {"done": len(LRS), "running": 0, "failed": 0, "pending": 0}
    params = sorted(json.dumps(t["params"], sort_keys=True) for t in status["trials"].values())
    assert params == sorted(json.dumps({"train.lr": lr, "train.seed": 0}, sort_keys=True) for lr in LRS)
    table = results.read_table(out)
    assert table["trial_id"].nunique() == len(LRS) and len(final_rows(out)) == len(LRS) * EVAL_SETS
    rows = _by_params(out)  # row keys unique
    # no evaluation logged before the kill lost, none changed (one redone gives the same values)
    after = results.read_log(out)
    kept = {tuple(r[k] for k in rundir.ROW_KEY): r for r in after}
    for r in logged:
        now = kept[tuple(r[k] for k in rundir.ROW_KEY)]
        assert tuple(now[k] for k in ROW_VALUES) == tuple(r[k] for k in ROW_VALUES)
    # a finished trial is not trained again: not one row more, the same Train worker record
    for t in done:
        assert [r for r in after if r["trial_id"] == t] == [r for r in logged if r["trial_id"] == t]
        assert (out / "trials" / t / "rank-0.json").read_text() == workers[t]
    # the same results as the uninterrupted run, row for row
    assert rows.keys() == uninterrupted["rows"].keys()
    assert rows == uninterrupted["rows"]


# ---------------------------------------------------------------- the disk fills during the run (slow, Ray, a real filesystem)

# Run in a user namespace (no root needed, nothing left mounted): a small tmpfs bind-mounted over
# the run directory's row log (its appends meet a real ENOSPC in the second trial, the rest of the
# run directory has room) or over its ray/ (Tune's state and the trials' checkpoints: the second
# trial's checkpoint would take it below XLT_KEEP_FREE_MB). `xlt run` until it ends; the tmpfs
# grown (space freed); `xlt run --resume`. The row log is read in there (it may live on the tmpfs).
FILL_THEN_RESUME = r"""
import json, subprocess, sys, time
mnt, out, study, target, size = sys.argv[1:6]
def sh(*argv):
    subprocess.run(argv, check=True)
sh("mount", "-t", "tmpfs", "-o", f"size={size}", "xlt-full", mnt)
if target == "rows":
    open(f"{mnt}/rows.jsonl", "w").close()
    sh("mount", "--bind", f"{mnt}/rows.jsonl", f"{out}/rows.jsonl")
else:
    sh("mount", "--bind", mnt, f"{out}/ray")
runs = []
for grown in (False, True):
    if grown:
        sh("mount", "-o", "remount,size=64m", mnt)
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "xlt.cli", "run", study, "--out", out, "--resume"],
                       capture_output=True, text=True, timeout=400)
    st = subprocess.run([sys.executable, "-m", "xlt.cli", "status", out], capture_output=True, text=True)
    runs.append({"code": r.returncode, "out": r.stdout, "err": r.stderr, "seconds": time.time() - t0,
                 "log": open(f"{out}/rows.jsonl", "rb").read().decode(), "status": st.stdout,
                 "trials": json.load(open(f"{out}/status.json"))["trials"]})
print(json.dumps(runs))
"""
DISK_FULL = {
    # a real ENOSPC at the append; the failed write cut back off, so not even the log holds a row twice
    "rows": ("16k", "64", "disk full: No space left on device appending "),
    # ~310 KB checkpoints, 2 kept per trial: the second trial's second one would leave < 256 KB
    "storage": ("1536k", "0.25", "MB free on the run directory's filesystem; the checkpoint of qa step "),
}


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("target", DISK_FULL)
def test_a_disk_that_fills_during_the_run_fails_the_trial_and_resume_finishes(tmp_path, target):
    """A 2-trial grid whose row log, or Tune storage, fills its filesystem in the second trial:
    that trial fails with one line (and its retry from the checkpoint too), the rows logged before
    stay, the study ends `failed: disk full`; with space freed, `--resume` finishes it, every row
    in the results table once. The run directory is made as `xlt run` makes it before any trial
    (spec.json), so that the tmpfs can be mounted in it from the start."""
    from xlt.spec import load_spec

    if not shutil.which("unshare"):
        pytest.skip("no unshare(1)")
    size, keep_free_mb, reason = DISK_FULL[target]
    study = write_study(tmp_path, name="full", train={"threads": 1},
                        search={"algorithm": "grid", "space": {"train.lr": [1e-3, 3e-3]}})
    out, mnt = tmp_path / "run", tmp_path / "mnt"
    (out / "ray").mkdir(parents=True)  # a mount point: Tune makes it otherwise
    mnt.mkdir()
    rundir.write_json(out / rundir.SPEC, load_spec(study).model_dump(mode="json"))
    (out / results.ROWS_LOG).touch()  # a mount point too
    tag = uuid.uuid4().hex
    ray_tmp = tempfile.mkdtemp(prefix="xr", dir="/tmp")
    env = tagged_env(tag, RAY_TMPDIR=ray_tmp, XLT_MIN_FREE_MB="1", XLT_KEEP_FREE_MB=keep_free_mb)
    try:
        r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", FILL_THEN_RESUME,
                            str(mnt), str(out), str(study), target, size],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    finally:
        kill_tagged(tag)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if r.returncode != 0 and "mount" in r.stderr and not r.stdout:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {r.stderr.strip()[-200:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    full, resumed = json.loads(r.stdout)
    print(f"{target}: disk full run {full['seconds']:.0f}s, resume {resumed['seconds']:.0f}s, "
          f"{len(full['log'].splitlines())} rows logged before, {len(resumed['log'].splitlines())} after")

    # the study ends cleanly: exit 1, one line for the failed trial, no traceback
    assert full["code"] == 1, full["err"][-3000:]
    assert "Traceback" not in full["out"] + full["err"], full["err"][-3000:]
    failed = [ln for ln in full["out"].splitlines() if " FAILED: " in ln]
    assert len(failed) == 1 and reason in failed[0], full["out"]
    assert "xlt: failed: disk full: 1 trials done, 1 failed" in full["out"]
    assert "free some space on its filesystem, then continue with: xlt run" in full["err"]
    assert "): failed: disk full" in full["status"] and "free some space, then resume with: xlt run" in full["status"]
    logged = full["log"]
    assert logged.endswith("\n") and all(json.loads(ln) for ln in logged.splitlines())  # no torn line
    # the first trial's rows and some of the second's (a retried trial may log an event again)
    assert ROWS_PER_EVENT * 4 < len({tuple(json.loads(ln)[k] for k in rundir.ROW_KEY) for ln in logged.splitlines()}) \
        < ROWS_PER_EVENT * 8

    # space freed: --resume finishes it; the rows logged before stay as they were, each row once
    assert resumed["code"] == 0, resumed["err"][-3000:]
    assert "): done" in resumed["status"] and "2 done, 0 running, 0 pending, 0 failed" in resumed["status"]
    assert resumed["log"].startswith(logged)
    rows = [json.loads(ln) for ln in resumed["log"].splitlines()]
    keys = [tuple(r[k] for k in rundir.ROW_KEY) for r in rows]
    assert len(set(keys)) == 2 * ROWS_PER_EVENT * 4
    if target == "rows":
        assert len(keys) == len(set(keys))
    table = results.read_table(out)  # compacted onto the real disk
    assert len(table) == len(set(keys)) and table["trial_id"].nunique() == 2
    # the retried trial's time is its own, not also the time between the two runs
    (tid,) = [t for t, v in full["trials"].items() if v["state"] == "failed"]
    assert resumed["trials"][tid]["seconds"] < full["trials"][tid]["seconds"] + resumed["seconds"]
