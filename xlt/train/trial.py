"""What every trial shares, whichever pipeline it runs (QA fine-tuning or adaptation).

Who the trial is (`TrialInfo`, the columns every row carries), where it runs (device, threads,
seed, the meter), where trials share artifacts (`artifact_cache`), and how the trained model is
saved. Also `xlt trial`: one trial in-process, rows to a run directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xlt import layout, results
from xlt.spec import StudySpec, trial_spec
from xlt.train.artifacts import ArtifactCache
from xlt.train.loop import Meter, Session

Report = Callable[[list[dict[str, Any]]], None]


@dataclass
class TrialInfo:
    """Who a trial is: copied into every row."""

    study: str
    run_id: str
    trial_id: str
    params: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def device_kind(device: torch.device) -> str:
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type


def start(spec: StudySpec, device: torch.device | None, session: Session | None) -> tuple[torch.device, Meter]:
    """The device, torch's threads and seed, and the trial's meter: the first lines of every pipeline."""
    device = device or pick_device()
    if spec.train.threads:
        torch.set_num_threads(spec.train.threads)
    torch.manual_seed(spec.train.seed)
    if device.type == "cuda":  # each row's peak_memory_bytes is this trial's
        torch.cuda.reset_peak_memory_stats(device)
    return device, Meter(device_kind=device_kind(device), n_devices=session.world_size if session else 1)


def artifact_cache(spec: StudySpec) -> ArtifactCache | None:
    """Where trials share artifacts (`cache_dir`); None: nothing is cached."""
    return ArtifactCache(spec.resolve_path(spec.cache_dir)) if spec.cache_dir else None


def trial_columns(spec: StudySpec, info: TrialInfo, *, method: str, target_count: int | None) -> dict[str, Any]:
    d = spec.data
    target_lang = d.target.lang if d.target else (spec.adapt.target_lang if spec.adapt else None)
    return {
        "study": spec.name, "run_id": info.run_id, "trial_id": info.trial_id, "task": spec.task,
        "params": json.dumps(info.params, sort_keys=True, default=str),
        "model": spec.model.name or "tiny", "method": method,
        "depth": spec.adapt.depth if spec.adapt and method != "finetune" else None,
        "lr": spec.train.lr, "train_mode": spec.train.mode, "target_lang": target_lang,
        "target_count": target_count, "target_fraction": d.target_fraction,
        "with_english": d.with_english if d.english is not None else False,
        "seed": spec.train.seed, "spec_hash": spec.hash(), **info.provenance,
    }


def save_model(spec: StudySpec, model, tokenizer, out_dir: str | Path | None, session: Session | None = None) -> None:
    """The trained model as safetensors weights + config + tokenizer (never pickle), in
    `out_dir/model`, when the study keeps it (`train.save_model`); rank 0 writes it. The evaluation
    settings go beside it (`xlt.json`), so `xlt predict` answers as the trial's evaluations did."""
    from xlt.train.predict import save_settings

    if out_dir is None or not spec.train.save_model or (session is not None and session.rank != 0):
        return
    path = Path(out_dir) / layout.MODEL_DIR
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    save_settings(path, spec.train)


# ---------------------------------------------------------------- `xlt trial`


def run_pipeline(spec: StudySpec, report: Report, info: TrialInfo, out_dir: Path | None, device=None,
                 session: Session | None = None) -> dict[str, Any]:
    if spec.task == "adapt":
        from xlt.train.adapt import run_adapt

        return run_adapt(spec, report, info, out_dir=out_dir, device=device, session=session)
    from xlt.train.qa import run_qa

    return run_qa(spec, report, info, out_dir=out_dir, device=device, session=session)


def run_trial_local(spec: StudySpec, out: Path, params: dict[str, Any]) -> dict[str, Any]:
    """A trial directory holds one trial: its rows and spec are replaced once the new trial reports
    its first rows, so a trial that fails on bad input leaves the previous one intact."""
    out.mkdir(parents=True, exist_ok=True)
    if spec.cache_dir is None:  # trials run into the same directory reuse its tokenizers, features, steps 1 and 3
        spec = trial_spec(spec, {"cache_dir": str(out.resolve() / layout.ARTIFACTS_DIR)})
    started = False
    info = TrialInfo(study=spec.name, run_id=f"local-{int(time.time())}", trial_id="trial-0", params=params,
                     provenance=results.provenance())

    def report(rows: list[dict[str, Any]]) -> None:
        nonlocal started
        if not started:
            (out / layout.ROWS_LOG).unlink(missing_ok=True)
            (out / layout.TABLE).unlink(missing_ok=True)
            (out / layout.SPEC).write_text(json.dumps(spec.model_dump(mode="json"), indent=1))
            started = True
        results.append_rows(out, rows)
        for r in rows:
            if r["stage"] != "final":
                print(f"  {r['stage']} step {r['step']:>5}  {r['eval_set']:<24} F1 {r['f1']:6.2f}  EM {r['exact_match']:6.2f}"
                      f"  {r['flops_train']:.3g} FLOPs  {r['wall_seconds']:.0f}s", flush=True)

    final = run_pipeline(spec, report, info, out)
    table = results.write_table(out)
    (out / layout.DONE).touch()  # the dashboard tells a finished trial from one still running or killed
    return {"run_dir": str(out), "results": str(table), "final": final}
