"""What a person sees while a study runs, and what `xlt status` reads afterwards.

A Tune callback on the study's driver: one line per trial event (start, evaluation, end,
error) with the counts, the best result so far and the elapsed time; status.json rewritten on
every event; the row log compacted into results.parquet every few seconds and whenever a trial
ends, so a partial study can be read at any time; and the dashboard rewritten whenever a trial
ends (`page`, at most every PAGE_EVERY seconds), so the page of a running or killed study shows
the trials finished by then.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback

from xlt import layout, results
from xlt.errors import XltError
from xlt.study import rundir
from xlt.study.driver import FINAL
from xlt.study.eta import TrialClock, eta
from xlt.study.space import Search

KEEP = ("event", "stage", "step", "f1", "exact_match", "flops_train", "device_seconds", "wall_seconds",
        "pipeline_seconds", "trial_seconds", "driver_node", "n_devices", "training_iteration")


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) >= 1e4 or (v and abs(v) < 1e-2) else f"{v:.2f}"
    return str(v)


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


PAGE_EVERY = 30.0  # seconds between two rewrites of the live dashboard
_live: list[Progress] = []


def _this_session() -> Callback:
    return _live[-1] if _live else Callback()


class Progress(Callback):
    def __reduce__(self):
        # Tune pickles its callbacks with the experiment and a restored Tuner uses the unpickled
        # ones: let a restored study report through this session's instance
        return (_this_session, ())

    def __init__(self, run_dir: Path, search: Search, run: dict[str, Any], address: str | None,
                 stream: TextIO | None = None, compact_every: float = 10.0,
                 page: Callable[[], Any] | None = None,
                 estimate: Callable[[dict[str, Any]], float] | None = None, slots: int = 1,
                 planned: list[dict[str, Any]] | None = None):
        self.run_dir, self.search, self.compact_every, self.page = run_dir, search, compact_every, page
        # for the ETA: a trial's estimated seconds by its params, the planned trials' params (a
        # grid's: the trials Tune has not created yet are those), the trials run at once
        self.estimate, self.slots, self.planned = estimate, slots, planned or []
        self.page_written = -math.inf
        self.stream = stream or sys.stdout
        self.t0 = time.time()
        self.last_compact = 0.0
        old = rundir.read_json(run_dir / rundir.STATUS) or {}
        self.status: dict[str, Any] = {
            "study": run["study"], "run_id": run["run_id"], "state": "running", "address": address,
            "driver": {"pid": os.getpid(), "host": socket.gethostname()},
            "started": old.get("started", self.t0), "session_started": self.t0,
            "elapsed_seconds": old.get("elapsed_seconds", 0.0), "objectives": list(zip(search.metrics, search.modes, strict=True)),
            "primary_set": search.primary_set, "total": search.total, "trials": old.get("trials", {}),
            # what extensions of the study kept and added (xlt.study.extend)
            "extended": [{k: e[k] for k in ("time", "difference", "kept", "samples")} for e in run.get("extended", [])],
        }
        self.before = self.status["elapsed_seconds"]  # elapsed in earlier sessions of a resumed run
        self.ended: list[str] = []  # the trials of the Tune experiment that ended last
        self.disk_full: str | None = None  # the last write of the driver's a full disk refused
        self.write()
        _live.append(self)

    # ---------------------------------------------------------------- bookkeeping

    def _trial(self, trial) -> dict[str, Any]:
        t = self.status["trials"].setdefault(trial.trial_id, {"params": dict(trial.config)})
        return t

    def counts(self, trials=None) -> dict[str, int]:
        states = [t["state"] for t in self.status["trials"].values()]
        done, failed, running = states.count("done"), states.count("failed"), states.count("running")
        # a study stopped by its budget starts nothing more: no trial is pending
        stopped = (self.status.get("budget") or {}).get("stopped")
        return {"done": done, "running": running, "failed": failed,
                "pending": 0 if stopped else max(0, self.search.total - done - failed - running)}

    def unfinished(self) -> int:
        """Trials of the Tune experiment that ended last that neither finished nor failed: it was
        interrupted (Tune's fit returns on Ctrl-C)."""
        return sum(self.status["trials"][t].get("state") not in ("done", "failed") for t in self.ended)

    def extension_started(self, exp: dict[str, Any]) -> None:
        print(f"xlt: extended: {exp['kept']} trials done kept, {exp['samples']} added ({exp['difference']})",
              file=self.stream, flush=True)

    def best(self) -> tuple[str, float] | None:
        metric, mode = self.search.metrics[0], self.search.modes[0]
        scored = [(tid, t["last"][metric]) for tid, t in self.status["trials"].items()
                  if isinstance(t.get("last", {}).get(metric), int | float) and not math.isnan(t["last"][metric])]
        if not scored:
            return None
        return (max if mode == "max" else min)(scored, key=lambda x: x[1])

    def write(self, state: str | None = None) -> None:
        now = time.time()
        if state:
            self.status["state"] = state
        if state == "interrupted":
            for t in self.status["trials"].values():
                if t.get("state") == "running":
                    t.update(state="interrupted", last_seen=now)
        self.status.update(updated=now, elapsed_seconds=self.before + now - self.t0, counts=self.counts())
        self.status["eta"] = self.eta(now) if self.status["state"] == "running" else None
        b = self.best()
        self.status["best"] = None if b is None else {
            "trial_id": b[0], "metric": self.search.metrics[0], "value": b[1],
            "params": self.status["trials"][b[0]].get("params")}
        self.room(rundir.write_json, self.run_dir / rundir.STATUS, self.status)

    def eta(self, now: float) -> dict[str, Any] | None:
        """Seconds the study has left (xlt.study.eta), or None without an estimate."""
        if self.estimate is None:
            return None
        clocks = []
        for t in self.status["trials"].values():
            state = t.get("state", "pending")
            took = t.get("seconds") if state in ("done", "failed") else (
                t.get("seconds_before", 0.0) + (now - t["started"] if t.get("started") else 0.0))
            clocks.append(TrialClock(self.estimate(t.get("params") or {}), state, took or 0.0))
        # trials Tune has not created yet: the planned ones not seen, in plan order (a sampler's
        # draws are not known in advance: they cost what estimate gives unknown params, the mean)
        seen = Counter(_key(t.get("params") or {}) for t in self.status["trials"].values())
        left = []
        for params in self.planned:
            if seen[_key(params)] > 0:
                seen[_key(params)] -= 1
            else:
                left.append(params)
        # a study stopped by its budget starts no more: only the running trials are left
        stopped = (self.status.get("budget") or {}).get("stopped")
        unseen = 0 if stopped else max(self.search.total - len(clocks), 0)
        left = (left + [{}] * unseen)[:unseen]
        clocks += [TrialClock(self.estimate(params), "pending") for params in left]
        e = eta(clocks, self.slots)
        return {"seconds": e.seconds, "factor": e.factor, "finished": e.finished}

    def budget_update(self, snapshot: dict[str, Any]) -> None:
        """The budget's state (xlt.study.budget.Ledger.snapshot) into status.json."""
        self.status["budget"] = snapshot
        self.write()

    def budget_stopped(self, decision) -> None:
        """The budget refused a trial: say so once, and record it."""
        self.status["budget"] = {**(self.status.get("budget") or {}), "stopped": True, "message": decision.message()}
        self.write()
        self.line(decision.trial_id, decision.message())

    def compact(self, force: bool = False) -> None:
        if force or time.time() - self.last_compact >= self.compact_every:
            self.last_compact = time.time()
            if (self.run_dir / layout.ROWS_LOG).exists():
                self.room(rundir.compact, self.run_dir)

    def room(self, write: Callable[..., Any], *args: Any) -> None:
        """A write of the driver's on a full disk: said once, and the study goes on (its trials
        fail in their own line as their writes meet it; this write is redone at the next event)."""
        try:
            write(*args)
        except OSError as e:
            if not results.is_disk_full(e):
                raise
            if self.disk_full is None:
                print(f"xlt: disk full: {e.strerror or e} writing {args[0]}; the study goes on, and ends failed "
                      "if its trials cannot write either", file=sys.stderr, flush=True)
            self.disk_full = str(e)

    def disk_full_state(self) -> bool:
        """Whether the study met a full disk: a trial failed on one, or a write of the driver's did."""
        return self.disk_full is not None or any(
            t.get("state") == "failed" and str(t.get("error") or "").startswith("disk full")
            for t in self.status["trials"].values())

    def line(self, trial_id: str, what: str) -> None:
        c = self.counts()
        b = self.best()
        best = f"best {self.search.metrics[0]} {fmt(b[1])} ({b[0]})" if b else "best -"
        fails = f" failed {c['failed']}" if c["failed"] else ""
        e = self.status.get("eta")
        left = f" | ETA {clock(e['seconds'])}" if e else ""
        if b := self.status.get("budget"):
            left += f" | budget {b['spent']:.3g}+{b['committed']:.3g} of {b['limit']:.3g}"
        print(f"[{clock(self.before + time.time() - self.t0)}] {trial_id} {what} | done {c['done']} running {c['running']}"
              f" pending {c['pending']}{fails} | {best}{left}", file=self.stream, flush=True)

    # ---------------------------------------------------------------- Tune hooks

    def on_trial_start(self, iteration, trials, trial, **info):
        t = self._trial(trial)
        t.update(state="running", started=t.get("started") or time.time())
        self.write()
        params = " ".join(f"{k}={fmt(v)}" for k, v in trial.config.items())
        self.line(trial.trial_id, f"start {params}".rstrip())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        t = self._trial(trial)
        t["last"] = {k: result[k] for k in KEEP if k in result}
        t["last"].update({k: v for k, v in result.items() if layout.is_set_metric(k)})
        self.write()
        self.compact()
        if "event" in result and "trial_seconds" not in result:  # not the driver's closing repeat
            objective = " ".join(f"{m} {fmt(result[m])}" for m in self.search.metrics if m in result)
            self.line(trial.trial_id, f"{result.get('stage', '')} step {result.get('step', '?')} {objective}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "failed")

    def _finish(self, trial, state: str) -> None:
        t = self._trial(trial)
        now = time.time()
        t.update(state=state, ended=now)
        if t.get("started"):
            t["seconds"] = t.get("seconds_before", 0.0) + now - t["started"]
        ranks = sorted(layout.trial_dir(self.run_dir, trial.trial_id).glob(layout.RANK_GLOB))
        t["workers"] = [json.loads(p.read_text()) for p in ranks]
        if state == "failed":
            t["error"] = _error_line(trial)
        else:
            t.pop("error", None)  # resumed after failing, and done now
        self.write()
        self.compact(force=True)
        last = t.get("last", {})
        if state == "done":
            scores = " ".join(f"{m} {fmt(last[m])}" for m in self.search.metrics if m in last)
            self.line(trial.trial_id, f"done {scores} in {t.get('seconds', 0):.0f}s")
        else:
            self.line(trial.trial_id, f"FAILED: {t['error']}")
        self.write_page()

    def write_page(self) -> None:
        """Rewrite the dashboard from the rows so far (at the first trial end, then at most every
        PAGE_EVERY seconds: drawing the page takes the driver a second or two, and a study of short
        trials should not spend its time on it); the study goes on without it."""
        if self.page is None or time.time() - self.page_written < PAGE_EVERY:
            return
        self.page_written = time.time()
        try:
            self.page()
        except Exception as e:  # noqa: BLE001 - a page that cannot be drawn must not stop the study
            print(f"xlt: warning: dashboard not rewritten: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                  file=sys.stderr)

    def resumed(self) -> None:
        """A restored study: trials that were running or failed get their time so far kept, not
        double-counted, nor the time between the sessions."""
        for t in self.status["trials"].values():
            if t.get("state") in ("running", "interrupted"):
                t["state"] = "pending"
                if t.get("started"):
                    t["seconds_before"] = t.get("seconds_before", 0.0) + (t.get("last_seen") or t["started"]) - t["started"]
                t["started"] = None
            elif t.get("state") == "failed":  # retried (resume_errored): its time so far, not the time since
                t["seconds_before"], t["started"] = t.get("seconds", 0.0), None

    def on_experiment_end(self, trials, **info):
        # Tune's view wins: a trial that ended just before a driver was killed may be recorded
        # as running here but as finished in the experiment state the study resumed from
        # (Tune also marks trials it stopped on Ctrl-C as terminated: only a trial whose driver
        # wrote its final result is done)
        self.ended = [tr.trial_id for tr in trials]
        for tr in trials:
            t = self._trial(tr)
            if tr.status == "ERROR":
                t["state"] = "failed"
            elif tr.status == "TERMINATED" and t.get("state") != "done" \
                    and (layout.trial_dir(self.run_dir, tr.trial_id) / FINAL).exists():
                t["state"] = "done"
        self.write()

    def on_step_end(self, iteration, trials, **info):
        # keep the per-trial "last seen" so a killed run's trial time is known on resume
        if iteration % 50 == 0:
            now = time.time()
            for tr in trials:
                t = self.status["trials"].get(tr.trial_id)
                if t is not None and t.get("state") == "running":
                    t["last_seen"] = now
            self.write()


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _error_line(trial) -> str:
    """The last line of the trial's error (Tune keeps the traceback in error.txt)."""
    path = getattr(trial, "error_file", None) or ""
    text = ""
    try:
        if path and Path(path).exists():
            text = Path(path).read_text(errors="replace")
    except OSError:
        pass
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # bad input inside the trial, or training that diverged: its one line says it all
    names = "|".join(c.__name__ for c in _family(XltError))
    xlt_error = re.compile(rf"\b(?:{names}): ")
    for ln in reversed(lines):
        if m := xlt_error.search(ln):
            return ln[m.end():][:300]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else "trial failed (see ray/tune for the traceback)"


def _family(cls: type) -> list[type]:
    subclasses: list[type] = cls.__subclasses__()
    return [cls] + [d for c in subclasses for d in _family(c)]
