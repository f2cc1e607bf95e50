"""`xlt estimate STUDY --against RUN`: the cost model held against a run that happened.

Each trial the run finished is priced at its own parameters (so a sampler's study compares too,
not the estimate's uniform stand-in draws), in the order the trials started, and set beside what
the trial measured. Three ratios, three parts of the model:
  training FLOPs   estimated windows and tokens vs the windows the trial really cut (both counted
                   by the same analytical formula, xlt.compute), so ~1.00 when the token model holds
  device-hours     FLOPs over the throughput (`xlt calibrate`'s, the study's, or assumed) vs the
                   trial's measured device-seconds (its own pipeline; a cached step it reused is not
                   in either)
  wall hours       the study's device-hours spread over this machine's slots vs the run's elapsed time
Torch-free, like `xlt estimate`: it reads the run directory's status.json and row log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xlt.errors import XltError
from xlt.spec import StudySpec, migrate_saved
from xlt.study import rundir
from xlt.study.estimate import device_kind, price, resources_here, throughput


def against(spec: StudySpec, run_dir: Path) -> dict[str, Any]:
    st = rundir.read_json(run_dir / rundir.STATUS)
    if not isinstance(st, dict) or not st.get("trials"):
        raise XltError(f"{run_dir}: no trials in {rundir.STATUS} (not a run directory of xlt run?)")
    finals: dict[str, dict[str, Any]] = {}
    for r in rundir.read_rows(run_dir):  # the row log: a trial's last row holds its running totals
        if r.get("trial_id") and (r.get("device_seconds") or 0) >= (finals.get(r["trial_id"], {}).get("device_seconds") or 0):
            finals[r["trial_id"]] = r
    done = sorted(((tid, t) for tid, t in st["trials"].items() if t.get("state") == "done" and tid in finals),
                  key=lambda item: item[1].get("started") or 0)
    if not done:
        raise XltError(f"{run_dir}: no finished trial to compare with")
    kind = device_kind(spec)
    rate = throughput(spec, kind)
    priced, paid, _ = price(spec, [t.get("params") or {} for _, t in done], rate)
    trials = []
    for (tid, t), p in zip(done, priced, strict=True):
        m = finals[tid]
        trials.append({"trial_id": tid, "params": t.get("params") or {},
                       "flops_train": (p["flops_train"], float(m["flops_train"])),
                       "flops_eval": (p["flops_eval"], float(m.get("flops_eval") or 0.0)),
                       "device_hours": (p["paid_device_hours"], float(m["device_seconds"]) / 3600)})
    hours = rate.hours(paid, sum(p["flops_eval"] for p in priced))
    wall = resources_here(spec, hours)["local_wall_hours"]
    measured_wall = st.get("elapsed_seconds")
    return {"study": spec.name, "run": str(run_dir), "device_kind": kind, "throughput_source": rate.source,
            "throughput_detail": rate.detail, "throughput": (rate.train, rate.eval), "trials": trials,
            "same_spec": _same_spec(spec, run_dir),
            "device_hours": (hours, sum(t["device_hours"][1] for t in trials)),
            "wall_hours": (wall, measured_wall / 3600 if measured_wall and len(done) == len(st["trials"]) else None)}


def _same_spec(spec: StudySpec, run_dir: Path) -> bool | None:
    """Whether the run was made from this study (as `--resume` decides it); None: cannot tell."""
    saved = rundir.read_json(run_dir / rundir.SPEC)
    try:
        return StudySpec.model_validate(migrate_saved(saved)).hash() == spec.hash() if saved else None
    except ValueError:
        return None


def _pair(est: float | None, measured: float | None, fmt: str = ".3g") -> str:
    if est is None or measured is None:
        return "-"
    ratio = f" ({measured / est:.2f}x)" if est else ""
    return f"{est:{fmt}} / {measured:{fmt}}{ratio}"


def format_against(c: dict[str, Any]) -> str:
    k = c["device_kind"]
    lines = [f"study {c['study']} against {c['run']}: {len(c['trials'])} finished trials priced at their own "
             f"parameters (throughput {c['throughput'][0]:.2g} FLOP/s training, {c['throughput'][1]:.2g} evaluation;"
             f" {c['throughput_source']}{': ' + c['throughput_detail'] if c['throughput_detail'] else ''})",
             "  estimated / measured (measured/estimated)"]
    if c["same_spec"] is False:
        lines.append("  note: the run was made from a different spec than this study file (its hash differs)")
    for t in c["trials"]:
        params = ", ".join(f"{key}={v:.3g}" if isinstance(v, float) else f"{key}={v}" for key, v in t["params"].items())
        lines.append(f"  {t['trial_id']}  train FLOPs {_pair(*t['flops_train'])}  eval FLOPs {_pair(*t['flops_eval'])}"
                     f"  {k}-hours {_pair(*t['device_hours'])}  {params}")
    wall = c["wall_hours"]
    lines.append(f"total: {k}-hours {_pair(*c['device_hours'])}; wall hours on this machine "
                 + (_pair(*wall) if wall[1] is not None else "- (the run has unfinished trials)"))
    return "\n".join(lines)
