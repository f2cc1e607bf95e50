"""`xlt run`: a study on Ray Tune, trials in their Tune trial process (one CPU worker) or on Ray
Train (several workers, GPUs), results in the run directory.

    storage      the run directory takes a write + fsync and its filesystem has free space
                 (rundir.check_storage), else a one-line error before Ray starts
    connect      an embedded local Ray (default) or an existing cluster (--address / RAY_ADDRESS)
    resources    one trial must fit (xlt.study.resources: its worker's CPUs, or with Train 1 CPU
                 for its driver + workers x per-worker CPUs/GPUs, and one worker on one node),
                 else a one-line error: Train would wait forever
    Tuner        trial driver (xlt.study.driver) x search (xlt.study.space), storage DIR/ray;
                 --resume restores it (completed trials kept, the searcher's state kept,
                 interrupted trials resumed from their checkpoints)
    extension    a study file that only adds trials (xlt.study.extend) resumes too: Tune cannot
                 restore an experiment with another search space, so the added trials run as a
                 Tune experiment of their own (DIR/ray/tune-2, ...) once the earlier ones are
                 restored and finished; the same rows log, status.json and Optuna study
    end          results.parquet, status.json, DONE (the CLI then writes the dashboard)
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlt import layout, lock, results
from xlt.errors import XltError
from xlt.spec import StudySpec
from xlt.study import resources, rundir

# Train's controller polls its workers this often (default 2 s): trials start and end sooner,
# for a little CPU while they run
ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


@dataclass
class RunOptions:
    out: Path
    address: str | None = None
    resume: bool = False
    force: bool = False  # with resume: go on under a changed spec
    driver_resource: tuple[str, float] | None = None  # custom resource every trial driver needs
    wait_resources: float = 0.0  # seconds to wait for a cluster to scale up to one trial
    page: Callable[[], Any] | None = None  # rewrites the dashboard (after every trial)


def parse_driver_resource(text: str | None) -> tuple[str, float] | None:
    if not text:
        return None
    name, _, amount = text.partition("=")
    try:
        value = float(amount) if amount else 0.01
    except ValueError:
        raise XltError(f"--driver-resource {text}: expected NAME or NAME=AMOUNT") from None
    if not name or value <= 0:
        raise XltError(f"--driver-resource {text}: expected NAME or NAME=AMOUNT with AMOUNT > 0")
    return name, value


# ---------------------------------------------------------------- Ray


def _reachable(address: str) -> None:
    """Fail in seconds, not minutes (ray.init retries an unreachable GCS for a long time)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise XltError(f"--address {address}: expected HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise XltError(f"cannot reach a Ray cluster at {address}: {e.strerror or e}") from None


def connect(address: str | None) -> bool:
    """ray.init; returns whether this call started Ray (and so should shut it down)."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _reachable(address)
    if ray.is_initialized():
        return False
    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    quiet: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.ERROR,
                                 runtime_env={"env_vars": {k: os.environ[k] for k in ENV}})
    logging.getLogger("ray").setLevel(logging.ERROR)
    if address:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            # a cluster with token authentication refuses a driver without its token the same way
            # (the reason is only in Ray's C++ log), so say what to check
            token = "" if os.environ.get("RAY_AUTH_MODE") == "token" else (
                "; if the cluster uses Ray's token authentication, set RAY_AUTH_MODE=token and give the "
                "token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
            raise XltError(f"cannot connect to the Ray cluster at {address}: {str(e).splitlines()[0]}{token}") from None
    else:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=True, **quiet)
    return True


def trial_resources(spec: StudySpec, opts: RunOptions, run: dict[str, Any] | None) -> resources.TrialResources:
    """How this run's trials are hosted and what each reserves (`run`: the run.json resumed, if any)."""
    return resources.TrialResources.of(spec.resources, (run or {}).get("trial_host", "train" if run else None),
                                       opts.driver_resource)


def resource_gap(tr: resources.TrialResources, total: dict[str, float], nodes: list[dict[str, float]]) -> str | None:
    """What one trial needs that the cluster lacks, as one line; None if a trial fits."""
    short = [f"{v:g} {k} (cluster has {total.get(k, 0):g})" for k, v in tr.need().items()
             if total.get(k, 0) + 1e-9 < v]
    if short:
        return f"not enough resources: {tr.describe()}; needs {', '.join(short)}"
    for name, bundle in dict(reversed(tr.bundles())).items():  # the workers first, the larger bundles
        if not any(all(n.get(k, 0) + 1e-9 >= v for k, v in bundle.items()) for n in nodes):
            largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
            have = ", ".join(f"{largest.get(k, 0):g} {k}" for k in bundle)
            want = ", ".join(f"{v:g} {k}" for k, v in bundle.items())
            return f"no node can host a {name} ({want}); the largest node has {have}"
    return None


def check_resources(tr: resources.TrialResources, opts: RunOptions) -> None:
    import ray

    deadline = time.time() + opts.wait_resources
    asked = False
    while True:
        total = ray.cluster_resources()
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        gap = resource_gap(tr, total, nodes)
        if gap is None or time.time() >= deadline:
            break
        if not asked:  # an autoscaling cluster starts nodes for what is asked of it
            try:
                from ray.autoscaler.sdk import request_resources

                request_resources(bundles=[b for _, b in tr.bundles()])
            except Exception:  # noqa: BLE001 - not every cluster has an autoscaler
                pass
            asked = True
            print(f"xlt: waiting up to {opts.wait_resources:.0f}s for the cluster: {gap}", file=sys.stderr)
        time.sleep(5)
    if gap is not None:
        raise XltError(gap)
    fits = tr.fit(total)
    if fits < tr.r.max_concurrent_trials:
        print(f"xlt: note: the cluster fits {fits} concurrent trial(s), not resources.max_concurrent_trials="
              f"{tr.r.max_concurrent_trials}; the rest wait their turn", file=sys.stderr)


# ---------------------------------------------------------------- the study


def trial_seconds(spec: StudySpec):
    """(params -> the trial's estimated wall seconds, the planned trials' params): xlt estimate's
    cost, shared steps charged to the first trial in plan order, over the trial's workers; params
    the plan does not list (a sampler's) get the mean. None when the study cannot be priced:
    progress then shows no ETA."""
    import json

    from xlt.study.estimate import estimate

    try:
        est = estimate(spec)
    except Exception as e:  # noqa: BLE001 - an ETA is a convenience: the study runs without it
        print(f"xlt: note: no ETA ({str(e).splitlines()[0] if str(e) else type(e).__name__})", file=sys.stderr)
        return None
    workers = spec.resources.workers
    by = {json.dumps(r["params"], sort_keys=True, default=str): 3600 * r["paid_device_hours"] / workers
          for r in est["trials"]}
    mean = sum(by.values()) / len(by) if by else 0.0
    return (lambda params: by.get(json.dumps(params, sort_keys=True, default=str), mean),
            [r["params"] for r in est["trials"]])


def budgeted(spec: StudySpec, search_alg, progress, earlier: list[Path]):
    """The study's search algorithm under its budget (xlt.study.budget), counting what the run's
    `earlier` Tune experiments spent. Tune wraps a Searcher in a ConcurrencyLimiter and a
    SearchGenerator only when it is given one, so that is done here first."""
    import json

    from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator

    from xlt.study.budget import LEDGER_FILE, BudgetedSearch, Ledger, Price

    b = spec.search.budget
    assert b is not None
    if isinstance(search_alg, Searcher):
        search_alg = SearchGenerator(ConcurrencyLimiter(search_alg, max_concurrent=spec.resources.max_concurrent_trials))
    ledger = Ledger(b.unit, b.limit)
    for path in earlier:
        if (path / LEDGER_FILE).exists():
            ledger.carry(json.loads((path / LEDGER_FILE).read_text()))
    progress.budget_update(ledger.snapshot())
    return BudgetedSearch(search_alg, ledger, Price(spec, b.unit), progress)


def _tuner(spec: StudySpec, opts: RunOptions, run: dict[str, Any], tr: resources.TrialResources, progress,
           index: int, restore: bool):
    """Tune experiment `index` of the run (rundir.experiments), restored or new."""
    from ray import tune

    from xlt.study import tracking
    from xlt.study.driver import StudyContext, trial_driver

    ctx = StudyContext(spec=spec.model_dump(mode="json"), run_dir=str(opts.out), run_id=run["run_id"],
                       in_driver=tr.in_driver, keep_free=rundir.keep_free_bytes())
    (_, bundle), *_ = tr.bundles()
    trainable = tune.with_resources(tune.with_parameters(trial_driver, ctx=ctx),
                                    {{"CPU": "cpu", "GPU": "gpu"}.get(k, k): v for k, v in bundle.items()})
    storage = opts.out / "ray"
    names = [e["name"] for e in rundir.experiments(run)]
    # Tune's own CSV, JSON and TensorBoard loggers, unless told: `trackers` brings the first two and
    # TensorBoard only if asked. A Tuner made before tracking existed runs with what it pickled
    # (Tune's loggers, no trackers)
    ours = run.get("tune_loggers") == rundir.TUNE_LOGGERS
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1" if ours else "0"
    if not ours and spec.tracking is not None:
        print("xlt: note: this run began before xlt had trackers: `tracking` is not used (start a new --out"
              " to track)", file=sys.stderr)
    trackers = tracking.trackers(spec, opts.out, run["run_id"])  # a restored Tuner finds them (Trackers.__reduce__)
    if restore:
        return tune.Tuner.restore(str(storage / names[index]), trainable=trainable, resume_unfinished=True,
                                  resume_errored=True)
    from xlt.study import space

    search = space.build(spec, opts.out, part=rundir.experiments(run)[index] if index else None, index=index)
    search_alg = search.search_alg
    concurrent: int | None = spec.resources.max_concurrent_trials
    if spec.search.budget is not None:  # the wrapper limits concurrency itself
        search_alg, concurrent = budgeted(spec, search_alg, progress, [storage / n for n in names[:index]]), None
    # a trial run in its driver is retried by Tune from its last checkpoint, as Train retries its
    # workers (resources.max_failures); a Train trial's driver is not retried (Train retries)
    retries = spec.resources.max_failures if tr.in_driver else 0
    return tune.Tuner(
        trainable,
        param_space=search.param_space,
        tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=search.scheduler,
                                    num_samples=search.num_samples, max_concurrent_trials=concurrent,
                                    # the next trial in the same process: no start-up, torch imported
                                    reuse_actors=tr.in_driver),
        run_config=tune.RunConfig(name=names[index], storage_path=str(storage), verbose=0,
                                  callbacks=[progress, trackers], failure_config=tune.FailureConfig(max_failures=retries),
                                  # 2, not 1: Tune deletes the older checkpoint as the newer one
                                  # lands, and a driver killed before its next experiment-state save
                                  # (every 2 s) resumes from the one the state names (test_study.py)
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
    )


def run_study(spec: StudySpec, opts: RunOptions) -> int:
    """Run (or resume) a study; returns the exit code (0 done, 1 some trials failed or interrupted)."""
    opts.out = opts.out.resolve()
    old_run = rundir.check(opts.out, spec, opts.resume, opts.force)
    rundir.check_storage(opts.out)  # an unwritable or full run directory fails here, before Ray starts
    with lock.held(opts.out, "xlt run"):  # one driver per run directory
        return _locked(spec, opts, old_run)


def _locked(spec: StudySpec, opts: RunOptions, old_run: dict[str, Any] | None) -> int:
    from xlt.study import space, tracking

    space.check(spec)
    tracking.check(spec)  # a tracker's missing package, before Ray starts
    # Tune saves its experiment state at most this often: a killed driver loses at most this much
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # a failed trial is one line in progress and status.json; its traceback stays in its error.txt
    # (Tune would log it on the driver's stderr too)
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    started = connect(opts.address)
    try:
        return _run(spec, opts, old_run)
    finally:
        if started:
            import ray

            ray.shutdown()


def _run(spec: StudySpec, opts: RunOptions, old_run: dict[str, Any] | None) -> int:
    import ray
    from ray import tune

    from xlt.study import space
    from xlt.study.progress import Progress, clock

    tr = trial_resources(spec, opts, old_run)
    check_resources(tr, opts)
    run = rundir.create(opts.out, spec, old_run, trial_host=tr.host)
    (opts.out / rundir.DONE).unlink(missing_ok=True)
    search = space.build(spec, opts.out, searcher=False)  # the whole study, as progress counts it
    slots = tr.slots(ray.cluster_resources())
    costs = trial_seconds(spec)
    progress = Progress(opts.out, search, run, opts.address or os.environ.get("RAY_ADDRESS"), page=opts.page,
                        estimate=costs[0] if costs else None, planned=costs[1] if costs else None, slots=slots)
    exps = rundir.experiments(run)
    restorable = [opts.resume and tune.Tuner.can_restore(str(opts.out / "ray" / e["name"])) for e in exps]
    restore = any(restorable)
    if restore:
        progress.resumed()
    elif run.get("tune_loggers") != rundir.TUNE_LOGGERS:  # a new Tuner: its loggers are xlt.study.tracking's
        run = {**run, "tune_loggers": rundir.TUNE_LOGGERS}
        rundir.write_json(opts.out / rundir.RUN, run)
    res = spec.resources
    where = "local Ray" if not (opts.address or os.environ.get("RAY_ADDRESS")) else f"Ray at {opts.address or os.environ['RAY_ADDRESS']}"
    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"xlt: {'resuming' if restore else 'running'} study '{spec.name}' ({search.total} trials, "
          f"{spec.search.algorithm}, {res.workers} worker(s)/trial {'in its driver' if tr.in_driver else 'on Ray Train'}, "
          f"up to {slots} at a time) "
          f"on {where} ({cpus:g} CPUs) -> {opts.out}", flush=True)
    state = "failed"
    try:
        errors = 0
        for i, exp in enumerate(exps):
            # one not started: the last (rundir._extended records an extension only after the
            # experiment before it started), unless it adds no trial
            if not restorable[i] and (i < len(exps) - 1 or exp.get("samples") == 0):
                continue
            if i and not restorable[i]:
                progress.extension_started(exp)
            try:
                errors += _tuner(spec, opts, run, tr, progress, i, restorable[i]).fit().num_errors
            except Exception as e:
                # Tune reads back what it wrote as the experiment ends (an error file it could not
                # write on a full disk is empty): the study failed, say so in one line
                if not (results.is_disk_full(e) or progress.disk_full_state()):
                    raise
                print(f"xlt: disk full: Tune could not end the experiment ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''})", file=sys.stderr)
                progress.disk_full = progress.disk_full or str(e)
                errors += 1
                break
            if progress.unfinished():  # interrupted: the rest waits for --resume
                break
        c = progress.counts()
        unfinished = c["pending"] + c["running"]
        state = "failed" if errors else ("interrupted" if unfinished else "done")
        if state == "failed" and progress.disk_full_state():
            state = "failed: disk full"
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        if (opts.out / layout.ROWS_LOG).exists():
            progress.room(rundir.compact, opts.out)
        progress.write(state)
    if state != "interrupted":
        progress.room(Path.write_text, opts.out / rundir.DONE, f"{state} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    b = progress.best()
    c = progress.counts()
    budget = progress.status.get("budget") or {}
    print(f"xlt: {state}{' (stopped by budget)' if budget.get('stopped') else ''}: {c['done']} trials done,"
          f" {c['failed']} failed in {clock(progress.status['elapsed_seconds'])}"
          + (f"; best {search.metrics[0]} {b[1]:.4g} ({b[0]})" if b else "") + f"; results: {opts.out / 'results.parquet'}")
    if c["failed"]:
        print(f"xlt: the failed trials' tracebacks: {opts.out}/ray/tune*/*/error.txt", file=sys.stderr)
    if state in ("interrupted", "failed: disk full"):
        room = "free some space on its filesystem, then " if state != "interrupted" else ""
        print(f"xlt: {room}continue with: xlt run ... --out {opts.out} --resume", file=sys.stderr)
    return 0 if state == "done" else 1
