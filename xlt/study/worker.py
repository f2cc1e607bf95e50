"""One rank of one trial (here, at the edge: xlt.train has no Ray), hosted two ways.

`train_fn` is the Ray Train per-worker entry point: the trial driver (xlt.study.driver) starts
it on every worker of a TorchTrainer. `in_driver` runs the single rank of a one-worker CPU
trial in the trial driver's own process, reporting to Tune. Either way the rank runs the
Ray-free pipeline (xlt.train.trial) with a `loop.Session` that carries its rank, the DDP wrapper
and checkpoint hooks. Rank 0 appends the result rows to the run directory's log as they come;
every rank reports once per evaluation event (`ray.train.report` is a barrier), rank 0 with a
checkpoint, so a restarted worker group (Train) or trial (Tune) resumes after the last evaluation.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed

from xlt import layout, results
from xlt.errors import DiskFull
from xlt.layout import STATE_FILE, trial_dir
from xlt.spec import StudySpec
from xlt.train.loop import Session
from xlt.train.trial import TrialInfo, run_pipeline

__all__ = ["event_metrics", "in_driver", "train_fn", "trial_dir"]

# how a rank reports to its host: (metrics, checkpoint directory or None); the directory may be
# removed once the call returns (both Train and Tune persist a reported checkpoint during the call)
Report = Callable[[dict[str, Any], str | None], None]


def event_metrics(rows: list[dict[str, Any]], primary: str, last: dict[str, Any]) -> dict[str, Any]:
    """What Tune sees of one evaluation event: `f1`/`exact_match` of the primary eval set,
    `f1/<set>` and `exact_match/<set>` of every set, and the compute so far. Values an event
    lacks (a stage that evaluates other sets) carry over from the last event, so every report
    holds every objective."""
    m = dict(last)
    for r in rows:
        for score in layout.SCORES:
            m[layout.set_metric(score, r["eval_set"])] = r[score]
        if r["eval_set"] == primary:
            m["f1"], m["exact_match"] = r["f1"], r["exact_match"]
    r0 = rows[0]
    for k in ("flops_train", "flops_eval", "device_seconds", "wall_seconds", "pipeline_seconds", "step",
              "examples_seen", "n_devices"):
        m[k] = r0.get(k)
    m.update(stage=r0["stage"], event=r0["event"], is_final=bool(r0.get("is_final")))
    m.setdefault("f1", math.nan)
    m.setdefault("exact_match", math.nan)
    return m


class _Reporter:
    """Turns pipeline reports into Ray Train reports, one per evaluation event on every rank.

    A pipeline that supports checkpoints calls `session.on_event` after each evaluation, once its
    state is updated: the event is reported then, with a checkpoint. An event the pipeline does
    not follow with `on_event` is reported when the next one arrives, or at the end."""

    def __init__(self, cfg: dict[str, Any], rank: int, marker: _Marker, report: Report):
        self.cfg, self.rank, self.marker, self.report = cfg, rank, marker, report
        self.pending: dict[str, Any] | None = None
        self.last: dict[str, Any] = {}
        self.reports = 0

    def rows(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.pending is not None:
            self._send(None)
        if self.rank == 0:
            results.append_rows(self.cfg["run_dir"], rows)
        self.last = event_metrics(rows, self.cfg["primary_set"], self.last)
        self.pending = self.last

    def on_event(self, state) -> None:
        if self.pending is None:
            return
        if self.rank != 0:
            self._send(None)
            return
        at = f"{self.pending.get('stage')} step {self.pending.get('step')}"
        with tempfile.TemporaryDirectory(prefix="xlt-ckpt-") as tmp:
            try:
                # into a file of ours: torch.save given a path hides ENOSPC in a RuntimeError
                with open(Path(tmp) / STATE_FILE, "wb") as f:
                    torch.save(state(), f)
                self._room(os.path.getsize(Path(tmp) / STATE_FILE), at)
                self._send(tmp)  # Tune or Train copies it to the run's storage
            except OSError as e:
                if not results.is_disk_full(e):
                    raise
                raise DiskFull(f"disk full: {e.strerror or str(e).splitlines()[0]} writing the checkpoint of {at} "
                               "(to a temporary directory, then the run's storage)") from None

    def _room(self, size: int, at: str) -> None:
        """Fail the trial (disk full) before its checkpoint takes the run's storage below the free
        space the study keeps for its own state (xlt.study.rundir.keep_free_bytes)."""
        keep = self.cfg.get("keep_free", 0)
        if not keep:
            return
        storage = Path(self.cfg["run_dir"]) / "ray"
        free = shutil.disk_usage(storage if storage.exists() else self.cfg["run_dir"]).free
        if free - size < keep:
            raise DiskFull(f"disk full: {free / 2**20:.3g} MB free on the run directory's filesystem; the checkpoint "
                           f"of {at} ({size / 2**20:.3g} MB) would leave less than the {keep / 2**20:.3g} MB a study "
                           "keeps free for its own state (XLT_KEEP_FREE_MB)")

    def flush(self) -> None:
        if self.pending is not None:
            self._send(None)

    def _send(self, checkpoint: str | None) -> None:
        metrics, self.pending = self.pending, None
        assert metrics is not None
        self.report(metrics, checkpoint)
        self.reports += 1
        # the trial driver reads rank 0's last metrics: Train's Result.metrics are those of the last checkpoint
        self.marker.update(reports=self.reports, metrics=metrics)


class _Marker:
    """trials/<id>/rank-<r>.json: where this rank runs and how far it got (status, tests)."""

    def __init__(self, path: Path, **info: Any):
        self.path, self.info = path, info
        self.update()

    def update(self, **info: Any) -> None:
        self.info.update(info, updated=time.time())
        results.atomic_write_bytes(self.path, json.dumps(self.info, indent=1).encode())


def _load_checkpoint(ckpt) -> dict[str, Any] | None:
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        path = Path(d) / STATE_FILE
        return torch.load(path, weights_only=True) if path.exists() else None


def train_fn(cfg: dict[str, Any]) -> None:
    """One rank of a Ray Train run. `cfg`: spec (the trial's resolved spec, JSON), params, run_dir,
    trial_id, run_id, primary_set, threads."""
    ctx = ray.train.get_context()

    def report(metrics: dict[str, Any], checkpoint: str | None) -> None:
        ray.train.report(metrics, checkpoint=None if checkpoint is None else ray.train.Checkpoint.from_directory(checkpoint))

    run_rank(cfg, ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(), report,
             ray.train.get_checkpoint())


def in_driver(cfg: dict[str, Any]) -> None:
    """The one rank of a one-worker CPU trial, in the Tune trial's process (`cfg` as for train_fn):
    reports and checkpoints go to Tune (`ray.train.report` raises in a Tune function)."""
    from ray import tune

    def report(metrics: dict[str, Any], checkpoint: str | None) -> None:
        tune.report(metrics, checkpoint=None if checkpoint is None else tune.Checkpoint.from_directory(checkpoint))

    run_rank(cfg, 0, 1, torch.device("cpu"), report, tune.get_checkpoint())


def run_rank(cfg: dict[str, Any], rank: int, world: int, device: torch.device, report: Report, checkpoint) -> None:
    """One rank of one trial; `checkpoint`: the host's Checkpoint to resume from, or None."""
    spec = StudySpec.model_validate(cfg["spec"])
    torch.set_num_threads(spec.train.threads or cfg["threads"])
    out = trial_dir(cfg["run_dir"], cfg["trial_id"])
    out.mkdir(parents=True, exist_ok=True)
    saved = _load_checkpoint(checkpoint)
    marker = _Marker(layout.rank_marker(out, rank), rank=rank, world_size=world, pid=os.getpid(),
                     node_id=ray.get_runtime_context().get_node_id(), hostname=socket.gethostname(),
                     device=str(device), started=time.time(), trained_batches=0,
                     resumed_from_event=None if saved is None else len(saved.get("events", [])) - 1)
    reporter = _Reporter(cfg, rank, marker, report)
    counted = {"batches": 0}

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        def count(*_):
            counted["batches"] += 1
            marker.info["trained_batches"] = counted["batches"]

        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        model.register_forward_pre_hook(count)  # the training forward passes of this rank
        return model

    def broadcast(value: Any) -> Any:
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    session = Session(rank=rank, world_size=world, wrap=wrap, resume=saved, on_event=reporter.on_event,
                      trial_dir=str(out), barrier=torch.distributed.barrier if world > 1 else None,
                      broadcast=broadcast if world > 1 else None)
    info = TrialInfo(study=spec.name, run_id=cfg["run_id"], trial_id=cfg["trial_id"], params=cfg["params"],
                     provenance=results.provenance())
    run_pipeline(spec, reporter.rows, info, out if rank == 0 else None, device, session)
    reporter.flush()
    marker.update(finished=time.time())

