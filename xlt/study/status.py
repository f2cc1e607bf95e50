"""`xlt status RUN_DIR`: a study's trials, best result, compute spent and orchestration overhead,
from the run directory alone (status.json and the rows; no Ray, no torch).

Overhead of a trial = its wall time seen by the study driver (start to end, including Ray
scheduling, worker start-up, checkpoints) minus the pipeline's own time (`wall_seconds` of its
last row).
"""

from __future__ import annotations

import json
import math
import socket
import time
from pathlib import Path
from typing import Any

from xlt import layout
from xlt.errors import XltError
from xlt.study import rundir


def _value(rows: list[dict[str, Any]], metric: str, primary: str | None) -> float | None:
    if metric in ("flops_train", "device_seconds"):
        vals = [r[metric] for r in rows if r.get(metric) is not None]
        return max(vals) if vals else None
    name, eval_set = layout.parse_metric(metric)
    eval_set = eval_set or primary
    for r in rows:
        if r.get("eval_set") == eval_set and r.get(name) is not None:
            return r[name]
    return None


def _primary_of(spec: dict[str, Any] | None, default: str | None):
    """params -> the trial's primary eval set (an adaptation trial's depends on its target
    language); `default` when the spec cannot say."""
    from xlt.spec import StudySpec, migrate_saved, trial_spec
    from xlt.study.space import primary_set

    try:
        study = StudySpec.model_validate(migrate_saved(spec or {}))
    except Exception:  # a spec.json from another xlt version: the study-wide set
        return lambda params: default

    def of(params: dict[str, Any] | None) -> str | None:
        try:
            return primary_set(trial_spec(study, params or {}))
        except Exception:
            return default
    return of


def study_status(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise XltError(f"{run_dir}: no such run directory")
    st = rundir.read_json(run_dir / rundir.STATUS)
    spec = rundir.read_json(run_dir / rundir.SPEC)
    if st is None and spec is None:
        raise XltError(f"{run_dir}: not a run directory of xlt run (no {rundir.STATUS})")
    st = st or {"study": spec.get("name"), "state": "unknown", "trials": {}}
    state = st.get("state", "unknown")
    driver = st.get("driver") or {}
    if state == "running" and driver.get("host") == socket.gethostname() and driver.get("pid") \
            and not rundir.pid_alive(int(driver["pid"])):
        state = "interrupted"  # the driver died without saying so (kill -9, a crash)
    rows = rundir.read_rows(run_dir)
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_trial.setdefault(r["trial_id"], []).append(r)
    objectives = [tuple(o) for o in st.get("objectives") or [("f1", "max")]]
    primary = _primary_of(spec, st.get("primary_set"))
    trials = []
    for tid in sorted(set(st.get("trials", {})) | set(by_trial)):
        t = st.get("trials", {}).get(tid, {})
        trows = sorted(by_trial.get(tid, []), key=lambda r: (r.get("time") or 0))
        final = [r for r in trows if r.get("stage") == "final"]
        last = trows[-1] if trows else {}
        scores = {m: _value(final or [r for r in trows if r.get("event") == last.get("event")], m,
                            primary(t.get("params")))
                  for m, _ in objectives}
        pipeline = last.get("wall_seconds")
        seconds = t.get("seconds")
        trials.append({
            "trial_id": tid, "state": t.get("state") or ("done" if final else "unknown"), "params": t.get("params"),
            "scores": scores, "final": bool(final), "events": len({(r.get("stage"), r.get("event")) for r in trows}),
            "flops_train": last.get("flops_train"), "device_seconds": last.get("device_seconds"),
            "trial_seconds": seconds, "pipeline_seconds": pipeline,
            "overhead_seconds": seconds - pipeline if seconds is not None and pipeline is not None and final else None,
            "nodes": sorted({w.get("node_id") for w in t.get("workers", []) if w.get("node_id")}),
            "driver_node": (t.get("last") or {}).get("driver_node"), "error": t.get("error"),
        })
    metric, mode = objectives[0]
    scored = [t for t in trials if t["final"] and isinstance(t["scores"].get(metric), int | float)
              and not math.isnan(t["scores"][metric])]
    best = (max if mode == "max" else min)(scored, key=lambda t: t["scores"][metric]) if scored else None
    overheads = [t["overhead_seconds"] for t in trials if t["overhead_seconds"] is not None]
    counts = {s: sum(t["state"] == s for t in trials) for s in ("done", "running", "pending", "failed")}
    if not (st.get("budget") or {}).get("stopped"):  # a study stopped by its budget starts nothing more
        counts["pending"] = max(counts["pending"],
                                (st.get("total") or 0) - counts["done"] - counts["running"] - counts["failed"])
    return {
        "run_dir": str(run_dir), "study": st.get("study"), "run_id": st.get("run_id"), "state": state,
        "finished": (run_dir / rundir.DONE).exists(), "elapsed_seconds": st.get("elapsed_seconds"),
        "updated": st.get("updated"), "objectives": objectives, "counts": counts, "trials": trials,
        "eta": st.get("eta") if state == "running" else None,
        "budget": st.get("budget"), "extended": st.get("extended") or [],
        "best": None if best is None else {"trial_id": best["trial_id"], "metric": metric,
                                           "value": best["scores"][metric], "params": best["params"]},
        "flops_train_total": sum(t["flops_train"] or 0 for t in trials),
        "device_hours_total": sum(t["device_seconds"] or 0 for t in trials) / 3600,
        "overhead_seconds_mean": sum(overheads) / len(overheads) if overheads else None,
        "rows": len(rows),
    }


def _f(v: Any, spec: str = ".2f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return format(v, spec) if isinstance(v, int | float) else str(v)


def _eta(e: dict[str, Any] | None) -> str:
    if not e:
        return ""
    basis = (f"estimates x {e['factor']:.2f}, the ratio of {e['finished']} finished trial(s)" if e.get("finished")
             else "xlt estimate's figures, no trial finished yet")
    return f"; ETA {e['seconds']:.0f}s ({basis})"


def format_status(st: dict[str, Any]) -> str:
    c = st["counts"]
    ago = f", updated {time.time() - st['updated']:.0f}s ago" if st.get("updated") else ""
    out = [f"study {st['study']} ({st['run_id']}): {st['state']}{ago}",
           f"trials: {c['done']} done, {c['running']} running, {c['pending']} pending, {c['failed']} failed"
           f"; elapsed {_f(st.get('elapsed_seconds'), '.0f')}s" + _eta(st.get("eta"))]
    metrics = [m for m, _ in st["objectives"]]
    head = ["trial", "state"] + metrics + ["FLOPs", "dev-h", "trial s", "pipeline s", "overhead s", "params"]
    table = [head]
    for t in st["trials"]:
        params = " ".join(f"{k}={_f(v, '.3g')}" for k, v in (t["params"] or {}).items())
        table.append([t["trial_id"], t["state"]] + [_f(t["scores"].get(m), ".4g") for m in metrics]
                     + [_f(t["flops_train"], ".3g"), _f((t["device_seconds"] or 0) / 3600, ".4f"),
                        _f(t["trial_seconds"], ".1f"), _f(t["pipeline_seconds"], ".1f"),
                        _f(t["overhead_seconds"], ".1f"), params])
    widths = [max(len(r[i]) for r in table) for i in range(len(head) - 1)]
    for r in table:
        out.append("  ".join(v.ljust(w) for v, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    for t in st["trials"]:
        if t.get("error"):
            out.append(f"{t['trial_id']} failed: {t['error']}")
    b = st["best"]
    out.append("best: " + ("-" if b is None else f"{b['metric']} {b['value']:.4g} ({b['trial_id']}: "
                           + json.dumps(b["params"], default=str) + ")"))
    out.append(f"compute: {st['flops_train_total']:.3g} training FLOPs, {st['device_hours_total']:.4f} device-hours"
               + (f"; orchestration overhead {st['overhead_seconds_mean']:.1f}s per trial (mean)"
                  if st["overhead_seconds_mean"] is not None else ""))
    for e in st.get("extended") or []:
        out.append(f"extended: {e['kept']} trials done kept, {e['samples']} added ({e['difference']})")
    if b := st.get("budget"):
        unit = {"flops": "training FLOPs", "device_hours": "device-hours"}.get(b.get("unit"), b.get("unit"))
        out.append(f"budget: {b['limit']:.3g} {unit}; spent {b['spent']:.3g} ({100 * b['spent'] / b['limit']:.0f}%)"
                   + (f", running trials estimated at {b['committed']:.3g}" if b.get("committed") else "")
                   + ("; stopped by budget: " + b["message"].removeprefix("budget: ") if b.get("stopped") else ""))
    if st["state"] in ("interrupted", "failed: disk full"):
        room = "free some space, then " if st["state"] != "interrupted" else ""
        out.append(f"{room}resume with: xlt run STUDY.yaml --out {st['run_dir']} --resume")
    return "\n".join(out)
