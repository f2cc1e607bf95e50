"""Part orchestration: what Ray costs per trial. The same one-worker trial runs as `xlt trial`
(in-process, no Ray) and, as a study of `ray_trials` such trials (seeds), under `xlt run`
(embedded local Ray): as xlt runs it (each trial in its Tune trial process, the process reused
by the next trial) and, with `ray_train_contender`, with every trial on Ray Train
(XLT_RAY_TRAIN=1: a Train controller and worker per trial, how xlt ran before). Each command in
its own subprocess, contenders alternating. Reported: wall seconds of the commands, `xlt run`'s
over `xlt trial`'s (Ray start-up and shutdown included), and the per-trial overhead `xlt status`
derives from the run directory (trial wall seen by the study driver minus the pipeline's own
seconds) of the first trial (a new process) and of the later ones (median).
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from xlt.bench.common import BenchConfig, median

STUDY: dict[str, Any] = {
    "name": "bench_overhead",
    "description": "xlt bench: one tiny trial, to time orchestration",
    "task": "qa",
    "model": {"tiny": {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64, "vocab_size": 500,
                       "max_positions": 128}},
    "data": {"english": {"name": "en-train", "lang": "en", "synthetic": {"n": 64, "seed": 0, "split": "train"}},
             "eval": [{"name": "en-dev", "lang": "en", "synthetic": {"n": 16, "seed": 0, "split": "dev"}}]},
    "train": {"mode": "fixed", "epochs": 1, "lr": 1e-3, "batch_size": 16, "eval_batch_size": 16,
              "max_seq_length": 128, "doc_stride": 32, "threads": 1, "save_model": False},
    "search": {"algorithm": "grid", "space": {}, "seeds": [0]},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}


# what `xlt run` needs; checked by module spec, so nothing heavy is imported to find out
REQUIRED = ("ray", "xlt.study.runner", "xlt.study.status")


def unavailable_reason(required: tuple[str, ...] | None = None) -> str | None:
    """Why `xlt run` cannot be measured here, or None."""
    for module in REQUIRED if required is None else required:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"xlt run is not available ({module} is not installed)"
    return None


def _xlt(args: list[str], cwd: Path, timeout: float, **extra: str) -> tuple[float, subprocess.CompletedProcess]:
    # the repository on the path, so a checkout without `pip install -e` measures itself
    root = str(Path(__file__).resolve().parents[2])
    env = {**{k: v for k, v in os.environ.items() if k != "XLT_RAY_TRAIN"},
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
           "RAY_USAGE_STATS_ENABLED": "0", **extra}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "xlt.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return time.perf_counter() - t0, proc


def _pipeline_seconds(run_dir: Path) -> float | None:
    from xlt.results import read_log

    rows = read_log(run_dir)
    return max((r.get("wall_seconds") or 0.0 for r in rows), default=None)


def _overheads(run_dir: Path) -> dict[str, Any]:
    """The run's per-trial figures from `xlt status`: the first trial's, the later ones' median."""
    from xlt.study.status import study_status

    trials = sorted(study_status(run_dir)["trials"], key=lambda t: t["trial_id"])  # grid order = start order
    if not trials:
        return {"trial_seconds": None, "pipeline_seconds": None, "overhead_seconds": None,
                "overhead_later_seconds": None}
    first, later = trials[0], [t["overhead_seconds"] for t in trials[1:] if t["overhead_seconds"] is not None]
    return {"trial_seconds": first["trial_seconds"], "pipeline_seconds": first["pipeline_seconds"],
            "overhead_seconds": first["overhead_seconds"], "overhead_later_seconds": median(later) if later else None}


def run(cfg: BenchConfig, log) -> dict[str, Any]:
    reason = unavailable_reason()
    if reason is not None:
        return {"available": False, "reason": reason}
    contenders: dict[str, dict[str, str]] = {"run": {}}
    if cfg.ray_train_contender:
        contenders["run_train"] = {"XLT_RAY_TRAIN": "1"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="xlt-bench-ray-") as tmp:
        cwd = Path(tmp)  # `xlt run` writes dashboards/ under its working directory
        study, trials = cwd / "study.yaml", cwd / "trials.yaml"
        study.write_text(yaml.safe_dump(STUDY), encoding="utf-8")
        trials.write_text(yaml.safe_dump({**STUDY, "search": {**STUDY["search"], "seeds": list(range(cfg.ray_trials))}}),
                          encoding="utf-8")
        for r in range(cfg.ray_rounds):
            row: dict[str, Any] = {}
            try:
                t_trial, p_trial = _xlt(["trial", str(study), "--out", str(cwd / f"trial-{r}")], cwd, cfg.ray_timeout)
                procs = {"xlt trial": p_trial}
                row.update(trial_wall_seconds=t_trial, trial_pipeline_seconds=None)
                for name, env in contenders.items():
                    run_dir = cwd / f"{name}-{r}"
                    t_run, procs[f"xlt {name}"] = _xlt(["run", str(trials), "--out", str(run_dir)], cwd,
                                                       cfg.ray_timeout, **env)
                    if procs[f"xlt {name}"].returncode == 0:
                        row[f"{name}_wall_seconds"] = t_run
                        row.update({f"{name}_{k}": v for k, v in _overheads(run_dir).items()})
            except subprocess.TimeoutExpired as e:
                return {"available": False, "reason": f"timed out after {e.timeout:.0f}s: {' '.join(e.cmd[2:4])}"}
            for name, p in procs.items():
                if p.returncode != 0:
                    tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [""]
                    return {"available": False, "reason": f"{name} exited {p.returncode}: {tail[0][:300]}"}
            row["trial_pipeline_seconds"] = _pipeline_seconds(cwd / f"trial-{r}")
            rows.append(row)
            log(f"  round {r + 1}/{cfg.ray_rounds}: xlt trial {t_trial:.1f}s, "
                + ", ".join(f"xlt {name} {row[f'{name}_wall_seconds']:.1f}s (first trial's overhead "
                            f"{row[f'{name}_overhead_seconds'] or math.nan:.1f}s)" for name in contenders))
    med = {k: median(vs) if (vs := [r[k] for r in rows if r[k] is not None]) else None for k in rows[0]}
    out: dict[str, Any] = {
        "available": True,
        "study": f"1 worker, tiny BERT on 64 synthetic questions, 1 epoch; xlt run: {cfg.ray_trials} such trials",
        **med,
        # what `xlt run` adds over running its trials one `xlt trial` process after another
        "run_minus_trials_wall_seconds": median([r["run_wall_seconds"] - cfg.ray_trials * r["trial_wall_seconds"]
                                                 for r in rows]),
        "rounds": rows,
    }
    if cfg.ray_train_contender:
        # per round, as ratios: the load on a shared machine moves both alike
        out["train_over_run_overhead"] = median([r["run_train_overhead_seconds"] / r["run_overhead_seconds"]
                                                 for r in rows if r["run_overhead_seconds"]])
        out["train_over_run_wall"] = median([r["run_train_wall_seconds"] / r["run_wall_seconds"] for r in rows])
    return out
