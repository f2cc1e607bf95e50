"""One trial in-process (`xlt trial`): the pipeline for the spec's task, rows to a run directory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from xlt import results
from xlt.spec import StudySpec, trial_spec
from xlt.train.qa import TrialInfo


def run_pipeline(spec: StudySpec, report, info: TrialInfo, out_dir: Path, device=None) -> dict[str, Any]:
    if spec.task == "adapt":
        from xlt.train.adapt import run_adapt

        return run_adapt(spec, report, info, out_dir=out_dir, device=device)
    from xlt.train.qa import run_qa

    return run_qa(spec, report, info, out_dir=out_dir, device=device)


def run_trial_local(spec: StudySpec, out: Path, params: dict[str, Any]) -> dict[str, Any]:
    """A trial directory holds one trial: its rows and spec are replaced once the new trial reports
    its first rows, so a trial that fails on bad input leaves the previous one intact."""
    out.mkdir(parents=True, exist_ok=True)
    if spec.cache_dir is None:  # trials run into the same directory reuse its tokenizers, features, steps 1 and 3
        spec = trial_spec(spec, {"cache_dir": str(out.resolve() / "artifacts")})
    started = False
    info = TrialInfo(study=spec.name, run_id=f"local-{int(time.time())}", trial_id="trial-0", params=params,
                     provenance=results.provenance())

    def report(rows: list[dict[str, Any]]) -> None:
        nonlocal started
        if not started:
            (out / results.ROWS_LOG).unlink(missing_ok=True)
            (out / results.TABLE).unlink(missing_ok=True)
            (out / "spec.json").write_text(json.dumps(spec.model_dump(mode="json"), indent=1))
            started = True
        results.append_rows(out, rows)
        for r in rows:
            if r["stage"] != "final":
                print(f"  {r['stage']} step {r['step']:>5}  {r['eval_set']:<24} F1 {r['f1']:6.2f}  EM {r['exact_match']:6.2f}"
                      f"  {r['flops_train']:.3g} FLOPs  {r['wall_seconds']:.0f}s", flush=True)

    final = run_pipeline(spec, report, info, out)
    table = results.write_table(out)
    (out / "DONE").touch()  # the dashboard tells a finished trial from one still running or killed
    return {"run_dir": str(out), "results": str(table), "final": final}
