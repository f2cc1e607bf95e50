"""The trial driver: the Tune function trainable behind every trial.

A one-worker CPU trial (host "driver", xlt.study.resources) runs its pipeline right here, reporting
and checkpointing through Tune: a restored or retried trial resumes from `tune.get_checkpoint()`.
Any other trial runs on Ray Train, which Ray 2.60 runs under Tune only this way
(`Tuner(TorchTrainer)` fails with Train V2): the driver builds a TorchTrainer for its trial and
fits it. The Train run's name is stable (`train-<trial id>`), so a trial restored after the
study's driver died resumes its Train run from the last checkpoint. Either way
`trials/<id>/final.json` marks a finished trial, so a restored trial that had finished reports
its result again without training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlt import layout
from xlt.study import rundir

FINAL = layout.FINAL


@dataclass(frozen=True)
class StudyContext:
    """What every trial of a study shares (passed with tune.with_parameters)."""

    spec: dict[str, Any]  # the study spec, JSON
    run_dir: str
    run_id: str
    in_driver: bool = False  # run the trial here, not on Ray Train (xlt.study.resources)
    keep_free: int = 0  # bytes a checkpoint must leave free on the run's storage (rundir.keep_free_bytes)


def trial_spec_for(ctx: StudyContext, params: dict[str, Any]):
    from xlt.spec import StudySpec, trial_spec

    spec = StudySpec.model_validate(ctx.spec)
    extra = {}
    if spec.cache_dir is None:
        extra["cache_dir"] = str(Path(ctx.run_dir) / layout.ARTIFACTS_DIR)  # shared by all trials and nodes
    return trial_spec(spec, {**params, **extra})


def trial_driver(config: dict[str, Any], ctx: StudyContext) -> None:
    import ray
    from ray import tune

    from xlt.study.space import primary_set

    trial_id = tune.get_context().get_trial_id()
    params = dict(config)
    out = layout.trial_dir(ctx.run_dir, trial_id)
    final = rundir.read_json(out / FINAL)
    if final is not None:
        tune.report(final)
        return
    t0 = time.time()
    spec = trial_spec_for(ctx, params)
    r = spec.resources
    cfg = {"spec": spec.model_dump(mode="json"), "params": params, "run_dir": ctx.run_dir, "trial_id": trial_id,
           "run_id": ctx.run_id, "primary_set": primary_set(spec), "threads": max(1, int(r.cpus_per_worker)),
           "keep_free": ctx.keep_free}
    if ctx.in_driver:
        from xlt.study.worker import in_driver

        in_driver(cfg)
        metrics = {}
    else:
        metrics = _fit(cfg, spec, trial_id, ctx)
    rank0 = rundir.read_json(layout.rank_marker(out, 0)) or {}
    metrics = dict(rank0.get("metrics") or metrics)
    metrics.pop("checkpoint_path", None)
    metrics.update(trial_seconds=time.time() - t0, driver_started=t0,
                   driver_node=ray.get_runtime_context().get_node_id())
    if (out / layout.MODEL_DIR).is_dir():  # for the trackers (xlt.study.tracking)
        metrics[layout.MODEL_PATH] = str(out / layout.MODEL_DIR)
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out / FINAL, metrics)
    # after a restore, a Train run that had finished sends nothing: report its result once more
    tune.report(metrics)


def _fit(cfg: dict[str, Any], spec, trial_id: str, ctx: StudyContext) -> dict[str, Any]:
    """The trial as a Ray Train run (several workers, or GPUs); Train's last metrics."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from xlt.study import resources
    from xlt.study.worker import train_fn

    r = spec.resources
    trainer = TorchTrainer(
        train_fn,
        train_loop_config=cfg,
        scaling_config=ray.train.ScalingConfig(num_workers=r.workers, use_gpu=r.gpus_per_worker > 0,
                                               resources_per_worker=resources.TrialResources(r, "train").worker()),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}", storage_path=str(Path(ctx.run_dir) / "ray"),
            failure_config=ray.train.FailureConfig(max_failures=r.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]  # Ray's stubs: a Train callback
        ),
    )
    return dict(trainer.fit().metrics or {})
