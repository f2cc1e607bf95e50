"""Part orchestration: what Ray costs per trial. The same one-trial study, one worker, runs as
`xlt trial` (in-process, no Ray) and as `xlt run` (embedded local Ray, Tune + Train), each in its
own subprocess, alternately. Reported: wall seconds of both commands, their difference (Ray
start-up and shutdown included), and the per-trial overhead `xlt status` derives from the run
directory (trial wall seen by the study driver minus the pipeline's own seconds).
"""

from __future__ import annotations

import importlib.util
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


def _xlt(args: list[str], cwd: Path, timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    # the repository on the path, so a checkout without `pip install -e` measures itself
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
           "RAY_USAGE_STATS_ENABLED": "0"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "xlt.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return time.perf_counter() - t0, proc


def _pipeline_seconds(run_dir: Path) -> float | None:
    from xlt.results import read_log

    rows = read_log(run_dir)
    return max((r.get("wall_seconds") or 0.0 for r in rows), default=None)


def run(cfg: BenchConfig, log) -> dict[str, Any]:
    reason = unavailable_reason()
    if reason is not None:
        return {"available": False, "reason": reason}
    from xlt.study.status import study_status

    rows = []
    with tempfile.TemporaryDirectory(prefix="xlt-bench-ray-") as tmp:
        cwd = Path(tmp)  # `xlt run` writes dashboards/ under its working directory
        study = cwd / "study.yaml"
        study.write_text(yaml.safe_dump(STUDY), encoding="utf-8")
        for r in range(cfg.ray_rounds):
            try:
                t_trial, p_trial = _xlt(["trial", str(study), "--out", str(cwd / f"trial-{r}")], cwd, cfg.ray_timeout)
                t_run, p_run = _xlt(["run", str(study), "--out", str(cwd / f"run-{r}")], cwd, cfg.ray_timeout)
            except subprocess.TimeoutExpired as e:
                return {"available": False, "reason": f"timed out after {e.timeout:.0f}s: {' '.join(e.cmd[2:4])}"}
            for name, p in (("xlt trial", p_trial), ("xlt run", p_run)):
                if p.returncode != 0:
                    tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [""]
                    return {"available": False, "reason": f"{name} exited {p.returncode}: {tail[0][:300]}"}
            st = study_status(cwd / f"run-{r}")
            t = st["trials"][0] if st.get("trials") else {}
            rows.append({"trial_wall_seconds": t_trial, "run_wall_seconds": t_run,
                         "trial_pipeline_seconds": _pipeline_seconds(cwd / f"trial-{r}"),
                         "run_trial_seconds": t.get("trial_seconds"), "run_pipeline_seconds": t.get("pipeline_seconds"),
                         "run_overhead_seconds": t.get("overhead_seconds")})
            log(f"  round {r + 1}/{cfg.ray_rounds}: xlt trial {t_trial:.1f}s, xlt run {t_run:.1f}s")
    keys = rows[0].keys()
    med = {k: median([r[k] for r in rows]) for k in keys}
    return {
        "available": True,
        "study": "one trial, 1 worker, tiny BERT on 64 synthetic questions, 1 epoch",
        **med,
        "run_minus_trial_wall_seconds": med["run_wall_seconds"] - med["trial_wall_seconds"],
        "rounds": rows,
    }
