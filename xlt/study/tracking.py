"""Experiment trackers for `xlt run` (the study's `tracking:` section), through Ray Tune's own
logger callbacks; a tracker's package is imported only when the study names it.

    mlflow       ray.air.integrations.mlflow.MLflowLoggerCallback: an MLflow run per trial
    wandb        ray.air.integrations.wandb.WandbLoggerCallback: a W&B run per trial (RUN/wandb)
    tensorboard  ray.tune.logger.TBXLoggerCallback: event files in the trial's Tune directory

They log what a trial reports to Tune (xlt.study.worker.event_metrics: `f1`, `f1/<set>`,
`exact_match/<set>`, compute, at every evaluation, one Tune iteration each), the trial's
parameters (its Tune config), and the saved model's directory, `model_path` in the trial's last
report (xlt.study.driver): an MLflow tag, a W&B config key, a TensorBoard text.

Tune adds CSV, JSON and TensorBoard loggers of its own unless TUNE_DISABLE_AUTO_CALLBACK_LOGGERS
is set; the runner sets it for runs whose callbacks come from here (`Trackers` holds Tune's CSV
and JSON loggers too, run.json says `tune_loggers: xlt`), so TensorBoard files are written only
when the study asks.
"""

from __future__ import annotations

import importlib.util
import os
import weakref
from pathlib import Path
from typing import Any
from unittest import mock

from ray.tune import Callback
from ray.tune.callback import CallbackList
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from xlt import layout
from xlt.errors import XltError
from xlt.spec import StudySpec, expand_vars, mlflow_file_store

MODEL_PATH = layout.MODEL_PATH

# this session's Trackers, weakly: held by its Tuner, dropped with it (Ray's W&B callback must be
# finalized before the interpreter's teardown, or its __del__ fails on a half-torn-down ray)
_live: list[weakref.ref[Trackers]] = []


def _this_session() -> Callback:
    live = _live[-1]() if _live else None
    return live if live is not None else Callback()


class Trackers(CallbackList):
    """Tune's CSV and JSON loggers and the study's trackers, as one callback."""

    def __reduce__(self):
        # Tune pickles its callbacks with the experiment and a restored Tuner uses the unpickled
        # ones: a resumed study logs to the trackers its study file names now (as Progress does)
        return (_this_session, ())

    def __init__(self, callbacks: list[Callback]):
        super().__init__(callbacks)
        _live[:] = [weakref.ref(self)]


# each tracker's package (and the extra that installs it)
PACKAGES = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboardX"}


def check(spec: StudySpec) -> None:
    """A tracker whose package is missing, or an MLflow file store, is one line before Ray starts
    (nothing is imported)."""
    t = spec.tracking
    named = [k for k in PACKAGES if t is not None and getattr(t, k) not in (None, False)]
    for key in named:
        if importlib.util.find_spec(PACKAGES[key]) is None:
            raise XltError(f"tracking.{key}: needs the {PACKAGES[key]} package: pip install 'xlt[{key}]'")
    if t is not None and t.mlflow is not None and t.mlflow.tracking_uri is not None:
        uri = expand_vars(t.mlflow.tracking_uri)
        problem = mlflow_file_store(uri)
        if problem:
            raise XltError(f"tracking.mlflow.tracking_uri: {problem}, got {uri!r}")


def mlflow_uri(spec: StudySpec, run_dir: Path) -> str:
    m = spec.tracking.mlflow if spec.tracking else None
    if m is None or m.tracking_uri is None:
        return f"sqlite:///{run_dir / 'mlflow.db'}"
    return expand_vars(m.tracking_uri)


def trackers(spec: StudySpec, run_dir: Path, run_id: str) -> Trackers:
    """The run's Tune loggers; `run_id` tags MLflow runs and groups W&B runs."""
    t = spec.tracking
    found: list[Callback] = [CSVLoggerCallback(), JsonLoggerCallback()]
    if t is not None and t.mlflow is not None:
        uri = mlflow_uri(spec, run_dir)
        found.append(_mlflow()(uri, experiment_name=t.mlflow.experiment or spec.name,
                               tags={"xlt.study": spec.name, "xlt.run_id": run_id}))
    if t is not None and t.wandb is not None:
        # dir: the run directory itself, not the trial's Tune directory, which Tune syncs from a
        # staging copy at the end of the study, before the last trial's W&B process has finished.
        # upload_timeout: how long the end of the study waits for each trial's W&B process
        # (Ray's default, 30 min, is also how long a study that failed hangs)
        found.append(_wandb()(project=t.wandb.project or spec.name, group=run_id, mode=t.wandb.mode,
                              dir=str(run_dir), upload_timeout=120))
    if t is not None and t.tensorboard:
        found.append(_tensorboard()())
    return Trackers(found)


# The subclasses add `model_path`, a string: each of Ray's callbacks logs numbers only.


def _mlflow():
    import mlflow
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class MLflow(MLflowLoggerCallback):
        def log_trial_result(self, iteration: int, trial, result: dict[str, Any]):
            super().log_trial_result(iteration, trial, result)
            if MODEL_PATH in result:
                mlflow.MlflowClient(self.tracking_uri).set_tag(self._trial_runs[trial], MODEL_PATH, result[MODEL_PATH])

    return MLflow


def _wandb():
    from ray.air.integrations.wandb import WandbLoggerCallback

    class Wandb(WandbLoggerCallback):
        AUTO_CONFIG_KEYS = [*WandbLoggerCallback.AUTO_CONFIG_KEYS, MODEL_PATH]  # into the run's config

        def setup(self, *args, **kwargs):
            # Ray asks for an API key unless WANDB_MODE says offline or disabled; the study's mode
            # (passed on to wandb.init) is what counts
            mode = self.kwargs["mode"]
            with mock.patch.dict(os.environ, {} if mode == "online" else {"WANDB_MODE": mode}):
                super().setup(*args, **kwargs)

    return Wandb


def _tensorboard():
    from ray.tune.logger import TBXLoggerCallback

    class TensorBoard(TBXLoggerCallback):
        def log_trial_result(self, iteration: int, trial, result: dict[str, Any]):
            super().log_trial_result(iteration, trial, result)
            if MODEL_PATH in result:
                self._trial_writer[trial].add_text(MODEL_PATH, result[MODEL_PATH])
                self._trial_writer[trial].flush()

    return TensorBoard
