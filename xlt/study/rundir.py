"""The run directory of a study: everything a run leaves, readable without Ray (its layout: xlt.layout).

On a cluster the directory must be on storage every node sees.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from xlt import layout, lock, results
from xlt.errors import XltError
from xlt.spec import StudySpec, migrate_saved
from xlt.study import extend

SPEC, RUN, STATUS, DONE = layout.SPEC, layout.RUN, layout.STATUS, layout.DONE
# `xlt run` refuses to start with less free space than this on the run directory's filesystem
# (rows are small; checkpoints, saved models and artifacts are not: a BERT-base checkpoint with
# its AdamW state is ~1.3 GB). XLT_MIN_FREE_MB overrides it.
MIN_FREE_MB = 1024
KEEP_FREE_MB = 64  # while it runs (keep_free_bytes); XLT_KEEP_FREE_MB overrides it
PROBE_BYTES = 64 * 1024
TUNE_NAME = "tune"
# run.json of a run whose Tuner was built with xlt.study.tracking's loggers (a restore of an older
# run keeps Tune's own)
TUNE_LOGGERS = "xlt"
# (trial, stage, event, eval set) is one row; a worker restarted from a checkpoint may log an event again
ROW_KEY = ("trial_id", "stage", "event", "eval_set")


def write_json(path: Path, data: Any) -> None:
    results.atomic_write_bytes(path, json.dumps(data, indent=1, default=str).encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise XltError(f"{path}: not a JSON file ({e})") from None


def check(out: Path, spec: StudySpec, resume: bool, force: bool = False) -> dict[str, Any] | None:
    """Check `out` against --resume and the spec (before anything starts); returns the run.json of
    the run to resume, or None for a new run. A spec that only extends the study (xlt.study.extend)
    resumes with the added trials recorded in run.json's `extended`. Any other change is refused
    unless `force` (--resume --force): then the run goes on under the new spec, and run.json
    records when and what differed (rows already logged stay as their trials made them)."""
    if out.exists() and not out.is_dir():
        raise XltError(f"{out}: not a directory; choose another --out")
    busy = out.exists() and any(not p.name.startswith(lock.LOCK) for p in out.iterdir())
    if busy and not resume:
        raise XltError(f"{out}: run directory exists and is not empty: add --resume to continue it, "
                       "or choose another --out")
    if not busy:
        return None
    saved = read_json(out / SPEC)
    if saved is None:
        raise XltError(f"{out}: not a run directory of xlt run (no {SPEC}); choose another --out")
    try:
        old = StudySpec.model_validate(migrate_saved(saved))
    except Exception as e:
        why = str(e).splitlines()[1:3] if str(e).count("\n") else [str(e)]
        raise XltError(f"{out}/{SPEC}: not a spec this xlt version reads ({' '.join(w.strip() for w in why)}); "
                       "choose another --out") from None
    if old.name != spec.name:
        raise XltError(f"{out}: holds study '{old.name}', not '{spec.name}': choose another --out to run it")
    run = read_json(out / RUN)
    if old.hash() != spec.hash():
        decided = extend.decide(old, spec)
        if isinstance(decided, extend.Extension):
            return _extended(out, run, old, spec, decided)
        difference = decided  # the first key that changed and does not only extend the study
        if not force:
            raise XltError(f"{out}: study '{spec.name}' there was run with a different spec ({difference}): "
                           "same file and overrides to resume, another --out, or --resume --force to go on "
                           "under the new spec")
        print(f"xlt: --force: resuming '{spec.name}' under a changed spec ({difference}); trials run so far keep "
              "their rows, the rest run with the new spec", file=sys.stderr)
        if run is not None:
            run = {**run, "forced": [*run.get("forced", []), {"time": time.time(), "difference": difference,
                                                            "from_hash": old.hash(), "to_hash": spec.hash()}]}
    return run


def experiments(run: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The run's Tune experiments in the order they run (each in DIR/ray/<name>): the study as it
    was created, then one per extension (run.json `extended`: its points and samples)."""
    return [{"name": TUNE_NAME}, *(run or {}).get("extended", [])]


def started(out: Path, name: str) -> bool:
    """Whether Tune experiment `name` has saved its state: what Tuner.can_restore looks for (Ray 2.60)."""
    return (out / "ray" / name / "tuner.pkl").exists()


def _extended(out: Path, run: dict[str, Any] | None, old: StudySpec, spec: StudySpec,
              ext: extend.Extension) -> dict[str, Any] | None:
    """Record an extension in run.json's `extended`, for the runner to run as a Tune experiment of
    its own after the earlier ones, and say what is kept and added. An extension recorded but not
    started yet takes this one in; before the study's first experiment started nothing is kept,
    and the study simply runs as the new spec says."""
    done = len(list((out / layout.TRIALS_DIR).glob(f"*/{layout.FINAL}")))
    *_, last = exps = experiments(run)
    if run is None or (len(exps) == 1 and not started(out, last["name"])):
        print(f"xlt: resuming '{spec.name}' under its extended spec ({ext.difference}): no trial had started",
              file=sys.stderr)
        return run
    others = max(0, ((read_json(out / STATUS) or {}).get("total") or 0) - done)
    print(f"xlt: extended: {done} trials done kept, {ext.samples} added ({ext.difference})"
          + (f"; the {others} other trial(s) of the study as it was resume first" if others else ""), file=sys.stderr)
    record = {"name": f"{TUNE_NAME}-{len(exps) + 1}", "time": time.time(), "difference": ext.difference,
              "from_hash": old.hash(), "to_hash": spec.hash(), "kept": done, "points": ext.points,
              "samples": ext.samples}
    extended = list(run.get("extended", []))
    if len(exps) > 1 and not started(out, last["name"]):  # never ran: its trials join this one's
        record.update(name=last["name"], from_hash=last["from_hash"], points=last["points"] + ext.points,
                      samples=last["samples"] + ext.samples)
        extended.pop()
    return {**run, "extended": [*extended, record]}


def min_free_bytes(var: str = "XLT_MIN_FREE_MB", default_mb: float = MIN_FREE_MB) -> int:
    text = os.environ.get(var, "").strip()
    if not text:
        return int(default_mb * 2**20)
    try:
        mb = float(text)
    except ValueError:
        mb = -1.0
    if not 0 <= mb < 2**40:
        raise XltError(f"{var}={text}: expected a number of megabytes >= 0")
    return int(mb * 2**20)


def keep_free_bytes() -> int:
    """What a running study keeps free on its run directory's filesystem: a trial fails (disk
    full) rather than write a checkpoint that leaves less, so that Tune's experiment state,
    status.json and the results table still fit and the study ends cleanly and resumes (Tune
    2.60 rewrites its experiment state in place: a disk that fills while it writes tears it)."""
    return min_free_bytes("XLT_KEEP_FREE_MB", KEEP_FREE_MB)


def check_storage(out: Path) -> None:
    """Before anything starts: the run directory (for a new run, the nearest existing directory it
    will be made in) takes a write + fsync of PROBE_BYTES, and its filesystem has at least
    min_free_bytes() free. A study that would die at its first row or checkpoint fails here, in
    one line, before Ray starts."""
    where = out
    while not where.exists() and where != where.parent:
        where = where.parent
    what = "run directory" if where == out else f"directory to create the run directory in ({where})"
    if not where.is_dir():
        raise XltError(f"{out}: {where} is not a directory; choose another --out")
    need = min_free_bytes()
    keep_free_bytes()  # a bad XLT_KEEP_FREE_MB fails here too, before Ray starts
    try:
        free = shutil.disk_usage(where).free
    except OSError as e:
        raise XltError(f"{out}: cannot read the free space of the {what}: {e.strerror or e}") from None
    if free < need:
        raise XltError(f"{out}: only {free / 2**20:.0f} MB free on the filesystem of the {what}, "
                       f"xlt run needs {need / 2**20:.0f} MB (free some space, choose another --out, "
                       "or set XLT_MIN_FREE_MB)")
    probe = where / f".xlt-write-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(bytes(PROBE_BYTES))
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise XltError(f"{out}: no space left on the filesystem of the {what} "
                           f"(a {PROBE_BYTES // 1024} KB test write failed: {e.strerror})") from None
        raise XltError(f"{out}: the {what} is not writable ({e.strerror or e})") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def create(out: Path, spec: StudySpec, run: dict[str, Any] | None, trial_host: str = "train") -> dict[str, Any]:
    """Write spec.json and run.json (run.json kept as it is when resuming, but for `trial_host`;
    spec.json rewritten, as what the hash leaves out, claims, may have been edited since, and an
    older xlt's keys migrated). `trial_host`: where the trials run and checkpoint
    (xlt.study.resources), so that a resumed run resumes them from the same checkpoints."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SPEC, spec.model_dump(mode="json"))
    if run is not None:
        run = {**run, "trial_host": trial_host}
        write_json(out / RUN, run)  # as check returned it (a forced resume is recorded)
        return run
    run = {"run_id": f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}", "study": spec.name, "spec_hash": spec.hash(),
           "created": time.time(), "trial_host": trial_host}
    write_json(out / RUN, run)
    return run


def dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key; the last logged wins (a rerun after a checkpoint supersedes what it redoes)."""
    kept: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        kept[tuple(r.get(k) for k in ROW_KEY)] = r
    return list(kept.values())


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The study's rows, deduplicated: from the log when there is one, else from the table."""
    if (run_dir / results.ROWS_LOG).exists():
        return dedupe(results.read_log(run_dir))
    if (run_dir / results.TABLE).exists():
        return results.read_table(run_dir).to_dict("records")
    return []


def compact(run_dir: Path) -> Path:
    return results.write_table(run_dir, dedupe(results.read_log(run_dir)))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
